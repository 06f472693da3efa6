"""`runstore pack`, `unpack`, `replay`, `rm` and `gc`: runs carried to another machine
or into the platform, and deleted (docs/offline.md)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from ..errors import ReplayError, RunstoreError

if TYPE_CHECKING:
    from ..replaying import ReplayReport

from ._base import _age, _json_option, _json_out, _since, _when, main


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
    from ..format import is_run_dir
    from ..packing import pack, select_runs

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
    from ..packing import unpack

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


@main.command("replay")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--synapse-url", required=True, help="The platform's backend URL.")
@click.option("--job-id", required=True, help="The platform job the run's records go to.")
@click.option("--tenant", envvar="SYNAPSE_TENANT", help="Tenant code (or $SYNAPSE_TENANT).")
@click.option(
    "--resend-in-doubt",
    is_flag=True,
    help="Send again the records a stopped replay left without an answer (the platform "
    "may then have them twice); by default they are not sent again.",
)
@click.option(
    "--timeout",
    "stall_timeout",
    type=click.FloatRange(min=0.1),
    default=120.0,
    show_default=True,
    help="Stop when the platform takes no record for this many seconds.",
)
@_json_option("Print a JSON summary.")
def replay_command(
    run_dir: Path,
    synapse_url: str,
    job_id: str,
    tenant: str | None,
    resend_in_doubt: bool,
    stall_timeout: float,
    as_json: bool,
) -> None:
    """Upload a finished (or crashed) run to a Synapse platform job: its progress,
    metrics, messages, events with their files and dev events, in the order they were
    logged, through the SDK's own JobLogger. The access token is read from
    $SYNAPSE_ACCESS_TOKEN (never a flag: flags show in ps and shell history).

    Run it again after a kill or a network error: a ledger in the run folder makes it
    send only what the platform has not confirmed, and nothing once it is done. Needs
    the synapse-sdk (pip install 'runstore[synapse]', Python 3.12+). Exit code 1 if the
    replay stopped.

    Example: runstore replay runs/20261201T101500-a1b2c3 --synapse-url
    https://synapse.example.com --job-id 5f0c...
    """
    try:
        from synapse_sdk.clients.backend import BackendClient

        from ..replaying import ReplayReport
        from ..upload import TOKEN_VARIABLE, upload_run
    except ImportError as exc:
        raise click.ClickException(
            "runstore replay needs the synapse-sdk (Python 3.12+): pip install 'runstore[synapse]'"
        ) from exc
    token = os.environ.get(TOKEN_VARIABLE)
    if not token:
        raise click.UsageError(f"set {TOKEN_VARIABLE} to the platform's access token")
    client = BackendClient(synapse_url, access_token=token, tenant=tenant)
    failure: ReplayError | None = None
    # The JobLogger echoes every record to stdout: the bar and the summary say enough.
    with (
        _progress(as_json, "replaying", count=True) as advance,
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
    ):
        try:
            report = upload_run(
                run_dir,
                client,
                job_id,
                resend_in_doubt=resend_in_doubt,
                progress=advance,
                stall_timeout=stall_timeout,
            )
        except ReplayError as exc:
            if not isinstance(exc.report, ReplayReport):
                raise
            failure, report = exc, exc.report
    for problem in report.problems:
        click.echo(f"note: {problem}", err=True)
    if as_json:
        _json_out(report.model_dump(mode="json"))
    else:
        click.echo(_replay_summary(report, job_id))
    if failure is not None:
        click.echo(f"error: {failure}", err=True)
        sys.exit(1)


def _replay_summary(report: ReplayReport, job_id: str) -> str:
    if report.finished and report.sent == 0:
        return f"run {report.run_id} was already replayed into job {job_id}; nothing sent"
    parts = [f"{report.confirmed} confirmed"]
    if report.skipped:
        parts.append(f"{report.skipped} settled by an earlier replay")
    if report.unconfirmed:
        parts.append(f"{report.unconfirmed} sent without an answer (not sent again)")
    if report.refused:
        parts.append(f"{report.refused} refused by the logger")
    if report.in_doubt:
        start, end = report.in_doubt
        parts.append(
            f"{end - start} left in doubt by a stopped replay (records {start}-{end - 1}; "
            "--resend-in-doubt sends them)"
        )
    return (
        f"replayed run {report.run_id} ({report.run_status}) into job {job_id}: "
        f"{report.sent} of {report.records} records sent, " + ", ".join(parts)
    )


def _delete(runs: list[tuple[Path, str, datetime | None]], yes: bool, as_json: bool) -> None:
    """Show the runs (path, status, start), ask unless --yes, delete them, say what was
    freed. Exit code 1 if a run was kept (running)."""
    from ..pruning import folder_bytes, remove_runs

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
    from ..format import is_run_dir
    from ..reader import read_run_info

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
    from ..pruning import older_runs

    age = _age(older_than)
    if age is None:
        raise click.BadParameter(
            f"{older_than!r}: give an age such as 30d, 12h, 90m", param_hint="--older-than"
        )
    found = older_runs(root, age, status=status, keep=keep)
    _delete([(r.path, r.status, r.manifest.started_at) for r in found], yes, as_json)


@contextlib.contextmanager
def _progress(
    quiet: bool, what: str, *, count: bool = False
) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr while a pack, unpack or replay runs (none when piped):
    of bytes, or with `count` of records."""
    if quiet or not sys.stderr.isatty():
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn

    amount = MofNCompleteColumn() if count else DownloadColumn()
    with Progress(TextColumn(what), BarColumn(), amount, console=Console(stderr=True)) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
