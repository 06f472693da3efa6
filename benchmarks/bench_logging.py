"""Logging speed: `ctx.set_metrics` with two values, durable on disk by the end.

Compares runstore with the plain loop people write by hand (`json.dumps` + buffered file
append, fsync at the end), measured in the same process, and prints medians and ratios.

    .venv/bin/python benchmarks/bench_logging.py [--calls 1000000] [--repeats 5]
    .venv/bin/python benchmarks/bench_logging.py --against /path/to/other/checkout

`--against` also runs another checkout's runstore (e.g. `git worktree add /tmp/old
HEAD~3`), in the same process and interleaved with this one, so a change is judged on
one machine state: these machines are shared and noisy.

This checkout runs with its C speedups when they are built (the output says which);
`RUNSTORE_PURE_PYTHON=1` measures its pure-Python path instead.

`--fresh` runs every runstore run in a process of its own, as a job is, and adds its
page faults: in one process, later runs reuse memory the earlier ones had the kernel
map, which hides what fresh memory costs (~4 µs a page fault on our VMs).

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import runstore
from runstore import WriterOptions, read_run

#: This checkout: what `--fresh` puts first on a new process's path.
_CHECKOUT = Path(__file__).resolve().parents[1]
#: Whether this checkout's runstore runs with its C speedups (RUNSTORE_PURE_PYTHON=1: not).
_NATIVE = getattr(getattr(runstore, "_native", None), "speedups", None) is not None


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


def fresh_run(
    checkout: Path, directory: Path, calls: int, flush_interval: float
) -> tuple[float, Path, int]:
    """`runstore_run` of `checkout`'s runstore in a new process; and its page faults."""
    code = (
        "import json, resource, sys\n"
        "from pathlib import Path\n"
        "import bench_logging as bench\n"
        "args = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])\n"
        "seconds, run_dir = bench.runstore_run(*args)\n"
        "faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "native = bench._NATIVE\n"
        "print(json.dumps([seconds, str(run_dir), faults, bench.runstore.__file__, native]))\n"
    )
    path = os.pathsep.join([str(checkout), str(Path(__file__).parent)])
    done = subprocess.run(
        # -P: no current directory on the path, so PYTHONPATH picks the checkout.
        [sys.executable, "-P", "-c", code, str(directory), str(calls), str(flush_interval)],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, run_dir, faults, package, native = json.loads(done.stdout)
    if not Path(package).resolve().is_relative_to(checkout.resolve()):
        raise SystemExit(f"--fresh: ran the runstore in {package}, not the one in {checkout}")
    if checkout == _CHECKOUT and native != _NATIVE:
        raise SystemExit("--fresh: the new process ran runstore another way than this one")
    return seconds, Path(run_dir), faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--flush-interval", type=float, default=WriterOptions.flush_interval)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--fresh", action="store_true", help="each runstore run in a new process")
    args = parser.parse_args()
    base_times, ours_times, other_times, run_dir = [], [], [], None
    ours_faults: list[int] = []
    other_faults: list[int] = []
    scratch = Path(tempfile.mkdtemp(prefix="runstore-bench-"))
    try:
        other = load_other(args.against, scratch) if args.against and not args.fresh else None
        for repeat in range(args.repeats):
            base_dir = scratch / f"base-{repeat}"
            base_dir.mkdir()
            base_times.append(baseline(base_dir, args.calls))
            runs = scratch / f"runs-{repeat}"
            order = ["ours", "other"] if args.against else ["ours"]
            for which in order if repeat % 2 else order[::-1]:  # alternate the first
                directory = runs if which == "ours" else scratch / f"other-{repeat}"
                checkout = _CHECKOUT if which == "ours" else args.against
                if args.fresh:
                    seconds, made, faults = fresh_run(
                        checkout, directory, args.calls, args.flush_interval
                    )
                    (ours_faults if which == "ours" else other_faults).append(faults)
                else:
                    package = runstore if which == "ours" else other
                    assert package is not None
                    seconds, made = runstore_run(
                        directory, args.calls, args.flush_interval, package
                    )
                if which == "ours":
                    ours_times.append(seconds)
                    run_dir = made
                else:
                    other_times.append(seconds)
                    shutil.rmtree(directory, ignore_errors=True)
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
        f"flush every {args.flush_interval * 1000:g} ms"
        + (", each runstore run in a new process:" if args.fresh else ":")
    )
    print(
        f"  json.dumps + append (baseline): {base_rate:>12,.0f} calls/s  "
        f"{base_size / points:5.1f} bytes/point"
    )
    print(
        f"  runstore (open to close):       {ours_rate:>12,.0f} calls/s  "
        f"{size / points:5.1f} bytes/point  " + ("(C speedups)" if _NATIVE else "(pure Python)")
    )
    if ours_faults:
        print(f"  page faults per runstore run:   {statistics.median(ours_faults):>12,.0f}")
    print(f"  ratio runstore / baseline:      {ours_rate / base_rate:>12.2f}x")
    if other_times:
        other_rate = args.calls / statistics.median(other_times)
        print(
            f"  {str(args.against)[:30]:<30}  {other_rate:>12,.0f} calls/s  "
            f"(this checkout: {ours_rate / other_rate:.3f}x of it)"
        )
        if other_faults:
            print(f"  page faults per run there:      {statistics.median(other_faults):>12,.0f}")
    print(f"  per call: {1e9 / ours_rate:,.0f} ns (target: <= 2,000 ns, i.e. >= 500,000/s)")


if __name__ == "__main__":
    main()
