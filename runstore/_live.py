"""The runs a store reads from their own folders (every run outside the archive): their
manifests; their sealed segments, checked by the footer and left on disk for DuckDB;
their live (JSONL) segments, decoded into Arrow tables kept between looks.

The live segments one look reads are converted together, one Arrow conversion per
stream for all runs: a small segment's own conversion costs ~100 µs whatever its size,
most of what reading a short finished run costs, and a root holds thousands of them.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NamedTuple

import pyarrow as pa

from ._regular import read_regular
from .archive import RunDir, with_run_id
from .errors import RunstoreError
from .format import RECORD_FIELDS, STREAMS, SegmentName
from .jsonl import Columns, decode_lines, record_count, slice_columns
from .reader import RunData, read_run, read_segments
from .segments import check_sealed
from .tables import BAD_VALUES, repeat_each, safe_table, table_of_batches

__all__ = ["LiveRun", "LiveTable", "add_streams", "joined", "read_live"]

#: Bytes of live segments decoded before a batch is converted: what one look holds as
#: Python objects at most, beyond one segment larger than this.
_BATCH_BYTES: Final = 4 << 20


class LiveTable(NamedTuple):
    """A live segment's records (with run_id): `length` rows from `start` of the table
    of the look that converted them. A range, not a slice: the segments of one look go
    to DuckDB as the few tables they were converted in (`joined`), not as thousands of
    chunks of some twenty rows (slicing them all costs more than reading, and DuckDB
    scans 2,000 small chunks 2-3x slower than one)."""

    table: pa.Table
    start: int
    length: int


def joined(pieces: Iterable[LiveTable], schema: pa.Schema) -> pa.Table:
    """The pieces end to end, those that follow each other in one table as one slice."""
    parts: list[pa.Table] = []
    table: pa.Table | None = None
    start = end = 0
    for piece in pieces:
        if piece.table is table and piece.start == end:
            end += piece.length
            continue
        if table is not None:
            parts.append(table.slice(start, end - start))
        table, start, end = piece.table, piece.start, piece.start + piece.length
    if table is not None:
        parts.append(table.slice(start, end - start))
    return pa.concat_tables(parts) if parts else schema.empty_table()


class _Read(NamedTuple):
    """A segment as last read: a live one's records, a sealed one's check."""

    key: tuple[int, int] | None  # a live segment's size and mtime when read
    records: LiveTable | None  # a live segment's
    readable: bool  # a sealed segment DuckDB may read
    problems: list[str]


#: By path, each segment of a run's stream as last read.
_Cache = dict[Path, _Read]


#: Tells one reading of a run from the next (`LiveRun.version`).
_versions = itertools.count()


@dataclass
class LiveRun:
    """A run read from its directory, kept between looks: its manifests, and the
    streams some look asked for (a query of `runs` needs none of them)."""

    signature: tuple[int, ...]
    run: RunData
    final: bool  # nothing can change it while its signature holds
    #: The records of its live segments by stream, with run_id, a piece a segment.
    tables: dict[str, list[LiveTable]]
    #: Paths of the sealed segments, by stream: DuckDB reads them from disk.
    sealed: dict[str, list[str]]
    #: By stream, each segment as last read, with the problems found in it.
    caches: dict[str, _Cache]
    # Tells one reading from the next, so the live tables are re-registered only when
    # some run was read again (or a stream added).
    version: int = field(default_factory=_versions.__next__)


def read_live(
    run_dirs: Iterable[RunDir],
    previous: dict[str, LiveRun],
    problems: list[str],
    streams: Iterable[str] = STREAMS,
) -> dict[str, LiveRun]:
    """The runs of `run_dirs` by directory name, with `streams` read: a finished run
    unchanged since `previous` (the last look) as it was (any of `streams` it lacks
    added), any other read again, its live segments only if they changed. A run whose
    manifest cannot be read is a problem, left out."""
    runs: dict[str, LiveRun] = {}
    with _batches(streams) as batches:
        for run_dir in run_dirs:
            _read_run(run_dir, previous.get(run_dir.name), runs, batches, problems)
    return runs


def add_streams(runs: Iterable[LiveRun], streams: Iterable[str]) -> None:
    """Read each of `streams` that a run of `runs` lacks, as it is now: a look that
    read fewer streams than a later query of the same snapshot needs."""
    with _batches(streams) as batches:
        for run in runs:
            _add_streams(run, batches)


def _add_streams(live: LiveRun, batches: dict[str, _Batch]) -> None:
    missing = [stream for stream in batches if stream not in live.tables]
    for stream in missing:
        live.tables[stream], live.sealed[stream] = _read_stream(
            live.run, live.caches[stream], batches[stream]
        )
    if missing:
        live.version = next(_versions)


@contextlib.contextmanager
def _batches(streams: Iterable[str]) -> Iterator[dict[str, _Batch]]:
    """A batch a stream for one reading, converted when the block ends."""
    batches = {stream: _Batch(stream) for stream in streams}
    with _collector_paused():
        yield batches
        for batch in batches.values():
            batch.convert()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """A first look makes some hundred objects a run (manifests, decoded lines) that
    are kept: Python's cycle collector would go over them again and again as they pile
    up (a tenth of the read). A cycle made meanwhile (a caught exception's) waits for
    the next collection."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _read_run(
    run_dir: RunDir,
    cached: LiveRun | None,
    runs: dict[str, LiveRun],
    batches: dict[str, _Batch],
    problems: list[str],
) -> None:
    """One run into `runs`: as it was if finished and unchanged, else read again."""
    if cached is not None and cached.final and cached.signature == run_dir.signature:
        _add_streams(cached, batches)
        runs[run_dir.name] = cached
        return
    try:
        run = read_run(run_dir.path)
    except RunstoreError as exc:
        problems.append(f"{exc}; left out")
        return
    if cached is None or cached.run.run_id != run.run_id:
        caches: dict[str, _Cache] = {stream: {} for stream in STREAMS}
    else:
        caches = cached.caches
    live = LiveRun(run_dir.signature, run, run.final, {}, {}, caches)
    _add_streams(live, batches)
    runs[run_dir.name] = live


def _read_stream(run: RunData, cache: _Cache, batch: _Batch) -> tuple[list[LiveTable], list[str]]:
    """A run's stream: the records of its live segments read before (those read now
    are added once `batch` is converted) and the paths of its sealed segments."""
    stream = batch.stream
    sealed: list[str] = []
    tables: list[LiveTable] = []

    def check(name: SegmentName, path: Path) -> None:
        if path not in cache:
            readable, found = check_sealed(stream, path)
            cache[path] = _Read(None, None, readable, found)
        entry = cache[path]
        run.problems.extend(entry.problems)
        if entry.readable:
            sealed.append(str(path))

    def live(name: SegmentName, path: Path) -> LiveTable | None:
        hit = cache.get(path)
        if hit is not None:
            status = os.stat(path)
            if hit.key == (status.st_size, status.st_mtime_ns):
                run.problems.extend(hit.problems)
                return hit.records
        data, status = read_regular(path)
        key = (status.st_size, status.st_mtime_ns)  # as opened: the data hold no less
        batch.add(_Segment(path, key, name.writer, run, cache, tables), data)
        return None

    tables.extend(read_segments(run.path, stream, cache, run.problems, sealed=check, live=live))
    return tables, sealed


@dataclass
class _Segment:
    """A live segment decoded into a batch, and where its table goes once converted."""

    path: Path
    key: tuple[int, int]  # size and mtime when read
    writer: str
    run: RunData
    cache: _Cache
    tables: list[LiveTable]  # the run's pieces of this stream
    start: int = 0  # its first record in the batch
    problems: list[str] = field(default_factory=list)


class _Batch:
    """A stream's live segments decoded by one look, their records laid end to end."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._clear()

    def _clear(self) -> None:
        self.columns: Columns = {name: [] for name in RECORD_FIELDS[self.stream]}
        self.segments: list[_Segment] = []
        self.size = 0

    def add(self, segment: _Segment, data: bytes) -> None:
        segment.start = record_count(self.columns)
        decoded = decode_lines(self.stream, data, where=str(segment.path), columns=self.columns)
        segment.problems = decoded.problems
        self.segments.append(segment)
        self.size += len(data)
        if self.size >= _BATCH_BYTES:
            self.convert()

    def convert(self) -> None:
        """Each segment's table into its run's tables and its cache."""
        if not self.segments:
            return
        segments, columns = self.segments, self.columns
        bounds = [segment.start for segment in segments] + [record_count(columns)]
        try:
            table, counts = table_of_batches(
                self.stream, columns, bounds, [segment.writer for segment in segments]
            )
            table = with_run_id(table, repeat_each([s.run.run_id for s in segments], counts))
            offsets = itertools.accumulate(counts, initial=0)  # one more than counts
            pieces = [LiveTable(table, at, n) for at, n in zip(offsets, counts, strict=False)]
        except BAD_VALUES:
            # Some record holds a value of the wrong type: each segment by itself, so
            # the damage stays in its own run (`safe_table` leaves the record out).
            pieces = []
            for segment, (start, end) in zip(segments, itertools.pairwise(bounds), strict=True):
                records = slice_columns(columns, start, end)
                where = str(segment.path)
                one = safe_table(self.stream, segment.writer, records, where, segment.problems)
                one = with_run_id(one, segment.run.run_id)
                pieces.append(LiveTable(one, 0, one.num_rows))
        for segment, piece in zip(segments, pieces, strict=True):
            segment.cache[segment.path] = _Read(segment.key, piece, False, segment.problems)
            segment.tables.append(piece)
            segment.run.problems.extend(segment.problems)
        self._clear()
