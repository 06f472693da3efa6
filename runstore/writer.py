"""The background writer: buffers records in memory and writes them out as segments.

The logging hot path only appends a record to a list, or with the C speedups to C arrays
(see `RunLogger.set_metrics`); a daemon thread takes the records every `flush_interval`,
appends one JSONL line per stream, seals large or old segments into Parquet, keeps the
writer's heartbeat and writes the run manifest. Storage faults never propagate to the
job: records stay buffered up to `max_pending_bytes`, the fault is reported on stderr
and, once the disk takes writes again, in the run itself, with the count of any records
dropped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from ._drain import Drainer
from ._durable import atomic_write_bytes
from ._faults import Faults, Reserve
from ._latest import LatestMetrics
from ._lifecycle import register, unregister
from ._native import metrics_buffer
from ._process import process_start_time, ray_labels
from ._storable import clean_text
from ._stream import (
    Stream,
    metric_columns,
    newest_columns,
)
from .errors import RunDirectoryError
from .format import (
    ATTACHMENTS_DIR,
    EVENTS,
    HEARTBEAT_SECONDS,
    METRICS,
    RUN_MANIFEST,
    STORAGE_FAULT_EVENT,
    STREAMS,
    STREAMS_DIR,
    WRITERS_DIR,
    LogLevel,
    RunManifest,
    SegmentName,
    WriterManifest,
    utc_now,
)

__all__ = ["RunWriter", "WriterOptions", "new_writer_id"]


def _sealing() -> ModuleType:
    """`segments` (pyarrow, Parquet), imported when a segment is first sealed: a job
    whose segments all stay small (see `WriterOptions.jsonl_bytes`) never loads it."""
    from . import segments

    return segments


_MiB = 1024 * 1024
#: Longest a logging call waits for a writer that fell behind (see RunWriter.wake).
_CATCH_UP_SECONDS: Final = 1.0


@dataclass(frozen=True)
class WriterOptions:
    """How often and how much the writer writes. Defaults suit a training job."""

    #: Seconds between writes; a SIGKILL loses at most this much of the newest records.
    flush_interval: float = 0.1
    #: A stream's first segment is kept as JSONL only up to this many bytes: not
    #: converted to Arrow as it grows, and left as JSONL if the writer closes first (read
    #: the same; the archive takes it). A job that logs little never loads pyarrow. Past
    #: it the segment is sealed, and the stream converts every flush to Arrow from then on
    #: (from the start with 0: every segment sealed, also at close).
    jsonl_bytes: int = 1 * _MiB
    #: A live segment is sealed into Parquet once it holds this many bytes ...
    seal_bytes: int = 16 * _MiB
    #: ... or is this many seconds old, and always when the writer closes.
    seal_age: float = 300.0
    #: Memory kept for records that could not be written (disk full); beyond it the
    #: oldest are dropped and counted in the writer manifest and a `storage_fault` event.
    max_pending_bytes: int = 64 * _MiB
    #: fsync live segments after every write (survives power loss, costs throughput).
    fsync_every_flush: bool = False


def new_writer_id() -> str:
    return f"w{os.getpid()}-{secrets.token_hex(3)}"


class RunWriter:
    """Writes the records of one process into a run directory.

    Several `RunWriter`s, in one process or many, may write into the same run: each has
    its own `writer_id` and its own segment files, so they never share a file or a lock.
    The writer that created the run (`manifest` given) also owns `run.json`.

    Thread-safety: appending to `buffers[...].records` and `flush()` may be called from
    any thread; `close()` once.
    """

    def __init__(
        self,
        run_dir: Path,
        run_id: str,
        *,
        manifest: RunManifest | None = None,
        writer_id: str | None = None,
        options: WriterOptions | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.run_id = run_id
        self.options = options or WriterOptions()
        self.writer_id = writer_id or new_writer_id()
        self.seq = itertools.count(1)
        self.manifest = manifest
        self.buffers = {name: Stream(name, run_dir / STREAMS_DIR / name) for name in STREAMS}
        self.buffers[METRICS].numbers = metrics_buffer()
        self._start_streams()
        self._labels = dict(labels or {})
        self.writer_manifest = self._new_writer_manifest()
        self._io_lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._closed = False
        self._manifest_dirty = False
        self._last_heartbeat = 0.0
        self._faults = Faults(run_dir, self.options.max_pending_bytes, self._fault_event)
        self._attachments = itertools.count(1)
        self._latest = LatestMetrics()
        self._drainer = Drainer(self.writer_id, self._latest, self._report, self._lost)
        self._run_dir_inode: int | None = None
        self._reserve = Reserve(self._reserve_path())
        #: When the last cycle whose writes all went through began: every record logged
        #: before it is on disk. `_cycle_done` is set at the end of such a cycle.
        self._written_through = time.monotonic()
        self._cycle_done = threading.Event()
        self._create_directories()
        self._thread = self._start_thread()
        register(self)

    # -- setup -------------------------------------------------------------------------

    def _start_streams(self) -> None:
        """The streams' segments named for this writer; with `jsonl_bytes` 0, every
        stream converts to Arrow from its first record."""
        for stream in self.buffers.values():
            stream.writer = self.writer_id
            if self.options.jsonl_bytes <= 0:
                stream.arrow, stream.held = True, None

    def _create_directories(self) -> None:
        """Make the run's folders and first manifests now, so a bad root fails at start."""
        try:
            self._make_directories()
            if self.manifest is not None:
                atomic_write_bytes(self.run_dir / RUN_MANIFEST, self.manifest.to_json())
            self._write_writer_manifest(durable=True)
        except OSError as exc:
            raise RunDirectoryError(
                f"cannot write the run directory {self.run_dir}: {exc.strerror or exc}; "
                "check that the root exists and is writable"
            ) from None
        self._run_dir_inode = os.stat(self.run_dir).st_ino

    def _make_directories(self) -> None:
        for stream in self.buffers.values():
            stream.directory.mkdir(parents=True, exist_ok=True)
        (self.run_dir / WRITERS_DIR).mkdir(exist_ok=True)
        self._make_reserve()

    def _reserve_path(self) -> Path:
        return self.run_dir / WRITERS_DIR / f".{self.writer_id}.reserve.tmp"

    def _make_reserve(self) -> None:
        self._reserve.make(len(self.manifest.to_json()) if self.manifest else 0)

    def _new_writer_manifest(self) -> WriterManifest:
        now = utc_now()
        pid = os.getpid()
        return WriterManifest(
            writer_id=self.writer_id,
            run_id=self.run_id,
            host=socket.gethostname(),
            pid=pid,
            pid_start=process_start_time(pid),
            started_at=now,
            heartbeat_at=now,
            labels={**ray_labels(), **self._labels},
        )

    def _start_thread(self) -> threading.Thread:
        thread = threading.Thread(
            target=self._run, name=f"runstore-writer-{self.writer_id}", daemon=True
        )
        thread.start()
        return thread

    # -- what the context calls --------------------------------------------------------

    def wake(self) -> None:
        """Ask for an early write; the logging path calls it every 16,384 records.

        It also keeps the job from running ahead of the writer: if the newest records
        on disk are more than a `flush_interval` old (a loop that does nothing but log,
        at over a million calls a second, outruns the writer's share of the GIL), the
        call waits for the writer's next write, at most `_CATCH_UP_SECONDS`. So what a
        SIGKILL can lose stays bounded at any call rate. Never during a storage fault.
        """
        self._wake.set()
        behind = time.monotonic() - self._written_through
        if (
            behind > self.options.flush_interval / 2
            and self._faults.current is None
            and not self._stopping.is_set()
            and threading.current_thread() is not self._thread
            and self._thread.is_alive()
        ):
            self._cycle_done.clear()
            self._cycle_done.wait(_CATCH_UP_SECONDS)

    def update_manifest(self, **changes: Any) -> None:
        """Change fields of `run.json`; written by the next flush. Owner writer only."""
        if self.manifest is None:
            return
        # Under the I/O lock: the writer thread must not clear `_manifest_dirty` after
        # writing the manifest this call replaces.
        with self._io_lock:
            self.manifest = self.manifest.replace(**changes)
            self._manifest_dirty = True

    def attach(self, source: str | os.PathLike[str], seq: int) -> str | None:
        """Copy a file or folder into the run; its path relative to the run, or None.

        A failure is reported (stderr and the run) and yields None, never an exception:
        the event is still logged with the job's own path.
        """
        src = Path(source)
        # The copy's name is text the run can hold (not UTF-8: `_storable.clean_text`).
        name = clean_text(src.name) or "file"
        relative = Path(ATTACHMENTS_DIR) / self.writer_id / f"{seq:06d}-{name}"
        target = self.run_dir / relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, target)
            else:
                shutil.copy2(src, target)
        except OSError as exc:
            self._report(f"cannot copy attachment {src} into the run: {exc.strerror or exc}")
            return None
        return relative.as_posix()

    def latest_metrics(self) -> dict[str | None, dict[str, Any]]:
        """{category: {key: value}}: the newest value of every metric logged so far."""
        stream = self.buffers[METRICS]
        with self._io_lock:  # the writer thread drains under it
            pending = [metric_columns(stream.records), metric_columns(stream.mixed)]
            if stream.numbers is not None:
                pending.append(newest_columns(stream.numbers))
            return self._latest.snapshot(pending)

    def flush(self) -> None:
        """Write everything appended so far (from the caller's thread), then return."""
        with self._io_lock:
            self._cycle(force_heartbeat=False)

    def close(self, *, status: str | None = None, error: str | None = None) -> None:
        """Write out everything, seal every segment and mark the writer closed.

        `status`/`error` end the run in `run.json` if this writer owns it and the run is
        still running. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        with self._io_lock:
            if self.manifest is not None and self.manifest.status == "running" and status:
                self.update_manifest(status=status, error=error, ended_at=utc_now())
            self._cycle(force_heartbeat=True)  # the run folder checked once more
            if self.buffers[EVENTS].records:  # a storage_fault event of that cycle
                self._cycle(force_heartbeat=False)
            self._drainer.ballast = []  # no next drain to keep memory for
            for stream in self.buffers.values():
                self._seal(stream, closing=True)
            self._count_unwritten()
            self.writer_manifest = self.writer_manifest.replace(status="closed", ended_at=utc_now())
            self._write_final_manifests()
            self._reserve.release()
        unregister(self)

    def _count_unwritten(self) -> None:
        """At close: records that could not be written are lost; count and say so."""
        unwritten = sum(entry.records for s in self.buffers.values() for entry in s.pending)
        for stream in self.buffers.values():
            stream.pending.clear()
            stream.pending_bytes = 0
        if unwritten:
            self._lost(unwritten)
        if self._faults.current is not None:
            self._report(
                f"closing with the storage fault unresolved ({self._faults.current}): "
                f"{unwritten} records could not be written and are lost; "
                f"{self.writer_manifest.lost_records} lost in all, counted in "
                f"{WRITERS_DIR}/{self.writer_id}.json"
            )

    def _write_final_manifests(self) -> None:
        """`run.json` (if this writer owns it and it changed) and the closed writer
        manifest, into the reserved space if the disk is full."""
        for attempt in range(2):
            try:
                if self._manifest_dirty and self.manifest is not None:
                    atomic_write_bytes(self.run_dir / RUN_MANIFEST, self.manifest.to_json())
                    self._manifest_dirty = False
                self._write_writer_manifest(durable=True)
                return
            except OSError as exc:
                if attempt == 0 and self._reserve.path.exists():
                    self._reserve.release()
                    continue
                self._report(
                    f"cannot write the final manifests: {exc.strerror or exc}; the run "
                    "will read as crashed"
                )

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def lost_records(self) -> int:
        return self.writer_manifest.lost_records

    @property
    def fault(self) -> str | None:
        """The storage fault in progress, or None when writes go through."""
        return self._faults.current

    # -- the background loop -----------------------------------------------------------

    def _run(self) -> None:
        interval = self.options.flush_interval
        next_cycle = time.monotonic() + interval
        while not self._stopping.is_set():
            # Cycles start every `interval`, however long the last one took.
            self._wake.wait(max(0.0, next_cycle - time.monotonic()))
            self._wake.clear()
            if self._stopping.is_set():
                break
            next_cycle = time.monotonic() + interval
            with self._io_lock:
                try:
                    self._cycle(force_heartbeat=False)
                except Exception as exc:  # the loop must survive anything
                    self._report(f"unexpected error in the writer: {exc!r}")
                    # Alive all the same: no other host may take the run for crashed.
                    with contextlib.suppress(Exception):
                        self._write_writer_manifest(durable=False)

    def _cycle(self, *, force_heartbeat: bool) -> None:
        """Drain, encode, write, seal, heartbeat: one pass, under `_io_lock`."""
        started = time.monotonic()
        heartbeat = force_heartbeat or started - self._last_heartbeat >= HEARTBEAT_SECONDS
        if heartbeat:  # a stat per heartbeat, not per write: see _check_run_dir
            self._check_run_dir()
        for stream in self.buffers.values():
            self._drain(stream)
        ok = True
        for stream in self.buffers.values():
            ok = self._write_pending(stream) and ok
        if ok:
            self._written_through = started
            self._cycle_done.set()
        if ok and self._faults.current is not None:
            self._recovered()
        now = time.monotonic()
        if ok:
            for stream in self.buffers.values():
                if not stream.arrow and stream.written_bytes >= self.options.jsonl_bytes:
                    stream.arrow = True  # it logs enough: Arrow from its next segment on
                    self._seal(stream, closing=False)
                elif stream.written_bytes and (
                    stream.written_bytes >= self.options.seal_bytes
                    or now - stream.opened_at >= self.options.seal_age
                ):
                    self._seal(stream, closing=False)
        if self._manifest_dirty and self.manifest is not None:
            try:
                atomic_write_bytes(self.run_dir / RUN_MANIFEST, self.manifest.to_json())
                self._manifest_dirty = False
            except OSError as exc:
                self._fault_seen(f"cannot write {RUN_MANIFEST}: {exc.strerror or exc}")
        if heartbeat:
            self._last_heartbeat = now
            # A missed heartbeat is harmless; a write fault is reported above.
            with contextlib.suppress(OSError):
                self._write_writer_manifest(durable=False)

    def _drain(self, stream: Stream) -> None:
        entry = self._drainer.drain(stream)
        if entry is None:
            return
        stream.pending.append(entry)
        stream.pending_bytes += entry.size
        limit = self.options.max_pending_bytes
        while stream.pending_bytes > limit and len(stream.pending) > 1:
            dropped = stream.pending.popleft()
            stream.pending_bytes -= dropped.size
            self._lost(dropped.records)

    def _write_pending(self, stream: Stream) -> bool:
        if not stream.pending:
            return True
        try:
            stream.append_pending(
                careful=self._faults.current is not None,
                fsync=self.options.fsync_every_flush,
                lost=self._segment_lost_on_disk,
            )
        except OSError as exc:
            self._fault_seen(f"cannot write {stream.name} segment: {exc.strerror or exc}")
            return False
        return True

    def _segment_lost_on_disk(self, stream: Stream) -> None:
        """The live segment was removed or cut short under us (say the run directory was
        deleted): seal its records from memory and go on in a new segment."""
        live = stream.path()
        count = stream.segment_records
        if stream.held is not None:  # the same segment, written again from its lines
            self._report(f"{live} was removed or changed; writing its {count} records again")
            stream.directory.mkdir(parents=True, exist_ok=True)
            header = stream.header()
            data = b"".join([header, *stream.held])
            atomic_write_bytes(live, data, durable=False)
            stream.written_bytes = len(data)
            return
        tables = self._drainer.segment_tables(stream)
        if tables:
            self._report(f"{live} was removed or changed; writing its {count} records again")
            stream.directory.mkdir(parents=True, exist_ok=True)
            stream.write_sealed(_sealing().sealed_table(tables))
        else:  # only the file held them (their conversion to Arrow failed)
            self._report(f"{live} was removed or changed; its {count} records are lost")
            self.writer_manifest.lost_records += count
        stream.next_segment()

    def _seal(self, stream: Stream, *, closing: bool) -> None:
        """Turn the live segment into Parquet; the JSONL goes only once the Parquet is whole.

        Not while drains of it wait to be written (a storage fault): it is sealed after
        them, or, closing, left as a readable live segment."""
        if not stream.written_bytes:
            return
        if stream.pending:
            if closing:
                stream.next_segment()
            return
        if not stream.segment_records:  # a header alone: every drain of it failed
            with contextlib.suppress(OSError):
                stream.path().unlink(missing_ok=True)
            stream.next_segment()
            return
        if closing and not stream.arrow:  # small: left as JSONL, no pyarrow loaded for it
            stream.next_segment()
            return
        now = time.monotonic()
        if not closing and now < stream.next_seal_attempt:
            return
        live = stream.path()
        segments = _sealing()
        try:
            tables = self._drainer.segment_tables(stream)
            if tables:
                table = segments.sealed_table(tables)
            else:  # read as any reader reads it: a record of bad values is reported
                table, problems = segments.read_segment(stream.name, live, self.writer_id)
                for problem in problems:
                    self._report(problem)
            stream.write_sealed(table)
        except OSError as exc:
            stream.next_seal_attempt = now + 5.0
            self._fault_seen(f"cannot seal {live.name}: {exc.strerror or exc}")
            if not closing:
                return
        except Exception as exc:  # a bug: the file holds the records, readable as it is
            self._report(f"cannot seal {live.name} ({exc!r}); it stays a live segment")
        # Sealed, or left as a readable live segment: either way start afresh.
        stream.next_segment()

    def _check_run_dir(self) -> None:
        """Notice the run folder removed (or replaced) under us: count what it took with
        it, make it again, and say so in a `storage_fault` event."""
        try:
            inode: int | None = os.stat(self.run_dir).st_ino
        except OSError:
            inode = None
        # The folder's inode number may be reused by its new self: our reserve file,
        # which only we make, tells the old folder from a new one.
        if inode == self._run_dir_inode and not self._reserve.lost():
            return
        lost = 0
        for stream in self.buffers.values():
            for number, count in list(stream.sealed.items()):
                name = SegmentName(writer=self.writer_id, number=number, sealed=True)
                if not (stream.directory / name.filename).exists():
                    lost += count
                    del stream.sealed[number]
        try:
            self._make_directories()
            self._run_dir_inode = os.stat(self.run_dir).st_ino
        except OSError as exc:
            self._fault_seen(f"cannot make the run folder again: {exc.strerror or exc}")
            return
        self.writer_manifest.lost_records += lost
        self._manifest_dirty = self.manifest is not None
        message = "the run folder was removed while the job was writing to it"
        self._report(
            f"{message}; {lost} records written before were lost with it (counted in "
            "lost_records); writing on into a new folder"
        )
        self._faults.event(message, utc_now().isoformat(), lost)

    # -- faults ------------------------------------------------------------------------

    def _fault_seen(self, message: str) -> None:
        self._faults.seen(self.writer_manifest, message)

    def _lost(self, count: int) -> None:
        self._faults.lost(self.writer_manifest, count)

    def _recovered(self) -> None:
        if self.manifest is not None and not (self.run_dir / RUN_MANIFEST).exists():
            self._manifest_dirty = True
        self._faults.recovered()

    def _fault_event(self, data: dict[str, Any]) -> None:
        """A `storage_fault` event into the events stream, written by the next cycle."""
        event = (STORAGE_FAULT_EVENT, LogLevel.ERROR.value, None, data, None, None)
        self.buffers[EVENTS].records.append((time.time_ns(), next(self.seq), *event))
        self._wake.set()

    def _report(self, message: str) -> None:
        self._faults.report(message)

    def _write_writer_manifest(self, *, durable: bool) -> None:
        manifest = self.writer_manifest
        manifest.heartbeat_at = utc_now()
        manifest.records_written = sum(s.written_records for s in self.buffers.values())
        path = self.run_dir / WRITERS_DIR / f"{self.writer_id}.json"
        if not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, self.writer_manifest.to_json(), durable=durable)

    # -- process lifecycle -------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """A forked child gets a writer of its own; the parent's unflushed records stay
        the parent's."""
        self.writer_id = new_writer_id()
        self._drainer = Drainer(self.writer_id, self._latest, self._report, self._lost)
        self._reserve = Reserve(self._reserve_path())
        self.manifest = None
        for stream in self.buffers.values():
            stream.forget()
        self._start_streams()
        self.writer_manifest = self._new_writer_manifest()
        self._io_lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cycle_done = threading.Event()
        self._make_reserve()
        try:
            self._write_writer_manifest(durable=True)
        except OSError as exc:
            self._fault_seen(f"cannot write the writer manifest: {exc.strerror or exc}")
        self._thread = self._start_thread()
