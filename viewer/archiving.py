"""The root's archive kept up to date while the viewer serves it.

A root of thousands of finished runs is fast only once they are in the archive
(`runstore compact`, docs/sql.md). The viewer compacts in a thread of its own: at start,
and a moment after a query finds finished runs outside the archive. Compaction takes a
lock per root (another `runstore compact` or viewer waits its turn), reads only runs no
writer can change any more, and never holds up a query or a writer. A root the viewer
may not write to is served all the same, from the runs' folders, and said so once.
"""

from __future__ import annotations

import errno
import sys
import threading
from pathlib import Path
from typing import Final

from runstore.compaction import CompactReport, compact
from runstore.errors import RunDirectoryError, RunstoreError

#: Seconds between a query noticing finished runs and compacting them (runs that end
#: together are archived together).
SETTLE: Final = 2.0
#: Seconds between looks when nothing asks.
EVERY: Final = 300.0
_CANNOT_WRITE: Final = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class Archiver:
    """Compacts `root` in a background thread when asked (`poke`), and at start."""

    def __init__(self, root: Path, *, settle: float = SETTLE, every: float = EVERY) -> None:
        self.root = root
        self.settle = settle
        self.every = every
        #: The last compaction's report, and why the last one failed, if it did.
        self.last: CompactReport | None = None
        self.failure: str | None = None
        self.compactions = 0
        #: A compaction is under way now.
        self.running = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runstore-ui-archive", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Finished runs are outside the archive: compact soon."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._compact():
                return  # the root cannot be written: serve it as it is
            self._wake.wait(timeout=self.every)
            self._wake.clear()
            if self._stop.wait(self.settle):
                return

    def _compact(self) -> bool:
        self.running = True
        try:
            self.last = compact(self.root)
        except (RunstoreError, OSError) as exc:
            # The archive folder cannot be made (a read-only root): that will not pass.
            cannot = isinstance(exc, RunDirectoryError) or (
                isinstance(exc, OSError) and exc.errno in _CANNOT_WRITE
            )
            if self.failure is None or cannot:
                print(
                    f"runstore ui: not archiving {self.root}: {exc}"
                    + ("; not trying again" if cannot else ""),
                    file=sys.stderr,
                )
            self.failure = str(exc)
            return not cannot
        finally:
            self.running = False
        self.compactions += 1
        self.failure = None
        return True
