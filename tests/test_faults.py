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
from runstore._faults import Faults, Reserve
from runstore.format import WriterManifest, utc_now

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


def _manifest() -> WriterManifest:
    now = utc_now()
    return WriterManifest(
        writer_id="w", run_id="r", host="h", pid=1, started_at=now, heartbeat_at=now
    )


def test_a_fault_is_said_once_counted_each_time_and_told_to_the_run_when_it_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events: list[dict[str, object]] = []
    faults = Faults(tmp_path, 8 << 20, events.append)
    manifest = _manifest()
    faults.seen(manifest, "disk full")
    faults.seen(manifest, "disk still full")
    faults.lost(manifest, 5)
    assert faults.current == "disk full"
    assert (manifest.fault_count, manifest.last_fault, manifest.lost_records) == (
        2,
        "disk still full",
        5,
    )
    said = capsys.readouterr().err
    assert said.count("keeping up to 8 MiB") == 1 and str(tmp_path) in said
    faults.recovered()
    assert faults.current is None
    (event,) = events
    assert event["error"] == "disk full" and event["lost_records"] == 5 and event["since"]
    assert "5 records lost" in capsys.readouterr().err
    faults.seen(manifest, "again")  # a new fault counts its own losses
    faults.recovered()
    assert events[1]["lost_records"] == 0 and manifest.lost_records == 5


def test_the_reserve_holds_room_and_tells_a_folder_made_again(tmp_path: Path) -> None:
    reserve = Reserve(tmp_path / ".w.reserve.tmp")
    reserve.make(1_000)
    assert reserve.held and reserve.path.stat().st_size >= 64 * 1024 + 2_000
    assert not reserve.lost()
    reserve.path.unlink()
    assert reserve.lost()
    reserve.make(0)
    reserve.release()
    assert not reserve.path.exists()
    Reserve(tmp_path / "no-such-folder" / "r").make(0)  # no room held: no error
