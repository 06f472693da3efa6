"""What this machine knows of a process: alive or not, when it started (Linux /proc),
and which Ray worker it is.

Writers record their start time; readers compare it, so a pid reused by another process
does not make a dead writer look alive.
"""

from __future__ import annotations

import os
import sys
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


def ray_labels() -> dict[str, str]:
    """Ray's ids of this process when it is a connected Ray driver or worker, else {}.

    Ray is never imported here: a process that uses Ray has imported it already, and
    one that has not pays nothing.
    """
    ray = sys.modules.get("ray")
    if ray is None or not getattr(ray, "is_initialized", lambda: False)():
        return {}
    try:
        context = ray.get_runtime_context()
        found = {
            "ray.job_id": context.get_job_id(),
            "ray.node_id": context.get_node_id(),
            "ray.worker_id": context.get_worker_id(),
        }
        # A driver has no task or actor (and Ray logs a warning when asked for them).
        if context.worker.mode == ray._private.worker.WORKER_MODE:
            found["ray.actor_id"] = context.get_actor_id()
            found["ray.task_id"] = context.get_task_id()
    except Exception:  # an older or half-shut-down Ray: the labels are a courtesy
        return {}
    return {key: str(value) for key, value in found.items() if value}
