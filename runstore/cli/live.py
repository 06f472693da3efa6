"""`runstore tail` and `ui`: following runs in the terminal and in the browser."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from ..format import DEV_EVENTS, MESSAGE_EVENT
from ..reader import list_runs, read_run
from ._base import _console, _json_option, _since, main

#: Exit codes of `runstore tail RUN` by how the run ended (1 and 2: errors, usage).
TAIL_EXIT_CODES = {"completed": 0, "failed": 3, "crashed": 4}
_ONLY = ("messages", "dev_events", "events", "progress", "metrics", "status")


def _wanted(only: set[str], dev: bool) -> Any:
    def wanted(record: Any) -> bool:
        if record.stream != "events":
            return record.stream == "status" or not only or record.stream in only
        event = record.data.get("event")
        if event in DEV_EVENTS:
            return dev or "dev_events" in only
        if event == MESSAGE_EVENT:
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
    from ..tail import Follower

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
    from .._tailview import TailView

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
    from ..viewer import default_root, serve

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
