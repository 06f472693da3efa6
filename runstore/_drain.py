"""A drain: what a stream's buffer holds, taken at one flush and encoded as JSONL lines
(for the live segment) and, once the stream converts to Arrow (`Stream.arrow`), as Arrow
tables (to seal it from memory), with the newest metric values folded in. The C
speedups' calls (a `MetricsBuffer`) and the Python lists are taken together; either may
be empty. pyarrow is imported by the first drain that converts: a job whose streams all
stay small never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, NamedTuple

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


class _Hint(NamedTuple):
    """What converting a metrics batch found out, for the steps after it."""

    #: The batch's `uniform_keys`, or None (differ, or not looked for).
    keys: list[str] | None
    #: Every value a finite float: JSON needs none of orjson's slower options.
    finite: bool


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

    def drain(self, stream: Stream) -> PendingDrain | None:
        """What `stream` holds now, taken and encoded; None if it holds nothing (or
        its records could not be encoded: counted as lost and reported)."""
        native = take_numbers(stream)
        batches = take_batches(stream)
        native_lines: list[bytes] = []
        if native is not None:
            try:
                native_lines = self._native_lines(native)
            except (UnicodeEncodeError, TypeError, ValueError):
                # Text UTF-8 cannot hold (a lone surrogate in a key or category): the
                # Python way, which stores it as `_storable` says.
                batches.append((storable_columns(batch_columns(native)), False))
                native = None
        count = sum(record_count(columns) for columns, _ in batches)
        if native is not None:
            count += len(native)
        if not count:
            return None
        if stream.name == METRICS and batches:
            # The batch's objects fill whole 1 MiB arenas of Python's allocator, which
            # hands an arena back to the OS once all of it is free: the next batch would
            # then fault in fresh pages (~4 µs a page on a VM; ~100 ns per record). A few
            # records spread through the batch, kept until the next drain, keep them.
            self.ballast = [
                values[::_BALLAST_STRIDE] for columns, _ in batches for values in columns.values()
            ]
        if stream.arrow:
            tables, hints = self._tables(stream, batches)
        else:  # kept as lines only: what the latest values and JSON need, in Python
            tables = None
            metrics = stream.name == METRICS
            hints = [
                _Hint(uniform_keys(c["values"]) if metrics else None, False) for c, _ in batches
            ]
        if stream.name == METRICS:
            for (columns, _), hint in zip(batches, hints, strict=True):
                self._latest.fold(columns, hint.keys)
        data: list[bytes] = []
        per_line: list[int] = []  # records on each line
        try:
            for (columns, _), hint in zip(batches, hints, strict=True):
                # Known finite floats: no search for what JSON would write as null.
                lines = encode_lines(stream.name, columns, finite=hint.finite)
                data += lines
                per_line += line_records(record_count(columns), len(lines))
        except Exception as exc:  # a bug, not a storage fault: count it, never hide it
            self._lost(count)
            self._report(f"cannot encode {count} {stream.name} records ({exc!r}); lost")
            return None
        if native is not None:
            tables = self._native_table(stream, native, tables)
            data += native_lines
            per_line += line_records(len(native), len(native_lines))
        return PendingDrain(data, per_line, tables, sum(map(len, data)))

    def _native_lines(self, batch: Any) -> list[bytes]:
        """A batch of C-recorded calls as JSONL lines, in one C pass."""
        lines: list[bytes] | None = batch.lines(_DUMPS, MAX_RECORDS_PER_LINE)
        if lines is None:  # a NaN or an infinity: the `special` column
            lines = encode_lines(METRICS, batch_columns(batch))
        return lines

    def _native_table(
        self, stream: Stream, batch: Any, tables: list[pa.Table] | None
    ) -> list[pa.Table] | None:
        """A batch of C-recorded calls folded into the latest values and converted to
        Arrow (added to `tables`; None if that failed), each in one C pass."""
        self._latest.fold(newest_columns(batch))
        if tables is not None:
            arrow = _arrow()
            try:
                rows = arrow.batch_rows(batch)
                tables.append(arrow.number_rows_table(self.writer_id, rows, dictionary=True))
            except Exception as exc:
                self._conversion_failed(stream, exc)
                return None
        return tables

    def _tables(
        self, stream: Stream, batches: list[tuple[Columns, bool]]
    ) -> tuple[list[pa.Table] | None, list[_Hint]]:
        """The batches as Arrow tables for sealing, or None (then the segment is sealed
        from its JSONL); and what the conversion learnt of each batch."""
        arrow = _arrow()
        metrics = stream.name == METRICS
        # Once a conversion failed, the live segment is sealed from its file anyway.
        convert = stream.tables is not None
        tables: list[pa.Table] = []
        hints: list[_Hint] = []
        try:
            for columns, all_floats in batches:
                rows = arrow.float_rows(columns) if all_floats else None
                if rows is not None:  # converted in C in one pass
                    hints.append(_Hint(rows.keys if rows.uniform else None, rows.finite))
                    if convert:
                        tables.append(
                            arrow.number_rows_table(self.writer_id, rows, dictionary=True)
                        )
                    continue
                # Whether a batch's calls all logged the same keys (the usual loop), found
                # once for the Arrow conversion and the latest values alike.
                keys = uniform_keys(columns["values"]) if metrics else None
                if not convert:
                    hints.append(_Hint(keys, False))
                    continue
                hint = arrow.MetricsHint(all_floats, keys) if metrics else None
                table = arrow.table_from_columns(
                    stream.name, self.writer_id, columns, hint=hint, dictionary=True
                )
                tables.append(table)
                hints.append(_Hint(keys, all_floats and arrow.all_finite(table)))
        except Exception as exc:
            self._conversion_failed(stream, exc)
            hints += [_Hint(None, False)] * (len(batches) - len(hints))
            convert = False
        return (tables if convert else None), hints

    def _conversion_failed(self, stream: Stream, exc: Exception) -> None:
        """Records that did not convert to Arrow (a bug): reported; the live segment is
        then sealed from its JSONL, as any reader reads it."""
        self._report(
            f"cannot convert {stream.name} records to Arrow ({exc!r}); "
            "the segment will be sealed from its JSONL"
        )
