"""Encoding and decoding of stream segments: live JSONL lines and sealed Parquet files.

The writer hands over a batch of records by column (`Columns`: field name -> list of
values, `format.RECORD_FIELDS[stream]`), encodes it as one JSONL line of those columns
and converts the same columns to Arrow for sealing; readers decode lines back to columns
and convert them the same way. Columns, not record tuples, because every step then
works on whole lists in C (orjson, pyarrow) rather than record by record in Python.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._native import NumberRows, float_rows
from ._storable import INT64_MAX, INT64_MIN, key_text
from .errors import RunstoreError
from .format import (
    EVENTS,
    FORMAT_VERSION,
    METRICS,
    RECORD_FIELDS,
    SCHEMAS,
    SPECIAL,
    STREAMS,
    STREAMS_DIR,
    WRITERS_DIR,
    check_format_version,
)

__all__ = [
    "JSON_OPTIONS",
    "MAX_RECORDS_PER_LINE",
    "SEAL_SCHEMAS",
    "UNCHECKED",
    "Columns",
    "DecodedLines",
    "JsonText",
    "atomic_write_bytes",
    "check_sealed",
    "columns_of_records",
    "decode_lines",
    "encode_lines",
    "fsync_dir",
    "header_line",
    "number_rows_table",
    "read_segment",
    "record_count",
    "remove_temp_files",
    "safe_table",
    "table_from_columns",
    "uniform_keys",
    "unreadable",
    "write_parquet_atomic",
]

#: A batch of records by field: {field name: [value of each record]}.
Columns = dict[str, list[Any]]

#: At most this many records go on one line, so a line stays small enough for any JSON
#: reader (DuckDB's default limit is 16 MB per object).
MAX_RECORDS_PER_LINE: Final = 8192

#: How runstore encodes JSON everywhere: numpy values as numbers, non-string keys as text.
JSON_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_NEWLINE: Final = orjson.OPT_APPEND_NEWLINE
_EXACT_FLOAT_INT: Final = 2**53
_NONFINITE: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_KINDS: Final[dict[type, str]] = {float: "float", int: "int", bool: "bool", str: "str"}


class JsonText(bytes):
    """A metric value encoded as JSON when the job logged it, so later changes to the
    job's objects cannot alter the record. (An event's data is JSON made the same way,
    kept as plain bytes: in a record, any bytes are JSON.)"""

    __slots__ = ()


def _default(value: object) -> object:
    if isinstance(value, bytes):  # JSON made at the call: JsonText, or an event's data
        return orjson.Fragment(value if type(value) is bytes else bytes(value))
    return repr(value)


def header_line(stream: str, writer_id: str, number: int) -> bytes:
    """The first line of every live segment: what it holds and in which format."""
    header = {
        "runstore": FORMAT_VERSION,
        "stream": stream,
        "writer": writer_id,
        "segment": number,
        "fields": RECORD_FIELDS[stream],
    }
    return orjson.dumps(header) + b"\n"


def columns_of_records(stream: str, records: Sequence[Sequence[Any]]) -> Columns:
    """Columns of record tuples (transposed in C)."""
    fields = RECORD_FIELDS[stream]
    if not records:
        return {name: [] for name in fields}
    return dict(zip(fields, map(list, zip(*records, strict=True)), strict=True))


def record_count(columns: Columns) -> int:
    return len(columns["seq"])


def _slice(columns: Columns, start: int, stop: int) -> Columns:
    return {name: values[start:stop] for name, values in columns.items()}


def _special_text(value: object) -> str | None:
    if type(value) is float and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
        return str(value)
    return None


def _with_special(columns: Columns) -> Columns:
    """Metrics columns whose values JSON cannot hold are null in `values`, with their
    text in the `special` column; keys as text (what JSON makes of them anyway)."""
    values: list[dict[str, Any]] = []
    special: list[dict[str, str] | None] = []
    for record in columns["values"]:
        plain: dict[str, Any] = {}
        texts: dict[str, str] = {}
        for key, value in record.items():
            name = key_text(key)
            text = _special_text(value)
            if text is None:
                plain[name] = value
            else:
                plain[name] = None
                texts[name] = text
        values.append(plain)
        special.append(texts or None)
    out = {**columns, "values": values}
    if any(special):
        out[SPECIAL] = special
    return out


def encode_lines(stream: str, columns: Columns, *, finite: bool = False) -> list[bytes]:
    """Newline-terminated JSONL lines holding a batch of records, at most
    MAX_RECORDS_PER_LINE records each: one line per flush, so a torn line costs one
    flush at most. `finite`: the caller knows every metric value is a finite float, so
    orjson needs none of its slower options (a key JSON cannot name still falls back).

    Each line as orjson made it, newline included, never joined: a copy of megabytes
    costs as much in page faults as in copying."""
    count = record_count(columns)
    if count <= MAX_RECORDS_PER_LINE:
        return [_encode_line(stream, columns, finite)]
    return [
        _encode_line(stream, _slice(columns, start, start + MAX_RECORDS_PER_LINE), finite)
        for start in range(0, count, MAX_RECORDS_PER_LINE)
    ]


def _encode_line(stream: str, chunk: Columns, finite: bool) -> bytes:
    options, default = (0, None) if finite else (JSON_OPTIONS, _default)
    try:
        line = orjson.dumps(chunk, option=options | _NEWLINE, default=default)
    except (TypeError, orjson.JSONEncodeError):
        line = b""  # an int beyond 64 bits, a key JSON cannot name: the careful path
    if stream == METRICS and (not line or (not finite and b"null" in line)):
        # JSON writes NaN and infinities as null: keep them in the `special` column.
        return orjson.dumps(_with_special(chunk), option=JSON_OPTIONS | _NEWLINE, default=_default)
    if not line:
        return orjson.dumps(chunk, option=_NEWLINE, default=_default)  # raises: counted
    return line


@dataclass
class DecodedLines:
    """The complete lines of a live segment from some offset on."""

    #: The records of every good line, by column (metrics values restored from `special`).
    columns: Columns
    #: Offset just past the last complete line: where the next read starts.
    end: int = 0
    #: Bytes after the last newline: a line still being written, or torn by a crash.
    torn_bytes: int = 0
    header: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def _restore_special(values: list[Any], special: list[Any]) -> str | None:
    """Put the values of a metrics line's `special` column back; a problem or None."""
    if type(special) is not list or len(special) != len(values):
        return "its special column does not match its records"
    for index, texts in enumerate(special):
        if texts is None:
            continue
        if type(texts) is not dict:
            return "its special column holds a value that is not an object"
        restored = dict(values[index])
        for key, text in texts.items():
            if text in _NONFINITE:
                restored[key] = _NONFINITE[text]
            else:
                try:
                    restored[key] = int(text)
                except (TypeError, ValueError):
                    return f"its special column holds {text!r}, not a number"
        values[index] = restored
    return None


def _line_problem(stream: str, line: dict[str, Any]) -> str | None:
    """Why a parsed line is not a batch of `stream` records, or None if it is."""
    fields = RECORD_FIELDS[stream]
    seqs = line.get("seq")
    if type(seqs) is not list:
        return f"not a line of {stream} records"
    extra = set(line) - set(fields) - ({SPECIAL} if stream == METRICS else set())
    if extra:
        return f"not a line of {stream} records (unknown field {sorted(extra)[0]!r})"
    for name in fields:
        column = line.get(name)
        if type(column) is not list or len(column) != len(seqs):
            return f"not a line of {stream} records (field {name!r} missing or of another length)"
    if stream == METRICS:
        if not all(type(v) is dict for v in line["values"]):
            return "not a line of metrics records (a values entry is not an object)"
        if SPECIAL in line:
            return _restore_special(line["values"], line[SPECIAL])
    return None


def decode_lines(stream: str, data: bytes, *, start: int = 0, where: str = "") -> DecodedLines:
    """Records of the complete lines in `data[start:]`.

    An unterminated last line is left for a later read (never reported); a complete line
    that is not valid is reported in `problems` with its offset and skipped.
    """
    fields = RECORD_FIELDS[stream]
    result = DecodedLines(columns={name: [] for name in fields}, end=start)
    last_newline = data.rfind(b"\n", start)
    if last_newline < 0:
        result.torn_bytes = len(data) - start
        return result
    result.end = last_newline + 1
    result.torn_bytes = len(data) - result.end
    offset = start
    for line in data[start:last_newline].split(b"\n"):
        line_offset = offset
        offset += len(line) + 1
        if not line.strip():
            continue
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            result.problems.append(f"{where} byte {line_offset}: not valid JSON ({exc}); skipped")
            continue
        if type(parsed) is dict and "runstore" in parsed:
            problem = _check_header(stream, parsed)
            if problem:
                result.problems.append(f"{where} byte {line_offset}: {problem}")
            else:
                result.header = parsed
            continue
        problem = (
            f"not a line of {stream} records"
            if type(parsed) is not dict
            else _line_problem(stream, parsed)
        )
        if problem:
            result.problems.append(f"{where} byte {line_offset}: {problem}; skipped")
            continue
        for name in fields:
            result.columns[name].extend(parsed[name])
    return result


def _check_header(stream: str, header: dict[str, Any]) -> str | None:
    if header.get("stream") != stream:
        return f"not a {stream} segment header"
    try:
        check_format_version(header.get("runstore"), "segment header")
    except RunstoreError as exc:
        return str(exc)
    return None


# -- records to Arrow -------------------------------------------------------------------


def _int64(number: int) -> pa.Scalar:
    """A typed scalar for compute kernels: given a bare Python int, pyarrow infers its
    type, which costs ~100 µs per call (more than the kernel over a whole batch)."""
    return pa.scalar(number, pa.int64())


_ONE: Final = _int64(1)
_THOUSAND: Final = _int64(1000)


def _timestamps(ts_ns: Sequence[Any]) -> pa.Array:
    return pc.divide(pa.array(ts_ns, pa.int64()), _THOUSAND).cast(SCHEMAS[EVENTS].field("ts").type)


def _json_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return orjson.dumps(value, option=JSON_OPTIONS, default=_default).decode()


def _metric_value(value: Any) -> tuple[float | None, str, str | None]:
    """(numeric view, kind, text) of one metric value; see docs/format.md."""
    kind = _KINDS.get(type(value))
    if kind == "float" or kind == "bool":
        return float(value), kind, None
    if kind == "int":
        exact = -_EXACT_FLOAT_INT <= value <= _EXACT_FLOAT_INT
        return float(value), kind, (None if exact else str(value))
    if kind == "str":
        return None, kind, value
    return None, "json", _json_text(value)


#: Metrics columns that a sealed segment stores dictionary-encoded, handed to Parquet
#: as dictionary arrays so that it need not hash every value (see SEAL_SCHEMAS).
_DICTIONARY_COLUMNS: Final = ("writer", "category", "key", "kind")
_DICTIONARY: Final = pa.dictionary(pa.int32(), pa.string())
#: The schemas of the tables the writer builds for sealing: SCHEMAS, with the metrics
#: columns above as dictionaries. The Parquet files read back as SCHEMAS.
SEAL_SCHEMAS: Final[dict[str, pa.Schema]] = {
    **SCHEMAS,
    METRICS: pa.schema(
        [f.with_type(_DICTIONARY) if f.name in _DICTIONARY_COLUMNS else f for f in SCHEMAS[METRICS]]
    ),
}


def _constant(text: str | None, count: int, dictionary: bool = False) -> pa.Array:
    """A string column holding `text` `count` times, made in C++."""
    if not dictionary:
        return pa.repeat(pa.scalar(text, pa.string()), count)
    if text is None:
        return pa.nulls(count, _DICTIONARY)
    zeros = pa.repeat(pa.scalar(0, pa.int32()), count)
    return pa.DictionaryArray.from_arrays(zeros, pa.array([text], pa.string()))


def _text(array: pa.Array, dictionary: bool) -> pa.Array:
    """A string or dictionary array as the one wanted."""
    if pa.types.is_dictionary(array.type):
        return array if dictionary else array.cast(pa.string())
    return pc.dictionary_encode(array) if dictionary else array


def _assemble_metrics(
    writer: str,
    columns: Columns,
    parents: pa.Array,
    key: pa.Array,
    value: pa.Array,
    kind: pa.Array | None = None,
    text: pa.Array | None = None,
    *,
    dictionary: bool,
) -> pa.Table:
    """The metrics table, one row per key of a call: `parents` holds the call of each
    row; no `kind`/`text` means every value a float."""
    count = len(key)
    category = columns["category"]
    first = category[0]
    if category.count(first) == len(category):
        category_column = _constant(first, count, dictionary)
    else:
        category_column = _text(pa.array(category, pa.string()), dictionary).take(parents)
    return pa.table(
        [
            _timestamps(columns["ts_ns"]).take(parents),
            _constant(writer, count, dictionary),
            pa.array(columns["seq"], pa.int64()).take(parents),
            category_column,
            _text(key, dictionary),
            value,
            _constant("float", count, dictionary) if kind is None else _text(kind, dictionary),
            pa.nulls(count, pa.string()) if text is None else text,
        ],
        schema=(SEAL_SCHEMAS if dictionary else SCHEMAS)[METRICS],
    )


_KEY_CHECK_SLICE: Final = 1024


class _Unchecked(enum.Enum):
    UNCHECKED = enum.auto()


#: `table_from_columns(keys=...)` when the caller has not looked for `uniform_keys`.
UNCHECKED: Final = _Unchecked.UNCHECKED


def uniform_keys(values: Sequence[dict[Any, Any]]) -> list[str] | None:
    """The keys of the first record if every record has exactly those string keys, in
    that order (the usual training loop); else None."""
    if not values:
        return None
    keys = list(values[0])
    if not keys or not all(type(key) is str for key in keys):
        return None
    step = _KEY_CHECK_SLICE  # compared in C a slice at a time: a list the size of the
    expected = keys * step  # batch would be fresh memory (page faults)
    for start in range(0, len(values), step):
        chunk = values[start : start + step]
        if len(chunk) < step:
            expected = keys * len(chunk)
        if list(itertools.chain.from_iterable(chunk)) != expected:
            return None
    return keys


#: width -> (call of each row, key of each row) for batches of that many keys a call,
#: sliced for each batch: the same few widths come back batch after batch. At most
#: _ROW_INDEX_WIDTHS widths of _ROW_INDEX_MAX_ROWS rows (2 MiB each) are kept.
_ROW_INDEX: dict[int, tuple[pa.Array, pa.Array]] = {}
_ROW_INDEX_MAX_ROWS: Final = 1 << 17
_ROW_INDEX_WIDTHS: Final = 4


def _row_index(width: int, count: int) -> tuple[pa.Array, pa.Array]:
    cached = _ROW_INDEX.get(width)
    if cached is None or len(cached[0]) < count:
        capacity = max(count, min(_ROW_INDEX_MAX_ROWS, 2 * count))
        row = pc.subtract(pc.cumulative_sum(pa.repeat(_ONE, capacity)), _ONE)
        parents = pc.divide(row, _int64(width))  # integer division
        cached = (parents, pc.subtract(row, pc.multiply(parents, _int64(width))))
        if capacity <= _ROW_INDEX_MAX_ROWS:
            if len(_ROW_INDEX) >= _ROW_INDEX_WIDTHS:
                _ROW_INDEX.clear()
            _ROW_INDEX[width] = cached
    return cached[0].slice(0, count), cached[1].slice(0, count)


def _uniform_floats_table(
    writer: str, columns: Columns, keys: list[str], dictionary: bool
) -> pa.Table:
    """The common batch, built in C++: every call logged the same string keys
    (`uniform_keys`), all floats."""
    values = columns["values"]
    records = len(values)
    # A column per key, read out of the dicts in C (itemgetter): ~40% less than
    # converting them as a struct, which looks every field up by name itself.
    by_key = [pa.array(map(itemgetter(key), values), pa.float64(), size=records) for key in keys]
    parents, position = _row_index(len(keys), records * len(keys))
    # Row (call i, key j) is value i of key j's column, which starts at j * records.
    value_column = pa.concat_arrays(by_key).take(
        pc.add(pc.multiply(position, _int64(records)), parents)
    )
    key_column = pa.DictionaryArray.from_arrays(
        position.cast(pa.int32()), pa.array(keys, pa.string())
    )
    return _assemble_metrics(
        writer, columns, parents, key_column, value_column, dictionary=dictionary
    )


def number_rows_table(writer: str, rows: NumberRows, dictionary: bool) -> pa.Table:
    """The metrics table of a batch the C speedups converted (numbers only: no text)."""
    count = len(rows.value)
    return pa.table(
        [
            rows.ts,
            _constant(writer, count, dictionary),
            rows.seq,
            _text(rows.category, dictionary),
            _text(rows.key, dictionary),
            rows.value,
            _text(rows.kind, dictionary),
            pa.nulls(count, pa.string()),
        ],
        schema=(SEAL_SCHEMAS if dictionary else SCHEMAS)[METRICS],
    )


def _metrics_table(
    writer: str,
    columns: Columns,
    all_floats: bool | None,
    keys: list[str] | _Unchecked | None,
    dictionary: bool,
) -> pa.Table:
    if all_floats is not False:
        rows = float_rows(columns)
        if rows is not None:
            return number_rows_table(writer, rows, dictionary)
    values = columns["values"]
    flat: list[Any] | None = None
    if all_floats is None:
        flat = list(itertools.chain.from_iterable(map(dict.values, values)))
        all_floats = set(map(type, flat)) <= {float}
    if all_floats:
        if keys is UNCHECKED:
            keys = uniform_keys(values)
        if keys is not None:
            return _uniform_floats_table(writer, columns, keys, dictionary)
    if flat is None:
        flat = list(itertools.chain.from_iterable(map(dict.values, values)))
    counts = pa.array(map(len, values), pa.int32(), size=len(values))
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(counts)])
    every_key = list(itertools.chain.from_iterable(values))
    try:
        key_column = pa.array(every_key, pa.string())
    except (pa.ArrowException, TypeError):
        key_column = pa.array([key_text(k) for k in every_key], pa.string())
    parents = pc.list_parent_indices(pa.ListArray.from_arrays(offsets, key_column))
    kind_column = text_column = None
    if all_floats:
        value_column = pa.array(flat, pa.float64())
    else:
        converted = list(map(_metric_value, flat))
        value_column = pa.array([c[0] for c in converted], pa.float64())
        kind_column = pa.array([c[1] for c in converted], pa.string())
        text_column = pa.array([c[2] for c in converted], pa.string())
    return _assemble_metrics(
        writer,
        columns,
        parents,
        key_column,
        value_column,
        kind_column,
        text_column,
        dictionary=dictionary,
    )


def _columns_table(stream: str, writer: str, columns: Columns) -> pa.Table:
    schema = SCHEMAS[stream]
    fields = RECORD_FIELDS[stream]
    arrays = [_timestamps(columns["ts_ns"]), _constant(writer, record_count(columns))]
    # Record fields after ts_ns line up with schema fields after ts and writer.
    for name, schema_field in zip(fields[1:], list(schema)[2:], strict=True):
        values = columns[name]
        if name == "data":
            values = [None if v is None else _json_text(v) for v in values]
        arrays.append(pa.array(values, schema_field.type))
    return pa.table(arrays, schema=schema)


def table_from_columns(
    stream: str,
    writer: str,
    columns: Columns,
    *,
    all_floats: bool | None = None,
    keys: list[str] | _Unchecked | None = UNCHECKED,
    dictionary: bool = False,
) -> pa.Table:
    """An Arrow table (schema `SCHEMAS[stream]`) of a batch of records, in memory or
    decoded.

    `all_floats` says whether every metric value is a float (the writer knows; None:
    find out), which allows a conversion in C++ that keeps no per-value kinds;
    `keys`: the batch's `uniform_keys` if the caller has looked (None: they differ),
    else UNCHECKED (then they are looked for here).
    `dictionary`: a table of `SEAL_SCHEMAS[stream]`, for sealing.

    Raises `pa.ArrowException`/`TypeError`/`ValueError` if a record holds values of the
    wrong type; `safe_table` isolates such records.
    """
    if not record_count(columns):
        return (SEAL_SCHEMAS if dictionary else SCHEMAS)[stream].empty_table()
    if stream == METRICS:
        return _metrics_table(writer, columns, all_floats, keys, dictionary)
    return _columns_table(stream, writer, columns)


#: What a record of wrong values raises on its way to Arrow (OverflowError: an int
#: beyond 64 bits where the schema has int64, such as a `ts_ns` of 2**64 - 1).
_BAD_VALUES: Final = (
    pa.ArrowException,
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
    OverflowError,
)


def safe_table(
    stream: str, writer: str, columns: Columns, where: str, problems: list[str]
) -> pa.Table:
    """Like `table_from_columns`, but a record with values of the wrong type is reported
    in `problems` and left out instead of failing the whole segment."""
    try:
        return table_from_columns(stream, writer, columns)
    except _BAD_VALUES:
        pass
    good: list[int] = []
    for index in range(record_count(columns)):
        try:
            table_from_columns(stream, writer, _slice(columns, index, index + 1))
        except _BAD_VALUES as exc:
            problems.append(f"{where}: record {index + 1} has a value of the wrong type ({exc})")
        else:
            good.append(index)
    kept = {name: [values[i] for i in good] for name, values in columns.items()}
    return table_from_columns(stream, writer, kept)


def read_segment(stream: str, path: Path, writer: str) -> tuple[pa.Table, list[str]]:
    """One segment as an Arrow table, plus the problems found in it.

    Raises `FileNotFoundError` if the file vanished (a live segment that was sealed
    meanwhile: the caller reads the sealed file instead).
    """
    problems: list[str] = []
    if path.suffix == ".parquet":
        return _read_parquet(stream, path, problems), problems
    data = path.read_bytes()
    decoded = decode_lines(stream, data, where=str(path))
    problems.extend(decoded.problems)
    return safe_table(stream, writer, decoded.columns, str(path), problems), problems


def _read_parquet(stream: str, path: Path, problems: list[str]) -> pa.Table:
    """A sealed segment; a file of another schema is a problem, never rows of nulls.
    (One open for the schema and the rows: faster than `pq.read_table(schema=...)`.)"""
    schema = SCHEMAS[stream]
    try:
        parquet = pq.ParquetFile(path)
        try:
            found = parquet.schema_arrow.names
            missing = [name for name in schema.names if name not in found]
            if missing:
                problems.append(
                    f"{path}: not a {stream} segment (it has no column {missing[0]!r}); skipped"
                )
                return schema.empty_table()
            table = parquet.read(columns=schema.names)
        finally:
            parquet.close()
        required = [f.name for f in schema if not f.nullable and table.column(f.name).null_count]
        if required:
            valid = pc.is_valid(table.column(required[0]))
            for name in required[1:]:
                valid = pc.and_(valid, pc.is_valid(table.column(name)))
            kept = table.filter(valid)
            problems.append(
                f"{path}: {table.num_rows - kept.num_rows} records without a "
                f"{required[0]!r}; skipped"
            )
            table = kept
        return table.cast(schema)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        problems.append(f"{path}: unreadable Parquet segment ({exc}); skipped")
        return schema.empty_table()


def unreadable(path: Path, exc: OSError) -> str:
    """The problem of a segment file the OS will not let us read."""
    return f"{path}: cannot be read ({exc.strerror or exc}); skipped"


def check_sealed(stream: str, path: Path) -> tuple[bool, list[str]]:
    """Whether DuckDB can read a sealed segment as the stream's table, and what is
    wrong with it, from its footer alone: its columns, in order, and their types; and,
    where the file counts them, nulls where the schema requires a value (the rows are
    left out, the rest is read)."""
    schema = SCHEMAS[stream]
    try:
        metadata = pq.read_metadata(path)
        found = metadata.schema.to_arrow_schema()
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        return False, [f"{path}: unreadable Parquet segment ({exc}); skipped"]
    if found.names != schema.names:
        columns = "its columns are not the stream's"
        return False, [f"{path}: not a {stream} segment ({columns}); skipped"]
    for expected, actual in zip(schema, found, strict=True):
        kind = actual.type.value_type if pa.types.is_dictionary(actual.type) else actual.type
        if not kind.equals(expected.type):
            return False, [
                f"{path}: not a {stream} segment (column {expected.name!r} is {kind}, not "
                f"{expected.type}); skipped"
            ]
    # Where the file keeps null counts (a writer keeps them for ts and seq): rows
    # without what the schema requires are left out (the store filters them anyway).
    required = {i for i, f in enumerate(schema) if not f.nullable}
    nulls = 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in required:
            statistics = row_group.column(index).statistics
            if statistics is not None and statistics.has_null_count:
                nulls = max(nulls, statistics.null_count)
    if nulls:
        return True, [f"{path}: {nulls} records without a required value; skipped"]
    return True, []


def remove_temp_files(run_dir: Path) -> int:
    """Remove what writers killed mid-write left behind (`.<name>.tmp` files of sealing
    and of manifests) from a run no writer can write to any more; how many went."""
    removed = 0
    folders = [run_dir, run_dir / WRITERS_DIR, *(run_dir / STREAMS_DIR / s for s in STREAMS)]
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False):
                        os.unlink(entry.path)
                        removed += 1
    return removed


# -- files ----------------------------------------------------------------------------

_PARQUET_OPTIONS: Final[dict[str, Any]] = {
    "compression": "zstd",
    "compression_level": 1,  # sealing is on the job's clock; compaction may squeeze more
    "use_dictionary": ["writer", "category", "event", "level", "key", "kind", "status"],
    "column_encoding": {"ts": "DELTA_BINARY_PACKED", "seq": "DELTA_BINARY_PACKED"},
    # Min/max where a query can skip a file by them: time and order. Not for the
    # dictionary columns (category, key): ~11% of the write, and queries across many
    # runs read the archive (`compact`), which keeps every statistic.
    "write_statistics": ["ts", "seq"],
}


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write `table` so that `path` appears whole or not at all, and survives power loss.
    A write that fails (disk full) leaves no temp file.

    Dictionary columns (SEAL_SCHEMAS) go to Parquet as they are and read back as
    strings: no Arrow schema is stored, only Parquet's own types."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table.unify_dictionaries(), tmp, store_schema=False, **_PARQUET_OPTIONS)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically (temp file, fsync, rename, fsync dir)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # disk full: no temp file left behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
