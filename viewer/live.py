"""Records as they arrive, pushed to open pages: one follower of the root, many pages.

A single `runstore.tail.Follower` reads the root in a thread, however many pages are
open; the records it hands out are gathered for a moment, encoded once per run, and put
on each subscriber's queue. A page that cannot keep up is not slowed down for: its queue
is dropped and it is told to fetch again (`resync`), so no page holds the others back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from runstore.tail import Follower, TailRecord

from .queries import json_value

#: Seconds records are gathered before they go out: one message per page per tick.
TICK: Final = 0.05
#: Batches a page may have waiting before it is told to resync.
QUEUE_BATCHES: Final = 64
#: The message that tells a page to fetch afresh (it missed records).
RESYNC: Final = b'"resync"'
#: What the runs page needs of other runs: their status and their progress.
_SUMMARY_STREAMS: Final = frozenset({"status", "progress"})


def _record_json(record: TailRecord) -> dict[str, Any]:
    return {key: json_value(value) for key, value in record.to_json().items()}


@dataclass(eq=False)
class Subscription:
    """One page's feed: records of one run (`run` set), or every run's status and
    progress (`run` None)."""

    run: str | None
    queue: asyncio.Queue[bytes]


class LiveHub:
    """Fans one follower of `root` out to the pages that subscribe."""

    def __init__(
        self, root: Path, *, tick: float = TICK, queue_batches: int = QUEUE_BATCHES
    ) -> None:
        self.root = root
        self.tick = tick
        self.queue_batches = queue_batches
        self._subscribers: set[Subscription] = set()
        self._pending: list[TailRecord] = []
        self._lock = threading.Lock()
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._follower: Follower | None = None
        self._thread: threading.Thread | None = None
        #: Why following stopped, if it did.
        self.failure: str | None = None

    def subscribe(self, run: str | None) -> Subscription:
        """A new feed; the follower starts with the first one."""
        self._loop = asyncio.get_running_loop()
        subscription = Subscription(run, asyncio.Queue(self.queue_batches))
        self._subscribers.add(subscription)
        if self._follower is None:
            self._follower = Follower(self.root)
            self._thread = threading.Thread(
                target=self._follow, args=(self._follower,), name="runstore-ui-live", daemon=True
            )
            self._thread.start()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def close(self) -> None:
        if self._follower is not None:
            self._follower.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- the follower's thread ---------------------------------------------------------

    def _follow(self, follower: Follower) -> None:
        try:
            self._gather(follower)
        except Exception as exc:  # a page must say live updates stopped, not hang
            self.failure = f"following {self.root} stopped: {type(exc).__name__}: {exc}"
            print(f"runstore ui: {self.failure}", file=sys.stderr)

    def _gather(self, follower: Follower) -> None:
        for record in follower:
            with self._lock:
                self._pending.append(record)
                if self._scheduled:
                    continue
                self._scheduled = True
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed: shutting down
                    loop.call_soon_threadsafe(loop.call_later, self.tick, self._dispatch)

    # -- the event loop ----------------------------------------------------------------

    def _dispatch(self) -> None:
        with self._lock:
            records, self._pending = self._pending, []
            self._scheduled = False
        # Only what some page follows is encoded: a busy root with the runs page open
        # costs its status and progress records, not every metric.
        wanted = {subscription.run for subscription in self._subscribers}
        by_run: dict[str, list[dict[str, Any]]] = {}
        # The runs page: every status change, and only the newest progress of a run.
        summary: dict[tuple[str, str, int], dict[str, Any]] = {}
        for index, record in enumerate(records):
            for_summary = None in wanted and record.stream in _SUMMARY_STREAMS
            if record.run not in wanted and not for_summary:
                continue
            encoded = _record_json(record)
            if record.run in wanted:
                by_run.setdefault(record.run, []).append(encoded)
            if for_summary:
                place = 0 if record.stream == "progress" else index
                summary[(record.run, record.stream, place)] = encoded
        messages: dict[str | None, bytes] = {
            run: orjson.dumps(batch) for run, batch in by_run.items()
        }
        if summary:
            messages[None] = orjson.dumps(list(summary.values()))
        for subscription in list(self._subscribers):
            message = messages.get(subscription.run)
            if message is None:
                continue
            try:
                subscription.queue.put_nowait(message)
            except asyncio.QueueFull:
                # Too slow for the records: drop what waits and ask for a fresh fetch.
                while not subscription.queue.empty():
                    subscription.queue.get_nowait()
                subscription.queue.put_nowait(RESYNC)
