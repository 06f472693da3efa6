"""Query speed: "final loss per run, sorted" over stores of 1,000 and 10,000 runs.

Each run has 1,000 steps of two metrics (loss, accuracy) in one sealed Parquet segment,
written with runstore's own segment code, plus its manifests. For each store size the
benchmark measures, in the same process and on the same files:

- the baseline: the same question asked by DuckDB of every raw segment file directly
  (`read_parquet('ROOT/*/streams/metrics/*.parquet')`), warm;
- a `Store` without an archive (every run read from its folder): opening, then warm;
- `runstore compact`; then a `Store` over the archive: opening, then warm queries
  through `latest_metrics` and through `arg_max` over the full `metrics` history;
- `runstore sql ROOT "<query>"` as a fresh process, end to end.

    .venv/bin/python benchmarks/bench_query.py [--runs 1000,10000] [--repeats 7]
        [--data DIR]   # keep generated stores in DIR and reuse them next time

Targets (issue 3): 1,000 runs under 100 ms warm (Python API) and under 1 s as a fresh
CLI process; 10,000 runs under 1 s warm after compaction. Issue 14: 10,000 runs, a new
`Store` opened and asked once < 300 ms warm; 1,000 runs as a fresh `runstore sql`
process < 500 ms.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import duckdb

from runstore import RunManifest, Store, WriterManifest, compact
from runstore.format import METRICS, RUN_MANIFEST, STREAMS_DIR, WRITERS_DIR, SegmentName, utc_now
from runstore.jsonl import columns_of_records
from runstore.segments import write_parquet_atomic
from runstore.tables import table_from_columns

STEPS = 1_000
LATEST = "SELECT run_id, value AS loss FROM latest_metrics WHERE key = 'loss' ORDER BY loss"
ARG_MAX = (
    "SELECT run_id, arg_max(value, seq) AS loss FROM metrics WHERE key = 'loss' "
    "GROUP BY run_id ORDER BY loss"
)
RAW = (
    "SELECT split_part(filename, '/', -4) AS run_id, arg_max(value, seq) AS loss "
    "FROM read_parquet('{root}/*/streams/metrics/*.parquet', filename = true) "
    "WHERE key = 'loss' GROUP BY run_id ORDER BY loss"
)


def make_run(root: Path, index: int, rng: random.Random) -> None:
    """One finished run, as the writer leaves it after closing."""
    run_id = f"run-{index:05d}"
    writer = f"w{1000 + index}-bench0"
    run_dir = root / run_id
    metrics = run_dir / STREAMS_DIR / METRICS
    metrics.mkdir(parents=True)
    (run_dir / WRITERS_DIR).mkdir()
    started = utc_now() - timedelta(hours=1)
    start_ns = int(started.timestamp() * 1e9)
    decay = rng.uniform(0.001, 0.01)
    records = [
        (start_ns + step * 10_000_000, step + 1, "train",
         {"loss": 2.0 * (1 - decay) ** step + rng.random() * 0.01,
          "accuracy": min(1.0, step / STEPS + 0.1)})
        for step in range(STEPS)
    ]  # fmt: skip
    table = table_from_columns(METRICS, writer, columns_of_records(METRICS, records))
    segment = SegmentName(writer=writer, number=1, sealed=True)
    write_parquet_atomic(table, metrics / segment.filename)
    ended = started + timedelta(seconds=10)
    common = {"run_id": run_id, "host": "bench", "pid": 1000 + index, "started_at": started}
    (run_dir / WRITERS_DIR / f"{writer}.json").write_bytes(
        WriterManifest(
            writer_id=writer,
            heartbeat_at=ended,
            ended_at=ended,
            status="closed",
            records_written=STEPS,
            **common,
        ).to_json()
    )
    (run_dir / RUN_MANIFEST).write_bytes(
        RunManifest(
            writer_id=writer,
            plugin="yolo-train",
            action="train",
            params={"lr": decay},
            ended_at=ended,
            status="completed",
            **common,
        ).to_json()
    )


def make_store(root: Path, runs: int) -> float:
    if root.exists() and len([p for p in root.iterdir() if p.name.startswith("run-")]) == runs:
        return 0.0
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = random.Random(runs)
    start = time.perf_counter()
    for index in range(runs):
        make_run(root, index, rng)
    return time.perf_counter() - start


def timed(action: Callable[[], object], repeats: int) -> float:
    """Median seconds of `action` over `repeats` calls (after one warm-up call)."""
    action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def once(action: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def cli_seconds(root: Path, query: str, repeats: int) -> float:
    command = [sys.executable, "-m", "runstore.cli", "sql", str(root), query, "--format", "csv"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms"


def bench(root: Path, runs: int, repeats: int, live_store: bool) -> None:
    made = make_store(root, runs)
    shutil.rmtree(root / ".runstore", ignore_errors=True)
    print(f"\n== {runs:,} runs x {STEPS:,} steps x 2 metrics = {runs * STEPS * 2:,} rows ==")
    if made:
        print(f"generated in {made:.1f} s")
    raw = duckdb.connect()
    raw_query = RAW.format(root=root)
    expected = raw.sql(raw_query).fetchall()
    baseline = timed(lambda: raw.sql(raw_query).fetchall(), repeats)
    print(f"baseline: DuckDB over every raw segment file, warm  {ms(baseline)}")

    if live_store:
        opened, store = once(lambda: Store(root, archive=False))
        assert isinstance(store, Store)
        warm = timed(lambda: store.sql(LATEST).fetchall(), repeats)  # type: ignore[union-attr]
        print(f"Store, no archive: open (reads every run)        {ms(opened)}")
        print(
            f"Store, no archive: latest_metrics, warm          {ms(warm)}"
            f"   {baseline / warm:5.1f}x faster than baseline"
        )
        store.close()
        del store
        gc.collect()

    compacted, report = once(lambda: compact(root))
    print(f"runstore compact                                 {ms(compacted)}   ({report})")
    opened, store = once(lambda: Store(root, archive=False))
    assert isinstance(store, Store)
    answer = [(run, round(loss, 9)) for run, loss in store.sql(LATEST).fetchall()]  # type: ignore[union-attr]
    assert answer == [(run, round(loss, 9)) for run, loss in expected], "answers differ"
    latest = timed(lambda: store.sql(LATEST).fetchall(), repeats)  # type: ignore[union-attr]
    arg_max = timed(lambda: store.sql(ARG_MAX).fetchall(), repeats)  # type: ignore[union-attr]
    print(f"Store, archive: open                             {ms(opened)}")
    print(
        f"Store, archive: latest_metrics, warm             {ms(latest)}"
        f"   {baseline / latest:5.1f}x faster than baseline"
    )
    print(
        f"Store, archive: arg_max over metrics, warm       {ms(arg_max)}"
        f"   {baseline / arg_max:5.1f}x faster than baseline"
    )
    store.close()

    def open_and_ask() -> None:
        with Store(root, archive=False) as fresh:
            fresh.sql(LATEST).fetchall()

    first = timed(open_and_ask, repeats)
    print(f"Store, archive: open + first query, a new Store  {ms(first)}   (target < 300 ms)")
    cli = cli_seconds(root, LATEST, max(3, repeats // 2))
    print(f"fresh `runstore sql` process, archive            {ms(cli)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="1000,10000", help="store sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--data", type=Path, help="keep generated stores here for reuse")
    parser.add_argument(
        "--live-max",
        type=int,
        default=1000,
        help="measure the store without archive up to this many runs (it holds them in memory)",
    )
    args = parser.parse_args()
    scratch = args.data or Path(tempfile.mkdtemp(prefix="runstore-bench-query-"))
    print(f"python {sys.version.split()[0]}, duckdb {duckdb.__version__}, {os.cpu_count()} cores")
    try:
        for runs in (int(n) for n in args.runs.split(",")):
            bench(scratch / f"store-{runs}", runs, args.repeats, runs <= args.live_max)
    finally:
        if args.data is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
