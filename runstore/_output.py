"""Query results written for people and for scripts: table, csv, json, jsonl, parquet."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any, Final

import orjson
import pyarrow as pa

from .errors import QueryError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["FORMATS", "RowsOf", "write_result"]

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


#: Rows converted to Python at a time: a large csv or jsonl result is streamed.
_CHUNK_ROWS: Final = 10_000

#: Python rows of an Arrow table, as DuckDB's own conversion makes them.
RowsOf = Callable[[pa.Table], list[tuple[Any, ...]]]


def write_result(
    table: pa.Table,
    fmt: str,
    out: IO[bytes],
    rows_of: RowsOf,
    *,
    truncated: bool = False,
    console: Console | None = None,
) -> int:
    """Write a query's result to `out` in `fmt`; returns the number of rows written.

    `truncated`: the table holds the first rows of a larger result (a table then says
    so under its rows).
    """
    if fmt == "parquet":
        import pyarrow.parquet as pq  # each import here is paid only by its format

        try:
            pq.write_table(table, out, compression="zstd")
        except pa.ArrowNotImplementedError as exc:  # before a byte is written
            raise QueryError(
                f"the result cannot be written as Parquet: {exc}; cast that column in the "
                "query (to VARCHAR, say) or choose another format"
            ) from None
        return int(table.num_rows)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    columns = table.column_names
    if fmt == "json":
        rows = rows_of(table)
        out.write(orjson.dumps(_rows_json(columns, rows), option=orjson.OPT_INDENT_2) + b"\n")
    elif fmt == "table":
        _write_table(table.schema, rows_of(table), truncated, console)
    else:
        text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        writer = csv.writer(text)
        if fmt == "csv":
            writer.writerow(columns)
        for start in range(0, table.num_rows, _CHUNK_ROWS):
            chunk = rows_of(table.slice(start, _CHUNK_ROWS))
            if fmt == "jsonl":
                out.write(b"".join(orjson.dumps(r) + b"\n" for r in _rows_json(columns, chunk)))
            else:
                writer.writerows([_cell(v) for v in row] for row in chunk)
        text.detach()
    return int(table.num_rows)


def _numeric(kind: pa.DataType) -> bool:
    types = pa.types
    return bool(types.is_integer(kind) or types.is_floating(kind) or types.is_decimal(kind))


def _write_table(
    schema: pa.Schema, rows: list[tuple[Any, ...]], truncated: bool, console: Console | None
) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(show_lines=False)
    for column in schema:
        table.add_column(column.name, justify="right" if _numeric(column.type) else "left")
    for row in rows:
        table.add_row(*(Text(_cell(v)) for v in row))  # values are not markup
    target = console or Console()
    target.print(table)
    if truncated:
        target.print(
            f"[dim]the first {len(rows)} rows; more were not fetched: use --max-rows 0, "
            "a LIMIT, or --format csv|json to see them all[/]"
        )
    else:
        target.print(f"[dim]{len(rows)} row{'s' if len(rows) != 1 else ''}[/]")
