"""The baseline: `json.dumps` of each step appended to a buffered file, nothing else.

Not durable (a SIGKILL loses what the file buffer holds) and not queryable but by
reading every line: the least any logger can do."""

from __future__ import annotations

import glob
import json
import os

FILE = "metrics.jsonl"


class Run:
    def __init__(self, directory: str, name: str) -> None:
        os.makedirs(os.path.join(directory, name), exist_ok=True)
        self._file = open(os.path.join(directory, name, FILE), "a")  # noqa: SIM115

    def step(self, step: int, loss: float, accuracy: float) -> None:
        self._file.write(json.dumps({"step": step, "loss": loss, "accuracy": accuracy}) + "\n")

    def finish(self) -> None:
        self._file.close()


def start(directory: str, name: str) -> Run:
    return Run(directory, name)


def _lines(path: str) -> list[dict[str, float]]:
    rows = []
    with open(path) as handle:
        for line in handle:
            try:
                rows.append(json.loads(line))
            except ValueError:  # a torn last line
                break
    return rows


def final_losses(directory: str) -> list[tuple[str, float]]:
    found = []
    for path in glob.glob(os.path.join(directory, "*", FILE)):
        rows = _lines(path)
        if rows:
            found.append((os.path.basename(os.path.dirname(path)), rows[-1]["loss"]))
    return sorted(found, key=lambda item: item[1])


def count_steps(directory: str) -> int:
    return sum(len(_lines(p)) for p in glob.glob(os.path.join(directory, "*", FILE)))
