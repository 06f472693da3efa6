"""Compaction: the archive changes how fast queries are, never what they answer."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from runstore import RunDirectoryError, Store, attach_run, compact
from runstore.archive import archive_dir, load_catalog
from runstore.compaction import BACKGROUND_RUNS
from runstore.query import VIEWS

from .conftest import SAMPLE_RUNS
from .test_query import make_run

# Every view, in an order that does not depend on how the rows were stored.
_ANSWERS = {view: f"SELECT * FROM {view} ORDER BY ALL" for view in VIEWS}


def answers(root: Path) -> dict[str, list[tuple[object, ...]]]:
    with Store(root) as store:
        return {view: store.connection.sql(query).fetchall() for view, query in _ANSWERS.items()}


def test_compaction_leaves_every_answer_unchanged(root: Path) -> None:
    for name in ("a", "b", "c"):
        make_run(root, name)
    running = make_run(root, "still-running", finish=False)
    before = answers(root)
    report = compact(root)
    assert (report.added, report.archived, report.parts, report.live) == (3, 3, 1, 1)
    assert answers(root) == before
    with Store(root) as store:
        assert store.pending_compaction == 0
        assert set(store._live) == {"still-running"}  # the only run read from its folder
    again = compact(root)
    assert (again.added, again.dropped, again.archived) == (0, 0, 3)
    running.close()


def test_a_damaged_run_is_still_reported_once_archived(root: Path) -> None:
    make_run(root, "a")
    shutil.copytree(SAMPLE_RUNS / "demo-crashed", root / "crashed")  # killed: final
    segment = next((root / "crashed" / "streams" / "metrics").glob("*.jsonl"))
    with segment.open("ab") as out:
        out.write(b"\x00 not a record\n{}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Store(root) as store:
            before = list(store.problems)
        report = compact(root)
        with Store(root) as store:
            after = list(store.problems)
            assert store.pending_compaction == 0
    assert before and all("crashed" in problem for problem in before)
    assert report.archived == 2 and report.problems == before
    assert after == before  # the archive keeps what was wrong with the run


def test_a_changed_run_is_read_from_its_folder_and_archived_again(root: Path) -> None:
    make_run(root, "a")
    make_run(root, "b")
    compact(root)
    with attach_run(root / "a", env={}) as late:  # a second writer adds to a finished run
        late.set_metrics({"extra": 1.0}, "eval")
    with Store(root) as store:
        query = "SELECT count(*) FROM metrics WHERE run_id = 'a'"
        assert store.connection.sql(query).fetchall() == [(11,)]
        assert "a" in store._live and "b" not in store._live
    before = answers(root)
    report = compact(root)
    assert (report.added, report.dropped, report.archived) == (1, 1, 2)
    assert answers(root) == before


def test_a_deleted_run_leaves_the_answers_at_once(root: Path) -> None:
    make_run(root, "keep")
    make_run(root, "gone")
    compact(root)
    shutil.rmtree(root / "gone")
    with Store(root) as store:
        assert store.connection.sql("SELECT DISTINCT run_id FROM metrics").fetchall() == [("keep",)]
    report = compact(root)
    assert (report.dropped, report.archived) == (1, 1)


def test_the_archive_is_safe_to_delete(root: Path) -> None:
    for name in ("a", "b"):
        make_run(root, name)
    compact(root)
    archived = answers(root)
    shutil.rmtree(root / ".runstore")
    assert answers(root) == archived


def test_a_damaged_catalog_is_reported_ignored_and_rebuilt(root: Path) -> None:
    make_run(root, "a")
    compact(root)
    before = answers(root)
    (archive_dir(root) / "catalog.json").write_text("{not json")
    with pytest.warns(Warning, match="damaged archive catalog"), Store(root) as store:
        assert any("runstore compact" in problem for problem in store.problems)
    with warnings.catch_warnings(record=True):
        assert answers(root) == before
    report = compact(root)
    assert report.added == 1 and "damaged archive catalog" in report.problems[0]
    assert load_catalog(root) is not None


def test_parts_beyond_the_limit_are_merged(root: Path) -> None:
    for round_ in range(4):
        make_run(root, f"run-{round_}")
        compact(root, max_parts=2)
    catalog = load_catalog(root)
    assert catalog is not None and len(catalog.parts) <= 2
    assert sum(len(part.runs) for part in catalog.parts) == 4
    parts_on_disk = [p for p in archive_dir(root).iterdir() if p.is_dir()]
    assert sorted(p.name for p in parts_on_disk) == sorted(p.name for p in catalog.parts)
    with Store(root) as store:
        assert store.connection.sql("SELECT count(*) FROM runs").fetchall() == [(4,)]


def test_rebuild_and_crash_leftovers(root: Path) -> None:
    make_run(root, "a")
    compact(root)
    leftover = archive_dir(root) / ".part-crashed.tmp"
    leftover.mkdir()
    (leftover / "metrics.parquet").write_bytes(b"half a file")
    before = answers(root)
    report = compact(root, rebuild=True)
    assert (report.added, report.archived, report.parts) == (1, 1, 1)
    assert not leftover.exists()
    assert answers(root) == before


def test_compaction_needs_a_folder_of_runs(tmp_path: Path) -> None:
    with pytest.raises(RunDirectoryError, match="no such folder"):
        compact(tmp_path / "missing")


def test_a_query_planned_before_a_compaction_still_answers(root: Path) -> None:
    make_run(root, "a")
    compact(root)
    with Store(root) as store:
        store.refresh()
        compact(root, rebuild=True)  # deletes the part the store's views point at
        relation = store.sql("SELECT count(*) FROM metrics")
        assert relation is not None and relation.fetchall() == [(10,)]


def _sql(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "runstore",
            "sql",
            str(root),
            "SELECT count(*) AS n FROM runs",
            "--format",
            "csv",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_runstore_sql_archives_finished_runs_in_the_background(root: Path) -> None:
    for index in range(BACKGROUND_RUNS):
        make_run(root, f"r{index:02d}")
    first = _sql(root)
    assert first.returncode == 0 and first.stdout.splitlines() == ["n", str(BACKGROUND_RUNS)]
    assert f"archiving {BACKGROUND_RUNS} finished runs in the background" in first.stderr
    deadline = time.monotonic() + 60
    while (catalog := load_catalog(root)) is None or len(catalog.runs()) < BACKGROUND_RUNS:
        assert time.monotonic() < deadline, "the background compaction never archived the runs"
        time.sleep(0.1)
    again = _sql(root)
    assert again.stdout == first.stdout and "archiving" not in again.stderr


def test_no_archive_and_too_few_runs_start_nothing(root: Path) -> None:
    for index in range(BACKGROUND_RUNS - 1):
        make_run(root, f"r{index:02d}")
    assert "archiving" not in _sql(root).stderr
    make_run(root, "one-more")
    assert "archiving" not in _sql(root, "--no-archive").stderr
    time.sleep(0.5)
    assert not archive_dir(root).exists()


def test_a_compaction_that_would_wait_for_another_leaves_at_once(root: Path) -> None:
    import fcntl

    make_run(root, "a")
    archive_dir(root).mkdir(parents=True)
    with open(archive_dir(root) / "compact.lock", "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        report = compact(root, wait=False)
        assert report.busy and report.added == 0
    assert compact(root, wait=False).added == 1
