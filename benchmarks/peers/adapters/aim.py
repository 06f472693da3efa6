"""Aim's `Run.track`, read back with `Repo.query_metrics`. Aim finds runs through an
index that its UI server (`aim up`) keeps; without it a query sees no run, so the
cross-run setup ends with `aim storage reindex`, timed apart."""

from __future__ import annotations

import os
import subprocess
import sys

from aim import Repo
from aim import Run as _AimRun


class Run:
    def __init__(self, directory: str, name: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self._run = _AimRun(repo=directory, experiment="bench")
        self._run.name = name
        self._track = self._run.track

    def step(self, step: int, loss: float, accuracy: float) -> None:
        self._track({"loss": loss, "accuracy": accuracy}, step=step)

    def finish(self) -> None:
        self._run.close()


def start(directory: str, name: str) -> Run:
    return Run(directory, name)


def archive(directory: str) -> None:
    """Aim's index: what `aim up` builds before its UI shows a run."""
    aim = os.path.join(os.path.dirname(sys.executable), "aim")
    subprocess.run(
        [aim, "storage", "--repo", directory, "reindex"],
        input=b"y\n",
        check=True,
        capture_output=True,
    )


def _losses(directory: str) -> list[tuple[str, list[float]]]:
    repo = Repo(directory)
    found = []
    for metric in repo.query_metrics("metric.name == 'loss'", report_mode=0).iter():
        _, columns = metric.data.items_list()
        found.append((metric.run.name, list(columns[0])))
    return found


def final_losses(directory: str) -> list[tuple[str, float]]:
    return sorted(
        ((name, float(values[-1])) for name, values in _losses(directory) if values),
        key=lambda item: item[1],
    )


def count_steps(directory: str) -> int:
    """Each run read directly (no index: a crashed or running run is not in it)."""
    from aim.storage.context import Context

    total = 0
    for run_hash in Repo(directory).list_all_runs():
        metric = _AimRun(run_hash=run_hash, repo=directory, read_only=True).get_metric(
            "loss", Context({})
        )
        if metric is not None:
            total += len(metric.data.items_list()[0])
    return total
