"""Encoding and decoding of stream segments: live JSONL lines and sealed Parquet files.

A record is a tuple of `format.RECORD_FIELDS[stream]`. The writer encodes a batch of
records as one JSONL line (a JSON array of record arrays) and converts the same batch to
Arrow for sealing; readers decode lines back to records and convert them the same way.
"""

from __future__ import annotations

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

from .errors import RunstoreError
from .format import (
    EVENTS,
    FORMAT_VERSION,
    METRICS,
    RECORD_ARITY,
    RECORD_FIELDS,
    SCHEMAS,
    check_format_version,
)

__all__ = [
    "JSON_OPTIONS",
    "MAX_RECORDS_PER_LINE",
    "DecodedLines",
    "JsonText",
    "atomic_write_bytes",
    "decode_lines",
    "encode_records",
    "fsync_dir",
    "header_line",
    "read_segment",
    "safe_table",
    "table_from_records",
    "write_parquet_atomic",
]

#: At most this many records go on one line, so a line stays small enough for any JSON
#: reader (DuckDB's default limit is 16 MB per object).
MAX_RECORDS_PER_LINE: Final = 8192

#: How runstore encodes JSON everywhere: numpy values as numbers, non-string keys as text.
JSON_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
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


def _special_text(value: object) -> str | None:
    if type(value) is float and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if type(value) is int and not _INT64_MIN <= value <= _INT64_MAX:
        return str(value)
    return None


def _with_special(record: Sequence[Any]) -> Sequence[Any]:
    """A metrics record whose values JSON cannot hold moved to its 6th field."""
    values = record[4]
    special = {}
    for index, value in enumerate(values):
        text = _special_text(value)
        if text is not None:
            special[index] = text
    if not special:
        return record
    plain = [None if i in special else v for i, v in enumerate(values)]
    return (record[0], record[1], record[2], record[3], plain, special)


def encode_records(stream: str, records: Sequence[Sequence[Any]]) -> bytes:
    """Newline-terminated JSONL lines holding `records`, at most MAX_RECORDS_PER_LINE
    records each: one line per flush, so a torn line costs one flush at most."""
    out = bytearray()
    for start in range(0, len(records), MAX_RECORDS_PER_LINE):
        chunk = records[start : start + MAX_RECORDS_PER_LINE]
        try:
            line = orjson.dumps(chunk, option=JSON_OPTIONS, default=_default)
        except orjson.JSONEncodeError:
            line = b""  # an int beyond 64 bits: take the careful path below
        if stream == METRICS and (not line or b"null" in line):
            # JSON writes NaN and infinities as null: keep them in the `special` field.
            line = orjson.dumps(
                [_with_special(r) for r in chunk], option=JSON_OPTIONS, default=_default
            )
        elif not line:
            line = orjson.dumps(chunk, default=_default)  # raises: the writer counts it
        out += line
        out += b"\n"
    return bytes(out)


@dataclass
class DecodedLines:
    """The complete lines of a live segment from some offset on."""

    rows: list[list[Any]] = field(default_factory=list)
    #: Offset just past the last complete line: where the next read starts.
    end: int = 0
    #: Bytes after the last newline: a line still being written, or torn by a crash.
    torn_bytes: int = 0
    header: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def decode_lines(stream: str, data: bytes, *, start: int = 0, where: str = "") -> DecodedLines:
    """Records of the complete lines in `data[start:]`.

    An unterminated last line is left for a later read (never reported); a complete line
    that is not valid is reported in `problems` with its offset and skipped.
    """
    result = DecodedLines(end=start)
    last_newline = data.rfind(b"\n", start)
    if last_newline < 0:
        result.torn_bytes = len(data) - start
        return result
    result.end = last_newline + 1
    result.torn_bytes = len(data) - result.end
    arity = RECORD_ARITY[stream]
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
        if type(parsed) is dict:
            problem = _check_header(stream, parsed)
            if problem:
                result.problems.append(f"{where} byte {line_offset}: {problem}")
            else:
                result.header = parsed
            continue
        if type(parsed) is not list or not all(
            type(row) is list
            and (len(row) == arity or (stream == METRICS and len(row) == arity + 1))
            for row in parsed
        ):
            result.problems.append(
                f"{where} byte {line_offset}: not a line of {stream} records; skipped"
            )
            continue
        result.rows.extend(parsed)
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


def _timestamps(ts_ns: Sequence[Any]) -> pa.Array:
    return pc.divide(pa.array(ts_ns, pa.int64()), 1000).cast(SCHEMAS[EVENTS].field("ts").type)


def _json_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return orjson.dumps(value, option=JSON_OPTIONS, default=_default).decode()


def _metric_value(value: Any, special: str | None) -> tuple[float | None, str, str | None]:
    """(numeric view, kind, text) of one metric value; see docs/format.md."""
    if special is not None and value is None:
        if special in _NONFINITE:
            return _NONFINITE[special], "float", None
        return float(int(special)), "int", special
    kind = _KINDS.get(type(value))
    if kind == "float" or kind == "bool":
        return float(value), kind, None
    if kind == "int":
        exact = -_EXACT_FLOAT_INT <= value <= _EXACT_FLOAT_INT
        return float(value), kind, (None if exact else str(value))
    if kind == "str":
        return None, kind, value
    return None, "json", _json_text(value)


def _constant(text: str | None, count: int) -> pa.Array:
    """A string column holding `text` `count` times, made in C++."""
    return pa.repeat(pa.scalar(text, pa.string()), count)


def _assemble_metrics(
    writer: str,
    ts: pa.Array,
    seq: pa.Array,
    category: pa.Array,
    key: pa.Array,
    value: pa.Array,
    kind: pa.Array | None = None,
    text: pa.Array | None = None,
) -> pa.Table:
    """The metrics table from its columns; no `kind`/`text` means every value a float."""
    count = len(key)
    return pa.table(
        [
            ts,
            _constant(writer, count),
            seq,
            category,
            key,
            value,
            _constant("float", count) if kind is None else kind,
            pa.nulls(count, pa.string()) if text is None else text,
        ],
        schema=SCHEMAS[METRICS],
    )


def _uniform_floats_table(
    writer: str,
    ts: list[int],
    seq: list[int],
    category: list[str | None],
    keys: tuple[str, ...],
    values: list[tuple[float, ...]],
) -> pa.Table:
    """The common batch: every call logged the same keys, all floats. Built in C++."""
    width = len(keys)
    records = len(ts)
    flat = list(itertools.chain.from_iterable(values))
    if width == 0 or len(flat) != width * records:
        raise ValueError("metric keys and values of different lengths")
    value_column = pa.array(flat, pa.float64())
    parents = pc.list_parent_indices(pa.FixedSizeListArray.from_arrays(value_column, width))
    count = records * width
    positions = pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), count)), 1)
    key_indices = pc.subtract(positions, pc.multiply(parents.cast(pa.int64()), width))
    key_column = pa.DictionaryArray.from_arrays(
        key_indices.cast(pa.int32()), pa.array(keys, pa.string())
    )
    if category.count(category[0]) == records:
        category_column = _constant(category[0], count)
    else:
        category_column = pa.array(category, pa.string()).take(parents)
    return _assemble_metrics(
        writer,
        _timestamps(ts).take(parents),
        pa.array(seq, pa.int64()).take(parents),
        category_column,
        key_column.cast(pa.string()),
        value_column,
    )


def _metrics_table(
    writer: str, records: Sequence[Sequence[Any]], all_floats: bool | None
) -> pa.Table:
    ts, seq, category, keys, values = (list(map(itemgetter(i), records)) for i in range(5))
    if all_floats and keys.count(keys[0]) == len(keys) and len(records[0]) == 5:
        return _uniform_floats_table(writer, ts, seq, category, keys[0], values)
    counts = pa.array(map(len, keys), pa.int32(), size=len(keys))
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(counts)])
    key_column = pa.array(itertools.chain.from_iterable(keys), pa.string())
    if len(key_column) != offsets[-1].as_py():
        raise ValueError("metric keys and values of different lengths")
    parents = pc.list_parent_indices(pa.ListArray.from_arrays(offsets, key_column))
    flat = list(itertools.chain.from_iterable(values))
    if len(flat) != len(key_column):
        raise ValueError("metric keys and values of different lengths")
    specials = (
        [r[5] if len(r) > 5 else None for r in records]
        if any(len(r) > 5 for r in records)
        else None
    )
    if all_floats is None:
        all_floats = specials is None and set(map(type, flat)) <= {float}
    kind_column = text_column = None
    if all_floats:
        value_column = pa.array(flat, pa.float64())
    else:
        special_at: dict[int, str] = {}
        if specials is not None:
            start = 0
            for record_keys, special in zip(keys, specials, strict=True):
                for index, text in (special or {}).items():
                    special_at[start + int(index)] = text
                start += len(record_keys)
        converted = [_metric_value(v, special_at.get(i)) for i, v in enumerate(flat)]
        value_column = pa.array([c[0] for c in converted], pa.float64())
        kind_column = pa.array([c[1] for c in converted], pa.string())
        text_column = pa.array([c[2] for c in converted], pa.string())
    per_record = pa.table(
        {
            "ts": _timestamps(ts),
            "seq": pa.array(seq, pa.int64()),
            "category": pa.array(category, pa.string()),
        }
    ).take(parents)
    return _assemble_metrics(
        writer,
        per_record["ts"],
        per_record["seq"],
        per_record["category"],
        key_column,
        value_column,
        kind_column,
        text_column,
    )


def _columns_table(stream: str, writer: str, records: Sequence[Sequence[Any]]) -> pa.Table:
    schema = SCHEMAS[stream]
    fields = RECORD_FIELDS[stream]
    columns = [list(map(itemgetter(i), records)) for i in range(len(fields))]
    arrays = [_timestamps(columns[0]), _constant(writer, len(records))]
    # Record fields after ts_ns line up with schema fields after ts and writer.
    for name, values, schema_field in zip(fields[1:], columns[1:], list(schema)[2:], strict=True):
        if name == "data":
            values = [None if v is None else _json_text(v) for v in values]
        arrays.append(pa.array(values, schema_field.type))
    return pa.table(arrays, schema=schema)


def table_from_records(
    stream: str, writer: str, records: Sequence[Sequence[Any]], *, all_floats: bool | None = None
) -> pa.Table:
    """An Arrow table (schema `SCHEMAS[stream]`) of records, in memory or decoded.

    `all_floats` says whether every metric value is a float (the writer knows; None:
    find out), which allows a conversion in C++ that keeps no per-value kinds.

    Raises `pa.ArrowException`/`TypeError`/`ValueError` if a record holds values of the
    wrong type; `safe_table` isolates such records.
    """
    if not records:
        return SCHEMAS[stream].empty_table()
    if stream == METRICS:
        return _metrics_table(writer, records, all_floats)
    return _columns_table(stream, writer, records)


_BAD_VALUES: Final = (pa.ArrowException, TypeError, ValueError, KeyError, AttributeError)


def safe_table(
    stream: str, writer: str, records: Sequence[Sequence[Any]], where: str, problems: list[str]
) -> pa.Table:
    """Like `table_from_records`, but a record with values of the wrong type is reported
    in `problems` and left out instead of failing the whole segment."""
    try:
        return table_from_records(stream, writer, records)
    except _BAD_VALUES:
        pass
    good = []
    for index, record in enumerate(records):
        try:
            table_from_records(stream, writer, [record])
        except _BAD_VALUES as exc:
            problems.append(f"{where}: record {index + 1} has a value of the wrong type ({exc})")
        else:
            good.append(record)
    return table_from_records(stream, writer, good)


def read_segment(stream: str, path: Path, writer: str) -> tuple[pa.Table, list[str]]:
    """One segment as an Arrow table, plus the problems found in it.

    Raises `FileNotFoundError` if the file vanished (a live segment that was sealed
    meanwhile: the caller reads the sealed file instead).
    """
    problems: list[str] = []
    if path.suffix == ".parquet":
        try:
            table = pq.read_table(path, schema=SCHEMAS[stream])
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError) as exc:
            problems.append(f"{path}: unreadable Parquet segment ({exc}); skipped")
            return SCHEMAS[stream].empty_table(), problems
        return table, problems
    data = path.read_bytes()
    decoded = decode_lines(stream, data, where=str(path))
    problems.extend(decoded.problems)
    return safe_table(stream, writer, decoded.rows, str(path), problems), problems


# -- files ----------------------------------------------------------------------------

_PARQUET_OPTIONS: Final[dict[str, Any]] = {
    "compression": "zstd",
    "compression_level": 1,  # sealing is on the job's clock; compaction may squeeze more
    "use_dictionary": ["writer", "category", "event", "level", "key", "kind", "status"],
    "column_encoding": {"ts": "DELTA_BINARY_PACKED", "seq": "DELTA_BINARY_PACKED"},
}


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write `table` so that `path` appears whole or not at all, and survives power loss."""
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, **_PARQUET_OPTIONS)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically (temp file, fsync, rename, fsync dir)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
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
