"""W&B in offline mode (`WANDB_MODE=offline`): `wandb.init` + `run.log(..., step=)`.

W&B has no API that reads an offline run (only `wandb sync` uploads it), so reading
goes through the run's `.wandb` transaction log: LevelDB-style log blocks of W&B's own
protobuf `Record`s, decoded with the `wandb_internal_pb2` module the package ships."""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Iterator

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import wandb


class Run:
    def __init__(self, directory: str, name: str) -> None:
        self._run = wandb.init(
            project="bench",
            dir=directory,
            name=name,
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"),
        )
        self._log = self._run.log

    def step(self, step: int, loss: float, accuracy: float) -> None:
        self._log({"loss": loss, "accuracy": accuracy}, step=step)

    def finish(self) -> None:
        self._run.finish()


def start(directory: str, name: str) -> Run:
    return Run(directory, name)


_BLOCK = 32768
_HEADER = 7  # ":W&B", a 2-byte magic, a version byte


def _records(path: str) -> Iterator[bytes]:
    """Each record of a `.wandb` file, up to the first torn one."""
    with open(path, "rb") as handle:
        data = handle.read()
    position, pending = _HEADER, b""
    while position + 7 <= len(data):
        left = _BLOCK - position % _BLOCK
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0 and length == 0:  # block padding
            position += left
            continue
        chunk = data[position + 7 : position + 7 + length]
        if len(chunk) < length:
            return
        position += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def _history(path: str) -> tuple[str, list[float]]:
    """The run's name and its logged losses, in order."""
    from wandb.proto import wandb_internal_pb2

    name, losses = "", []
    for data in _records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            name = record.run.display_name
        elif kind == "history":
            for item in record.history.item:
                if (item.key or "/".join(item.nested_key)) == "loss":
                    losses.append(float(item.value_json))
    return name, losses


def _files(directory: str) -> list[str]:
    return glob.glob(os.path.join(directory, "wandb", "offline-run-*", "run-*.wandb"))


def final_losses(directory: str) -> list[tuple[str, float]]:
    found = []
    for path in _files(directory):
        name, losses = _history(path)
        if losses:
            found.append((name, losses[-1]))
    return sorted(found, key=lambda item: item[1])


def count_steps(directory: str) -> int:
    return sum(len(_history(path)[1]) for path in _files(directory))
