"""A drain: what a stream's buffer holds, taken at one flush and encoded as JSONL lines
(for the live segment) and, once the stream converts to Arrow (`Stream.arrow`), as Arrow
tables (to seal it from memory), with the newest metric values folded in.

A drain is a list of batches behind one interface (`_Batch`): records the job appended
to Python lists (`_Records`), and numeric metrics calls the C speedups recorded in their
own arrays (`_Numbers`, only with the speedups). The drain does the same to each; only
how a batch makes its lines, its table and its newest values differs, so the C code is
one replaceable part. pyarrow is imported by the first batch that converts: a job whose
streams all stay small never loads it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson

from ._latest import LatestMetrics
from ._storable import storable_columns
from ._stream import (
    PendingDrain,
    Stream,
    batch_columns,
    line_records,
    newest_columns,
    take_batches,
    take_numbers,
)
from .format import METRICS
from .jsonl import MAX_RECORDS_PER_LINE, Columns, encode_lines, record_count, uniform_keys

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Drainer"]


def _arrow() -> ModuleType:
    """`tables` (and with it pyarrow), imported by the first drain that converts."""
    from . import tables

    return tables


#: Keep one record in this many across a drain (see Drainer.drain): a 1 MiB arena holds
#: ~3,000 records, so every arena keeps a few.
_BALLAST_STRIDE: Final = 512
#: How the C speedups format floats and names in live lines: as everything else is.
_DUMPS: Final = orjson.dumps


class _Batch(Protocol):
    """Records taken from a stream at one drain, by whichever buffer held them."""

    records: int

    def prepare(self, convert: bool) -> Any:
        """Its Arrow table if `convert` (else None), and what the conversion learns
        (uniform keys, all finite) for the steps after it. Raises if conversion fails."""
        ...

    def fold(self, latest: LatestMetrics) -> None:
        """Its newest metric values into `latest`."""
        ...

    def lines(self) -> list[bytes]:
        """Its JSONL lines, at most MAX_RECORDS_PER_LINE records a line."""
        ...


class _Records:
    """Records the job appended to the stream's Python lists, by column: a metrics batch
    knows whether all its values are floats (`Stream.records`) or not (`mixed`)."""

    def __init__(self, stream: str, writer_id: str, columns: Columns, all_floats: bool):
        self.stream = stream
        self.writer_id = writer_id
        self.columns = columns
        self.all_floats = all_floats
        self.records = record_count(columns)
        #: The batch's `uniform_keys` (None: they differ, or not looked for) and whether
        #: every value is a finite float (JSON then needs none of orjson's slower options).
        self.keys: list[str] | None = None
        self.finite = False

    def prepare(self, convert: bool) -> Any:
        if self.stream != METRICS:
            if not convert:
                return None
            return _arrow().table_from_columns(
                self.stream, self.writer_id, self.columns, dictionary=True
            )
        if convert or (self.all_floats and self._arrow_loaded()):
            arrow = _arrow()
            rows = arrow.float_rows(self.columns) if self.all_floats else None
            if rows is not None:  # converted in C in one pass, keys and finiteness found
                self.keys, self.finite = (rows.keys if rows.uniform else None), rows.finite
                if not convert:
                    return None
                return arrow.number_rows_table(self.writer_id, rows, dictionary=True)
        # Whether the calls all logged the same keys (the usual loop), found once for the
        # Arrow conversion and the latest values alike.
        self.keys = uniform_keys(self.columns["values"])
        if not convert:
            return None
        arrow = _arrow()
        hint = arrow.MetricsHint(self.all_floats, self.keys)
        table = arrow.table_from_columns(
            self.stream, self.writer_id, self.columns, hint=hint, dictionary=True
        )
        self.finite = self.all_floats and arrow.all_finite(table)
        return table

    @staticmethod
    def _arrow_loaded() -> bool:
        """Whether the C conversion's hints come free: Arrow is loaded already."""
        return "pyarrow" in sys.modules

    def fold(self, latest: LatestMetrics) -> None:
        if self.stream == METRICS:
            latest.fold(self.columns, self.keys)

    def lines(self) -> list[bytes]:
        return encode_lines(self.stream, self.columns, finite=self.finite)


class _Numbers:
    """Numeric metrics calls the C speedups recorded (a taken `MetricsBuffer`): lines,
    table and newest values each made in one C pass."""

    def __init__(self, writer_id: str, batch: Any, lines: list[bytes]) -> None:
        self.writer_id = writer_id
        self.batch = batch
        self.records = len(batch)
        self._lines = lines

    @classmethod
    def taken(cls, writer_id: str, batch: Any) -> _Numbers | _Records:
        """The batch, or its records the Python way if C cannot write their lines (text
        UTF-8 cannot hold, a lone surrogate in a key or category: stored as `_storable`
        says)."""
        try:
            lines: list[bytes] | None = batch.lines(_DUMPS, MAX_RECORDS_PER_LINE)
        except (UnicodeEncodeError, TypeError, ValueError):
            return _Records(METRICS, writer_id, storable_columns(batch_columns(batch)), False)
        if lines is None:  # a NaN or an infinity: the `special` column
            lines = encode_lines(METRICS, batch_columns(batch))
        return cls(writer_id, batch, lines)

    def prepare(self, convert: bool) -> Any:
        if not convert:
            return None
        arrow = _arrow()
        return arrow.number_rows_table(
            self.writer_id, arrow.batch_rows(self.batch), dictionary=True
        )

    def fold(self, latest: LatestMetrics) -> None:
        latest.fold(newest_columns(self.batch))

    def lines(self) -> list[bytes]:
        return self._lines


class Drainer:
    """Encodes one writer's drains (on the writer's thread, under its I/O lock)."""

    def __init__(
        self,
        writer_id: str,
        latest: LatestMetrics,
        report: Callable[[str], None],
        lost: Callable[[int], None],
    ) -> None:
        self.writer_id = writer_id
        self._latest = latest
        self._report = report
        self._lost = lost
        #: A few records of the last drained batch, kept until the next drain; see drain.
        self.ballast: list[Any] = []

    def _take(self, stream: Stream) -> list[_Batch]:
        records = [
            _Records(stream.name, self.writer_id, columns, all_floats)
            for columns, all_floats in take_batches(stream)
        ]
        if stream.name == METRICS and records:
            # The batch's objects fill whole 1 MiB arenas of Python's allocator, which
            # hands an arena back to the OS once all of it is free: the next batch would
            # then fault in fresh pages (~4 µs a page on a VM; ~100 ns per record). A few
            # records spread through the batch, kept until the next drain, keep them.
            self.ballast = [
                values[::_BALLAST_STRIDE] for batch in records for values in batch.columns.values()
            ]
        batches: list[_Batch] = [*records]
        numbers = take_numbers(stream)
        if numbers is not None:
            batches.append(_Numbers.taken(self.writer_id, numbers))
        return batches

    def drain(self, stream: Stream) -> PendingDrain | None:
        """What `stream` holds now, taken and encoded; None if it holds nothing (or
        its records could not be encoded: counted as lost and reported)."""
        batches = self._take(stream)
        count = sum(batch.records for batch in batches)
        if not count:
            return None
        # Kept for sealing: converted now once the stream converts, else the batches
        # themselves (converted if their segment is sealed: it passed `jsonl_bytes`).
        # Once a conversion failed, the live segment is sealed from its file anyway.
        keep = stream.tables is not None
        convert = stream.arrow and keep
        tables: list[Any] | None = [] if keep else None
        for batch in batches:
            try:
                table = batch.prepare(convert)
            except Exception as exc:
                self._conversion_failed(stream, exc)
                tables = None
                continue
            if tables is not None:
                tables.append(table if convert else batch)
        for batch in batches:
            batch.fold(self._latest)
        data: list[bytes] = []
        per_line: list[int] = []  # records on each line
        try:
            for batch in batches:
                lines = batch.lines()
                data += lines
                per_line += line_records(batch.records, len(lines))
        except Exception as exc:  # a bug, not a storage fault: count it, never hide it
            self._lost(count)
            self._report(f"cannot encode {count} {stream.name} records ({exc!r}); lost")
            return None
        return PendingDrain(data, per_line, tables, sum(map(len, data)))

    def segment_tables(self, stream: Stream) -> list[pa.Table] | None:
        """The live segment's records as Arrow tables to seal: the drains converted as
        they came, and the batches kept unconverted converted now (no decoding of the
        file); None if there are none or one does not convert (a bug, reported: the
        segment is then sealed from its file)."""
        if not stream.tables:
            return None
        tables = []
        for item in stream.tables:
            if isinstance(item, _Records | _Numbers):
                try:
                    item = item.prepare(True)
                except Exception as exc:
                    self._conversion_failed(stream, exc)
                    stream.tables = None
                    return None
            tables.append(item)
        return tables

    def _conversion_failed(self, stream: Stream, exc: Exception) -> None:
        """Records that did not convert to Arrow (a bug): reported; the live segment is
        then sealed from its JSONL, as any reader reads it."""
        self._report(
            f"cannot convert {stream.name} records to Arrow ({exc!r}); "
            "the segment will be sealed from its JSONL"
        )
