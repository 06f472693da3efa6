"""`runstore sql`: one query, a script from stdin, or the interactive prompt."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from .._durable import replacing
from .._output import FORMATS, write_result
from ..errors import QueryError, RunstoreError
from ._base import _console, main, reads_only, settled

if TYPE_CHECKING:
    from rich.console import Console

    from ..query import QueryResult, Store

_REPL_HELP = """\
End a query with ';' (it may span lines). Views: runs, writers, events, messages,
dev_events, progress, metrics, latest_metrics, latest_progress (docs/sql.md).
  .tables           list the views
  .schema VIEW      columns and types of a view
  .format FORMAT    table, csv, json or jsonl
  .quit             leave (or Ctrl-D)"""


def _print_query(
    store: Store, query: str, fmt: str, out: IO[bytes], max_rows: int, console: Console | None
) -> None:
    """Run a query and print its result."""
    _print_result(store, _run_query(store, query, fmt, max_rows), fmt, out, console)


def _run_query(store: Store, query: str, fmt: str, max_rows: int) -> QueryResult:
    """A query's result; a table fetches no more rows than it shows."""
    return store.query(query, max_rows=max_rows if fmt == "table" and max_rows else None)


def _print_result(
    store: Store, result: QueryResult, fmt: str, out: IO[bytes], console: Console | None
) -> None:
    if not result.table.num_columns:  # a statement without a result
        return
    write_result(
        result.table,
        fmt,
        out,
        lambda table: store.connection.from_arrow(table).fetchall(),
        truncated=result.truncated,
        console=console,
    )
    if result.truncated and fmt != "table" and store.limits is not None:
        click.echo(
            f"warning: only the first {result.table.num_rows:,} rows were written: the "
            "row cap of confined SQL; add a LIMIT or a WHERE",
            err=True,
        )


def _dot_command(store: Store, line: str, state: dict[str, Any], console: Console) -> bool:
    """Run one `.command` of the prompt; False to leave."""
    from ..query import VIEWS

    command, _, argument = line.partition(" ")
    argument = argument.strip().rstrip(";")
    if command in (".quit", ".exit"):
        return False
    if command == ".tables":
        console.print("  ".join(VIEWS))
    elif command == ".schema" and argument in VIEWS:
        _print_query(store, f"DESCRIBE {argument}", "table", sys.stdout.buffer, 0, console)
    elif command == ".format" and argument in FORMATS and argument != "parquet":
        state["format"] = argument
    else:
        console.print(_REPL_HELP, markup=False)
    return True


def _repl(store: Store, fmt: str, max_rows: int, console: Console) -> None:
    with contextlib.suppress(ImportError):  # not on every platform
        import readline  # noqa: F401  (line editing and history for input())
    count = store.connection.sql("SELECT count(*) FROM runs").fetchall()[0][0]
    console.print(f"runstore SQL over {count} runs in {store.root}. Type .help for help.")
    state: dict[str, Any] = {"format": "table" if fmt == "parquet" else fmt}
    lines: list[str] = []
    while True:
        try:
            line = input("...> " if lines else "sql> ")
        except EOFError:
            break
        except KeyboardInterrupt:
            lines = []
            console.print()
            continue
        if not lines and line.strip().startswith("."):
            if not _dot_command(store, line.strip(), state, console):
                break
            continue
        lines.append(line)
        if line.rstrip().endswith(";"):
            query, lines = "\n".join(lines), []
            try:
                _print_query(store, query, state["format"], sys.stdout.buffer, max_rows, console)
            except RunstoreError as exc:
                console.print(f"error: {exc}", style="red", markup=False)


@main.command("sql")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.argument("query", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="How to print the result.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the result to this file instead of stdout; the file is replaced only "
    "once the whole result is written.",
)
@click.option(
    "--max-rows",
    default=100,
    show_default=True,
    help="Rows shown in a table (0: all); other formats print every row.",
)
@click.option(
    "--confined",
    is_flag=True,
    help="Allow only read-only queries of the store, under a time, memory and row limit "
    "(as the viewer does; docs/sql.md).",
)
@click.option(
    "--interactive",
    "-i",
    is_flag=True,
    help="Prompt for queries even when stdin is not a terminal.",
)
@click.option(
    "--no-archive",
    is_flag=True,
    help="Do not archive finished runs in the background (by default, 20 or more finished "
    "runs outside ROOT's archive start `runstore compact` in a process of its own).",
)
@reads_only
def sql_command(
    root: Path,
    query: str | None,
    fmt: str,
    output: Path | None,
    max_rows: int,
    confined: bool,
    interactive: bool,
    no_archive: bool,
) -> None:
    """Ask SQL questions of every run under ROOT (DuckDB SQL).

    Views: runs, writers, events, messages, dev_events, progress, metrics,
    latest_metrics, latest_progress; docs/sql.md lists their columns. Without QUERY, prompts for
    queries on a terminal, or runs the queries read from stdin.

    Example: runstore sql sample-runs "SELECT run_id, status, duration FROM runs"
    """
    import warnings

    from ..errors import RunstoreWarning
    from ..query import Store

    if fmt == "parquet" and output is None and sys.stdout.isatty():
        raise click.UsageError("Parquet is binary: pass --output FILE or redirect stdout")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunstoreWarning)  # printed by _report_look
        store = Store(root, confined=confined, archive=not no_archive)
    with store, warnings.catch_warnings():
        warnings.simplefilter("ignore", RunstoreWarning)
        if query is not None:
            # The query's own look at the root (it reads only the streams the query
            # needs), then what that look found.
            try:
                result = _run_query(store, query, fmt, max_rows)
            finally:
                _report_look(store, root)
            with _opened(output) as out:
                _print_result(store, result, fmt, out, _table_console(fmt))
            return
        _report_look(store, root)
        settled()  # a prompt or a script goes on for a while
        if interactive or sys.stdin.isatty():
            _repl(store, fmt, max_rows, _console())
            return
        with _opened(output) as out:
            script = sys.stdin.read()
            try:
                statements = store.connection.extract_statements(script)
            except Exception as exc:  # duckdb.ParserException
                raise QueryError(f"SQL error: {str(exc).strip()}") from None
            console = _table_console(fmt)
            for statement in statements:
                _print_query(store, statement.query, fmt, out, max_rows, console)


@contextlib.contextmanager
def _opened(output: Path | None) -> Iterator[IO[bytes]]:
    """stdout, or `--output`, which is replaced only by a whole result: a query that
    fails leaves it as it was."""
    if output is None:
        yield sys.stdout.buffer
        return
    with replacing(output, durable=False) as file:
        yield file


def _table_console(fmt: str) -> Console | None:
    return _console() if fmt == "table" else None  # rich only for a table


def _report_look(store: Store, root: Path) -> None:
    """What the store's look at the root found: damaged runs, runs to archive."""
    from ..query import COMPACT_HINT_RUNS

    for problem in store.problems:
        click.echo(f"warning: {problem}", err=True)
    pending = store.pending_compaction
    if store.started_archiving:
        click.echo(
            f"note: archiving {pending} finished runs in the background; the next queries "
            "over them are faster (--no-archive: do not)",
            err=True,
        )
    elif pending >= COMPACT_HINT_RUNS:
        click.echo(
            f"hint: {pending} finished runs are read from their own "
            f"folders; `runstore compact {root}` makes queries over them faster",
            err=True,
        )
