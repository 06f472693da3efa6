"""tensorboardX's `SummaryWriter.add_scalar`, read back with TensorBoard's own
`EventAccumulator` / `EventMultiplexer` (what `tensorboard --logdir` runs). Defaults
kept: the writer flushes every 10 events or 120 s."""

from __future__ import annotations

import glob
import os

from tensorboardX import SummaryWriter


class Run:
    def __init__(self, directory: str, name: str) -> None:
        self._writer = SummaryWriter(os.path.join(directory, name))
        self._add = self._writer.add_scalar

    def step(self, step: int, loss: float, accuracy: float) -> None:
        self._add("loss", loss, step)
        self._add("accuracy", accuracy, step)

    def finish(self) -> None:
        self._writer.close()


def start(directory: str, name: str) -> Run:
    return Run(directory, name)


def _quiet() -> None:
    import logging

    logging.getLogger("tensorboard").setLevel(logging.ERROR)


def final_losses(directory: str) -> list[tuple[str, float]]:
    _quiet()
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    multiplexer = EventMultiplexer(size_guidance={"scalars": 0})
    multiplexer.AddRunsFromDirectory(directory)
    multiplexer.Reload()
    found = []
    for run in multiplexer.Runs():
        events = multiplexer.Scalars(run, "loss")
        if events:
            found.append((run, events[-1].value))
    return sorted(found, key=lambda item: item[1])


def count_steps(directory: str) -> int:
    _quiet()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    total = 0
    for run in glob.glob(os.path.join(directory, "*")):
        accumulator = EventAccumulator(run, size_guidance={"scalars": 0})
        accumulator.Reload()
        if "loss" in accumulator.Tags()["scalars"]:
            total += len(accumulator.Scalars("loss"))
    return total
