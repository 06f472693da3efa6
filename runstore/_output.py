"""Query results written for people and for scripts: table, csv, json, jsonl, parquet."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import IO, Any, Final

import duckdb
import orjson
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["FORMATS", "write_result"]

FORMATS: Final = ("table", "csv", "json", "jsonl", "parquet")


def _plain(value: Any) -> Any:
    """A value JSON can hold (nested values kept nested)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": JSON has no such numbers, null would lie
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, int) and abs(value) >= 2**63:
        return str(value)
    return value


def _cell(value: Any) -> str:
    """A value as one cell of text (csv, table)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    plain = _plain(value)
    if isinstance(plain, dict | list):
        return orjson.dumps(plain).decode()
    return str(plain)


def _rows_json(columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows]


def write_result(
    relation: duckdb.DuckDBPyRelation,
    fmt: str,
    out: IO[bytes],
    *,
    max_rows: int = 0,
    console: Console | None = None,
) -> int:
    """Write a query's result to `out` in `fmt`; returns the number of rows.

    `max_rows` (table only) caps the rows shown, with a line saying how many more.
    """
    if fmt == "parquet":
        table = relation.to_arrow_table()
        pq.write_table(table, out, compression="zstd")
        return int(table.num_rows)
    columns = list(relation.columns)
    rows = relation.fetchall()
    if fmt == "json":
        out.write(orjson.dumps(_rows_json(columns, rows), option=orjson.OPT_INDENT_2) + b"\n")
    elif fmt == "jsonl":
        for row in _rows_json(columns, rows):
            out.write(orjson.dumps(row) + b"\n")
    elif fmt == "csv":
        text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        writer = csv.writer(text)
        writer.writerow(columns)
        writer.writerows([_cell(v) for v in row] for row in rows)
        text.detach()
    elif fmt == "table":
        _write_table(columns, relation.types, rows, max_rows, console)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    return len(rows)


def _write_table(
    columns: list[str],
    types: Sequence[Any],
    rows: list[tuple[Any, ...]],
    max_rows: int,
    console: Console | None,
) -> None:
    table = Table(show_lines=False)
    numeric = ("INTEGER", "BIGINT", "DOUBLE", "FLOAT", "DECIMAL", "HUGEINT", "SMALLINT")
    for name, kind in zip(columns, types, strict=True):
        right = str(kind).startswith(numeric)
        table.add_column(name, justify="right" if right else "left")
    shown = rows if not max_rows else rows[:max_rows]
    for row in shown:
        table.add_row(*(Text(_cell(v)) for v in row))  # values are not markup
    target = console or Console()
    target.print(table)
    if len(shown) < len(rows):
        target.print(
            f"[dim]{len(rows)} rows, {len(shown)} shown; use --max-rows 0, a LIMIT, "
            "or --format csv|json to see them all[/]"
        )
    else:
        target.print(f"[dim]{len(rows)} row{'s' if len(rows) != 1 else ''}[/]")
