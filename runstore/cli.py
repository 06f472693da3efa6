"""The command line: a thin layer over the library (`runstore --help`)."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.table import Table

from ._output import FORMATS, write_result
from ._tailview import STATUS_STYLES, clock, log_line
from ._version import __version__
from .errors import QueryError, RunstoreError
from .format import DEV_EVENTS
from .reader import RunData, RunInfo, list_runs, read_run

if TYPE_CHECKING:
    from .query import Store

__all__ = ["main"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _console() -> Console:
    # Piped output has no terminal width: give tables room rather than folding cells.
    width = None if sys.stdout.isatty() else 160
    return Console(highlight=False, soft_wrap=False, width=width)


def _json_out(data: Any) -> None:
    option = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    sys.stdout.write(orjson.dumps(data, option=option, default=str).decode() + "\n")


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _run_summary(run: RunInfo) -> dict[str, Any]:
    manifest = run.manifest
    return {
        "run_id": manifest.run_id,
        "path": str(run.path),
        "status": run.status,
        "plugin": manifest.plugin,
        "action": manifest.action,
        "job_id": manifest.job_id,
        "started_at": manifest.started_at.isoformat(),
        "ended_at": manifest.ended_at.isoformat() if manifest.ended_at else None,
        "duration_s": run.duration,
        "error": manifest.error,
        "writers": len(run.writers),
        "lost_records": run.lost_records,
    }


class _Group(click.Group):
    """Turns runstore's own errors into one clear line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RunstoreError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


def _json_option(text: str = "Print JSON for scripts.") -> Callable[[_F], _F]:
    """`--json`, the same flag on every command that can print for scripts."""
    return click.option("--json", "as_json", is_flag=True, help=text)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="runstore")
def main() -> None:
    """runstore: file-based run tracking for plugin jobs.

    Runs are directories under a root folder; these commands read them.
    """


@main.command("ls")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@_json_option()
def ls_command(root: Path, as_json: bool) -> None:
    """List the runs under ROOT, oldest first.

    Example: runstore ls sample-runs
    """
    problems: list[str] = []
    runs = list_runs(root, problems)
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        _json_out([_run_summary(run) for run in runs])
        return
    table = Table(title=f"{len(runs)} runs in {root}")
    for column in ("run", "status", "plugin", "action", "job", "started", "duration"):
        table.add_column(column)
    for run in runs:
        style = STATUS_STYLES.get(run.status, "")
        table.add_row(
            run.run_id,
            f"[{style}]{run.status}[/]",
            run.manifest.plugin or "",
            run.manifest.action or "",
            run.manifest.job_id or "",
            _when(run.manifest.started_at),
            clock(run.duration),
        )
    _console().print(table)


def _show_json(run: RunData, dev: bool) -> dict[str, Any]:
    return {
        **_run_summary(run),
        "manifest": run.manifest.model_dump(mode="json"),
        "current_step": run.current_step(),
        "overall_progress": run.overall_progress(),
        "progress": [
            {k: v for k, v in row.items() if k not in ("writer",)} for row in run.latest_progress()
        ],
        "metrics": run.latest_metrics(),
        "messages": run.messages(dev=dev),
        "writers": [w.model_dump(mode="json") for w in run.writers],
        "problems": run.problems,
    }


@main.command("show")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@_json_option()
@click.option("--dev", is_flag=True, help="Include developer events (log_dev_event).")
@click.option(
    "--messages",
    "message_count",
    default=20,
    show_default=True,
    help="How many of the latest messages to show (0: all).",
)
def show_command(run_dir: Path, as_json: bool, dev: bool, message_count: int) -> None:
    """Show one run: status, progress per step, latest metrics, messages.

    Example: runstore show sample-runs/demo-train
    """
    run = read_run(run_dir)
    if as_json:
        _json_out(_show_json(run, dev))
        return
    console = _console()
    manifest = run.manifest
    style = STATUS_STYLES.get(run.status, "")
    console.print(
        f"[bold]{manifest.run_id}[/]  [{style}]{run.status}[/]  "
        f"{manifest.plugin or ''} {manifest.action or ''}  job {manifest.job_id or '-'}"
    )
    console.print(
        f"started {_when(manifest.started_at)}  duration {clock(run.duration)}  "
        f"writers {len(run.writers)}  path {run.path}"
    )
    if manifest.error:
        console.print(f"[red]error: {manifest.error}[/]")
    if run.lost_records:
        console.print(f"[red]{run.lost_records} records lost to storage faults[/]")
    overall, step = run.overall_progress(), run.current_step()
    if overall is not None:
        console.print(f"overall {overall:.1f}%" + (f"  current step {step}" if step else ""))
    progress = Table(title="progress")
    for column in ("category", "current/total", "percent", "elapsed", "remaining", "status"):
        progress.add_column(column)
    for row in run.latest_progress():
        progress.add_row(
            row["category"] or "(default)",
            f"{row['current']:g}/{row['total']:g}",
            f"{row['percent']:.1f}%",
            clock(row["elapsed"]),
            clock(row["time_remaining"]),
            row["status"],
        )
    console.print(progress)
    metrics = Table(title="latest metrics")
    for column in ("category", "key", "value"):
        metrics.add_column(column)
    for category, values in run.latest_metrics().items():
        for key, value in values.items():
            text = f"{value:.6g}" if isinstance(value, float) else str(value)
            metrics.add_row(category or "(default)", key, text)
    console.print(metrics)
    if len(run.writers) > 1:  # a run of several processes (Ray workers, subprocesses)
        console.print(_writers_table(run))
    messages = run.messages(dev=dev)
    if message_count:
        messages = messages[-message_count:]
    for message in messages:
        console.print(log_line(message["ts"], None, message["level"], message["text"]))
    for problem in run.problems:
        console.print(f"[yellow]problem: {problem}[/]")


def _writers_table(run: RunData) -> Table:
    writers = Table(title="writers")
    for column in ("writer", "host", "pid", "status", "records", "labels"):
        writers.add_column(column)
    for writer in run.writers:
        labels = ", ".join(f"{key}={value}" for key, value in sorted(writer.labels.items()))
        writers.add_row(
            writer.writer_id,
            writer.host,
            str(writer.pid),
            writer.status,
            str(writer.records_written),
            labels,
            style="yellow" if writer.lost_records else None,
        )
    return writers


_REPL_HELP = """\
End a query with ';' (it may span lines). Views: runs, writers, events, messages,
dev_events, progress, metrics, latest_metrics, latest_progress (docs/sql.md).
  .tables           list the views
  .schema VIEW      columns and types of a view
  .format FORMAT    table, csv, json or jsonl
  .quit             leave (or Ctrl-D)"""


def _print_query(
    store: Store, query: str, fmt: str, out: IO[bytes], max_rows: int, console: Console
) -> None:
    """Run a query and print its result; a table fetches no more rows than it shows."""
    result = store.query(query, max_rows=max_rows if fmt == "table" and max_rows else None)
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
    from .query import VIEWS

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
    help="Write the result to this file instead of stdout.",
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

    from .compaction import BACKGROUND_RUNS, compact_in_background
    from .errors import RunstoreWarning
    from .query import COMPACT_HINT_RUNS, Store

    if fmt == "parquet" and output is None and sys.stdout.isatty():
        raise click.UsageError("Parquet is binary: pass --output FILE or redirect stdout")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunstoreWarning)  # printed below, once each
        store = Store(root, confined=confined)
    for problem in store.problems:
        click.echo(f"warning: {problem}", err=True)
    pending = store.pending_compaction
    if not no_archive and pending >= BACKGROUND_RUNS and compact_in_background(root):
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
    console = _console()
    with store, warnings.catch_warnings():
        warnings.simplefilter("ignore", RunstoreWarning)
        if query is None and (interactive or sys.stdin.isatty()):
            _repl(store, fmt, max_rows, console)
            return
        out = open(output, "wb") if output is not None else sys.stdout.buffer  # noqa: SIM115
        try:
            if query is not None:
                # One look at the root for the warnings above and the query.
                with store.snapshot(max_age=math.inf):
                    _print_query(store, query, fmt, out, max_rows, console)
                return
            script = sys.stdin.read()
            try:
                statements = store.connection.extract_statements(script)
            except Exception as exc:  # duckdb.ParserException
                raise QueryError(f"SQL error: {str(exc).strip()}") from None
            for statement in statements:
                _print_query(store, statement.query, fmt, out, max_rows, console)
        finally:
            if output is not None:
                out.close()


@main.command("compact")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--rebuild", is_flag=True, help="Start a new archive from the run folders alone.")
@_json_option()
def compact_command(root: Path, rebuild: bool, as_json: bool) -> None:
    """Merge the finished runs under ROOT into the archive that makes queries fast.

    The archive (ROOT/.runstore/archive) is derived from the run folders: safe to
    delete, rebuilt by this command. Running runs are left to be read live.

    Example: runstore compact sample-runs
    """
    from .compaction import compact

    report = compact(root, rebuild=rebuild)
    for problem in report.problems:
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        _json_out(report.__dict__)
        return
    click.echo(
        f"archived {report.added} runs, dropped {report.dropped} changed or deleted; "
        f"the archive holds {report.archived} runs in {report.parts} parts; "
        f"{report.live} running runs left live ({report.seconds:.2f} s)"
    )


@main.command("export")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder to write (must not exist, or be empty).",
)
@click.option(
    "--partition-by",
    default="date",
    show_default=True,
    help="Comma-separated hive partition keys: date, plugin, action; '' for none.",
)
@click.option("--overwrite", is_flag=True, help="Replace the folder if it exists.")
def export_command(root: Path, target: Path, partition_by: str, overwrite: bool) -> None:
    """Write the store under ROOT as hive-partitioned Parquet for Spark, Trino, Ray
    Data, pandas or DuckDB: one folder per table (runs, writers, events, progress, metrics).

    Example: runstore export sample-runs --to /tmp/runs-parquet
    """
    from .export import export_store

    keys = tuple(key.strip() for key in partition_by.split(",") if key.strip())
    rows = export_store(root, target, partition_by=keys, overwrite=overwrite)
    summary = ", ".join(f"{table} {count}" for table, count in rows.items())
    click.echo(f"wrote {target}: {summary} rows")


#: Exit codes of `runstore tail RUN` by how the run ended (1 and 2: errors, usage).
TAIL_EXIT_CODES = {"completed": 0, "failed": 3, "crashed": 4}
_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_ONLY = ("messages", "dev_events", "events", "progress", "metrics", "status")


def _age(text: str) -> timedelta | None:
    """An age such as 30s, 10m, 2h, 1d; None if `text` is not one."""
    unit = _SINCE_UNITS.get(text[-1:])
    if unit is None or not text[:-1].replace(".", "", 1).isdigit():
        return None
    return timedelta(seconds=float(text[:-1]) * unit)


def _since(text: str | None) -> datetime | None:
    """`--since`: an age (30s, 10m, 2h, 1d) or an ISO time."""
    if text is None:
        return None
    age = _age(text)
    if age is not None:
        return datetime.now(UTC) - age
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: give an age such as 30s, 10m, 2h, 1d, or an ISO time", param_hint="--since"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


def _wanted(only: set[str], dev: bool) -> Any:
    def wanted(record: Any) -> bool:
        if record.stream != "events":
            return record.stream == "status" or not only or record.stream in only
        event = record.data.get("event")
        if event in DEV_EVENTS:
            return dev or "dev_events" in only
        if event == "message":
            return not only or bool({"messages", "events"} & only)
        return not only or "events" in only

    return wanted


@main.command("tail")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@_json_option("One JSON record per line, for scripts.")
@click.option("--from-start", is_flag=True, help="Begin with every record already written.")
@click.option("--since", help="Begin with records of the last 30s, 10m, 2h, 1d (or an ISO time).")
@click.option(
    "--only",
    help=f"Comma-separated kinds to show: {', '.join(_ONLY)} (status lines always come).",
)
@click.option("--dev", is_flag=True, help="Include developer events (log_dev_event).")
@click.option(
    "--poll",
    is_flag=True,
    help="Poll the files instead of inotify (chosen by itself on network filesystems).",
)
def tail_command(
    path: Path,
    as_json: bool,
    from_start: bool,
    since: str | None,
    only: str | None,
    dev: bool,
    poll: bool,
) -> None:
    """Follow a run (or every run under a root) as it is written, until it ends.

    Following one run exits when it ends: 0 if it completed, 3 if it failed, 4 if it
    crashed, so scripts can wait on a job. Following a root goes on until Ctrl-C.

    Example: runstore tail sample-runs/demo-train --from-start --json
    """
    from .tail import Follower

    kinds = {kind.strip() for kind in (only or "").split(",") if kind.strip()}
    unknown = kinds - set(_ONLY)
    if unknown:
        raise click.BadParameter(
            f"{', '.join(sorted(unknown))}: choose from {', '.join(_ONLY)}", param_hint="--only"
        )
    follower = Follower(
        path, from_start=from_start, since=_since(since), polling=True if poll else None
    )
    wanted = _wanted(kinds, dev)
    status = None
    try:
        if as_json:
            shown = 0
            for record in follower:
                if record.stream == "status":
                    status = record.data["status"]
                if wanted(record):
                    line = orjson.dumps(record.to_json(), default=str, option=_JSON_LINE)
                    sys.stdout.write(line.decode() + "\n")
                    sys.stdout.flush()
                for problem in follower.problems[shown:]:
                    click.echo(f"warning: {problem}", err=True)
                shown = len(follower.problems)
        else:
            status = _tail_view(follower, path, from_start or since is not None, dev)
    except KeyboardInterrupt:
        sys.exit(130)
    if follower.single:
        sys.exit(TAIL_EXIT_CODES.get(status or "", 1))


_JSON_LINE = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _tail_view(follower: Any, path: Path, replay: bool, dev: bool) -> str | None:
    from ._tailview import TailView

    view = TailView(follower, _console(), dev=dev)
    if not replay:  # start from the runs as they are; what follows is new
        runs = (
            [read_run(path)]
            if follower.single
            else [read_run(info.path) for info in list_runs(path) if info.status == "running"]
        )
        view.load(runs)
    status: str | None = view.run()
    return status


@main.command("ui")
@click.argument(
    "root", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8417,  # viewer.server.DEFAULT_PORT, written here: the CLI loads no web stack
    show_default=True,
    help="Port to serve on; 0 picks a free one.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Another than the loopback makes every run readable from "
    "the network (a warning says so).",
)
@click.option(
    "--allow-host",
    "allowed_hosts",
    multiple=True,
    help="A host name requests may carry besides localhost (behind a proxy); repeatable.",
)
@click.option(
    "--no-archive",
    is_flag=True,
    help="Do not keep ROOT's archive (ROOT/.runstore/archive) up to date; for a root the "
    "viewer must not write to. Many finished runs are then slower to query.",
)
def ui_command(
    root: Path | None, port: int, host: str, allowed_hosts: tuple[str, ...], no_archive: bool
) -> None:
    """Serve the web viewer of ROOT on this machine until Ctrl-C: runs, progress, metric
    charts, messages and SQL, updated live. Without ROOT: $RUNSTORE_ROOT, else ./runs.
    Finished runs are archived in the background, as `runstore compact` does.

    Example: runstore ui sample-runs   (then open http://127.0.0.1:8417/)
    """
    from .viewer import default_root, serve

    try:
        serve(
            root if root is not None else default_root(),
            host=host,
            port=port,
            allowed_hosts=allowed_hosts,
            archive=not no_archive,
        )
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


@main.command("pack")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The pack file to write (name it *.runs.tar.gz); replaced if it exists.",
)
@click.option(
    "--status",
    multiple=True,
    type=click.Choice(["completed", "failed", "crashed", "running"]),
    help="Of a ROOT, only runs of this status (repeat for several).",
)
@click.option("--since", help="Of a ROOT, only runs started since: 30m, 2h, 7d or an ISO time.")
@click.option("--plugin", help="Of a ROOT, only runs of this plugin.")
@click.option(
    "--include-running", is_flag=True, help="Pack running runs too, as a snapshot of each."
)
@_json_option("Print a JSON summary.")
def pack_command(
    paths: tuple[Path, ...],
    output: Path,
    status: tuple[str, ...],
    since: str | None,
    plugin: str | None,
    include_running: bool,
    as_json: bool,
) -> None:
    """Write runs into one pack file to carry to another machine: each PATH is a run
    folder, or a ROOT whose runs (filtered by --status, --since, --plugin) all go in.

    The pack is a .tar.gz any machine can open, with a manifest of every file's size
    and SHA-256; `runstore unpack` checks them all. Running runs are left out unless
    --include-running.

    Example: runstore pack sample-runs -o /tmp/sample.runs.tar.gz
    """
    from .format import is_run_dir
    from .packing import pack, select_runs

    moment = _since(since)
    runs: list[Path] = []
    for path in paths:
        if is_run_dir(path):
            runs.append(path)
            continue
        chosen = select_runs(path, status=status, since=moment, plugin=plugin)
        runs += [info.path for info in chosen]
    with _progress(as_json, "packing") as advance:
        report = pack(runs, output, include_running=include_running, progress=advance)
    for name, why in report.skipped:
        click.echo(f"skipped {name}: {why}", err=True)
    if as_json:
        _json_out({**report.__dict__, "path": str(report.path)})
        return
    click.echo(
        f"packed {len(report.runs)} runs ({report.files} files) into {report.path} "
        f"({report.bytes:,} bytes)"
    )


@main.command("unpack")
@click.argument("pack_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@_json_option("Print a JSON summary.")
def unpack_command(pack_file: Path, root: Path, as_json: bool) -> None:
    """Add the runs of PACK_FILE to ROOT (made if missing), each checked against the
    pack's manifest before it appears. A run already in ROOT with the same content is
    left as it is; one with other content is never overwritten. Exit code 1 if a run
    was refused (each is said, with why); the others are added.

    Example: runstore unpack /tmp/sample.runs.tar.gz /tmp/unpacked
    """
    from .packing import unpack

    with _progress(as_json, "unpacking") as advance:
        report = unpack(pack_file, root, progress=advance)
    for name, why in report.refused:
        click.echo(f"refused {name}: {why}", err=True)
    if as_json:
        _json_out(report.__dict__)
    else:
        click.echo(
            f"added {len(report.added)} runs to {root}"
            + (f"; {len(report.present)} already there" if report.present else "")
            + (f"; {len(report.refused)} refused" if report.refused else "")
        )
    if report.refused:
        sys.exit(1)


def _delete(runs: list[tuple[Path, str, datetime | None]], yes: bool, as_json: bool) -> None:
    """Show the runs (path, status, start), ask unless --yes, delete them, say what was
    freed. Exit code 1 if a run was kept (running)."""
    from .pruning import folder_bytes, remove_runs

    sizes = [folder_bytes(path) for path, _, _ in runs]
    if not as_json:
        for (path, status, started), size in zip(runs, sizes, strict=True):
            click.echo(f"{status:<9} {_when(started):<19}  {size:>12,} B  {path}")
    if not runs:
        if as_json:
            _json_out({"removed": [], "bytes_freed": 0, "kept": []})
        else:
            click.echo("no run to delete")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(
                f"{len(runs)} runs would be deleted; pass --yes to delete without asking"
            )
        click.confirm(f"Delete these {len(runs)} runs ({sum(sizes):,} bytes)?", abort=True)
    report = remove_runs([path for path, _, _ in runs])
    for kept, why in report.kept:
        click.echo(f"kept {kept}: {why}", err=True)
    if as_json:
        _json_out(report.__dict__)
    else:
        click.echo(f"deleted {len(report.removed)} runs, {report.bytes_freed:,} bytes freed")
    if report.kept:
        sys.exit(1)


@main.command("rm")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
@_json_option("Print a JSON summary.")
def rm_command(runs: tuple[Path, ...], yes: bool, as_json: bool) -> None:
    """Delete run folders, after showing them and asking. A running run (a live writer)
    is never deleted; the root's archive drops the deleted runs' rows, and queries stop
    showing them at once.

    Example: runstore rm /tmp/demo-runs/demo-crashed --yes
    """
    from .format import is_run_dir
    from .reader import read_run_info

    chosen: list[tuple[Path, str, datetime | None]] = []
    for path in runs:
        if not is_run_dir(path):
            raise RunstoreError(f"{path}: not a run folder (no run.json); nothing deleted")
        try:
            info = read_run_info(path)
            chosen.append((path, info.status, info.manifest.started_at))
        except RunstoreError as exc:  # a damaged run is deleted by name all the same
            click.echo(f"note: {exc}", err=True)
            chosen.append((path, "damaged", None))
    _delete(chosen, yes, as_json)


@main.command("gc")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--older-than",
    required=True,
    help="Delete runs that ended longer ago than this: 30d, 12h, 90m.",
)
@click.option(
    "--status",
    multiple=True,
    type=click.Choice(["completed", "failed", "crashed"]),
    help="Only runs of this status (repeat for several); default: any finished run.",
)
@click.option("--keep", type=click.IntRange(min=0), default=0, help="Keep the N newest of them.")
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
@_json_option("Print a JSON summary.")
def gc_command(
    root: Path, older_than: str, status: tuple[str, ...], keep: int, yes: bool, as_json: bool
) -> None:
    """Delete the finished runs under ROOT that ended longer ago than --older-than,
    after showing them and asking. Running runs are never deleted.

    Example: runstore gc runs --older-than 30d --status completed --keep 10
    """
    from .pruning import older_runs

    age = _age(older_than)
    if age is None:
        raise click.BadParameter(
            f"{older_than!r}: give an age such as 30d, 12h, 90m", param_hint="--older-than"
        )
    found = older_runs(root, age, status=status, keep=keep)
    _delete([(r.path, r.status, r.manifest.started_at) for r in found], yes, as_json)


@contextlib.contextmanager
def _progress(quiet: bool, what: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr while a pack or unpack runs (none when piped)."""
    if quiet or not sys.stderr.isatty():
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    with Progress(
        TextColumn(what), BarColumn(), DownloadColumn(), console=Console(stderr=True)
    ) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@main.command("demo")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
def demo_command(root: Path) -> None:
    """Run the demo plugin job: a training workflow, an export, an upload with failures
    and a crashed run, written as runs under ROOT.

    Example: runstore demo /tmp/demo-runs && runstore ls /tmp/demo-runs
    """
    from .demo import run_demo

    for path in run_demo(root):
        click.echo(str(path))


if __name__ == "__main__":
    main()
