"""The benchmarks still run (tiny sizes): what they measure is read by people, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def test_bench_first_query_runs_and_compares_with_a_checkout() -> None:
    command = [
        sys.executable, str(_ROOT / "benchmarks" / "bench_first_query.py"), "--runs", "5",
        "--steps", "3", "--repeats", "1", "--against", str(_ROOT),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "made 5 runs x 3 steps with real jobs" in done.stdout
    assert "fresh `runstore sql` over a fresh copy of the root" in done.stdout
    assert "x wall" in done.stdout


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


def _peers(tmp_path: Path, names: str) -> dict[str, Any]:
    command = [
        sys.executable, str(_ROOT / "benchmarks" / "peers" / "run.py"), "--peers", names,
        "--steps", "500,2000", "--runs", "4", "--run-steps", "3", "--repeats", "1",
        "--crash-seconds", "0.3", "--live-steps", "3", "--live-interval", "0.05",
        "--live-timeout", "5", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "peers-latest.md").read_text()
    for heading in ("## W1: 500 steps", "## W1: 2,000 steps", "## Tiny job", "## W3", "## W4"):
        assert heading in table
    (results,) = tmp_path.glob("peers-*.json")
    samples: dict[str, Any] = json.loads(results.read_text())["samples"]
    return samples


def test_bench_peers_measures_runstore_and_the_jsonl_baseline(tmp_path: Path) -> None:
    samples = _peers(tmp_path, "runstore,jsonl")
    for peer in ("runstore", "jsonl"):
        (logged,) = samples["W1 2000"][peer]
        assert logged["steps"] == 2000 and logged["bytes_per_point"] > 0
        assert all(query["correct"] for query in samples["W3"][peer])
    assert all(query["correct"] for query in samples["W3"]["runstore, archived"])
    (crash,) = samples["W4"]["runstore"]
    assert crash["logged"] > 0 and 0 < crash["readable"] <= crash["logged"] + 1
    (live,) = samples["W5"]["runstore"]
    assert live["seen"] == live["sent"] == 3


_INSTALLED = Path.home() / ".cache" / "runstore-peers"


@pytest.mark.parametrize("peer", ["tensorboardx", "wandb", "mlflow", "dvclive", "aim"])
def test_bench_peers_adapter_answers_right(tmp_path: Path, peer: str) -> None:
    # A peer's virtualenv is made by the benchmark itself (minutes, from PyPI); this
    # test runs where one was made (`benchmarks/peers/run.py --peers PEER` once).
    if not any(_INSTALLED.glob(f"{peer}-*/.installed")):
        pytest.skip(f"no virtualenv for {peer} under {_INSTALLED}")
    samples = _peers(tmp_path, peer)
    assert all(query["correct"] for query in samples["W3"][peer])
    assert samples["W1 500"][peer][0]["steps"] == 500
