"""The benchmarks still run (tiny sizes): what they measure is read by people, not here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fresh", [False, True])
def test_bench_logging_runs_and_compares_with_a_checkout(fresh: bool) -> None:
    command = [sys.executable, str(_ROOT / "benchmarks" / "bench_logging.py")]
    command += ["--calls", "3000", "--repeats", "1", "--against", str(_ROOT)]
    done = subprocess.run(
        command + (["--fresh"] if fresh else []),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "runstore (open to close):" in done.stdout
    assert "this checkout:" in done.stdout
    assert ("page faults per runstore run:" in done.stdout) is fresh


def test_bench_viewer_runs_at_tiny_sizes(tmp_path: Path) -> None:
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    command = [
        sys.executable, str(_ROOT / "benchmarks" / "bench_viewer.py"), "--runs", "30",
        "--repeats", "1", "--points", "5000", "--skip-live", "--data", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    for figure in (
        "/api/runs, 50 runs + 2 metric columns, warm",
        "runs page in Chromium",
        "/api/series, M4 for a 1,000 px chart",
        "chart draw in Chromium",
    ):
        assert figure in done.stdout, figure
