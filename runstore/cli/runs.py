"""`runstore ls`, `show` and `demo`: runs as a table, one run, the sample job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from .._tailview import STATUS_STYLES, clock, log_line
from ..reader import RunData, list_runs, read_run
from ._base import _console, _json_option, _json_out, _run_summary, _when, main, reads_only


@main.command("ls")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@_json_option()
@reads_only
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
        "manifest": run.manifest.as_json(),
        "current_step": run.current_step(),
        "overall_progress": run.overall_progress(),
        "progress": [
            {k: v for k, v in row.items() if k not in ("writer",)} for row in run.latest_progress()
        ],
        "metrics": run.latest_metrics(),
        "messages": run.messages(dev=dev),
        "writers": [w.as_json() for w in run.writers],
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
@reads_only
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


@main.command("demo")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
def demo_command(root: Path) -> None:
    """Run the demo plugin job: a training workflow, an export, an upload with failures
    and a crashed run, written as runs under ROOT.

    Example: runstore demo /tmp/demo-runs && runstore ls /tmp/demo-runs
    """
    from ..demo import run_demo

    for path in run_demo(root):
        click.echo(str(path))
