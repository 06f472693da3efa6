"""Following runs as they are written: one run, or every run under a root (docs/tail.md).

A `Follower` watches with watchdog (inotify on Linux; polling on network filesystems,
where inotify sees no writes from other hosts, or on request) and reads each live
segment from where it left off, up to its last complete line: a line still being
written is waited for, never reported. Records are handed out per writer in sequence
order, exactly once: a record read again from the Parquet file that replaced its live
segment, or from a second look at a file, is recognised by its writer and sequence
number and dropped. A sequence number missing for `GAP_SECONDS` (a record lost to a
storage fault) is given up on, and the record is still delivered if it turns up later.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from .errors import ManifestError, RunDirectoryError, RunstoreError
from .format import (
    EVENTS,
    LIVE_SUFFIX,
    METRICS,
    PROGRESS,
    RECORD_FIELDS,
    RUN_MANIFEST,
    STATUS,
    STREAMS,
    STREAMS_DIR,
    is_run_dir,
    load_run_manifest,
    looks_like_run_dir,
    missing_manifest,
)
from .jsonl import decode_lines
from .reader import (
    RunInfo,
    decode_metric,
    derive_status,
    iter_run_dirs,
    list_runs,
    read_run,
    segment_files,
)
from .segments import read_segment, unreadable
from .tables import safe_table

__all__ = ["GAP_SECONDS", "STATUS", "Follower", "TailRecord", "follow"]

#: Seconds a missing sequence number is waited for before later records go ahead.
GAP_SECONDS: Final = 1.0
#: Seconds between checks of run status (crash detection) and, when polling, of files.
CHECK_SECONDS: Final = 0.5
#: Seconds between full rescans of every followed run, whatever the events said.
RESCAN_SECONDS: Final = 5.0
#: Filesystems on which inotify does not see writes made by other hosts.
_NETWORK_FILESYSTEMS: Final = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs")


class _BenignStopRace(logging.Filter):
    """watchdog logs an error when its inotify thread reads one last event while being
    stopped; nothing is lost (we stop only when done), so keep it off the user's screen."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


@functools.cache
def _quiet_watchdog() -> None:
    """Keep watchdog's two harmless notices off the user's screen; done when a follower
    first starts (a program that imports runstore.tail and never follows is untouched)."""
    logging.getLogger("watchdog.observers.inotify").addFilter(_BenignStopRace())
    # watchdog warns when a directory created under a recursive watch is added twice
    # (once by its own creation event, once by the scan of its parent); the watch is
    # replaced, nothing is missed.
    warnings.filterwarnings("ignore", "Callback with id", RuntimeWarning, "watchdog")


@dataclass(frozen=True)
class TailRecord:
    """One record as the tailer hands it out: a call of the job, or a status change."""

    run: str  # the run directory's name
    stream: str  # events, progress, metrics, or status
    ts: datetime
    writer: str | None = None
    seq: int | None = None
    category: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "stream": self.stream,
            "ts": self.ts.isoformat(),
            "writer": self.writer,
            "seq": self.seq,
            "category": self.category,
            **self.data,
        }


def _event_data(row: dict[str, Any]) -> dict[str, Any]:
    data = orjson.loads(row["data"]) if row["data"] else None
    return {
        "event": row["event"],
        "level": row["level"],
        "data": data,
        "file": row["file"],
        "attachment": row["attachment"],
    }


# A progress record's own fields: those after ts_ns, seq and category.
_PROGRESS_FIELDS: Final = RECORD_FIELDS[PROGRESS][3:]


def _records(run: str, stream: str, table: pa.Table) -> list[TailRecord]:
    """Tail records of a stream table; a metrics call's rows become one record."""
    records: list[TailRecord] = []
    for row in table.to_pylist():
        if stream == METRICS:
            value = decode_metric(row["value"], row["kind"], row["text"])
            last = records[-1] if records else None
            if last is not None and last.seq == row["seq"] and last.writer == row["writer"]:
                last.data["values"][row["key"]] = value
                continue
            data: dict[str, Any] = {"values": {row["key"]: value}}
        elif stream == EVENTS:
            data = _event_data(row)
        else:
            data = {name: row[name] for name in _PROGRESS_FIELDS}
        records.append(
            TailRecord(run, stream, row["ts"], row["writer"], row["seq"], row["category"], data)
        )
    return records


@dataclass
class _Writer:
    """Sequence bookkeeping of one writer: what was handed out, what waits for a gap."""

    last: int = 0  # every seq up to here was handed out (or given up on)
    pending: dict[int, TailRecord] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)  # given up on; still welcome
    gap_since: float | None = None

    def add(self, record: TailRecord) -> TailRecord | None:
        """Take a record; returns it at once if it is a late one given up on before."""
        seq = record.seq or 0
        if seq in self.skipped:
            self.skipped.discard(seq)
            return record
        if seq > self.last and seq not in self.pending:
            self.pending[seq] = record
        return None

    def ready(self, now: float, final: bool) -> list[TailRecord]:
        """Records that may go out: the next in sequence, or past a gap that timed out."""
        out = []
        while self.pending:
            following = self.last + 1
            if following in self.pending:
                out.append(self.pending.pop(following))
                self.last = following
                self.gap_since = None
                continue
            if not final:
                if self.gap_since is None:
                    self.gap_since = now
                if now - self.gap_since < GAP_SECONDS:
                    break
            lowest = min(self.pending)
            self.skipped.update(range(following, lowest))
            self.last = lowest - 1
            self.gap_since = None
        return out


@dataclass
class _Run:
    """One followed run: read positions, writers, status."""

    name: str
    path: Path
    quiet: bool  # records already there when following began are not handed out
    offsets: dict[Path, int] = field(default_factory=dict)  # live segments: bytes read
    sealed: set[Path] = field(default_factory=set)  # Parquet segments read
    writers: dict[str, _Writer] = field(default_factory=dict)
    info: RunInfo | None = None
    signature: tuple[int, ...] | None = None
    ended: bool = False


def _filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path`, from /proc/mounts ('' if unknown)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    target, best, kind = str(path.resolve()), "", ""
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, parts[2]
    return kind


#: The changes that can mean new records. Never a file opened or closed unwritten: the
#: follower's own reads make those, and each would wake it to read again, for ever.
_CHANGES: Final = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]
_READS: Final = frozenset({"opened", "closed_no_write"})


class _Handler(FileSystemEventHandler):
    def __init__(self, changed: queue.SimpleQueue[str]) -> None:
        self.changed = changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _READS:  # an observer that ignores event_filter
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                self.changed.put(os.fsdecode(path))


class Follower:
    """Follows a run directory, or every run under a root, until stopped.

    Iterate over it (`for record in follower`) or pass a callback to `run()`. Following
    one run ends when the run has ended (completed, failed, or crashed) and every record
    was handed out; following a root goes on until `stop()`.

    `since`: hand out only records at or after this time; `from_start`: every record
    already there; default: only records written after following began (in runs that
    existed then; a run that appears later is followed from its start). `position`, a
    `position()` saved before, resumes exactly after the last record handed out.
    `polling` None chooses by filesystem. Raises `RunDirectoryError` if `path` is
    neither a run directory nor a folder.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        from_start: bool = False,
        since: datetime | None = None,
        position: dict[str, dict[str, int]] | None = None,
        polling: bool | None = None,
        interval: float = CHECK_SECONDS,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunDirectoryError(f"{self.path}: no such run directory or folder of runs")
        # A run folder whose run.json is missing or damaged is a broken run, not a root:
        # say so now rather than follow it forever (or show what no reader accepts).
        self.single = looks_like_run_dir(self.path)
        if self.single:
            if not is_run_dir(self.path):
                raise ManifestError(missing_manifest(self.path))
            load_run_manifest(self.path)
        self.root = self.path.parent if self.single else self.path
        self.since = since
        self.from_start = from_start or since is not None or position is not None
        self.polling = (
            polling if polling is not None else _filesystem_type(self.path) in _NETWORK_FILESYSTEMS
        )
        self.interval = interval
        #: Damage found (corrupt segments, unreadable manifests), each once, in order.
        self.problems: list[str] = []
        self._position = position or {}
        self._handed: dict[str, dict[str, int]] = {}  # what the consumer was given
        self._runs: dict[str, _Run] = {}
        self._listed: dict[str, RunInfo] = {}  # manifests read at the start, by run
        self._changed: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._observer: BaseObserver | None = None

    # -- public -----------------------------------------------------------------------

    def __iter__(self) -> Iterator[TailRecord]:
        self._start()
        try:
            yield from self._records()
        finally:
            self._shutdown()

    def run(self, callback: Callable[[TailRecord], object]) -> None:
        """Call `callback` with every record, in this thread, until the end or `stop()`."""
        for record in self:
            callback(record)

    def stop(self) -> None:
        """End following (from any thread); the iteration returns soon after."""
        self._stopped.set()
        self._changed.put("")

    def position(self) -> dict[str, dict[str, int]]:
        """Where following stands: {run: {writer: last sequence handed out}}, JSON-ready.
        Pass it as `position=` to resume without missing or repeating a record."""
        position = {run: dict(writers) for run, writers in self._position.items()}
        for run, writers in self._handed.items():
            position.setdefault(run, {}).update(writers)
        return position

    @property
    def runs(self) -> dict[str, RunInfo | None]:
        """The runs followed so far, with their manifests as last read."""
        return {name: run.info for name, run in self._runs.items()}

    # -- the loop -----------------------------------------------------------------------

    def _start(self) -> None:
        _quiet_watchdog()
        observer: BaseObserver = (
            PollingObserver(timeout=self.interval) if self.polling else Observer()
        )
        observer.schedule(
            _Handler(self._changed), str(self.path), recursive=True, event_filter=_CHANGES
        )
        observer.daemon = True
        observer.start()
        self._observer = observer
        if self.single:
            self._add(self.path, quiet=not self.from_start)
        else:
            for info in list_runs(self.path, self.problems):
                self._add(info.path, quiet=not self.from_start)
                self._listed[info.path.name] = info

    def _shutdown(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def _records(self) -> Iterator[TailRecord]:
        out: list[TailRecord] = []
        for run in list(self._runs.values()):
            if run.quiet and self._ended_already(run, out):
                continue
            self._read_run(run, out)
            self._check_status(run, out)
        self._listed.clear()
        next_check = time.monotonic() + self.interval
        next_rescan = time.monotonic() + RESCAN_SECONDS
        while True:
            yield from self._emit(out)
            out = []
            if self._stopped.is_set() or (self.single and self._all_ended()):
                return
            timeout = max(0.0, next_check - time.monotonic())
            changed = self._wait(timeout)
            for run in self._dirty_runs(changed):
                self._read_run(run, out)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + self.interval
                if now >= next_rescan:  # a safety net under dropped or coalesced events
                    next_rescan = now + RESCAN_SECONDS
                    self._rescan(out)
                for run in list(self._runs.values()):
                    if not run.ended:
                        self._check_status(run, out)
            for run in self._runs.values():
                for state in run.writers.values():
                    out.extend(state.ready(now, final=False))

    def _all_ended(self) -> bool:
        return all(run.ended for run in self._runs.values())

    def _wait(self, timeout: float) -> set[str]:
        changed: set[str] = set()
        try:
            changed.add(self._changed.get(timeout=timeout))
        except queue.Empty:
            return changed
        while True:  # take every change queued meanwhile: one read per file per wake-up
            try:
                changed.add(self._changed.get_nowait())
            except queue.Empty:
                return changed

    def _emit(self, records: list[TailRecord]) -> Iterator[TailRecord]:
        for record in records:
            if record.writer is not None and record.seq is not None:
                handed = self._handed.setdefault(record.run, {})
                handed[record.writer] = max(handed.get(record.writer, 0), record.seq)
            if self.since is not None and record.stream != STATUS and record.ts < self.since:
                continue
            yield record

    def _rescan(self, out: list[TailRecord]) -> None:
        if not self.single:
            problems: list[str] = []
            for path in iter_run_dirs(self.root, problems):
                if path.name not in self._runs:
                    self._add(path, quiet=False)
            self._problems(problems)
        for run in list(self._runs.values()):
            if not run.ended:
                self._read_run(run, out)

    def _dirty_runs(self, changed: set[str]) -> list[_Run]:
        runs: dict[str, _Run] = {}
        root = str(self.root) + os.sep
        for path in changed:
            if not path.startswith(root):
                continue
            name, _, rest = path[len(root) :].partition(os.sep)
            run = self._runs.get(name)
            # Manifest changes (heartbeats every 2 s per writer) need no stream read:
            # the status check looks at manifests on its own clock.
            dirty = rest.startswith(STREAMS_DIR)
            if run is None and not self.single and not name.startswith("."):
                candidate = self.root / name
                if is_run_dir(candidate):
                    run, dirty = self._add(candidate, quiet=False), True
            if run is not None and not run.ended and dirty:
                runs[name] = run
        return list(runs.values())

    # -- one run ------------------------------------------------------------------------

    def _add(self, path: Path, *, quiet: bool) -> _Run:
        run = _Run(path.name, path, quiet=quiet)
        for writer, last in self._position.get(path.name, {}).items():
            run.writers[writer] = _Writer(last=last)
        self._runs[path.name] = run
        return run

    def _read_run(self, run: _Run, out: list[TailRecord]) -> None:
        for stream in STREAMS:
            for name, path in segment_files(run.path, stream):
                if name.sealed:
                    if path in run.sealed:
                        continue
                    try:
                        table, problems = read_segment(stream, path, name.writer)
                    except OSError as exc:
                        table = pa.table({})
                        problems = [unreadable(path, exc)]
                    run.sealed.add(path)
                    run.offsets.pop(path.with_suffix(LIVE_SUFFIX), None)
                else:
                    table, problems = self._read_live(run, stream, name.writer, path)
                self._problems(problems)
                self._sort_in(run, _records(run.name, stream, table), out)

    def _read_live(
        self, run: _Run, stream: str, writer: str, path: Path
    ) -> tuple[pa.Table, list[str]]:
        offset = run.offsets.get(path, 0)
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:  # sealed meanwhile: the Parquet is read next time
            self._changed.put(str(path))
            return pa.table({}), []
        except OSError as exc:
            return pa.table({}), [unreadable(path, exc)]
        where = f"{path}" if offset == 0 else f"{path} (from byte {offset})"
        decoded = decode_lines(stream, data, where=where)
        run.offsets[path] = offset + decoded.end
        problems = list(decoded.problems)
        return safe_table(stream, writer, decoded.columns, where, problems), problems

    def _sort_in(self, run: _Run, records: list[TailRecord], out: list[TailRecord]) -> None:
        """Records just read, each into its writer's order; those now in order go to
        `out` (not while the run is quiet: what was there before following began)."""
        now = time.monotonic()
        touched: set[str] = set()
        for record in records:
            assert record.writer is not None
            state = run.writers.setdefault(record.writer, _Writer())
            late = state.add(record)
            if late is not None and not run.quiet:
                out.append(late)
            touched.add(record.writer)
        for writer in touched:
            ready = run.writers[writer].ready(now, final=False)
            if not run.quiet:
                out.extend(ready)

    def _ended_already(self, run: _Run, out: list[TailRecord]) -> bool:
        """A run that had ended before following began: nothing new can come from it,
        so its segments are never read (a root of 10,000 finished runs costs their
        manifests, not their records); only its status is handed out."""
        # Its manifests as listed a moment ago: an ended run's cannot change any more.
        info = self._listed.pop(run.name, None)
        if info is None or not info.final:
            info = self._refresh_info(run)
        if info is None or not info.final:
            return False
        run.info, run.ended, run.quiet = info, True, False
        out.append(self._status_record(run, info))
        return True

    def _check_status(self, run: _Run, out: list[TailRecord]) -> None:
        """Notice a run's end (or its writers' death) and hand out everything left."""
        info = self._refresh_info(run)
        quiet, run.quiet = run.quiet, False  # the snapshot is taken: what follows is new
        if info is None:
            return
        if info is not run.info:
            changed = run.info is None or run.info.status != info.status
            run.info = info
            if changed and not info.final and not quiet:
                out.append(self._status_record(run, info))
        if info.final and not run.ended:
            self._read_run(run, out)  # the last records, written just before the end
            now = time.monotonic()
            for state in run.writers.values():
                out.extend(state.ready(now, final=True))
            run.ended = True
            out.append(self._status_record(run, info))

    def _refresh_info(self, run: _Run) -> RunInfo | None:
        """The run's manifests, read again only when `run.json` changed or every writer
        known seems gone (a pid check each, on this host: cheap enough for 100 runs)."""
        try:
            status = os.stat(run.path / RUN_MANIFEST)
            signature: tuple[int, ...] | None = (status.st_ino, status.st_mtime_ns)
        except OSError:
            signature = None
        cached = run.info
        if cached is not None and signature == run.signature:
            if cached.status != "running":
                return cached
            if derive_status(cached.manifest, cached.writers) == "running":
                return cached
        try:
            info = read_run(run.path)
        except RunstoreError as exc:
            self._problems([str(exc)])
            return None
        run.signature = signature
        return info

    def _status_record(self, run: _Run, info: RunInfo) -> TailRecord:
        manifest = info.manifest
        return TailRecord(
            run.name,
            STATUS,
            manifest.ended_at or datetime.now(UTC),
            data={
                "status": info.status,
                "run_id": manifest.run_id,
                "plugin": manifest.plugin,
                "action": manifest.action,
                "error": manifest.error,
                "lost_records": info.lost_records,
            },
        )

    def _problems(self, problems: list[str]) -> None:
        for problem in problems:
            if problem not in self.problems:
                self.problems.append(problem)


def follow(path: str | os.PathLike[str], **options: Any) -> Follower:
    """A `Follower` of a run directory or a root; see `Follower` for the options."""
    return Follower(path, **options)
