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
from typing import Final

import pyarrow as pa

from .archive import RunDir, store_schema, with_run_id
from .errors import RunstoreError
from .format import RECORD_FIELDS, STREAMS, SegmentName
from .jsonl import Columns, decode_lines, record_count, slice_columns
from .reader import RunData, SegmentCache, read_run, read_segments
from .segments import check_sealed
from .tables import BAD_VALUES, repeat_each, safe_table, table_of_batches

__all__ = ["LiveRun", "read_live"]

#: Bytes of live segments decoded before a batch is converted: what one look holds as
#: Python objects at most, beyond one segment larger than this.
_BATCH_BYTES: Final = 4 << 20


@dataclass
class LiveRun:
    """A run read from its directory, kept between looks."""

    signature: tuple[int, ...]
    run: RunData
    final: bool  # nothing can change it while its signature holds
    #: The records of its live segments by stream, with run_id: a table a segment.
    tables: dict[str, list[pa.Table]]
    #: Paths of the sealed segments, by stream: DuckDB reads them from disk.
    sealed: dict[str, list[str]]
    #: By stream, each segment as last read: a live one's table (with run_id), a sealed
    #: one's check, and the problems found in it.
    caches: dict[str, SegmentCache]
    # Tells one reading from the next, so the live tables are re-registered only when
    # some run was read again.
    version: int = field(default_factory=itertools.count().__next__)


def read_live(
    run_dirs: Iterable[RunDir], previous: dict[str, LiveRun], problems: list[str]
) -> dict[str, LiveRun]:
    """The runs of `run_dirs` by directory name: a finished run unchanged since
    `previous` (the last look) as it was, any other read again, its live segments only
    if they changed. A run whose manifest cannot be read is a problem, left out."""
    batches = {stream: _Batch(stream) for stream in STREAMS}
    runs: dict[str, LiveRun] = {}
    with _collector_paused():
        for run_dir in run_dirs:
            _read_run(run_dir, previous.get(run_dir.name), runs, batches, problems)
        for batch in batches.values():
            batch.convert()
    return runs


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
        runs[run_dir.name] = cached
        return
    try:
        run = read_run(run_dir.path)
    except RunstoreError as exc:
        problems.append(f"{exc}; left out")
        return
    if cached is None or cached.run.run_id != run.run_id:
        caches: dict[str, SegmentCache] = {stream: {} for stream in STREAMS}
    else:
        caches = cached.caches
    tables, sealed = {}, {}
    for stream in STREAMS:
        tables[stream], sealed[stream] = _read_stream(run, caches[stream], batches[stream])
    runs[run_dir.name] = LiveRun(run_dir.signature, run, run.final, tables, sealed, caches)


#: The table a cache holds for a sealed segment DuckDB may read (None: it may not).
_READABLE: Final = {stream: store_schema(stream).empty_table() for stream in STREAMS}


def _read_stream(
    run: RunData, cache: SegmentCache, batch: _Batch
) -> tuple[list[pa.Table], list[str]]:
    """A run's stream: the tables of its live segments read before (those read now are
    added once `batch` is converted) and the paths of its sealed segments."""
    stream = batch.stream
    sealed: list[str] = []
    tables: list[pa.Table] = []

    def check(name: SegmentName, path: Path) -> None:
        if path not in cache:
            readable, found = check_sealed(stream, path)
            cache[path] = (None, _READABLE[stream] if readable else None, found)
        _, usable, found = cache[path]
        run.problems.extend(found)
        if usable is not None:
            sealed.append(str(path))

    def live(name: SegmentName, path: Path) -> pa.Table | None:
        status = os.stat(path)
        key = (status.st_size, status.st_mtime_ns)
        hit = cache.get(path)
        if hit is not None and hit[0] == key:
            run.problems.extend(hit[2])
            return hit[1]
        with open(path, "rb") as handle:
            data = handle.read()
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
    cache: SegmentCache
    tables: list[pa.Table]  # the run's tables of this stream
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
            tables = [table.slice(at, count) for at, count in zip(offsets, counts, strict=False)]
        except BAD_VALUES:
            # Some record holds a value of the wrong type: each segment by itself, so
            # the damage stays in its own run (`safe_table` leaves the record out).
            tables = []
            for segment, (start, end) in zip(segments, itertools.pairwise(bounds), strict=True):
                records = slice_columns(columns, start, end)
                where = str(segment.path)
                one = safe_table(self.stream, segment.writer, records, where, segment.problems)
                tables.append(with_run_id(one, segment.run.run_id))
        for segment, table in zip(segments, tables, strict=True):
            segment.cache[segment.path] = (segment.key, table, segment.problems)
            segment.tables.append(table)
            segment.run.problems.extend(segment.problems)
        self._clear()
