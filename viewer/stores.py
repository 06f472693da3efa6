"""Long-lived confined Stores, one per worker thread, for the viewer's requests.

`Store` is not thread-safe and opening one costs a scan of the root, so the viewer keeps
a small pool of threads, each with its own store opened once, and runs every query of a
request on one of them. The event loop never waits on DuckDB.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from runstore.confinement import QueryLimits
from runstore.query import Store

_T = TypeVar("_T")
#: Seconds a store's look at the root serves further requests (the runs list; a run's
#: history is always read `fresh`). Pages fetch again at least twice this long after a
#: live record says something changed, so what they fetch is never older than that.
FRESH_FOR: Final = 0.25


class StorePool:
    """Runs functions of a `Store` on a few threads that each keep their own store."""

    def __init__(
        self,
        root: Path,
        *,
        workers: int = 2,
        limits: QueryLimits | None = None,
        on_pending: Callable[[], None] | None = None,
    ) -> None:
        self.root = root
        self.limits = limits or QueryLimits()
        #: Called when a query finds finished runs outside the archive.
        self.on_pending = on_pending
        self._local = threading.local()
        self._stores: list[Store] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="runstore-ui")

    def _store(self) -> Store:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            # One DuckDB thread each: the pool's threads are the parallelism.
            store = Store(self.root, confined=True, threads=1, limits=self.limits)
            self._local.store = store
            with self._lock:
                self._stores.append(store)
        return store

    async def run(self, work: Callable[[Store], _T], *, fresh: bool = False) -> _T:
        """`work(store)` on a pool thread, awaited without blocking the event loop. The
        queries of one `work` see one state of the root (`Store.snapshot`); `fresh`: a
        state looked at now, never one a moment old (a page that follows a run reads
        its history after it subscribed, and must not miss what came in between)."""
        future = self._executor.submit(self._run, work, 0.0 if fresh else FRESH_FOR)
        return await asyncio.wrap_future(future)

    def _run(self, work: Callable[[Store], _T], max_age: float) -> _T:
        store = self._store()
        with store.snapshot(max_age=max_age):
            result = work(store)
        if store.pending_compaction and self.on_pending is not None:
            self.on_pending()
        return result

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for store in self._stores:
                store.close()
            self._stores.clear()
