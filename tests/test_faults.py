"""Storage faults on a real disk: a small tmpfs the test mounts, filled up; a run folder
deleted under its writer. Every record is either read back or counted lost."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from runstore import WriterOptions, open_run, read_run

from .conftest import IMPLEMENTATIONS, implementation, load_benchmark, run_python, tmpfs

torture = load_benchmark("torture")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of our own, to fill up."""
    with tmpfs(tmp_path / "disk") as mount:
        yield mount


def _fill(disk: Path, leave: int = 0) -> Path:
    """Fill the disk with a ballast file, leaving about `leave` bytes free."""
    ballast = disk / f"ballast-{uuid.uuid4().hex}"
    status = os.statvfs(disk)
    free = status.f_bavail * status.f_frsize
    with open(ballast, "wb") as handle:
        chunk = b"\0" * (1 << 20)
        remaining = max(0, free - leave)
        while remaining > 0:
            try:
                handle.write(chunk[: min(len(chunk), remaining)])
                handle.flush()
            except OSError:
                break
            remaining -= min(len(chunk), remaining)
    return ballast


def _free(path: Path) -> int:
    status = os.statvfs(path)
    return status.f_bavail * status.f_frsize


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_a_disk_still_full_at_the_end_counts_and_reports_every_lost_record(
    small_disk: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = small_disk / "runs"
    root.mkdir()
    if kind == "python":
        monkeypatch.setenv("RUNSTORE_PURE_PYTHON", "1")
    else:
        monkeypatch.delenv("RUNSTORE_PURE_PYTHON", raising=False)
    with implementation(kind):  # skipped where the C speedups are not built
        logged, stderr = torture.run_disk_job(
            root, small_disk / "ballast", calls=60_000, fill_at=2000, free_at=None
        )
    assert "closing with the storage fault unresolved" in stderr
    (small_disk / "ballast").unlink()
    run = read_run(root / "full")
    # The end is written into the writer's reserved space: the run did not crash.
    assert run.status == "completed"
    read, lost = torture.accounted(run.path)
    assert lost > 0 and read >= 2000
    assert read + lost == logged, (read, lost, logged)
    assert f"{lost} lost in all" in stderr


def test_space_freed_below_the_backlog_is_used_in_order_and_never_filled(
    small_disk: Path,
) -> None:
    root = small_disk / "runs"
    root.mkdir()
    options = WriterOptions(flush_interval=0.02, max_pending_bytes=64 << 20)
    ctx = open_run(root, run_id="r", env={}, options=options)
    _fill(small_disk, leave=3 << 20)
    ballast = _fill(small_disk)  # the 3 MiB to free later
    for i in range(150_000):  # about 6 MB of lines: more than will be freed at first
        ctx.set_metrics({"i": float(i), "loss": 0.5}, "train")
    ctx.flush()
    assert ctx.logger.writer.fault is not None
    # Free 3 MiB, less than the backlog: what fits is written, in order, and the writer
    # never takes the disk back to full.
    ballast.unlink()
    lowest = _free(small_disk)
    for _ in range(25):
        ctx.flush()
        lowest = min(lowest, _free(small_disk))
        time.sleep(0.02)
    assert lowest > 0, "the writer filled the disk to 100%"
    partial = read_run(ctx.run_dir).metrics
    values = [
        v
        for k, v in zip(partial["key"].to_pylist(), partial["value"].to_pylist(), strict=True)
        if k == "i"
    ]
    assert 0 < len(values) < 150_000, "some, not all, of the backlog written"
    assert values == [float(i) for i in range(len(values))], "the oldest first, no gap"
    for path in small_disk.glob("ballast-*"):
        path.unlink()
    ctx.flush()
    assert ctx.logger.writer.fault is None
    ctx.end_log()
    ctx.close()
    run = read_run(ctx.run_dir)
    assert run.status == "completed" and run.lost_records == 0
    assert [v for v in run.metrics.to_pylist() if v["key"] == "i"][-1]["value"] == 149_999.0
    faults = [e for e in run.events.to_pylist() if e["event"] == "storage_fault"]
    assert len(faults) == 1 and orjson.loads(faults[0]["data"])["lost_records"] == 0


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_a_run_folder_deleted_under_its_writer_counts_what_it_took(
    root: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    options = WriterOptions(flush_interval=0.01, seal_bytes=4_000)
    with implementation(kind):
        ctx = open_run(root, run_id="r", env={}, options=options)
        for i in range(3000):
            ctx.set_metrics({"i": float(i)}, "train")
            if i % 500 == 0:
                ctx.flush()  # seals: segments on disk, then deleted with the folder
        ctx.flush()
        sealed_before = len(list((ctx.run_dir / "streams" / "metrics").glob("*.parquet")))
        assert sealed_before > 1
        shutil.rmtree(ctx.run_dir)
        for i in range(3000, 3100):
            ctx.set_metrics({"i": float(i)}, "train")
        ctx.end_log()
        ctx.close()
        logged = next(ctx.logger.writer.seq) - 1
    run = read_run(ctx.run_dir)
    read, lost = torture.accounted(run.path)
    assert lost > 0 and read + lost == logged
    assert run.status == "completed"
    faults = [
        orjson.loads(e["data"]) for e in run.events.to_pylist() if e["event"] == "storage_fault"
    ]
    assert [f["lost_records"] for f in faults] == [lost]
    assert "run folder was removed" in faults[0]["error"]
    err = capsys.readouterr().err
    assert f"{lost} records written before were lost with it" in err


def test_the_reserve_is_given_back_when_a_run_closes(root: Path) -> None:
    with open_run(root, env={}) as ctx:
        reserves = list((ctx.run_dir / "writers").glob(".*.reserve.tmp"))
        assert len(reserves) == 1 and reserves[0].stat().st_size >= 64 * 1024
    assert not list((ctx.run_dir / "writers").glob(".*.tmp"))


def test_a_killed_writers_reserve_is_removed_by_compaction(root: Path) -> None:
    from runstore import compact

    job = run_python(
        """
        import os, signal, sys
        from runstore import open_run
        ctx = open_run(sys.argv[1], run_id="k", env={})
        ctx.set_metrics({"a": 1.0}, "c")
        ctx.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """,
        str(root),
    )
    assert job.returncode == -9
    assert list((root / "k" / "writers").glob(".*.reserve.tmp"))
    assert compact(root).temp_files_removed == 1
    assert not list((root / "k" / "writers").glob(".*.tmp"))
