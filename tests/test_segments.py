"""Segment files: records round-trip through a segment; bad lines and files are reported."""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import given, settings

from runstore.format import EVENTS, METRICS, PROGRESS, SCHEMAS
from runstore.jsonl import (
    JsonText,
    decode_lines,
    header_line,
)
from runstore.reader import decode_metric
from runstore.segments import read_segment
from runstore.tables import table_from_columns

from .records import (
    encode_columns,
    events_line,
    metric_records,
    metrics_columns,
    progress_line,
    same,
    same_table,
)


@given(metric_records())
@settings(max_examples=150, deadline=None)
def test_metrics_round_trip_through_jsonl_with_their_types(
    records: list[tuple[object, ...]],
) -> None:
    data = header_line(METRICS, "w1", 1) + encode_columns(METRICS, metrics_columns(records))
    decoded = decode_lines(METRICS, data, where="seg")
    assert decoded.problems == [] and decoded.torn_bytes == 0
    table = table_from_columns(METRICS, "w1", decoded.columns)
    assert table.schema == SCHEMAS[METRICS]
    # In memory (the writer's own conversion) and decoded from the line: the same table.
    assert same_table(table, table_from_columns(METRICS, "w1", metrics_columns(records)))
    got = [decode_metric(r["value"], r["kind"], r["text"]) for r in table.to_pylist()]
    expected = [
        orjson.loads(bytes(v)) if isinstance(v, JsonText) else v
        for r in records
        for v in r[3].values()  # type: ignore[attr-defined]
    ]
    assert len(got) == len(expected)
    assert all(same(e, g) for e, g in zip(expected, got, strict=True))
    keys = [r["key"] for r in table.to_pylist()]
    assert keys == [k for r in records for k in r[3]]  # type: ignore[attr-defined]


def test_garbage_line_is_reported_with_its_offset_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "w-000001.jsonl"
    first = events_line((1000, 1, "a", "info", None, {"x": 1}, None, None))
    last = events_line((3000, 3, "c", "info", None, {}, None, None))
    path.write_bytes(header_line(EVENTS, "w", 1) + first + b"{not json\n" + b"[[1]]\n" + last)
    table, problems = read_segment(EVENTS, path, "w")
    assert table.column("event").to_pylist() == ["a", "c"]
    assert len(problems) == 2
    assert "not valid JSON" in problems[0] and str(path) in problems[0]
    assert "not a line of events records" in problems[1]


def test_record_with_wrong_types_is_isolated(tmp_path: Path) -> None:
    path = tmp_path / "w-000001.jsonl"
    bad = progress_line(2).replace(b'"current":[2.0]', b'"current":["many"]')
    assert bad != progress_line(2)
    path.write_bytes(progress_line(1) + bad + progress_line(3))
    table, problems = read_segment(PROGRESS, path, "w")
    assert table.column("seq").to_pylist() == [1, 3]
    assert len(problems) == 1 and "wrong type" in problems[0]


def test_unreadable_parquet_segment_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "w-000001.parquet"
    path.write_bytes(b"PAR1 definitely not parquet")
    table, problems = read_segment(METRICS, path, "w")
    assert table.num_rows == 0 and "unreadable Parquet" in problems[0]
