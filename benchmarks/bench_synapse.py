"""100,000 upload-style events through the real synapse-sdk's `RuntimeContext`.

Every event is `ctx.log("upload_data_file", {...})`, as the SDK's upload action logs a
file's status. Measured in the same process, medians of `--repeats`:

- `NoOpLogger`: the SDK's own cost of a `ctx.log` call (checks, a dict copy), the floor;
- runstore's `RunstoreLogger`: the job's time for the calls, then `finish()` until every
  event is durable on disk, and a count of the events in the run (all must be there);
- the SDK's `JobLogger` against an in-process stand-in backend whose `create_logs` takes
  `--backend-ms` per request (362 ms is the SDK's own measured round trip), once with the
  backend up and once with it down: the job's time, what the backend received, and the
  SDK's own loss counters.

    .venv-sdk/bin/python benchmarks/bench_synapse.py [--events 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from synapse_sdk.loggers import JobLogger, NoOpLogger
from synapse_sdk.plugins.context import PluginEnvironment, RuntimeContext

from runstore import read_run
from runstore.synapse import runtime_context


def _upload(ctx: Any, events: int) -> float:
    start = time.perf_counter()
    for i in range(events):
        ctx.log("upload_data_file", {"files": {"image": f"/data/{i:06d}.jpg"}, "status": "success"})
    return time.perf_counter() - start


def noop(events: int) -> float:
    return _upload(RuntimeContext(logger=NoOpLogger(), env=PluginEnvironment({})), events)


def runstore_run(root: Path, events: int) -> tuple[float, float, int]:
    """(seconds of calls, seconds of finish, events found in the run)."""
    ctx = runtime_context(root, plugin="bench", action="upload", env={})
    calls = _upload(ctx, events)
    start = time.perf_counter()
    ctx.logger.finish()
    finish = time.perf_counter() - start
    found = read_run(ctx.logger.run_dir).events.num_rows
    return calls, finish, found


class _Backend:
    """Stands in for the Synapse backend: each request takes `latency` seconds."""

    def __init__(self, latency: float, up: bool) -> None:
        self.latency = latency
        self.up = up
        self.received = 0
        self._lock = threading.Lock()

    def create_logs(self, batch: list[dict[str, Any]]) -> None:
        time.sleep(self.latency)
        if not self.up:
            raise ConnectionError("backend unreachable")
        with self._lock:
            self.received += len(batch)

    def update_job(self, job_id: str, payload: dict[str, Any]) -> None:
        time.sleep(self.latency)


def job_logger(events: int, latency: float, up: bool) -> tuple[float, float, int, dict[str, Any]]:
    """(seconds of calls, seconds of finish, entries received, the SDK's loss stats)."""
    backend = _Backend(latency, up)
    logger = JobLogger(client=backend, job_id="bench")
    ctx = RuntimeContext(logger=logger, env=PluginEnvironment({}), job_id="bench")
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # its console copy
        calls = _upload(ctx, events)
        start = time.perf_counter()
        logger.finish()
        finish = time.perf_counter() - start
    return calls, finish, backend.received, logger.log_loss_report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend-ms", type=float, default=362.0)
    parser.add_argument("--skip-joblogger", action="store_true")
    args = parser.parse_args()
    n = args.events
    scratch = Path(tempfile.mkdtemp(prefix="runstore-bench-synapse-"))
    try:
        floor, calls, finishes = [], [], []
        for repeat in range(args.repeats):
            floor.append(noop(n))
            call, finish, found = runstore_run(scratch / f"r{repeat}", n)
            if found != n:
                raise SystemExit(f"FAIL: {found} of {n} events in the run")
            calls.append(call)
            finishes.append(finish)
        floor_s, call_s, finish_s = (statistics.median(x) for x in (floor, calls, finishes))
        print(f"{n:,} upload events through the SDK's RuntimeContext, medians of {args.repeats}")
        print(f"  NoOpLogger (the SDK's floor)   {floor_s * 1e6 / n:6.2f} us/event")
        print(
            f"  runstore RunstoreLogger        {call_s * 1e6 / n:6.2f} us/event "
            f"({call_s / floor_s:.2f}x the floor); finish (all durable) {finish_s * 1e3:.0f} ms"
        )
        print(f"  events in the run: {n:,} of {n:,} every time")
        if args.skip_joblogger:
            return
        latency = args.backend_ms / 1000
        for up in (True, False):
            call, finish, received, stats = job_logger(n, latency, up)
            state = f"backend up, {args.backend_ms:.0f} ms/request" if up else "backend down"
            print(
                f"  SDK JobLogger ({state}): {call * 1e6 / n:8.2f} us/event "
                f"({call / floor_s:.0f}x the floor), finish {finish:.1f} s, "
                f"received {received:,} of {n:,}; SDK loss stats {stats}"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
