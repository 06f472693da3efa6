"""Every open writer of this process, ended with the process: at exit and on SIGTERM
(`failed`, with the reason: an uncaught exception's, or that `end_log()` was never
called), and made anew in a forked child, which must not write into its parent's
segments. The hooks are installed once, by the first writer.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Protocol

__all__ = ["register", "unregister"]


class _Writer(Protocol):
    """What the hooks need of a `runstore.writer.RunWriter`."""

    @property
    def closed(self) -> bool: ...

    def close(self, *, status: str | None = None, error: str | None = None) -> None: ...

    def _report(self, message: str) -> None: ...

    def _after_fork_in_child(self) -> None: ...


_OPEN: weakref.WeakSet[_Writer] = weakref.WeakSet()
_installed = False
_uncaught: str | None = None
_previous_sigterm: Any = None
_previous_excepthook: Callable[..., Any] | None = None


def register(writer: _Writer) -> None:
    _OPEN.add(writer)
    _install_process_hooks()


def unregister(writer: _Writer) -> None:
    _OPEN.discard(writer)


def _close_all(error: str) -> None:
    for writer in list(_OPEN):
        try:
            writer.close(status="failed", error=error)
        except Exception as exc:  # one writer's trouble must not keep the others open
            writer._report(f"could not close cleanly: {exc!r}")


def _at_exit() -> None:
    _close_all(_uncaught or "the process exited before end_log() was called")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _close_all("terminated by SIGTERM")
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _excepthook(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    global _uncaught
    _uncaught = f"uncaught {kind.__name__}: {value}"
    if _previous_excepthook is not None:
        _previous_excepthook(kind, value, traceback)


def _after_fork_in_child() -> None:
    for writer in list(_OPEN):
        if not writer.closed:
            writer._after_fork_in_child()


def _install_process_hooks() -> None:
    global _installed, _previous_sigterm, _previous_excepthook
    if _installed:
        return
    _installed = True
    atexit.register(_at_exit)
    _previous_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    os.register_at_fork(after_in_child=_after_fork_in_child)
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)
        if previous != signal.SIG_IGN:
            _previous_sigterm = previous
            signal.signal(signal.SIGTERM, _on_sigterm)
