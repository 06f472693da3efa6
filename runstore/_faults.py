"""A writer's storage faults: what failed, since when, what it cost, who hears of it.

The job never does: a fault is said on stderr at once and counted in the writer
manifest (`fault_count`, `last_fault`, `lost_records`); once writes go through again,
the run itself is told by a `storage_fault` event (docs/format.md). Disk space held back
for the final manifests (`Reserve`) lets the run's end and its count of lost records be
written on a full disk.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from .format import WriterManifest, utc_now

__all__ = ["Faults", "Reserve"]

_MiB: Final = 1024 * 1024
#: Disk space each writer holds back for its final manifests, beyond their own size.
_RESERVE_BYTES: Final = 64 * 1024


class Faults:
    """The storage fault of one writer, while one lasts (`current`), and its reports.

    `emit` puts a `storage_fault` event's data in the run's events (the writer writes it
    with its next cycle)."""

    def __init__(
        self, run_dir: Path, max_pending_bytes: int, emit: Callable[[dict[str, Any]], None]
    ) -> None:
        self._run_dir = run_dir
        self._limit = max_pending_bytes
        self._emit = emit
        #: What failed, while writes fail; None once they go through.
        self.current: str | None = None
        self._since: str | None = None
        self._lost = 0

    def report(self, message: str) -> None:
        """Say it on stderr (never raising: stderr may be closed)."""
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"runstore: run {self._run_dir}: {message}\n")

    def seen(self, manifest: WriterManifest, message: str) -> None:
        """A write failed: counted in the manifest; said once per fault."""
        manifest.fault_count += 1
        manifest.last_fault = message
        if self.current is None:
            self.current = message
            self._since = utc_now().isoformat()
            limit = self._limit // _MiB
            self.report(f"{message}; keeping up to {limit} MiB of records and retrying")

    def lost(self, manifest: WriterManifest, count: int) -> None:
        """Records that will never be written (dropped past the bound, or unencodable)."""
        manifest.lost_records += count
        self._lost += count

    def recovered(self) -> None:
        """Writes go through again: said on stderr and in the run."""
        message, since, lost = self.current, self._since, self._lost
        self.current, self._lost = None, 0
        self.report(f"writes go through again after: {message}; {lost} records lost")
        self.event(message, since, lost)

    def event(self, message: str | None, since: str | None, lost: int) -> None:
        """A `storage_fault` event (docs/format.md)."""
        self._emit({"error": message, "since": since, "lost_records": lost})


class Reserve:
    """Disk space held for a writer's final manifests, in a file of its own (`path`):
    given back at close, so a full disk still takes the run's end. Its file also tells
    a run folder made again under the writer from its own (the inode may be reused)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False

    def make(self, manifests: int) -> None:
        """Hold room for `manifests` bytes of manifests (twice: run and writer) and more."""
        size = _RESERVE_BYTES + 2 * manifests
        self.held = False
        with contextlib.suppress(OSError):  # no reserve: the run still works
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size < size:
                    os.posix_fallocate(fd, 0, size)
                self.held = True
            finally:
                os.close(fd)

    def lost(self) -> bool:
        """Whether the file was held and is gone (the run folder was removed)."""
        return self.held and not os.path.lexists(self.path)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
