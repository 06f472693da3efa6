"""A Store over a large root that was never compacted: time and peak memory.

    .venv/bin/python benchmarks/bench_store.py                  # 200 runs x 175,000 rows
    .venv/bin/python benchmarks/bench_store.py --runs 50 --calls 20000
    .venv/bin/python benchmarks/bench_store.py --against /path/to/other/checkout

Makes a root of `--runs` finished runs, each `--calls` set_metrics calls of two values
(so 2 x calls metric rows a run, sealed into Parquet), never compacted, and then, each
in a fresh process, opens a `Store` and runs one query: the wall time of open + query
and the process's peak RSS, median of `--repeats`. With `--against`, the other
checkout's runstore runs the same queries in the same loop, interleaved.

Targets (issue 14): a `runs` query < 300 ms, `count(*) FROM metrics` < 3 s, peak
memory < 1 GB, for 200 runs and 35 M rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

QUERIES = {
    "runs": "SELECT status, count(*) FROM runs GROUP BY status",
    "count(*) metrics": "SELECT count(*) FROM metrics",
    "latest loss": "SELECT count(*) FROM latest_metrics WHERE key = 'loss'",
}

_MAKE = r"""
import sys
from runstore import WriterOptions, open_run
root, runs, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for number in range(runs):
    with open_run(root, run_id=f"run{number:04d}", env={}, plugin="bench") as ctx:
        for step in range(calls):
            ctx.set_metrics({"loss": 1.0 / (step + 1), "accuracy": step / calls}, "train")
"""

_QUERY = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
started = time.perf_counter()
from runstore import Store
imported = time.perf_counter()
try:
    store = Store(sys.argv[1], archive=False)  # never compacted, as measured
except TypeError:  # a checkout from before stores archived by themselves
    store = Store(sys.argv[1])
with store:
    rows = store.sql(sys.argv[2]).fetchall()
done = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": done - imported, "import": imported - started, "peak": peak,
                  "rows": len(rows)}))
"""


def _run(checkout: Path, root: Path, query: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run(
        [sys.executable, "-P", "-c", _QUERY, str(root), query],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    # The last line: DuckDB may draw a progress bar above it on a long query.
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--calls", type=int, default=87_500, help="calls a run (2 rows each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--root", type=Path, help="reuse (or keep) the root here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or Path(scratch) / "runs"
        if not root.exists():
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", _MAKE, str(root), str(args.runs), str(args.calls)],
                check=True,
                cwd=REPO,
            )
            made = time.perf_counter() - started
            print(f"made {args.runs} runs x {2 * args.calls:,} metric rows in {made:.0f} s")
        checkouts = {"this checkout": REPO}
        if args.against:
            checkouts[str(args.against)] = args.against
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.repeats):
            for name, query in QUERIES.items():
                for label, checkout in checkouts.items():
                    results.setdefault((label, name), []).append(_run(checkout, root, query))
        rows = 2 * args.runs * args.calls
        print(
            f"Store open + one query, fresh process, {args.runs} runs, {rows:,} rows, "
            f"never compacted, median of {args.repeats} (import of runstore apart):"
        )
        for name in QUERIES:
            for label in checkouts:
                runs = results[(label, name)]
                seconds = statistics.median(r["seconds"] for r in runs)
                peak = statistics.median(r["peak"] for r in runs) / 2**20
                imported = statistics.median(r["import"] for r in runs)
                print(
                    f"  {name:18s} {label:28s} {seconds * 1000:9.0f} ms  {peak:7.0f} MiB peak"
                    f"   (import {imported * 1000:.0f} ms)"
                )
            if args.against:
                mine = statistics.median(r["seconds"] for r in results[("this checkout", name)])
                other = statistics.median(r["seconds"] for r in results[(str(args.against), name)])
                print(f"  {'':18s} {'ratio (time)':28s} {mine / other:9.2f}x")


if __name__ == "__main__":
    main()
