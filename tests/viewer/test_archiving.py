"""The viewer keeps the root's archive up to date by itself, or says why it cannot."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstore import Store
from runstore.viewer.archiving import Archiver
from tests.conftest import SAMPLE_RUNS, tmpfs

from .conftest import serving


def _until(check: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_server_archives_finished_runs_by_itself(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    shutil.copytree(SAMPLE_RUNS, root)
    with serving(root) as server:
        _until(lambda: server.get("/api/status").json()["archive"]["compactions"] >= 1, "archive")
        status = server.get("/api/status").json()["archive"]
        assert status["enabled"] and status["failure"] is None and status["runs"] == 4
        assert server.get("/api/runs").json()["total"] == 4
    with Store(root) as store:
        assert store.pending_compaction == 0  # every finished run is in the archive


def test_no_archive_writes_nothing_into_the_root(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    shutil.copytree(SAMPLE_RUNS, root)
    with serving(root, "--no-archive") as server:
        assert server.get("/api/runs").json()["total"] == 4
        assert server.get("/api/status").json()["archive"] == {"enabled": False}
    assert not (root / ".runstore").exists()


@pytest.fixture
def read_only_root(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk") as mount:
        shutil.copytree(SAMPLE_RUNS, mount / "runs")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount / "runs"


def test_a_root_it_cannot_write_is_served_and_said_so_once(
    read_only_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archiver = Archiver(read_only_root, settle=0.01)
    try:
        _until(lambda: archiver.failure is not None, "the failure")
        archiver.poke()
        time.sleep(0.2)
    finally:
        archiver.close()
    assert archiver.compactions == 0
    said = capsys.readouterr().err
    assert said.count("not archiving") == 1 and "cannot create the archive" in said
    assert "not trying again" in said
    with serving(read_only_root) as server:
        assert server.get("/api/runs").json()["total"] == 4


def test_the_status_says_while_archiving_runs(tmp_path: Path) -> None:
    from runstore import open_run

    root = tmp_path / "runs"
    for index in range(30):
        with open_run(root, run_id=f"r{index:02d}", env={}) as ctx:
            for step in range(2000):
                ctx.set_metrics({"loss": 1 / (1 + step)}, "train")
            ctx.end_log()
    seen: list[bool] = []
    with serving(root) as server:
        while not seen or seen[-1]:
            seen.append(server.get("/api/status").json()["archive"]["running"])
            assert len(seen) < 2000, "the archiving never ended"
            time.sleep(0.005)
        assert server.get("/api/status").json()["archive"]["compactions"] == 1
    assert seen[0] is True, seen  # the server began by archiving, and said so
