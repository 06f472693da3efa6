"""SIGKILL at random points of a writer's life, as benchmarks/torture.py does at length.

`RUNSTORE_TORTURE_KILLS=200` runs more kills per mode than the few CI runs.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from runstore import compact

from .conftest import load_benchmark

torture = load_benchmark("torture")
KILLS = int(os.environ.get("RUNSTORE_TORTURE_KILLS", "3"))
#: What a SIGKILL may cost at the default flush interval (100 ms), with room for a
#: loaded CI machine: docs/format.md, "Guarantees", says what holds and how it is met.
LOSS_BOUND_MS = 400


@pytest.mark.parametrize("mode", ["paced", "tight"])
def test_a_kill_at_any_rate_loses_only_the_last_moments(tmp_path: Path, mode: str) -> None:
    rng = random.Random(f"{mode}-{KILLS}")
    losses = []
    for number in range(KILLS):
        root = tmp_path / f"root{number}"
        root.mkdir()
        kill = torture.kill_once(root, mode, rng.uniform(0.2, 1.0))
        assert kill.status == "crashed" and kill.records > 0
        assert kill.loss_ms is not None
        losses.append(kill.loss_ms)
    assert max(losses) < LOSS_BOUND_MS, losses


def test_a_kill_while_ending_and_sealing_leaves_a_readable_run(tmp_path: Path) -> None:
    rng = random.Random(f"ending-{KILLS}")
    for number in range(KILLS * 2):
        root = tmp_path / f"root{number}"
        root.mkdir()
        # Small segments: the kill lands among seals, in end_log, or after the close.
        kill = torture.kill_once(
            root, "ending", rng.uniform(0.0, 0.3), seal_bytes=200_000, ending_records=50_000
        )
        assert kill.records == 50_000 or kill.status == "crashed"
        report = compact(root)
        assert report.problems == [] or all("torn" in p for p in report.problems)
        left = [name for _, _, files in os.walk(root / "victim") for name in files]
        assert not [name for name in left if name.endswith(".tmp")], left


def test_check_run_catches_a_run_that_breaks_a_promise(tmp_path: Path) -> None:
    from runstore import open_run

    with open_run(tmp_path, run_id="victim", env={}) as ctx:
        for value in (0.0, 1.0, 3.0):  # a gap
            ctx.set_metrics({"i": value, "loss": 0.5}, "train")
    with pytest.raises(torture.TortureError, match="gap-free prefix"):
        torture.check_run(ctx.run_dir, "paced", 0)
