"""The command line: a thin layer over the library (`runstore --help`)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import RunstoreError
from .reader import RunData, RunInfo, list_runs, read_run

__all__ = ["main"]

LEVEL_STYLES = {
    "debug": "dim",
    "info": "blue",
    "success": "green",
    "warning": "yellow",
    "danger": "red",
    "error": "red",
    "critical": "bold red",
}
STATUS_STYLES = {"running": "cyan", "completed": "green", "failed": "red", "crashed": "magenta"}


def _console() -> Console:
    # Piped output has no terminal width: give tables room rather than folding cells.
    width = None if sys.stdout.isatty() else 160
    return Console(highlight=False, soft_wrap=False, width=width)


def _json_out(data: Any) -> None:
    option = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    sys.stdout.write(orjson.dumps(data, option=option, default=str).decode() + "\n")


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    minutes, seconds = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


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


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="runstore")
def main() -> None:
    """runstore: file-based run tracking for plugin jobs.

    Runs are directories under a root folder; these commands read them.
    """


@main.command("ls")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
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
            _seconds(run.duration),
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
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
        f"started {_when(manifest.started_at)}  duration {_seconds(run.duration)}  "
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
            _seconds(row["elapsed"]),
            _seconds(row["time_remaining"]),
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
    messages = run.messages(dev=dev)
    if message_count:
        messages = messages[-message_count:]
    for message in messages:
        level_style = LEVEL_STYLES.get(message["level"], "")
        stamp = message["ts"].astimezone().strftime("%H:%M:%S")
        console.print(
            f"{stamp} [{level_style}]{message['level']:>8}[/] {message['text']}", markup=True
        )
    for problem in run.problems:
        console.print(f"[yellow]problem: {problem}[/]")


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
