"""The segment codec: records round-trip, torn tails read as a prefix, garbage is reported."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from runstore.format import EVENTS, METRICS, PROGRESS, SCHEMAS
from runstore.reader import decode_metric
from runstore.segments import (
    JsonText,
    decode_lines,
    encode_records,
    header_line,
    read_segment,
    table_from_records,
)

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


@st.composite
def metric_records(draw: st.DrawFn) -> list[tuple[object, ...]]:
    count = draw(st.integers(0, 20))
    records = []
    for seq in range(1, count + 1):
        values = draw(st.dictionaries(st.text(min_size=1, max_size=5), metric_values, max_size=4))
        stored = tuple(
            JsonText(orjson.dumps(v)) if isinstance(v, list) else v for v in values.values()
        )
        records.append(
            (1_700_000_000_000_000_000 + seq, seq, draw(categories), tuple(values), stored)
        )
    return records


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b and type(a) is type(b)


@given(metric_records())
@settings(max_examples=150, deadline=None)
def test_metrics_round_trip_through_jsonl_with_their_types(
    records: list[tuple[object, ...]],
) -> None:
    data = header_line(METRICS, "w1", 1) + encode_records(METRICS, records)
    decoded = decode_lines(METRICS, data, where="seg")
    assert decoded.problems == [] and decoded.torn_bytes == 0
    table = table_from_records(METRICS, "w1", decoded.rows)
    assert table.schema == SCHEMAS[METRICS]
    got = [decode_metric(r["value"], r["kind"], r["text"]) for r in table.to_pylist()]
    expected = [
        orjson.loads(bytes(v)) if isinstance(v, JsonText) else v for r in records for v in r[4]
    ]
    assert len(got) == len(expected)
    assert all(_same(e, g) for e, g in zip(expected, got, strict=True))
    keys = [r["key"] for r in table.to_pylist()]
    assert keys == [k for r in records for k in r[3]]


@given(st.lists(st.tuples(finite, finite), max_size=30))
@settings(max_examples=50, deadline=None)
def test_all_float_fast_path_matches_exact_path(pairs: list[tuple[float, float]]) -> None:
    records = [(i, i, "c", ("a", "b"), pair) for i, pair in enumerate(pairs)]
    fast = table_from_records(METRICS, "w", records, all_floats=True)
    exact = table_from_records(METRICS, "w", records, all_floats=False)
    order = [("seq", "ascending"), ("key", "ascending")]
    assert fast.sort_by(order).equals(exact.sort_by(order))


def _progress(seq: int) -> tuple[object, ...]:
    return (seq * 1000, seq, "train", float(seq), 100.0, float(seq), 0.5, 1.0, "running", None)


@given(st.integers(1, 30), st.data())
@settings(max_examples=100, deadline=None)
def test_any_torn_tail_reads_as_a_prefix(count: int, data: st.DataObject) -> None:
    lines = [encode_records(PROGRESS, [_progress(seq)]) for seq in range(1, count + 1)]
    blob = header_line(PROGRESS, "w", 1) + b"".join(lines)
    cut = data.draw(st.integers(0, len(blob)))
    decoded = decode_lines(PROGRESS, blob[:cut])
    seqs = [row[1] for row in decoded.rows]
    assert seqs == list(range(1, len(seqs) + 1)), "a prefix, in order, nothing invented"
    complete = blob[:cut].count(b"\n") - 1  # minus the header line
    assert len(seqs) == max(complete, 0)
    assert decoded.problems == []
    assert decoded.end + decoded.torn_bytes == cut


@given(st.binary(max_size=200))
@settings(max_examples=200, deadline=None)
def test_garbage_tail_never_hides_the_good_lines_and_never_raises(garbage: bytes) -> None:
    good = header_line(PROGRESS, "w", 1) + encode_records(PROGRESS, [_progress(1), _progress(2)])
    decoded = decode_lines(PROGRESS, good + garbage, where="seg")
    assert [row[1] for row in decoded.rows[:2]] == [1, 2]
    table = table_from_records(PROGRESS, "w", decoded.rows[:2])
    assert table.num_rows == 2


def test_garbage_line_is_reported_with_its_offset_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "w-000001.jsonl"
    first = encode_records(EVENTS, [(1000, 1, "a", "info", None, {"x": 1}, None, None)])
    last = encode_records(EVENTS, [(3000, 3, "c", "info", None, {}, None, None)])
    path.write_bytes(header_line(EVENTS, "w", 1) + first + b"{not json\n" + b"[[1]]\n" + last)
    table, problems = read_segment(EVENTS, path, "w")
    assert table.column("event").to_pylist() == ["a", "c"]
    assert len(problems) == 2
    assert "not valid JSON" in problems[0] and str(path) in problems[0]
    assert "not a line of events records" in problems[1]


def test_record_with_wrong_types_is_isolated(tmp_path: Path) -> None:
    path = tmp_path / "w-000001.jsonl"
    bad = b'[[2000,2,"train","many",100.0,1.0,0.1,null,"running",null]]\n'
    path.write_bytes(
        encode_records(PROGRESS, [_progress(1)]) + bad + encode_records(PROGRESS, [_progress(3)])
    )
    table, problems = read_segment(PROGRESS, path, "w")
    assert table.column("seq").to_pylist() == [1, 3]
    assert len(problems) == 1 and "wrong type" in problems[0]


def test_newer_segment_header_is_reported() -> None:
    header = orjson.dumps({"runstore": 99, "stream": "events"}) + b"\n"
    decoded = decode_lines(EVENTS, header, where="seg")
    assert "format version 99" in decoded.problems[0]


def test_event_data_is_json_text_and_timestamps_are_utc_microseconds() -> None:
    record = (
        1_700_000_000_123_456_789,
        7,
        "ev",
        "info",
        "step",
        JsonText(b'{"a":[1,2]}'),
        None,
        None,
    )
    decoded = decode_lines(EVENTS, encode_records(EVENTS, [record]))
    table = table_from_records(EVENTS, "w", decoded.rows)
    row = table.to_pylist()[0]
    assert orjson.loads(row["data"]) == {"a": [1, 2]}
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert row["ts"].timestamp() == 1_700_000_000.123456


def test_unreadable_parquet_segment_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "w-000001.parquet"
    path.write_bytes(b"PAR1 definitely not parquet")
    table, problems = read_segment(METRICS, path, "w")
    assert table.num_rows == 0 and "unreadable Parquet" in problems[0]


@given(st.lists(st.dictionaries(st.sampled_from("abcd"), finite, min_size=1), max_size=20))
@settings(max_examples=50, deadline=None)
def test_all_float_batches_with_varying_keys_match_the_exact_path(
    maps: list[dict[str, float]],
) -> None:
    records = [
        (i, i, None if i % 3 else "c", tuple(m), tuple(m.values())) for i, m in enumerate(maps)
    ]
    fast = table_from_records(METRICS, "w", records, all_floats=True)
    exact = table_from_records(METRICS, "w", records, all_floats=False)
    order = [("seq", "ascending"), ("key", "ascending")]
    assert fast.sort_by(order).equals(exact.sort_by(order))
