"""The first `runstore sql` over a root as jobs left it: a fresh process, a fresh root.

    .venv/bin/python benchmarks/bench_first_query.py          # 1,000 runs x 20 steps
    .venv/bin/python benchmarks/bench_first_query.py --runs 200 --repeats 5
    .venv/bin/python benchmarks/bench_first_query.py --against /path/to/other/checkout

Makes `--runs` runs with real jobs (`open_run`, `--steps` calls of
`set_metrics({"loss", "accuracy"})`, end): each run's records stay in its small JSONL
segments, as a short job leaves them. Then, for each repeat, copies that root afresh (no
archive, nothing read before: what the first query after a batch of jobs finds) and
times `runstore sql ROOT "<final loss of each run, sorted>" --format csv --no-archive`
as a whole process, wall time and CPU time; medians. With `--against`, another
checkout's runstore answers from a copy of its own in the same loop, interleaved, and
the ratios are this checkout's to it. Both checkouts are byte-compiled first, as
`pip install` leaves a package (under PYTHONDONTWRITEBYTECODE a checkout would be
compiled again in every process). `--no-archive`: the time is the query's, not that of
the compaction it would start in the background.

Target (issue 14): 1,000 finished runs as jobs left them, a fresh `runstore sql` < 500 ms.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUERY = "SELECT run_id, value AS loss FROM latest_metrics WHERE key = 'loss' ORDER BY loss"

_MAKE = r"""
import random, sys
from runstore import open_run
root, runs, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(1)
for number in range(runs):
    with open_run(root, run_id=f"run-{number:04d}", plugin="bench", env={}) as ctx:
        for _ in range(steps):
            ctx.set_metrics({"loss": rng.random(), "accuracy": rng.random()}, "train")
"""


def _first_query(checkout: Path, source: Path, scratch: Path, runs: int) -> tuple[float, float]:
    """Wall and CPU seconds of one `runstore sql` over a fresh copy of `source`."""
    root = scratch / "copy"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(source, root)
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [sys.executable, "-P", "-m", "runstore", "sql", str(root), QUERY]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "--format", "csv", "--no-archive"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: runstore sql failed:\n{done.stderr}")
    if len(done.stdout.splitlines()) != runs + 1:  # the header and a row a run
        raise SystemExit(f"{checkout}: expected {runs} rows, got:\n{done.stdout[:500]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20, help="set_metrics calls a run")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    args = parser.parse_args()
    checkouts = {"this checkout": REPO}
    if args.against:
        checkouts[str(args.against)] = args.against.resolve()
    for checkout in checkouts.values():
        compileall.compile_dir(checkout / "runstore", quiet=1)
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "runs"
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", _MAKE, str(source), str(args.runs), str(args.steps)],
            check=True,
            cwd=REPO,
        )
        made = time.perf_counter() - started
        print(f"made {args.runs:,} runs x {args.steps} steps with real jobs in {made:.1f} s")
        samples: dict[str, list[tuple[float, float]]] = {label: [] for label in checkouts}
        for _ in range(args.repeats):
            for label, checkout in checkouts.items():
                samples[label].append(_first_query(checkout, source, Path(scratch), args.runs))
    print(
        f"fresh `runstore sql` over a fresh copy of the root, never queried, median of "
        f"{args.repeats} (target for 1,000 runs: < 500 ms):"
    )
    medians = {
        label: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        for label, runs in samples.items()
    }
    for label, (wall, cpu) in medians.items():
        print(f"  {label:40s} {wall * 1000:7.0f} ms wall {cpu * 1000:7.0f} ms CPU")
    if args.against:
        mine, other = medians["this checkout"], medians[str(args.against)]
        print(
            f"  {'ratio to ' + str(args.against):40s} {mine[0] / other[0]:7.2f}x wall "
            f"{mine[1] / other[1]:7.2f}x CPU"
        )


if __name__ == "__main__":
    main()
