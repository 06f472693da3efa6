"""Query results as `runstore sql` writes them: every format holds the same rows."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from runstore._output import FORMATS, write_result

TABLE = pa.table(
    {
        "run": ["a", "b", None],
        "value": [0.5, math.nan, 2.0],
        "when": pa.array([datetime(2026, 1, 2, tzinfo=UTC)] * 3, pa.timestamp("us", tz="UTC")),
        "tags": pa.array([{"k": 1}, {"k": 2}, None], pa.struct([("k", pa.int64())])),
    }
)


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    return duckdb.connect().from_arrow(table).fetchall()


def _written(fmt: str, table: pa.Table = TABLE, **options: Any) -> bytes:
    out = io.BytesIO()
    assert write_result(table, fmt, out, _rows, **options) == table.num_rows
    return out.getvalue()


def test_csv_has_a_header_and_one_line_a_row() -> None:
    rows = list(csv.reader(io.StringIO(_written("csv").decode())))
    assert rows[0] == ["run", "value", "when", "tags"]
    assert [row[0] for row in rows[1:]] == ["a", "b", ""]
    assert rows[2][1] == "nan"


def test_json_and_jsonl_hold_the_same_rows() -> None:
    whole = json.loads(_written("json"))
    lines = [json.loads(line) for line in _written("jsonl").splitlines()]
    assert whole == lines and len(lines) == 3
    assert lines[0]["run"] == "a" and lines[0]["tags"] == {"k": 1} and lines[2]["run"] is None


def test_parquet_round_trips_the_table() -> None:
    back = pq.read_table(io.BytesIO(_written("parquet")))
    assert back.schema == TABLE.schema
    assert str(back.to_pylist()) == str(TABLE.to_pylist())  # NaN as NaN


def test_a_table_says_when_rows_were_left_out() -> None:
    console = Console(file=io.StringIO(), width=120)
    _written("table", truncated=True, console=console)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "value" in shown and "0.5" in shown
    assert "the first 3 rows; more were not fetched" in shown


def test_a_large_result_is_written_in_chunks_with_every_row() -> None:
    big = pa.table({"n": list(range(25_001))})
    assert len(_written("jsonl", big).splitlines()) == 25_001
    assert len(_written("csv", big).splitlines()) == 25_002


def test_an_unknown_format_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown format 'xml'; choose from " + ", ".join(FORMATS)):
        _written("xml")
