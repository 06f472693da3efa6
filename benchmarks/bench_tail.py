"""Tailing latency: from a record flushed by a writer process to the follower's hands.

A job process logs a metric whose value is the wall-clock time just before it calls
`ctx.flush()`, every 10 ms; this process follows the run and, for each record,
subtracts that time from the time the record arrived. Reported for inotify and for the
polling fallback. Then the idle cost: this process follows a root of 100 open runs of
another process that log nothing (their writers still beat every 2 s) and reports the
CPU it used, as a share of one core.

    .venv/bin/python benchmarks/bench_tail.py [--records 300] [--idle-runs 100]

Targets (issue 4): median under 10 ms and p99 under 50 ms with inotify; following 100
idle runs under 5% of one core.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from runstore.tail import follow

_JOB = """
import sys, time
from runstore import WriterOptions, open_run
root, count = sys.argv[1], int(sys.argv[2])
with open_run(root, run_id="job", env={}, options=WriterOptions(flush_interval=10)) as ctx:
    time.sleep(0.5)  # let the follower start
    for step in range(count):
        ctx.set_metrics({"sent": time.time()}, "bench")
        ctx.flush()
        time.sleep(0.01)
"""


def measure(records: int, polling: bool) -> list[float]:
    root = Path(tempfile.mkdtemp(prefix="runstore-bench-tail-"))
    job = subprocess.Popen([sys.executable, "-c", _JOB, str(root), str(records)])
    while not (root / "job" / "run.json").exists():
        time.sleep(0.005)
    delays = []
    for record in follow(root / "job", polling=polling, from_start=True):
        if record.stream == "metrics":
            delays.append(time.time() - record.data["values"]["sent"])
    job.wait()
    return delays


_IDLE = """
import sys, time
from runstore import open_run
runs = [open_run(sys.argv[1], run_id=f"idle-{i:03d}", env={}) for i in range(int(sys.argv[2]))]
print("open", flush=True)
time.sleep(3600)
"""


def idle_share(runs: int, polling: bool, seconds: float = 10.0) -> float:
    """CPU seconds per second this process spends following `runs` idle runs."""
    root = Path(tempfile.mkdtemp(prefix="runstore-bench-idle-"))
    job = subprocess.Popen(
        [sys.executable, "-c", _IDLE, str(root), str(runs)], stdout=subprocess.PIPE, text=True
    )
    assert job.stdout is not None and job.stdout.readline().strip() == "open"
    follower = follow(root, polling=polling)
    thread = threading.Thread(target=follower.run, args=(lambda record: None,), daemon=True)
    thread.start()
    time.sleep(2)  # past the start-up scan
    cpu, wall = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    follower.stop()
    thread.join(timeout=10)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    return share


def report(name: str, delays: list[float]) -> None:
    ordered = sorted(delays)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"{name:<22} n={len(delays):4d}  median {statistics.median(delays) * 1000:7.2f} ms"
        f"  p99 {p99 * 1000:7.2f} ms  max {ordered[-1] * 1000:7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--idle-runs", type=int, default=100)
    args = parser.parse_args()
    report("inotify", measure(args.records, polling=False))
    report("polling (0.5 s)", measure(args.records, polling=True))
    for polling in (False, True):
        share = idle_share(args.idle_runs, polling)
        name = "polling" if polling else "inotify"
        print(f"{args.idle_runs} idle runs, {name:<8} {share * 100:5.2f}% of one core")


if __name__ == "__main__":
    main()
