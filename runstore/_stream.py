"""One stream of one writer: its buffer of records, the drains waiting to be written,
and its live segment file.

The job's calls append to the buffer (`records`, `mixed`, or the C `numbers`); the
writer's thread takes them (`take_batches`, `take_numbers`), encodes them into a
`PendingDrain`, and `Stream.append_pending` appends those to the live segment in order,
a whole line at a time; `write_sealed` and `next_segment` turn the page. When to seal,
and what to do when a file is lost under the job, is the writer's business.
Everything here runs under the writer's I/O lock but the appends, which are atomic
under the GIL.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ._durable import fsync_dir
from ._storable import storable_columns
from .format import METRICS, RECORD_FIELDS, SegmentName
from .jsonl import MAX_RECORDS_PER_LINE, Columns, columns_of_records, header_line

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "PendingDrain",
    "Stream",
    "batch_columns",
    "line_records",
    "metric_columns",
    "newest_columns",
    "take_batches",
    "take_numbers",
    "write_all",
]

_MiB: Final = 1024 * 1024
_IOV_MAX: Final = os.sysconf("SC_IOV_MAX")
#: While the disk is full, a line is written only if this much more stays free (or a
#: twentieth of a smaller filesystem), so the job never holds the disk at 100%.
_DISK_MARGIN: Final = 4 * _MiB


class PendingDrain(NamedTuple):
    """One drain's records, encoded, waiting to be written, a whole line at a time."""

    lines: list[bytes]
    #: Records on each line.
    line_records: list[int]
    #: Their Arrow tables for sealing; while the stream does not convert (`Stream.arrow`),
    #: the drain's batches instead, converted only if their segment is sealed. None if a
    #: conversion failed (or the lines were written in parts: the tables no longer line
    #: up with the segment).
    tables: list[Any] | None
    size: int

    @property
    def records(self) -> int:
        return sum(self.line_records)


@dataclass
class Stream:
    """One stream of one writer: its buffer and its current live segment."""

    name: str
    directory: Path
    #: The writer whose segments these are (its id names them).
    writer: str = ""
    #: Records as tuples of RECORD_FIELDS[name], transposed into columns in C at the
    #: drain; metrics records flat instead, their fields one after another (one `extend`
    #: per record, atomic under the GIL), sliced into columns in C: a record tuple kept
    #: until the drain would be one more object per call for the GC to track.
    records: list[Any] = field(default_factory=list)
    #: Metrics records with a value that is not a float (converted value by value).
    mixed: list[Any] = field(default_factory=list)
    #: Numeric metrics calls in C arrays (`runstore._speedups.MetricsBuffer`), where the
    #: C `set_metrics` puts them; None without the speedups (or for other streams).
    numbers: Any = None
    number: int = 1
    #: Records written to the live segment.
    segment_records: int = 0
    #: Whether the stream converts each drain to Arrow: once its first segment grew past
    #: `WriterOptions.jsonl_bytes`. Until then a segment's drains are kept unconverted
    #: (their batches, and their lines in `held`), and one left at close stays JSONL.
    arrow: bool = False
    #: The live segment's records for sealing: Arrow tables converted at each flush
    #: (`arrow`), so sealing is concat + write (and a segment removed under us is sealed
    #: from memory), or before that the drains' batches (`PendingDrain.tables`); None
    #: after a conversion failed (sealing then decodes the file).
    tables: list[Any] | None = field(default_factory=list)
    #: The live segment's lines as written (header aside) while the stream is not
    #: `arrow`: a segment removed under us is written again from them.
    held: list[bytes] | None = field(default_factory=list)
    written_bytes: int = 0  # size of the live file as we wrote it, header included
    opened_at: float = 0.0
    #: Drained records not yet on disk, one entry per drain, oldest first.
    pending: deque[PendingDrain] = field(default_factory=deque)
    pending_bytes: int = 0
    next_seal_attempt: float = 0.0
    #: Records of each segment this writer sealed, by number: what a deleted run folder
    #: took with it is counted from these.
    sealed: dict[int, int] = field(default_factory=dict)
    #: Records of this stream written, in every segment (the writer manifest's count).
    written_records: int = 0

    def path(self, *, sealed: bool = False) -> Path:
        """The live segment's file (`sealed`: the Parquet it becomes)."""
        name = SegmentName(writer=self.writer, number=self.number, sealed=sealed)
        return self.directory / name.filename

    def header(self) -> bytes:
        """The live segment's first line."""
        return header_line(self.name, self.writer, self.number)

    def append_pending(self, *, careful: bool, fsync: bool, lost: Callable[[Stream], None]) -> None:
        """Write the pending drains (`write_pending`), after checking that the live
        segment is as we left it: our own write that stopped part way is cut back (its
        records are still pending); a file removed or changed under us goes to `lost`
        first, which writes it again or moves on to a new segment."""
        path = self.path()
        size = _size(path) if self.written_bytes else None
        if self.written_bytes and size != self.written_bytes:
            if size is not None and size > self.written_bytes:
                os.truncate(path, self.written_bytes)
            else:
                lost(self)
                path = self.path()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except FileNotFoundError:  # the run directory was removed: make it again
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if not self.written_bytes:  # a new segment
                self.start_segment(fd, self.header())
            self.write_pending(fd, careful=careful)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def write_sealed(self, table: pa.Table) -> None:
        """The live segment's records as its Parquet file; then the JSONL goes."""
        from .segments import write_parquet_atomic

        write_parquet_atomic(table, self.path(sealed=True))
        self.path().unlink(missing_ok=True)
        fsync_dir(self.directory)
        self.sealed[self.number] = self.segment_records

    def next_segment(self) -> None:
        """Start afresh in the next segment (its file is made by the next write)."""
        self.number += 1
        self.segment_records = 0
        self.tables = []
        self.held = None if self.arrow else []
        self.written_bytes = 0

    def start_segment(self, fd: int, header: bytes) -> None:
        """Begin a new live segment file (open in `fd`) with its header line."""
        self.opened_at = time.monotonic()
        os.ftruncate(fd, 0)
        self._write_or_cut(fd, [header], len(header))

    def write_pending(self, fd: int, *, careful: bool) -> None:
        """Write the pending drains to the live segment (`fd`) in order, a whole line at
        a time: a line that does not fit is cut off again at once (the space goes back),
        and the lines before it stay written. `careful` (a storage fault lasts): write
        only lines that leave the disk a margin free, so a full disk is never held at
        100%. Raises OSError with the stream as far as it got."""
        while self.pending:
            entry = self.pending[0]
            fit = _lines_that_fit(fd, entry) if careful else len(entry.lines)
            if not fit:
                raise OSError(errno.ENOSPC, "waiting for room on the disk")
            whole = fit == len(entry.lines)
            if whole:
                lines = entry.lines
                self._write_or_cut(fd, lines, entry.size)
                records = entry.records
                self.pending.popleft()
                self.pending_bytes -= entry.size
            else:  # the rest waits: the oldest records first, always
                lines = entry.lines[:fit]
                written = sum(map(len, lines))
                self._write_or_cut(fd, lines, written)
                records = sum(entry.line_records[:fit])
                rest = PendingDrain(
                    entry.lines[fit:], entry.line_records[fit:], None, entry.size - written
                )
                self.pending[0] = rest
                self.pending_bytes -= written
            self.segment_records += records
            self.written_records += records
            if self.held is not None:
                self.held.extend(lines)
            if self.tables is not None and entry.tables is not None and whole:
                self.tables.extend(entry.tables)
            else:
                self.tables = None

    def _write_or_cut(self, fd: int, lines: list[bytes], size: int) -> None:
        """Append `lines` (`size` bytes) whole, or raise with the file as it was before."""
        try:
            write_all(fd, lines)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self.written_bytes)
            raise
        self.written_bytes += size

    def forget(self) -> None:
        """Back to a new stream of segment 1, keeping the record lists: a context holds
        their bound `append`s."""
        fresh = Stream(self.name, self.directory)
        for name in self.__dataclass_fields__:
            if name in ("records", "mixed"):
                del getattr(self, name)[:]
            elif name == "numbers":
                if self.numbers is not None:
                    self.numbers.clear()
            else:
                setattr(self, name, getattr(fresh, name))


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _take(records: list[Any]) -> list[Any]:
    """Take what is in `records` now; appends from other threads meanwhile stay. (Two
    C calls, each atomic under the GIL: a copy, then a delete of what was copied.)"""
    taken = records[:]
    del records[: len(taken)]
    return taken


def metric_columns(flat: list[Any], stop: int | None = None) -> Columns:
    """Columns of flat metrics records (up to `stop`): every n-th item of n fields,
    sliced in C. Other threads only extend `flat` by whole records, past `stop`."""
    fields = RECORD_FIELDS[METRICS]
    stop = len(flat) if stop is None else stop
    return {name: flat[index : stop : len(fields)] for index, name in enumerate(fields)}


def take_batches(stream: Stream) -> list[tuple[Columns, bool]]:
    """The stream's records taken now, by column, each batch with whether all its
    metric values are floats (False for the other streams)."""
    if stream.name != METRICS:
        taken = _take(stream.records)
        return [(columns_of_records(stream.name, taken), False)] if taken else []
    batches: list[tuple[Columns, bool]] = []
    for buffer, all_floats in ((stream.records, True), (stream.mixed, False)):
        stop = len(buffer)
        if stop:
            # Sliced straight out of the buffer, then cut: no copy of the whole buffer.
            columns = metric_columns(buffer, stop)
            del buffer[:stop]
            batches.append((storable_columns(columns), all_floats))
    return batches


def take_numbers(stream: Stream) -> Any:
    """The C-recorded calls taken now as a batch (a MetricsBuffer), or None."""
    numbers = stream.numbers
    return numbers.take() if numbers is not None and len(numbers) else None


def batch_columns(batch: Any) -> Columns:
    """A MetricsBuffer's records as Python columns (for the paths that need them)."""
    return dict(zip(RECORD_FIELDS[METRICS], batch.columns(), strict=True))


def newest_columns(batch: Any) -> Columns:
    """What the latest values need of a MetricsBuffer: its newest call alone if every call
    has one category and key set (that call then holds every newest value, found in C),
    else all its calls."""
    if not batch.uniform:
        return batch_columns(batch)
    seq, category, values = batch.last()
    return dict(zip(RECORD_FIELDS[METRICS], ([None], [seq], [category], [values]), strict=True))


def line_records(records: int, lines: int) -> list[int]:
    """Records on each of the `lines` lines of a batch (MAX_RECORDS_PER_LINE a line)."""
    counts = [MAX_RECORDS_PER_LINE] * (records // MAX_RECORDS_PER_LINE)
    if records % MAX_RECORDS_PER_LINE:
        counts.append(records % MAX_RECORDS_PER_LINE)
    if len(counts) != lines:  # not split as expected: the lines go as one
        counts = [0] * (lines - 1) + [records]
    return counts


def _lines_that_fit(fd: int, entry: PendingDrain) -> int:
    """How many of a drain's lines leave the disk `_disk_margin` free (0 if none fits)."""
    room = _free_bytes(fd)
    if room is None:
        return len(entry.lines)
    room -= _disk_margin(fd)
    fit = 0
    for line in entry.lines:
        room -= len(line)
        if room < 0:
            break
        fit += 1
    return fit


def _disk_margin(fd: int) -> int:
    """Bytes left free while a storage fault lasts: `_DISK_MARGIN`, or a twentieth of a
    smaller filesystem."""
    try:
        status = os.fstatvfs(fd)
    except OSError:
        return _DISK_MARGIN
    return min(_DISK_MARGIN, status.f_blocks * status.f_frsize // 20)


def _free_bytes(fd: int) -> int | None:
    """Bytes an unprivileged process may still write on the filesystem of `fd`."""
    try:
        status = os.fstatvfs(fd)
    except OSError:
        return None
    return status.f_bavail * status.f_frsize


def write_all(fd: int, chunks: list[bytes]) -> None:
    """Write the chunks in order, gathered (writev): never joined into one more copy."""
    pending: list[bytes | memoryview] = list(chunks)
    while pending:
        group = pending[:_IOV_MAX]
        written = os.writev(fd, group)
        done = 0
        for chunk in group:
            if written < len(chunk):
                break
            written -= len(chunk)
            done += 1
        del pending[:done]
        if written:  # the next chunk went out in part
            pending[0] = memoryview(pending[0])[written:]
