"""The background writer: sealing, readers racing the sealer, storage faults."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import threading
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import runstore._stream
import runstore.segments
import runstore.tables
import runstore.writer
from runstore import RuntimeContext, WriterOptions, open_run, read_run
from runstore.format import METRICS, SCHEMAS, load_writer_manifest
from runstore.reader import read_stream, segment_files

#: Every stream converted to Arrow from the start and every segment sealed at close: the
#: paths of a job that logs more than `jsonl_bytes`, for the tests of sealing.
SEALED = WriterOptions(jsonl_bytes=0)


def _files(run_dir: Path, stream: str) -> list[str]:
    return sorted(os.listdir(run_dir / "streams" / stream))


def test_close_seals_every_segment_into_parquet(root: Path) -> None:
    with open_run(root, env={}, options=SEALED) as ctx:
        ctx.set_metrics({"a": 1.0}, "c")
        ctx.flush()
        assert _files(ctx.run_dir, METRICS)[0].endswith(".jsonl")
        ctx.log("ev", {})
    for stream in ("events", "progress", "metrics"):
        assert all(name.endswith(".parquet") for name in _files(ctx.run_dir, stream))
    writer = load_writer_manifest(ctx.run_dir / "writers" / f"{ctx.writer_id}.json")
    assert writer.status == "closed" and writer.records_written == 3  # metrics, event, end msg


def test_a_small_run_closes_as_jsonl_read_the_same_as_sealed(root: Path) -> None:
    runs = {}
    for name, options in (("small", None), ("sealed", SEALED)):
        with open_run(root, run_id=name, env={}, options=options) as ctx:
            for index in range(20):
                ctx.set_metrics({"a": float(index), "n": index, "s": f"x{index}"}, "c")
                ctx.log("ev", {"i": index, "big": 2**70})
                ctx.set_progress(index + 1, 20, "c")
        runs[name] = read_run(ctx.run_dir)
    for stream in ("events", "progress", "metrics"):
        assert [n[-6:] for n in _files(root / "small", stream)] == [".jsonl"]
        assert [n[-8:] for n in _files(root / "sealed", stream)] == [".parquet"]
        timing = {"ts", "writer", "elapsed", "time_remaining"}  # differ from run to run
        small, sealed = (
            (table := runs[name]._stream(stream)).drop_columns(
                sorted(timing & set(table.column_names))
            )
            for name in runs
        )
        assert small.equals(sealed.cast(small.schema)), stream


def test_a_stream_past_jsonl_bytes_is_sealed_and_converts_from_then_on(root: Path) -> None:
    options = WriterOptions(jsonl_bytes=4_000, flush_interval=0.01)
    with open_run(root, env={}, options=options) as ctx:
        for index in range(1_000):
            ctx.set_metrics({"i": float(index)}, "c")
            if index % 100 == 0:
                ctx.flush()
        ctx.flush()
        metrics = ctx.logger.writer.buffers[METRICS]
        assert metrics.arrow and metrics.held is None
        assert any(n.endswith(".parquet") for n in _files(ctx.run_dir, METRICS))
        assert not ctx.logger.writer.buffers["progress"].arrow  # it logged nothing
    assert all(n.endswith(".parquet") for n in _files(ctx.run_dir, METRICS))
    values = read_run(ctx.run_dir).metrics.column("value").to_pylist()
    assert values == [float(i) for i in range(1_000)]


def test_a_first_segment_past_jsonl_bytes_is_sealed_from_memory_not_from_its_file(
    root: Path,
) -> None:
    options = WriterOptions(jsonl_bytes=4_000, flush_interval=60)
    with open_run(root, env={}, options=options) as ctx:
        for index in range(10):
            ctx.set_metrics({"f": index + 0.5, "s": f"x{index}", "big": 2**70 + index}, "c")
            ctx.set_metrics({"g": float(index), "nan": math.nan}, "c")
            ctx.log("ev", {"i": index})
        ctx.flush()
        # Digits changed on disk where the size stays the same: a seal that decoded the
        # file would keep them; the seal comes from the drains the writer holds.
        for stream in ("metrics", "events"):
            (live,) = (ctx.run_dir / "streams" / stream).glob("*.jsonl")
            header, _, body = live.read_bytes().partition(b"\n")
            live.write_bytes(header + b"\n" + body.replace(b"1", b"2"))
        assert not ctx.logger.writer.buffers[METRICS].arrow
        for index in range(10, 200):
            ctx.set_metrics({"g": float(index), "nan": math.nan}, "c")
            ctx.log("ev", {"i": index})
        ctx.flush()
        assert ctx.logger.writer.buffers[METRICS].arrow
        for stream in ("metrics", "events"):
            assert _files(ctx.run_dir, stream)[0].endswith("-000001.parquet"), stream
    run = read_run(ctx.run_dir)
    assert not run.problems
    metrics = run.metrics.to_pylist()
    assert [m["value"] for m in metrics if m["key"] == "g"] == [float(i) for i in range(200)]
    assert [m["value"] for m in metrics if m["key"] == "f"] == [i + 0.5 for i in range(10)]
    assert [m["text"] for m in metrics if m["key"] == "s"] == [f"x{i}" for i in range(10)]
    assert [m["text"] for m in metrics if m["key"] == "big"] == [str(2**70 + i) for i in range(10)]
    assert all(math.isnan(m["value"]) for m in metrics if m["key"] == "nan")
    events = [json.loads(e["data"]) for e in run.events.to_pylist() if e["event"] == "ev"]
    assert events == [{"i": i} for i in range(200)]


def test_a_small_segment_removed_under_the_job_is_written_again_from_memory(root: Path) -> None:
    with open_run(root, env={}) as ctx:
        for index in range(10):
            ctx.set_metrics({"i": float(index)}, "c")
        ctx.flush()
        (live,) = (ctx.run_dir / "streams" / METRICS).glob("*.jsonl")
        live.unlink()
        for index in range(10, 20):
            ctx.set_metrics({"i": float(index)}, "c")
        ctx.flush()
    values = read_run(ctx.run_dir).metrics.column("value").to_pylist()
    assert values == [float(i) for i in range(20)]
    assert load_writer_manifest(ctx.run_dir / "writers" / f"{ctx.writer_id}.json").lost_records == 0


def test_sealed_segments_keep_time_and_order_statistics(root: Path) -> None:
    # docs/format.md promises min/max of ts and seq: what lets a query skip a file.
    with open_run(root, env={}, options=SEALED) as ctx:
        for index in range(5):
            ctx.set_metrics({"a": float(index)}, "c")
    (name,) = _files(ctx.run_dir, METRICS)
    meta = pq.ParquetFile(ctx.run_dir / "streams" / METRICS / name).metadata.row_group(0)
    columns = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    seq = columns["seq"].statistics
    assert seq is not None and seq.has_min_max and (seq.min, seq.max) == (1, 5)
    assert columns["ts"].statistics is not None and columns["ts"].statistics.has_min_max


def test_large_segments_are_sealed_while_the_job_runs(root: Path) -> None:
    options = WriterOptions(seal_bytes=2_000, flush_interval=0.01)
    with open_run(root, env={}, options=options) as ctx:
        for index in range(2_000):
            ctx.set_metrics({"i": float(index)}, "c")
            if index % 200 == 0:
                ctx.flush()
        ctx.flush()
        sealed = [n for n in _files(ctx.run_dir, METRICS) if n.endswith(".parquet")]
        assert len(sealed) >= 5
    values = read_run(ctx.run_dir).metrics.column("value").to_pylist()
    assert values == [float(i) for i in range(2_000)]


def test_sealed_segment_replaces_live_without_duplicates(root: Path) -> None:
    """A crash between writing the Parquet and removing the JSONL leaves both."""
    with open_run(root, env={}, options=SEALED) as ctx:
        ctx.set_metrics({"a": 1.0}, "c")
        ctx.flush()
        stream_dir = ctx.run_dir / "streams" / METRICS
        live = stream_dir / _files(ctx.run_dir, METRICS)[0]
        kept = live.read_bytes()
    live.write_bytes(kept)  # put the live copy back next to its sealed twin
    assert len(_files(ctx.run_dir, METRICS)) == 2
    assert [name.sealed for name, _ in segment_files(ctx.run_dir, METRICS)] == [True]
    assert read_run(ctx.run_dir).metrics.num_rows == 1


def test_reader_racing_the_sealer_never_sees_a_record_twice_or_loses_one(root: Path) -> None:
    options = WriterOptions(seal_bytes=1_500, flush_interval=0.002)
    ctx = open_run(root, env={}, options=options)
    stop = threading.Event()
    seen: list[int] = []
    failures: list[str] = []

    def read_repeatedly() -> None:
        while not stop.is_set():
            table, problems = read_stream(ctx.run_dir, METRICS)
            values = [int(v) for v in table.column("value").to_pylist()]
            if values != list(range(len(values))):
                failures.append(f"not a duplicate-free prefix: {values[:5]}... ({len(values)})")
            failures.extend(problems)
            if len(values) < (seen[-1] if seen else 0):
                failures.append("a record disappeared")
            seen.append(len(values))

    reader = threading.Thread(target=read_repeatedly)
    reader.start()
    for index in range(3_000):
        ctx.set_metrics({"i": float(index)}, "c")
        if index % 50 == 0:
            ctx.flush()
            time.sleep(0.002)  # let the reader in between seals, even on a slow machine
    ctx.close()
    stop.set()
    reader.join()
    assert failures == []
    assert len(seen) > 5
    assert read_run(ctx.run_dir).metrics.num_rows == 3_000


def test_run_directory_removed_mid_job_is_written_again(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = open_run(root, env={}, job_id="j")
    for index in range(100):
        ctx.set_metrics({"i": float(index)}, "c")
    ctx.flush()
    shutil.rmtree(ctx.run_dir)
    for index in range(100, 200):
        ctx.set_metrics({"i": float(index)}, "c")  # never raises
    ctx.flush()
    ctx.end_log()
    ctx.close()
    run = read_run(ctx.run_dir)
    assert run.manifest.job_id == "j" and run.status == "completed"
    assert run.metrics.column("value").to_pylist() == [float(i) for i in range(200)]
    assert "removed or changed" in capsys.readouterr().err


def test_a_write_cut_short_by_a_full_disk_is_finished_without_duplicates(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = open_run(root, env={})
    for index in range(5):
        ctx.set_metrics({"i": float(index)}, "c")
    ctx.flush()

    def half_then_full(fd: int, chunks: list[bytes]) -> None:
        data = b"".join(chunks)
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    real = runstore._stream.write_all
    monkeypatch.setattr(runstore._stream, "write_all", half_then_full)
    for index in range(5, 10):
        ctx.set_metrics({"i": float(index)}, "c")
    ctx.flush()
    assert ctx.logger.writer.fault is not None
    monkeypatch.setattr(runstore._stream, "write_all", real)
    ctx.flush()
    assert ctx.logger.writer.fault is None
    (name,) = _files(ctx.run_dir, METRICS)  # the same live segment, its cut tail dropped
    assert name.endswith(".jsonl")
    live = read_run(ctx.run_dir)
    assert live.problems == []
    assert live.metrics.column("value").to_pylist() == [float(i) for i in range(10)]
    ctx.end_log()
    ctx.close()
    sealed = read_run(ctx.run_dir).metrics.column("value").to_pylist()
    assert sealed == [float(i) for i in range(10)]


@pytest.fixture
def unconverted(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> RuntimeContext:
    """A run whose first 10 records reached their live segment but not Arrow (the
    writer's conversion failed: a bug); later records convert again. (After `capsys`,
    so that the test sees what the failure reported.)"""

    def failing(*args: object, **kwargs: object) -> pa.Table:
        raise pa.ArrowInvalid("simulated conversion bug")

    # Both ways the writer converts: in Python, and from the C speedups' rows.
    with monkeypatch.context() as patch:
        patch.setattr(runstore.tables, "table_from_columns", failing)
        patch.setattr(runstore.tables, "number_rows_table", failing)
        ctx = open_run(root, env={}, options=SEALED)
        for index in range(10):
            ctx.set_metrics({"i": float(index)}, "c")
        ctx.flush()
    return ctx


def test_records_the_writer_could_not_convert_are_sealed_from_the_file(
    unconverted: RuntimeContext, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = unconverted
    ctx.end_log()
    ctx.close()
    assert "sealed from its JSONL" in capsys.readouterr().err  # reported at the failure
    assert _files(ctx.run_dir, METRICS)[0].endswith(".parquet")
    values = read_run(ctx.run_dir).metrics.column("value").to_pylist()
    assert values == [float(i) for i in range(10)]


def test_a_removed_segment_held_only_on_disk_is_counted_lost(
    unconverted: RuntimeContext, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = unconverted
    shutil.rmtree(ctx.run_dir)
    for index in range(10, 15):
        ctx.set_metrics({"i": float(index)}, "c")
    ctx.end_log()
    ctx.close()
    assert "its 10 records are lost" in capsys.readouterr().err
    run = read_run(ctx.run_dir)
    assert run.lost_records == 10
    assert run.metrics.column("value").to_pylist() == [float(i) for i in range(10, 15)]


def test_storage_fault_keeps_records_within_the_bound_and_counts_the_rest(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = WriterOptions(max_pending_bytes=20_000, flush_interval=0.01)
    ctx = open_run(root, env={}, options=options)
    ctx.set_metrics({"i": -1.0}, "c")
    ctx.flush()
    metrics_dir = ctx.run_dir / "streams" / METRICS
    shutil.rmtree(metrics_dir)
    metrics_dir.write_text("a file where the folder was: every write fails")
    for batch in range(40):
        for index in range(50):
            ctx.set_metrics({"i": float(batch * 50 + index)}, "c")
        ctx.flush()
    assert ctx.logger.writer.fault is not None
    err = capsys.readouterr().err
    assert "cannot write metrics segment" in err and "keeping up to" in err
    metrics_dir.unlink()
    ctx.flush()
    assert ctx.logger.writer.fault is None
    ctx.close()
    run = read_run(ctx.run_dir)
    lost = run.lost_records
    assert 0 < lost < 2_000
    kept = run.metrics.column("value").to_pylist()
    assert len(kept) == 2_001 - lost
    assert kept[-1] == 1_999.0, "the newest records are the ones kept"
    faults = [
        orjson.loads(e["data"]) for e in run.events.to_pylist() if e["event"] == "storage_fault"
    ]
    assert len(faults) == 1 and faults[0]["lost_records"] == lost
    assert "writes go through again" in capsys.readouterr().err


def test_final_status_reaches_run_json_while_the_writer_thread_is_busy(root: Path) -> None:
    for attempt in range(20):
        ctx = open_run(root, env={}, options=WriterOptions(flush_interval=0.0005))
        for index in range(2_000):
            ctx.set_metrics({"i": float(index)}, "c")
        ctx.end_log()
        assert json.loads((ctx.run_dir / "run.json").read_text())["status"] == "completed", attempt
        ctx.close()


def test_sealed_metrics_read_back_as_plain_columns_equal_to_the_live_segment(
    root: Path,
) -> None:
    """The writer seals from dictionary-encoded tables: any Parquet reader sees the
    documented schema, and the rows are the ones the live segment held."""
    with open_run(root, env={}, options=SEALED) as ctx:
        for i in range(50):
            ctx.set_metrics({"loss": 1.0 / (i + 1), "acc": i / 50}, "train")
            ctx.set_metrics({"epoch": i, "note": "x"}, "val")
        ctx.set_metrics({"acc": math.nan, "loss": math.inf}, "train")  # other order, no JSON
        ctx.flush()
        live = read_run(ctx.run_dir).metrics
    (sealed,) = (ctx.run_dir / "streams" / METRICS).glob("*.parquet")
    plain = pq.read_table(sealed)
    assert plain.schema.equals(SCHEMAS[METRICS])
    order = [("seq", "ascending"), ("key", "ascending")]
    rows = plain.sort_by(order).to_pylist()
    assert len(rows) == live.num_rows == 50 * 4 + 2
    assert repr(rows) == repr(live.sort_by(order).to_pylist())  # NaN equal to NaN
    assert rows[-2]["key"] == "acc" and math.isnan(rows[-2]["value"])


def test_a_seal_that_fails_by_a_bug_leaves_a_readable_live_segment_and_a_heartbeat(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(table: object, path: object) -> None:
        raise pa.ArrowInvalid("a bug in sealing")

    monkeypatch.setattr(runstore.segments, "write_parquet_atomic", broken)
    ctx = open_run(root, env={}, options=WriterOptions(flush_interval=0.01, seal_bytes=1))
    for index in range(20):
        ctx.set_metrics({"i": float(index)}, "c")
        ctx.flush()
    ctx.end_log()
    ctx.close()  # never raises into the job
    assert "it stays a live segment" in capsys.readouterr().err
    run = read_run(ctx.run_dir)
    assert run.status == "completed"
    assert run.metrics.column("value").to_pylist() == [float(i) for i in range(20)]
    assert any(name.endswith(".jsonl") for name in _files(ctx.run_dir, METRICS))
