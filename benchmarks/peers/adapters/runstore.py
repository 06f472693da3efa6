"""runstore, as a plugin job uses it: `open_run`, `ctx.set_metrics`, `ctx.end_log`.

Cross-run: the `latest_metrics` view through a `Store`; live: `runstore.tail`."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from runstore import open_run


class Run:
    def __init__(self, directory: str, name: str) -> None:
        self._ctx = open_run(directory, run_id=name, plugin="bench", env={})
        self._set = self._ctx.set_metrics

    def step(self, step: int, loss: float, accuracy: float) -> None:
        self._set({"loss": loss, "accuracy": accuracy}, "train")

    def finish(self) -> None:
        self._ctx.end_log()
        self._ctx.close()


def start(directory: str, name: str) -> Run:
    return Run(directory, name)


LATEST = "SELECT run_id, value FROM latest_metrics WHERE key = 'loss' ORDER BY value"


def final_losses(directory: str) -> list[tuple[str, float]]:
    from runstore import Store

    with Store(directory) as store:
        return [(run, float(loss)) for run, loss in store.sql(LATEST).fetchall()]


def archive(directory: str) -> None:
    """What `runstore sql` and `runstore ui` do by themselves in the background."""
    from runstore import compact

    compact(directory)


def count_steps(directory: str) -> int:
    from runstore import Store

    with Store(directory) as store:
        return int(store.sql("SELECT count(*) FROM metrics WHERE key = 'loss'").fetchall()[0][0])


def watch(directory: str, expect: int, timeout: float) -> Iterator[int]:
    """Steps as the tailer hands them out (inotify, no polling)."""
    from runstore.tail import Follower

    follower = Follower(directory, from_start=True)
    timer = threading.Timer(timeout, follower.stop)
    timer.start()
    seen = 0
    try:
        for record in follower:
            if record.stream == "metrics" and "loss" in record.data["values"]:
                seen += 1
                yield seen
                if seen >= expect:
                    break
    finally:
        timer.cancel()
        follower.stop()
