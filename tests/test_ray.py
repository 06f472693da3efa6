"""Ray workers (tasks and actors) logging into one run, and Ray Data reading the store.

Starts a local Ray cluster; runs where `ray` is installed (`.venv-sdk`, see README).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstore import Store, WriterOptions, attach_run, export_store, open_run, read_run

ray = pytest.importorskip("ray", reason="ray not installed (runs in .venv-sdk)")

CALLS = 300  # set_metrics calls per worker


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()


@ray.remote
def _task(run_dir: str, name: str) -> str:
    # A task's process is reused by Ray: close the writer by leaving the block, not at exit.
    with attach_run(run_dir, labels={"worker": name}) as ctx:
        for i in range(CALLS):
            ctx.set_metrics({"loss": 1 / (i + 1), "i": i}, "train")
        ctx.set_progress(CALLS, CALLS, "train")
        ctx.log_message(f"{name} done", "success")
        return ctx.writer_id


@ray.remote
class _Actor:
    def __init__(self, run_dir: str, name: str) -> None:
        self.ctx = attach_run(run_dir, labels={"worker": name})

    def work(self, start: int, count: int) -> None:
        for i in range(start, start + count):
            self.ctx.set_metrics({"loss": 1 / (i + 1), "i": i}, "train")

    def flush(self) -> None:
        self.ctx.flush()

    def close(self) -> str:
        self.ctx.log_message("actor done", "info")
        self.ctx.close()
        return self.ctx.writer_id


def test_tasks_and_actors_log_into_one_run(cluster: None, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    with open_run(root, plugin="ray-test", action="train") as ctx:
        run_dir = str(ctx.run_dir)
        ctx.log_message("driver starts", "info")
        tasks = [_task.remote(run_dir, f"task-{n}") for n in range(3)]
        actors = [_Actor.remote(run_dir, f"actor-{n}") for n in range(2)]
        # Three calls of CALLS // 3 each: an actor's writer spans several method calls.
        ray.get([a.work.remote(k * (CALLS // 3), CALLS // 3) for a in actors for k in range(3)])
        writer_ids = ray.get(tasks) + ray.get([a.close.remote() for a in actors])

    run = read_run(run_dir)
    assert run.status == "completed"
    assert run.problems == []
    writers = {w.writer_id: w for w in run.writers}
    assert set(writer_ids) <= set(writers) and len(set(writer_ids)) == 5
    metrics = run.metrics.to_pylist()
    per_writer: dict[str, list[int]] = {}
    for row in metrics:
        if row["key"] == "i":
            per_writer.setdefault(row["writer"], []).append(int(row["value"]))
    for writer_id in writer_ids:
        # every call of every worker once, attributed to its writer
        assert sorted(per_writer[writer_id]) == list(range(CALLS)), writers[writer_id].labels
    by_name = {writers[w].labels["worker"]: writers[w] for w in writer_ids}
    assert set(by_name) == {"task-0", "task-1", "task-2", "actor-0", "actor-1"}
    for name, writer in by_name.items():
        assert writer.status == "closed"
        assert writer.labels["ray.node_id"] and writer.labels["ray.worker_id"]
        if name.startswith("actor"):
            assert writer.labels["ray.actor_id"]
        else:
            assert writer.labels["ray.task_id"] and "ray.actor_id" not in writer.labels
    # no record repeats: a (writer, seq) holds each metric key of one call once
    seen = Counter((r["writer"], r["seq"], r["key"]) for r in metrics)
    assert max(seen.values()) == 1

    store = Store(root)
    counted = store.sql(
        "SELECT w.labels['worker'], count(*) FROM metrics m JOIN writers w USING (run_id, writer) "
        "WHERE m.key = 'loss' GROUP BY ALL"
    ).fetchall()
    assert dict(counted) == {name: CALLS for name in by_name}
    texts = [t for (t,) in store.sql("SELECT text FROM messages ORDER BY ts").fetchall()]
    assert texts[0] == "driver starts" and texts.count("actor done") == 2


def test_a_killed_actor_keeps_what_it_flushed_and_the_run_reads(
    cluster: None, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    with open_run(root, plugin="ray-test", action="train") as ctx:
        actor = _Actor.remote(str(ctx.run_dir), "doomed")
        ray.get(actor.work.remote(0, CALLS))
        ray.get(actor.flush.remote())
        ray.kill(actor)  # SIGKILL-like: no close, no atexit
    run = read_run(ctx.run_dir)
    assert run.status == "completed" and run.problems == []
    (doomed,) = [w for w in run.writers if w.labels.get("worker") == "doomed"]
    assert doomed.status == "open"  # it never closed; readers see it is not alive
    values = [
        int(r["value"])
        for r in run.metrics.to_pylist()
        if r["writer"] == doomed.writer_id and r["key"] == "i"
    ]
    assert sorted(values) == list(range(CALLS))  # every flushed call, once


def test_ray_data_reads_the_sealed_segments_and_the_export(cluster: None, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for n in range(2):
        sealed_at_close = WriterOptions(jsonl_bytes=0)
        with open_run(
            root, plugin="p", action="train", run_id=f"run-{n}", options=sealed_at_close
        ) as ctx:
            for i in range(1000):
                ctx.set_metrics({"loss": 1 / (i + 1)}, "train")

    sealed = ray.data.read_parquet(
        str(root / "run-0" / "streams" / "metrics"), file_extensions=["parquet"]
    )
    assert sealed.count() == 1000
    assert set(sealed.schema().names) >= {"ts", "writer", "seq", "category", "key", "value"}

    export_store(root, tmp_path / "export")
    metrics = ray.data.read_parquet(str(tmp_path / "export" / "metrics"))
    assert metrics.count() == 2000
    rows = metrics.groupby("run_id").count().take_all()
    assert {row["run_id"]: row["count()"] for row in rows} == {"run-0": 1000, "run-1": 1000}
    runs = ray.data.read_parquet(str(tmp_path / "export" / "runs")).take_all()
    assert sorted(row["run_id"] for row in runs) == ["run-0", "run-1"]
    assert read_run(root / "run-1").metrics.num_rows == 1000
