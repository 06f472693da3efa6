"""Records of every stream for the tests of the segment codec (jsonl, tables,
segments): hypothesis strategies, encoders, and comparisons that hold NaN equal."""

from __future__ import annotations

import math

import orjson
import pyarrow as pa
from hypothesis import strategies as st

from runstore.format import EVENTS, METRICS, PROGRESS
from runstore.jsonl import (
    Columns,
    JsonText,
    columns_of_records,
    encode_lines,
)

#: Any finite float (a strategy).
finite = st.floats(allow_nan=False, allow_infinity=False)
metric_values = st.one_of(
    st.floats(),  # NaN and infinities included
    st.integers(min_value=-(2**80), max_value=2**80),
    st.booleans(),
    st.text(max_size=8),
    st.none(),
    st.lists(st.integers(-5, 5), max_size=3),
)
categories = st.one_of(st.none(), st.text(min_size=1, max_size=6))


def encode_columns(stream: str, columns: Columns, *, finite: bool = False) -> bytes:
    return b"".join(encode_lines(stream, columns, finite=finite))


@st.composite
def metric_records(draw: st.DrawFn) -> list[tuple[object, ...]]:
    count = draw(st.integers(0, 20))
    records = []
    for seq in range(1, count + 1):
        values = draw(st.dictionaries(st.text(min_size=1, max_size=5), metric_values, max_size=4))
        stored = {
            k: JsonText(orjson.dumps(v)) if isinstance(v, list) else v for k, v in values.items()
        }
        records.append((1_700_000_000_000_000_000 + seq, seq, draw(categories), stored))
    return records


def metrics_columns(records: list[tuple[object, ...]]) -> Columns:
    return columns_of_records(METRICS, records)


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b and type(a) is type(b)


def same_table(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and rows, NaN equal to NaN."""
    rows_a, rows_b = a.to_pylist(), b.to_pylist()
    return (
        a.schema == b.schema
        and len(rows_a) == len(rows_b)
        and all(same(x[name], y[name]) for x, y in zip(rows_a, rows_b, strict=True) for name in x)
    )


def progress_record(seq: int) -> tuple[object, ...]:
    return (seq * 1000, seq, "train", float(seq), 100.0, float(seq), 0.5, 1.0, "running", None)


def progress_line(seq: int) -> bytes:
    return encode_columns(PROGRESS, columns_of_records(PROGRESS, [progress_record(seq)]))


def events_line(record: tuple[object, ...]) -> bytes:
    return encode_columns(EVENTS, columns_of_records(EVENTS, [record]))
