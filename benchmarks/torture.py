"""Kill jobs at random points and measure what survives (issue: "nothing lost").

    .venv/bin/python benchmarks/torture.py                 # 200 kills, all modes
    .venv/bin/python benchmarks/torture.py --kills 20 --modes tight
    .venv/bin/python benchmarks/torture.py --disk-full 20  # also fill a tmpfs 20 times (root)

Each kill starts a real job process logging into a fresh root, sends it SIGKILL after a
random delay, and reads the run back. What it checks (and `tests/test_torture.py` runs
the same checks, fewer times):

- the run reads, as `crashed`, with no problem but a torn last line;
- its metric records are a gap-free prefix of what the job logged (`i` = 0, 1, 2 ...),
  each once, in order;
- loss: how long before the kill the newest record on disk was logged, in ms.

Modes: `paced` (about 20,000 calls/s, what a training loop does), `tight` (as fast as
the job can call: well over a million calls/s with the C speedups), `ending` (the kill
falls in end_log/close, while segments are sealed). Figures: medians, p99 and max of the
loss per mode, records read, temp files left behind.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parent.parent

JOB = r"""
import sys, time
from runstore import WriterOptions, open_run
root, mode = sys.argv[1], sys.argv[2]
options = WriterOptions(seal_bytes=int(sys.argv[3]), flush_interval=float(sys.argv[4]))
ctx = open_run(root, run_id="victim", env={}, options=options)
set_metrics = ctx.set_metrics
print("ready", flush=True)
i = 0
if mode == "paced":
    while True:
        set_metrics({"i": float(i), "loss": 0.5}, "train")
        i += 1
        if i % 200 == 0:
            time.sleep(0.01)
elif mode == "tight":
    while True:
        set_metrics({"i": float(i), "loss": 0.5}, "train")
        i += 1
else:  # ending: log, then end while the parent's kill may land anywhere in it
    for i in range(int(sys.argv[5])):
        set_metrics({"i": float(i), "loss": 0.5}, "train")
    print("ending", flush=True)
    ctx.end_log()
    ctx.close()
    print("ended", flush=True)
    time.sleep(60)
"""

MODES = ("paced", "tight", "ending")

DISK_JOB = r"""
import os, sys
from runstore import WriterOptions, open_run
root, ballast = sys.argv[1], sys.argv[2]
calls, fill_at, free_at = (int(arg) for arg in sys.argv[3:6])
ctx = open_run(root, run_id="full", env={}, options=WriterOptions(flush_interval=0.02))
for i in range(calls):
    if i == fill_at:
        ctx.flush()  # what came before is on disk; then the disk fills up
        with open(ballast, "wb") as handle:
            try:
                while True:
                    handle.write(bytes(1 << 20))
                    handle.flush()
            except OSError:
                pass
    if i == free_at:
        os.truncate(ballast, os.path.getsize(ballast) // 2)  # some room, maybe not enough
    ctx.set_metrics({"i": float(i), "loss": 0.5}, "train")
ctx.log_message("done", "success")
ctx.end_log()
ctx.close()
print(next(ctx.logger.writer.seq) - 1)  # records logged
"""


def run_disk_job(
    root: Path, ballast: Path, *, calls: int, fill_at: int, free_at: int | None
) -> tuple[int, str]:
    """A job in `root` whose disk fills up (with `ballast`) at call `fill_at`, and gets
    half of that back at `free_at` (None: full to the end); (records logged, stderr)."""
    arguments = [str(root), str(ballast), str(calls), str(fill_at), str(free_at or -1)]
    job = subprocess.run(
        [sys.executable, "-c", DISK_JOB, *arguments],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if job.returncode:
        raise TortureError(f"the job failed: {job.stderr[-500:]}")
    return int(job.stdout.strip()), job.stderr


@dataclass
class Kill:
    """What one kill left."""

    mode: str
    records: int  # metric records read back
    loss_ms: float | None  # newest record on disk, before the kill (None: ending mode)
    temp_files: int
    status: str
    ended: bool  # ending mode: the job had finished closing before the kill


class TortureError(AssertionError):
    """A kill left a run that breaks a promise."""


def kill_once(
    root: Path,
    mode: str,
    delay: float,
    *,
    seal_bytes: int = 1 << 20,
    flush_interval: float = 0.1,
    ending_records: int = 200_000,
) -> Kill:
    """Run one job in `root`, SIGKILL it `delay` seconds after it is ready (for
    `ending`: after it starts ending), and check what it left."""
    args = [str(root), mode, str(seal_bytes), str(flush_interval), str(ending_records)]
    job = subprocess.Popen(
        [sys.executable, "-c", JOB, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert job.stdout is not None
    try:
        if job.stdout.readline().strip() != "ready":
            raise TortureError(f"the job did not start (exit {job.wait()})")
        if mode == "ending":
            job.stdout.readline()  # "ending"
        time.sleep(delay)
        killed_at = time.time_ns()
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=60)
        ended = mode == "ending" and "ended" in job.stdout.read()
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    logged = ending_records if mode == "ending" else None
    return check_run(root / "victim", mode, killed_at, ended, logged)


def check_run(
    run_dir: Path, mode: str, killed_at: int, ended: bool = False, logged: int | None = None
) -> Kill:
    """Check a killed job's run; raises TortureError with what is wrong. `logged`: the
    calls the job made before it began to end (`ending` mode)."""
    from runstore import read_run

    run = read_run(run_dir)
    table = run.metrics
    problems = [p for p in run.problems if "torn" not in p]
    if problems:
        raise TortureError(f"{run_dir}: problems after a kill: {problems}")
    values = table.filter(pc.equal(table["key"], "i"))["value"]
    count = len(values)
    if pc.all(pc.equal(values, pa.array(range(count), pa.float64()))).as_py() not in (True, None):
        raise TortureError(f"{run_dir}: the records read are not a gap-free prefix in order")
    if pc.count_distinct(table["seq"]).as_py() * 2 != table.num_rows:  # two keys a call
        raise TortureError(f"{run_dir}: a record was read twice")
    # A kill in `ending` mode may land after close() wrote the end but before the job
    # said so: completed then, with every record; else crashed.
    allowed = {"completed"} if ended else {"crashed", "completed"} if logged else {"crashed"}
    if run.status not in allowed:
        raise TortureError(f"{run_dir}: reads as {run.status}, not {' or '.join(allowed)}")
    if run.status == "completed" and logged is not None and count != logged:
        raise TortureError(f"{run_dir}: completed with {count} of {logged} records")
    loss = None
    if mode != "ending" and table.num_rows:
        newest = pc.max(table["ts"]).as_py()
        loss = (killed_at - int(newest.timestamp() * 1e9)) / 1e6
    temp = sum(1 for _, _, files in os.walk(run_dir) for name in files if name.endswith(".tmp"))
    return Kill(mode, count, loss, temp, run.status, ended)


def accounted(run_dir: Path) -> tuple[int, int]:
    """(distinct records read back, records counted lost) of a run: for a run that
    ended, their sum is what the job logged."""
    from runstore import read_run

    run = read_run(run_dir)
    seen: set[tuple[str, int]] = set()
    for table in (run.events, run.progress, run.metrics):
        writers, seqs = table.column("writer").to_pylist(), table.column("seq").to_pylist()
        seen.update(zip(writers, seqs, strict=True))
    return len(seen), run.lost_records


@dataclass
class DiskFull:
    """What one job on a disk that filled up left."""

    logged: int
    read: int
    lost: int
    status: str


class CannotMount(RuntimeError):
    """A tmpfs cannot be mounted here (it needs root)."""


@contextmanager
def tmpfs(where: Path, size_mb: int = 16) -> Iterator[Path]:
    """A `size_mb` tmpfs of our own mounted at `where` (made), unmounted after."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode:
        raise CannotMount(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def disk_full_once(
    scratch: Path, seed: int, *, size_mb: int = 16, calls: int = 300_000
) -> DiskFull:
    """A job on a `size_mb` tmpfs that fills up at a random call (and gets some room
    back at a later one, or not): every record must be read back or counted lost."""
    try:
        with tmpfs(scratch / f"disk{seed}", size_mb) as disk:
            return _fill_and_count(disk, seed, calls)
    except CannotMount as exc:
        raise SystemExit(f"--disk-full: {exc}") from None


def _fill_and_count(disk: Path, seed: int, calls: int) -> DiskFull:
    root = disk / "runs"
    root.mkdir()
    rng = random.Random(seed)
    fill_at = rng.randrange(calls)
    free_at = rng.choice([None, rng.randrange(fill_at, calls)])
    logged, _ = run_disk_job(root, disk / "ballast", calls=calls, fill_at=fill_at, free_at=free_at)
    (disk / "ballast").unlink(missing_ok=True)
    read, lost = accounted(root / "full")
    from runstore import read_run

    status = read_run(root / "full").status
    result = DiskFull(logged, read, lost, status)
    if result.read + result.lost != result.logged or status != "completed":
        raise TortureError(f"disk full, seed {seed}: {result}")
    return result


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="kills in all (default 200)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-delay", type=float, default=1.0, help="seconds (default 1)")
    parser.add_argument(
        "--disk-full", type=int, default=0, metavar="N", help="also N jobs on a disk that fills"
    )
    parser.add_argument("--disk-mb", type=int, default=16, help="size of that disk (default 16)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    kills: list[Kill] = []
    with tempfile.TemporaryDirectory() as scratch:
        for number in range(args.kills):
            mode = args.modes[number % len(args.modes)]
            root = Path(scratch) / f"root{number}"
            root.mkdir()
            delay = rng.uniform(0.0, 0.05 if mode == "ending" else args.max_delay)
            kills.append(kill_once(root, mode, delay))
            shutil.rmtree(root)
        fulls = [
            disk_full_once(Path(scratch), seed, size_mb=args.disk_mb)
            for seed in range(args.seed, args.seed + args.disk_full)
        ]
    implementation = "C speedups" if _speedups() else "pure Python"
    print(f"{len(kills)} kills ({implementation}), every run readable, prefixes intact")
    for mode in args.modes:
        done = [k for k in kills if k.mode == mode]
        if not done:
            continue
        losses = [k.loss_ms for k in done if k.loss_ms is not None]
        line = f"  {mode:7s} {len(done):4d} kills, {sum(k.records for k in done):,} records"
        if losses:
            line += (
                f"; loss ms median {statistics.median(losses):.0f}, "
                f"p99 {_percentile(losses, 0.99):.0f}, max {max(losses):.0f}"
            )
        if mode == "ending":
            line += f"; {sum(k.ended for k in done)} had closed before the kill"
        print(line + f"; temp files left {sum(k.temp_files for k in done)}")
    if fulls:
        logged = sum(f.logged for f in fulls)
        lost = sum(f.lost for f in fulls)
        print(
            f"  disk full {len(fulls):3d} jobs on {args.disk_mb} MiB: {logged:,} records logged, "
            f"{sum(f.read for f in fulls):,} read back, {lost:,} counted lost, 0 uncounted; "
            f"every run ended ({', '.join(sorted({f.status for f in fulls}))})"
        )


def _speedups() -> bool:
    import runstore._native

    return runstore._native.speedups is not None


if __name__ == "__main__":
    main()
