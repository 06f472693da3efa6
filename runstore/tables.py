"""A stream's records as Arrow tables: the columns of a batch (`jsonl.Columns`), or the
rows the C speedups recorded, converted with the store schemas of `format.SCHEMAS`
(and the dictionary-encoded `SEAL_SCHEMAS` a writer seals with).
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

import orjson
import pyarrow as pa

from . import _native
from ._storable import key_text
from .format import (
    METRICS,
    RECORD_FIELDS,
    SCHEMAS,
)
from .jsonl import (
    JSON_OPTIONS,
    Columns,
    json_default,
    record_count,
    slice_columns,
    uniform_keys,
)

# pyarrow.compute (~30 ms to import) is imported by the functions that use it, where they
# need it: a job's writer seals the tables of float metrics without it.

__all__ = [
    "BAD_VALUES",
    "SEAL_SCHEMAS",
    "MetricsHint",
    "NumberRows",
    "all_finite",
    "batch_rows",
    "float_rows",
    "number_rows_table",
    "repeat_each",
    "safe_table",
    "table_from_columns",
    "table_of_batches",
]


_EXACT_FLOAT_INT: Final = 2**53
_KINDS: Final[dict[type, str]] = {float: "float", int: "int", bool: "bool", str: "str"}


def _int64(number: int) -> pa.Scalar:
    """A typed scalar for compute kernels: given a bare Python int, pyarrow infers its
    type, which costs ~100 µs per call (more than the kernel over a whole batch)."""
    return pa.scalar(number, pa.int64())


_ONE: Final = _int64(1)
_THOUSAND: Final = _int64(1000)


#: Values below which a column is made in Python rather than by pyarrow.compute while
#: that is not loaded yet: importing it (~30-50 ms) costs more than a Python loop over
#: this many values, and a store's first look at short runs needs no more.
_COMPUTE_VALUES: Final = 1 << 16


def _compute_pays(values: int) -> bool:
    return values >= _COMPUTE_VALUES or "pyarrow.compute" in sys.modules


def _timestamps(ts_ns: Sequence[Any]) -> pa.Array:
    ints = pa.array(ts_ns, pa.int64())  # what is not an int64 raises here, either way
    if not _compute_pays(len(ts_ns)):
        # Microseconds truncated toward zero, as Arrow's integer division does.
        micros = [None if t is None else t // 1000 if t >= 0 else -(-t // 1000) for t in ts_ns]
        return pa.array(micros, _TS)
    import pyarrow.compute as pc

    return pc.divide(ints, _THOUSAND).cast(_TS)


def _json_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    try:
        return orjson.dumps(value, option=JSON_OPTIONS, default=json_default).decode()
    except TypeError:  # an int beyond 64 bits, read back from a live line
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=repr)


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
        if dictionary:
            return array
        if not _compute_pays(len(array)) and array.dictionary.type == pa.string():
            words = array.dictionary.to_pylist()
            return pa.array(
                [None if i is None else words[i] for i in array.indices.to_pylist()],
                pa.string(),
            )
        decoded = array.dictionary_decode()  # half of a cast's time
        return decoded if decoded.type == pa.string() else decoded.cast(pa.string())
    if not dictionary:
        return array
    import pyarrow.compute as pc

    return pc.dictionary_encode(array)


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


@dataclass(frozen=True)
class MetricsHint:
    """What the writer knows of a batch of metrics calls, so the conversion need not
    find out: whether every value is a float, and the keys every call logged in the
    same order (`uniform_keys`; None if the calls differ)."""

    all_floats: bool
    keys: list[str] | None


#: `table_from_columns(keys=...)` when the caller has not looked for `uniform_keys`.


#: width -> (call of each row, key of each row) for batches of that many keys a call,
#: sliced for each batch: the same few widths come back batch after batch. At most
#: _ROW_INDEX_WIDTHS widths of _ROW_INDEX_MAX_ROWS rows (2 MiB each) are kept.
_ROW_INDEX: dict[int, tuple[pa.Array, pa.Array]] = {}
_ROW_INDEX_MAX_ROWS: Final = 1 << 17
_ROW_INDEX_WIDTHS: Final = 4


def _row_index(width: int, count: int) -> tuple[pa.Array, pa.Array]:
    import pyarrow.compute as pc

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
    import pyarrow.compute as pc

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


def all_finite(table: pa.Table) -> bool:
    """Whether every metric value of a table is a finite number."""
    import pyarrow.compute as pc

    return pc.all(pc.is_finite(table["value"])).as_py() is True


# -- the rows the C speedups fill ---------------------------------------------------------

_INT64: Final = pa.int64()
_INT32: Final = pa.int32()
_FLOAT64: Final = pa.float64()
_TS: Final = pa.timestamp("us", tz="UTC")  # format.SCHEMAS' ts
#: The `kind` of a value by the C code's codes (KIND_FLOAT, KIND_INT, KIND_BOOL).
_KIND_CODES: Final = pa.array(["float", "int", "bool"], pa.string())


class NumberRows:
    """A batch of numeric metrics calls (floats, ints, bools) as the columns of the
    metrics table, one row per key of a call: Arrow arrays over buffers the C code
    filled in one pass."""

    __slots__ = (
        "categories",
        "category",
        "finite",
        "key",
        "keys",
        "kind",
        "seq",
        "ts",
        "uniform",
        "value",
    )

    def __init__(self, rows: int, buffers: list[pa.Buffer], found: tuple[Any, ...]) -> None:
        ts, seq, value, key, category, kind = buffers
        self.keys: list[str] = found[0]
        self.categories: list[str] = found[1]
        #: One category, every call the keys of the first in its order (a training loop).
        self.uniform: bool = found[2]
        #: No NaN or infinity among the floats.
        self.finite: bool = found[3]
        self.ts = pa.Array.from_buffers(_TS, rows, [None, ts])
        self.seq = pa.Array.from_buffers(_INT64, rows, [None, seq])
        self.value = pa.Array.from_buffers(_FLOAT64, rows, [None, value])
        self.key = pa.DictionaryArray.from_arrays(
            pa.Array.from_buffers(_INT32, rows, [None, key]), pa.array(self.keys, pa.string())
        )
        self.category = pa.DictionaryArray.from_arrays(
            pa.Array.from_buffers(_INT32, rows, [None, category]),
            pa.array(self.categories, pa.string()),
        )
        self.kind = pa.DictionaryArray.from_arrays(
            pa.Array.from_buffers(_INT32, rows, [None, kind]), _KIND_CODES
        )


def _buffers(rows: int) -> list[pa.Buffer]:
    # Arrow's memory pool keeps freed pages for the next batch: fresh pages from the OS
    # would each cost a page fault (~4 µs on a VM).
    return [pa.allocate_buffer(rows * 8) for _ in range(3)] + [
        pa.allocate_buffer(rows * 4) for _ in range(3)
    ]


def batch_rows(batch: Any) -> NumberRows:
    """A batch taken from a `MetricsBuffer` as NumberRows."""
    rows: int = batch.rows
    buffers = _buffers(rows)
    return NumberRows(rows, buffers, batch.fill(*buffers))


def float_rows(columns: dict[str, list[Any]]) -> NumberRows | None:
    """The metrics batch `columns` as NumberRows if every value is a float, else None
    (also without the speedups, or for a key that is not a string)."""
    if _native.speedups is None:
        return None
    values = columns["values"]
    rows = _native.speedups.count_rows(values)
    if rows is None:
        return None
    buffers = _buffers(rows)
    found = _native.speedups.fill_float_rows(
        columns["ts_ns"], columns["seq"], columns["category"], values, rows, *buffers
    )
    return None if found is None else NumberRows(rows, buffers, found)


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
    writer: str, columns: Columns, hint: MetricsHint | None, dictionary: bool
) -> pa.Table:
    if hint is None or hint.all_floats:
        rows = float_rows(columns)
        if rows is not None:
            return number_rows_table(writer, rows, dictionary)
    import pyarrow.compute as pc

    values = columns["values"]
    flat: list[Any] | None = None
    if hint is None:  # find out what the writer would have known
        flat = list(itertools.chain.from_iterable(map(dict.values, values)))
        floats = set(map(type, flat)) <= {float}
        hint = MetricsHint(floats, uniform_keys(values) if floats else None)
    all_floats, keys = hint.all_floats, hint.keys
    if all_floats and keys is not None:
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
    hint: MetricsHint | None = None,
    dictionary: bool = False,
) -> pa.Table:
    """An Arrow table (schema `SCHEMAS[stream]`) of a batch of records, in memory or
    decoded.

    `hint`: what the caller knows of a metrics batch (None: found out here); all floats
    allow a conversion in C++ that keeps no per-value kinds, and uniform keys one that
    reads the values a key at a time.
    `dictionary`: a table of `SEAL_SCHEMAS[stream]`, for sealing.

    Raises `pa.ArrowException`/`TypeError`/`ValueError` if a record holds values of the
    wrong type; `safe_table` isolates such records.
    """
    if not record_count(columns):
        return (SEAL_SCHEMAS if dictionary else SCHEMAS)[stream].empty_table()
    if stream == METRICS:
        return _metrics_table(writer, columns, hint, dictionary)
    return _columns_table(stream, writer, columns)


def repeat_each(values: Sequence[str], counts: Sequence[int]) -> pa.Array:
    """A string column holding values[i] counts[i] times, in order."""
    kept = [(value, count) for value, count in zip(values, counts, strict=True) if count]
    if not kept:
        return pa.array([], pa.string())
    ends = list(itertools.accumulate(count for _, count in kept))
    if not _compute_pays(ends[-1]):
        repeated = (itertools.repeat(value, count) for value, count in kept)
        return pa.array(itertools.chain.from_iterable(repeated), pa.string(), size=ends[-1])
    import pyarrow.compute as pc  # made in C++

    encoded = pa.RunEndEncodedArray.from_arrays(
        pa.array(ends, pa.int64()), pa.array([v for v, _ in kept], pa.string())
    )
    decoded: pa.Array = pc.run_end_decode(encoded)
    return decoded


def table_of_batches(
    stream: str, columns: Columns, bounds: Sequence[int], writers: Sequence[str]
) -> tuple[pa.Table, list[int]]:
    """Batches of records laid end to end in `columns` (batch i: records bounds[i] up
    to bounds[i + 1], written by writers[i]) as one table, the rows of each batch
    together and in order, and how many rows each batch has.

    One conversion for the small segments of many runs: each one's own costs ~100 µs
    whatever its size, most of what reading a short finished run costs. Raises as
    `table_from_columns` does (the caller converts the batches one by one instead)."""
    if stream == METRICS:
        keys = list(itertools.accumulate(map(len, columns["values"]), initial=0))
        counts = [keys[end] - keys[start] for start, end in itertools.pairwise(bounds)]
    else:
        counts = [end - start for start, end in itertools.pairwise(bounds)]
    table = table_from_columns(stream, "", columns)
    if table.num_rows != sum(counts):
        raise ValueError(f"{table.num_rows} rows of {sum(counts)} records' values")
    return table.set_column(1, SCHEMAS[stream].field(1), repeat_each(writers, counts)), counts


#: What a record of wrong values raises on its way to Arrow (OverflowError: an int
#: beyond 64 bits where the schema has int64, such as a `ts_ns` of 2**64 - 1).
BAD_VALUES: Final = (
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
    except BAD_VALUES:
        pass
    good: list[int] = []
    for index in range(record_count(columns)):
        try:
            table_from_columns(stream, writer, slice_columns(columns, index, index + 1))
        except BAD_VALUES as exc:
            problems.append(f"{where}: record {index + 1} has a value of the wrong type ({exc})")
        else:
            good.append(index)
    kept = {name: [values[i] for i in good] for name, values in columns.items()}
    return table_from_columns(stream, writer, kept)
