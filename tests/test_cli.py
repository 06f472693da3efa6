"""The command line, run as a real process on the sample runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from runstore.cli import main

from .conftest import SAMPLE_RUNS


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runstore.cli", *args], capture_output=True, text=True, check=False
    )


def test_ls_table_and_json() -> None:
    table = _cli("ls", str(SAMPLE_RUNS))
    assert table.returncode == 0, table.stderr
    for name in ("demo-train", "demo-export", "demo-upload", "demo-crashed", "crashed", "failed"):
        assert name in table.stdout
    runs = json.loads(_cli("ls", str(SAMPLE_RUNS), "--json").stdout)
    assert {r["run_id"]: r["status"] for r in runs}["demo-crashed"] == "crashed"
    assert {"path", "plugin", "action", "job_id", "started_at", "duration_s"} <= set(runs[0])


def test_show_table_and_json() -> None:
    shown = _cli("show", str(SAMPLE_RUNS / "demo-train"))
    assert shown.returncode == 0, shown.stderr
    for text in ("completed", "overall 100.0%", "validation", "accuracy", "Training finished"):
        assert text in shown.stdout
    assert "epoch finished" not in shown.stdout
    assert "epoch finished" in _cli("show", str(SAMPLE_RUNS / "demo-train"), "--dev").stdout
    data = json.loads(_cli("show", str(SAMPLE_RUNS / "demo-upload"), "--json").stdout)
    assert data["status"] == "failed"
    assert data["error"].startswith("StepFailedError: Step 'upload' failed")
    assert data["metrics"]["upload"] == {"uploaded": 26, "failed": 4}
    assert [m["level"] for m in data["messages"]].count("warning") == 5


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    missing = _cli("show", str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope'}: no such run directory"
    not_run = _cli("show", str(tmp_path))
    assert not_run.returncode == 1 and "run.json: missing" in not_run.stderr
    assert "Traceback" not in not_run.stderr


def test_demo_writes_four_runs_and_refuses_to_overwrite(tmp_path: Path) -> None:
    made = _cli("demo", str(tmp_path / "runs"))
    assert made.returncode == 0, made.stderr
    assert len(made.stdout.split()) == 4
    again = _cli("demo", str(tmp_path / "runs"))
    assert again.returncode == 1 and "already exist" in again.stderr


def test_every_command_has_help_and_a_documented_example() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    runner = CliRunner()
    for name, command in main.commands.items():
        assert command.help and "Example: runstore " + name in command.help, name
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0
        assert f"runstore {name}" in readme, f"README does not show `runstore {name}`"
