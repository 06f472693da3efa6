"""One workload of one peer, in that peer's own interpreter (its virtualenv).

    python worker.py ADAPTER TASK '{"directory": ..., ...}'

Imports nothing heavy itself, so a process's wall time and memory are the peer's.
Prints JSON lines on stdout: one result, or for the live tasks one line per step.
`run.py` starts it; see there for the workloads.
"""

from __future__ import annotations

import importlib.util
import json
import mmap
import os
import sys
import time
from types import ModuleType
from typing import Any

POLL_SECONDS = 0.05  # how often a peer without a follower is read again (W5)


def loss_of(run: int, step: int) -> float:
    """Every peer logs the same values: a run's final loss orders the runs by number."""
    return 1.0 / (step + 1) + run / 1000


def _adapter(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("peer_adapter", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _say(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def log(peer: ModuleType, directory: str, steps: int, budget: float) -> None:
    """W1: `steps` steps of two metrics, or as many as fit in `budget` seconds."""
    started = time.perf_counter()
    run = peer.start(directory, "run-0000")
    opened = time.perf_counter()
    deadline = opened + budget
    step_of = run.step
    done = steps
    for step in range(steps):
        step_of(step, 1.0 / (step + 1), step / steps)
        if step & 1023 == 1023 and time.perf_counter() > deadline:
            done = step + 1
            break
    logged = time.perf_counter()
    run.finish()
    finished = time.perf_counter()
    _say(
        steps=done,
        seconds=finished - opened,
        open_seconds=opened - started,
        finish_seconds=finished - logged,
    )


def tiny(peer: ModuleType, directory: str) -> None:
    """A tiny job: open a run, log one step, end. The driver times the whole process."""
    run = peer.start(directory, "tiny")
    run.step(0, 0.5, 0.5)
    run.finish()
    _say(ok=True)


def make_runs(peer: ModuleType, directory: str, runs: int, steps: int, budget: float) -> None:
    """W3's setup: `runs` runs of `steps` steps each, or as many as fit in `budget`."""
    started = time.perf_counter()
    made = 0
    for number in range(runs):
        run = peer.start(directory, f"run-{number:04d}")
        for step in range(steps):
            run.step(step, loss_of(number, step), step / steps)
        run.finish()
        made += 1
        if time.perf_counter() - started > budget:
            break
    _say(runs=made, seconds=time.perf_counter() - started)


def archive(peer: ModuleType, directory: str) -> None:
    started = time.perf_counter()
    peer.archive(directory)
    _say(seconds=time.perf_counter() - started)


def query(peer: ModuleType, directory: str) -> None:
    """W3: final loss per run, sorted, with the peer's own API."""
    started = time.perf_counter()
    answer = peer.final_losses(directory)
    _say(seconds=time.perf_counter() - started, answer=[[n, float(v)] for n, v in answer])


def count(peer: ModuleType, directory: str) -> None:
    _say(steps=peer.count_steps(directory))


def crash(peer: ModuleType, directory: str, counter: str) -> None:
    """W4: log until killed; `counter` (8 bytes, mapped) holds the steps whose call
    returned, so a driver that stops this process first reads what it logged."""
    with open(counter, "r+b") as handle:
        shared = mmap.mmap(handle.fileno(), 8)
    run = peer.start(directory, "run-0000")
    step_of = run.step
    _say(started=True)
    step = 0
    while True:
        step_of(step, 1.0 / (step + 1), 0.5)
        step += 1
        shared[:8] = step.to_bytes(8, "little")


def live_write(peer: ModuleType, directory: str, steps: int, interval: float) -> None:
    """W5's writer: one step every `interval` seconds, saying when each call returned."""
    run = peer.start(directory, "run-0000")
    for step in range(steps):
        run.step(step, 1.0 / (step + 1), 0.5)
        _say(step=step, t=time.time())
        time.sleep(interval)
    run.finish()
    _say(done=True)


def live_read(peer: ModuleType, directory: str, expect: int, timeout: float) -> None:
    """W5's reader: says when each new step became readable, with the peer's own
    follower if it has one, else by reading again every POLL_SECONDS."""
    os.makedirs(directory, exist_ok=True)
    _say(ready=True)
    if hasattr(peer, "watch"):
        for seen in peer.watch(directory, expect, timeout):
            _say(seen=seen, t=time.time())
        return
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < expect and time.monotonic() < deadline:
        try:
            now_seen = peer.count_steps(directory)
        except Exception:  # files half there: a reader sees nothing yet
            now_seen = seen
        stamp = time.time()
        for number in range(seen + 1, now_seen + 1):
            _say(seen=number, t=stamp)
        seen = max(seen, now_seen)
        time.sleep(POLL_SECONDS)


TASKS = {
    "log": log,
    "tiny": tiny,
    "make_runs": make_runs,
    "archive": archive,
    "query": query,
    "count": count,
    "crash": crash,
    "live_write": live_write,
    "live_read": live_read,
}


def _peak_rss() -> int | None:
    """This process's peak resident memory (VmHWM), bytes; None where /proc has none.

    Not `ru_maxrss`: Linux carries the forked copy of the driver's memory into it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def main() -> None:
    adapter, task, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    TASKS[task](_adapter(adapter), **arguments)
    _say(peak_rss=_peak_rss())


if __name__ == "__main__":
    main()
