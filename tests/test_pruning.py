"""Deleting runs: never a running one, the archive and SQL in step, bytes freed said."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from runstore import Store, compact, open_run
from runstore.format import utc_now
from runstore.pruning import folder_bytes, older_runs, remove_runs


def _run(root: Path, name: str, *, days_ago: float = 0) -> Path:
    """A finished run; `days_ago`: as if it had started and ended that long ago."""
    with open_run(root, run_id=name, env={}) as ctx:
        for step in range(20):
            ctx.set_metrics({"loss": 1 / (step + 1)}, "train")
    if days_ago:
        manifest = root / name / "run.json"
        data = json.loads(manifest.read_text())
        ended = (utc_now() - timedelta(days=days_ago)).isoformat()
        data["started_at"] = data["ended_at"] = ended
        manifest.write_text(json.dumps(data))
    return root / name


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runstore", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _run_ids(root: Path) -> list[str]:
    with Store(root) as store:
        return [row[0] for row in store.sql("SELECT run_id FROM runs ORDER BY 1").fetchall()]


def test_rm_deletes_a_finished_run_and_sql_and_the_archive_forget_it(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    gone, kept = _run(root, "gone"), _run(root, "kept")
    compact(root)
    size = folder_bytes(gone)
    done = _cli("rm", str(gone), "--yes", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["removed"] == [str(gone)] and report["bytes_freed"] == size > 0
    assert report["archive_updated"] is True
    assert not gone.exists() and kept.exists()
    assert _run_ids(root) == ["kept"]
    catalog = json.loads((root / ".runstore" / "archive" / "catalog.json").read_text())
    assert [name for part in catalog["parts"] for name in part["runs"]] == ["kept"]
    with Store(root) as store:
        assert store.sql("SELECT DISTINCT run_id FROM metrics").fetchall() == [("kept",)]


def test_a_running_run_is_never_deleted(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    ctx = open_run(root, run_id="live", env={})
    ctx.set_metrics({"loss": 1.0}, "train")
    ctx.flush()
    done = _cli("rm", str(root / "live"), "--yes")
    assert done.returncode == 1
    assert "kept" in done.stderr and "running" in done.stderr
    assert "deleted 0 runs" in done.stdout
    assert (root / "live" / "run.json").exists()
    report = remove_runs([root / "live"])
    assert report.removed == [] and report.kept[0][1].startswith("running")
    ctx.end_log()
    ctx.close()


def test_rm_asks_and_deletes_nothing_without_an_answer(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = _run(root, "asked")
    done = _cli("rm", str(run))
    assert done.returncode == 2 and "pass --yes" in done.stderr
    assert run.exists()
    assert str(run) in done.stdout  # what would go was shown first


def test_rm_refuses_a_folder_that_is_not_a_run_and_deletes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = _run(root, "fine")
    stray = tmp_path / "stray"
    stray.mkdir()
    done = _cli("rm", str(run), str(stray), "--yes")
    assert done.returncode == 1 and "not a run folder" in done.stderr
    assert run.exists() and stray.exists()


def test_a_damaged_run_can_still_be_deleted_by_name(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = _run(root, "broken")
    (run / "run.json").write_text('{"format_version": 1, "run_id": ')
    done = _cli("rm", str(run), "--yes")
    assert done.returncode == 0, done.stderr
    assert not run.exists() and "damaged" in done.stdout


def test_gc_deletes_old_finished_runs_of_a_status_keeping_the_newest(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for name, days in [("old-1", 90), ("old-2", 60), ("old-3", 45), ("recent", 2)]:
        _run(root, name, days_ago=days)
    ctx = open_run(root, run_id="running", env={})
    ctx.flush()
    assert [r.run_id for r in older_runs(root, timedelta(days=30))] == ["old-1", "old-2", "old-3"]
    done = _cli("gc", str(root), "--older-than", "30d", "--status", "completed", "--keep", "1",
                "--yes", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    removed = sorted(Path(p).name for p in json.loads(done.stdout)["removed"])
    assert removed == ["old-1", "old-2"]  # old-3 is the newest of them: kept
    assert _run_ids(root) == ["old-3", "recent", "running"]
    assert _cli("gc", str(root), "--older-than", "soon").returncode == 2
    nothing = _cli("gc", str(root), "--older-than", "1000d", "--yes")
    assert nothing.returncode == 0 and "no run to delete" in nothing.stdout
    ctx.end_log()
    ctx.close()


def test_what_a_killed_removal_left_is_cleared_by_the_next(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = _run(root, "first")
    leftover = root / ".runstore" / "removing-0000-earlier"
    leftover.mkdir(parents=True)
    (leftover / "run.json").write_text("{}")
    assert remove_runs([run]).removed == [str(run)]
    assert not leftover.exists()
    assert _run_ids(root) == []
