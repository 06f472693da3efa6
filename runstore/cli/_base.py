"""The `runstore` group and what its commands share: output, `--json`, ages."""

from __future__ import annotations

import functools
import gc
import importlib
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click
import orjson

from .._version import __version__
from ..errors import RunstoreError

if TYPE_CHECKING:
    from rich.console import Console

    from ..reader import RunInfo

_F = TypeVar("_F", bound=Callable[..., Any])


def _console() -> Console:
    from rich.console import Console

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


#: The module of `runstore.cli` that defines each command, imported when the command
#: is asked for: `runstore sql` loads neither the terminal UI of `tail` nor what `pack`
#: and `replay` need (~25 ms of a fresh `runstore sql`, issue 14).
COMMAND_MODULES: Final = {
    "compact": "compact",
    "demo": "runs",
    "export": "compact",
    "gc": "carry",
    "ls": "runs",
    "pack": "carry",
    "replay": "carry",
    "rm": "carry",
    "show": "runs",
    "sql": "sql",
    "tail": "live",
    "ui": "live",
    "unpack": "carry",
}


class _Group(click.Group):
    """Loads each command's module on first use, and turns runstore's own errors into
    one clear line and exit code 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(f"{__package__}.{module}")  # registers it on `main`
        return super().get_command(ctx, cmd_name)

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


#: Set by a command marked `reads_only` once it runs: see `run`.
_reads_only = False


def reads_only(command: _F) -> _F:
    """Mark a command that holds nothing the interpreter's teardown must finish (no
    writer, no server, no temporary file): `run` leaves without that teardown."""

    @functools.wraps(command)
    def marked(*args: Any, **kwargs: Any) -> Any:
        global _reads_only
        _reads_only = True
        return command(*args, **kwargs)

    marked.reads_only = True  # type: ignore[attr-defined]  # LEAN_COMMANDS's test reads it
    return marked  # type: ignore[return-value]


#: The commands that only print what they read (each marked `reads_only` too), which
#: `run` starts lean:
#: - pyarrow imports numpy wherever it is installed, and nothing these commands do hands
#:   numpy a value: `run` hides it (70-100 ms and a pool of BLAS threads, a sixth of a
#:   fresh `runstore sql`);
#: - the modules they import and the runs they read first are objects that live as
#:   long as the process; the cycle collector would go over them again and again as
#:   they pile up (~60 rounds, 25-45 ms of a fresh `runstore sql`): `run` pauses it,
#:   and a command that goes on once started (`sql`'s prompt or script) calls
#:   `settled`. A command that prints and ends never needs it: its cycles die with
#:   the process a moment later.
LEAN_COMMANDS: Final = frozenset({"ls", "show", "sql"})


def run() -> None:
    """The `runstore` command (and `python -m runstore`).

    A command of `LEAN_COMMANDS` starts without numpy and with the cycle collector
    paused (see there). After a command that only reads, the process leaves once its
    output is flushed, without tearing the interpreter down: freeing DuckDB, Arrow and
    every module takes ~50 ms, a tenth of a fresh `runstore sql`, for memory the system
    takes back anyway. Exit codes are click's, as with `main()`."""
    if sys.argv[1:2] and sys.argv[1] in LEAN_COMMANDS:
        # What Python does for a module that is not installed: `import numpy` raises
        # ImportError, and pyarrow goes on without it. Set before anything imports
        # pyarrow (`runstore.cli` does not); a numpy already loaded is left as it is.
        sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]
        _pause_collector()
    try:
        main(prog_name="runstore")
    except SystemExit as done:
        code = 0 if done.code is None else done.code
        if not _reads_only or not isinstance(code, int):
            raise
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed pipe (click closes it): as Python exits
            raise done from None
        os._exit(code)


#: Whether `run` paused the cycle collector for the command it runs.
_collector_paused = False


def _pause_collector() -> None:
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True


def settled() -> None:
    """A lean command is done starting and goes on for a while (a prompt, a script):
    the cycle collector `run` paused runs again, leaving out of its rounds what exists
    now (`gc.freeze`: mostly modules, which live as long as the process)."""
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.freeze()
        gc.enable()


_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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
