"""DVCLive's `Live.log_metric` + `next_step` (no DVC repository, no git). Cross-run:
each run's `metrics.json`, the summary DVCLive writes for `dvc exp show`; history: its
`plots/metrics/*.tsv`."""

from __future__ import annotations

import csv
import glob
import json
import os

from dvclive import Live


class Run:
    def __init__(self, directory: str, name: str) -> None:
        self._live = Live(os.path.join(directory, name), save_dvc_exp=False, dvcyaml=None)
        self._log = self._live.log_metric

    def step(self, step: int, loss: float, accuracy: float) -> None:
        self._log("loss", loss)
        self._log("accuracy", accuracy)
        self._live.next_step()

    def finish(self) -> None:
        self._live.end()


def start(directory: str, name: str) -> Run:
    return Run(directory, name)


def final_losses(directory: str) -> list[tuple[str, float]]:
    found = []
    for path in glob.glob(os.path.join(directory, "*", "metrics.json")):
        with open(path) as handle:
            summary = json.load(handle)
        if "loss" in summary:
            found.append((os.path.basename(os.path.dirname(path)), float(summary["loss"])))
    return sorted(found, key=lambda item: item[1])


def count_steps(directory: str) -> int:
    total = 0
    for path in glob.glob(os.path.join(directory, "*", "plots", "metrics", "loss.tsv")):
        with open(path, newline="") as handle:
            total += sum(
                1 for row in csv.reader(handle, delimiter="\t") if row and row[0] != "step"
            )
    return total
