"""Reading runs: status, problems, one bad run never hiding the others, sample runs."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from runstore import (
    FormatVersionError,
    ManifestError,
    RunDirectoryError,
    list_runs,
    open_run,
    read_run,
)
from runstore.format import CRASH_TIMEOUT_SECONDS, WriterManifest, parse_manifest, utc_now
from runstore.reader import derive_status

from .conftest import SAMPLE_RUNS


def _writer(**changes: object) -> WriterManifest:
    now = utc_now()
    base = {
        "format_version": 1,
        "writer_id": "w",
        "run_id": "r",
        "host": "elsewhere",
        "pid": 1,
        "started_at": now,
        "heartbeat_at": now,
    }
    return parse_manifest(WriterManifest, {**base, **changes}, "test")


def test_status_of_a_writer_on_another_host_follows_its_heartbeat(root: Path) -> None:
    with open_run(root, env={}) as ctx:
        pass
    manifest = read_run(ctx.run_dir).manifest.replace(status="running")
    fresh = _writer()
    stale = _writer(heartbeat_at=utc_now() - timedelta(seconds=CRASH_TIMEOUT_SECONDS + 1))
    assert derive_status(manifest, [fresh]) == "running"
    assert derive_status(manifest, [stale]) == "crashed"
    assert derive_status(manifest, [stale, fresh]) == "running"
    assert derive_status(manifest, [_writer(status="closed")]) == "crashed"


def test_a_live_run_reads_as_running_with_its_newest_records(root: Path) -> None:
    ctx = open_run(root, env={})
    ctx.set_metrics({"a": 1.0}, "c")
    ctx.flush()
    run = read_run(ctx.run_dir)
    assert run.status == "running" and run.metrics.num_rows == 1
    ctx.close()


def test_malformed_manifest_is_reported_and_other_runs_still_list(root: Path) -> None:
    for name in ("good-1", "bad", "good-2"):
        with open_run(root, run_id=name, env={}):
            pass
    (root / "bad" / "run.json").write_text('{"format_version": 1, "run_id": ')
    problems: list[str] = []
    runs = list_runs(root, problems)
    assert [r.run_id for r in runs] == ["good-1", "good-2"]
    assert len(problems) == 1 and "bad/run.json: not valid JSON" in problems[0]
    with pytest.raises(ManifestError, match="run.json: not valid JSON"):
        read_run(root / "bad")


def test_missing_fields_name_the_field(root: Path) -> None:
    with open_run(root, run_id="r", env={}):
        pass
    path = root / "r" / "run.json"
    data = json.loads(path.read_text())
    del data["run_id"]
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="malformed manifest: 1 validation error.*run_id"):
        read_run(root / "r")


def test_newer_format_version_is_refused_by_name(root: Path) -> None:
    with open_run(root, run_id="r", env={}):
        pass
    path = root / "r" / "run.json"
    path.write_text(path.read_text().replace('"format_version": 1', '"format_version": 7'))
    with pytest.raises(FormatVersionError, match="format version 7.*upgrade runstore"):
        read_run(root / "r")


def test_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RunDirectoryError, match="no such run directory"):
        read_run(tmp_path / "nothing")
    with pytest.raises(ManifestError, match="run.json: missing"):
        read_run(tmp_path)
    with pytest.raises(RunDirectoryError, match="no such folder of runs"):
        list_runs(tmp_path / "nothing")


def test_sample_runs_are_readable_with_the_expected_statuses() -> None:
    runs = {run.run_id: run for run in list_runs(SAMPLE_RUNS)}
    assert {k: r.status for k, r in runs.items()} == {
        "demo-train": "completed",
        "demo-export": "completed",
        "demo-upload": "failed",
        "demo-crashed": "crashed",
    }
    train = read_run(SAMPLE_RUNS / "demo-train")
    assert train.problems == [] and train.overall_progress() == 100.0
    assert set(train.latest_metrics()) == {"train", "validation"}
    assert train.metrics.num_rows > 400
    crashed = read_run(SAMPLE_RUNS / "demo-crashed")
    assert crashed.progress.num_rows == 100 and crashed.problems == []
    assert crashed.latest_progress()[0]["percent"] == 50.0
    total = sum(f.stat().st_size for f in SAMPLE_RUNS.rglob("*") if f.is_file())
    assert total < 2 * 1024 * 1024
