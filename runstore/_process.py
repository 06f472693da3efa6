"""What this machine knows of a process: alive or not, and when it started (Linux /proc).

Writers record their start time; readers compare it, so a pid reused by another process
does not make a dead writer look alive.
"""

from __future__ import annotations

import os
from pathlib import Path

_UNKNOWN = ("?", -1)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process; None if there is none;
    ("?", -1) if it exists but cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return _UNKNOWN
    fields = stat.rsplit(")", 1)[-1].split()  # the command name may hold spaces and ")"
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return _UNKNOWN


def process_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (Linux), or None where unknown."""
    stat = _proc_stat(pid)
    return None if stat is None or stat[1] < 0 else stat[1]


def pid_alive(pid: int, start: int | None) -> bool:
    """Whether `pid` runs (not a zombie) and, if `start` is given, is the same process."""
    if Path("/proc/self/stat").exists():
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return start is None or stat[1] in (-1, start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
