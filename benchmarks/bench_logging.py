"""Logging speed: `ctx.set_metrics` with two values, durable on disk by the end.

Compares runstore with the plain loop people write by hand (`json.dumps` + buffered file
append, fsync at the end), measured in the same process, and prints medians and ratios.

    .venv/bin/python benchmarks/bench_logging.py [--calls 1000000] [--repeats 5]
    .venv/bin/python benchmarks/bench_logging.py --against /path/to/other/checkout

`--against` also runs another checkout's runstore (e.g. `git worktree add /tmp/old
HEAD~3`), in the same process and interleaved with this one, so a change is judged on
one machine state: these machines are shared and noisy.

Target (issue 2): at least 500,000 calls/s on one core. The writer's Parquet sealing
releases the GIL and may use a second core; to hold everything to one core, run it as
`taskset -c 0 .venv/bin/python benchmarks/bench_logging.py` (Linux).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import runstore
from runstore import WriterOptions, read_run


def load_other(checkout: Path, scratch: Path) -> ModuleType:
    """The runstore package of another checkout, imported as `runstore_other`."""
    source = checkout / "runstore"
    if not (source / "__init__.py").is_file():
        raise SystemExit(f"--against {checkout}: no runstore/ package there")
    shutil.copytree(source, scratch / "runstore_other")
    sys.path.insert(0, str(scratch))
    return importlib.import_module("runstore_other")


def baseline(directory: Path, calls: int) -> float:
    """The hand-written logger: one JSON line per call, fsync at the end."""
    path = directory / "metrics.jsonl"
    start = time.perf_counter()
    with open(path, "a") as handle:
        for step in range(calls):
            record = {
                "ts": time.time(),
                "step": step,
                "category": "training",
                "values": {"loss": 0.5, "accuracy": 0.25},
            }
            handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return time.perf_counter() - start


def runstore_run(
    directory: Path, calls: int, flush_interval: float, package: ModuleType = runstore
) -> tuple[float, Path]:
    """runstore from open to close: every record flushed, sealed into Parquet, fsynced."""
    start = time.perf_counter()
    options = package.WriterOptions(flush_interval=flush_interval)
    with package.open_run(directory, env={}, options=options) as ctx:
        for step in range(calls):
            ctx.set_metrics({"loss": 0.5 + step * 1e-9, "accuracy": 0.25}, "training")
    return time.perf_counter() - start, ctx.run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--flush-interval", type=float, default=WriterOptions.flush_interval)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    args = parser.parse_args()
    base_times, ours_times, other_times, run_dir = [], [], [], None
    scratch = Path(tempfile.mkdtemp(prefix="runstore-bench-"))
    try:
        other = load_other(args.against, scratch) if args.against else None
        for repeat in range(args.repeats):
            base_dir = scratch / f"base-{repeat}"
            base_dir.mkdir()
            base_times.append(baseline(base_dir, args.calls))
            runs = scratch / f"runs-{repeat}"
            order = [runstore, other] if other is not None else [runstore]
            for package in order if repeat % 2 else order[::-1]:  # alternate the first
                if package is runstore:
                    seconds, run_dir = runstore_run(runs, args.calls, args.flush_interval)
                    ours_times.append(seconds)
                else:
                    other_dir = scratch / f"other-{repeat}"
                    other_times.append(
                        runstore_run(other_dir, args.calls, args.flush_interval, package)[0]
                    )
                    shutil.rmtree(other_dir, ignore_errors=True)
        assert run_dir is not None
        rows = read_run(run_dir).metrics.num_rows
        assert rows == 2 * args.calls, f"expected {2 * args.calls} metric rows, read {rows}"
        size = sum(f.stat().st_size for f in (run_dir / "streams").rglob("*") if f.is_file())
        base_size = (scratch / "base-0" / "metrics.jsonl").stat().st_size
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base_rate = args.calls / statistics.median(base_times)
    ours_rate = args.calls / statistics.median(ours_times)
    points = 2 * args.calls
    print(
        f"set_metrics with 2 values, {args.calls:,} calls, median of {args.repeats}, "
        f"flush every {args.flush_interval * 1000:g} ms:"
    )
    print(
        f"  json.dumps + append (baseline): {base_rate:>12,.0f} calls/s  "
        f"{base_size / points:5.1f} bytes/point"
    )
    print(
        f"  runstore (open to close):       {ours_rate:>12,.0f} calls/s  "
        f"{size / points:5.1f} bytes/point"
    )
    print(f"  ratio runstore / baseline:      {ours_rate / base_rate:>12.2f}x")
    if other_times:
        other_rate = args.calls / statistics.median(other_times)
        print(
            f"  {str(args.against)[:30]:<30}  {other_rate:>12,.0f} calls/s  "
            f"(this checkout: {ours_rate / other_rate:.3f}x of it)"
        )
    print(f"  per call: {1e9 / ours_rate:,.0f} ns (target: <= 2,000 ns, i.e. >= 500,000/s)")


if __name__ == "__main__":
    main()
