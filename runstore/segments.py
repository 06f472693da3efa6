"""Segment files on disk: reading one (JSONL or sealed Parquet) as an Arrow table,
checking a sealed file, writing Parquet and manifests atomically, and clearing what a
killed writer left behind.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from ._durable import fsync_dir
from ._regular import read_regular
from .format import (
    SCHEMAS,
    SEALED_SUFFIX,
    STREAMS,
    STREAMS_DIR,
    TEMP_SUFFIX,
    WRITERS_DIR,
)
from .jsonl import decode_lines
from .tables import safe_table

__all__ = [
    "check_sealed",
    "read_segment",
    "remove_temp_files",
    "sealed_table",
    "unreadable",
    "write_parquet_atomic",
]


def read_segment(stream: str, path: Path, writer: str) -> tuple[pa.Table, list[str]]:
    """One segment as an Arrow table, plus the problems found in it.

    Raises `FileNotFoundError` if the file vanished (a live segment that was sealed
    meanwhile: the caller reads the sealed file instead).
    """
    problems: list[str] = []
    if path.suffix == SEALED_SUFFIX:
        return _read_parquet(stream, path, problems), problems
    data, _ = read_regular(path)
    decoded = decode_lines(stream, data, where=str(path))
    problems.extend(decoded.problems)
    return safe_table(stream, writer, decoded.columns, str(path), problems), problems


def _read_parquet(stream: str, path: Path, problems: list[str]) -> pa.Table:
    """A sealed segment; a file of another schema is a problem, never rows of nulls.
    (One open for the schema and the rows: faster than `pq.read_table(schema=...)`.)"""
    import pyarrow.parquet as pq  # here, not at the top: a look at live runs never needs it

    schema = SCHEMAS[stream]
    try:
        parquet = pq.ParquetFile(path)
        try:
            found = parquet.schema_arrow.names
            missing = [name for name in schema.names if name not in found]
            if missing:
                problems.append(
                    f"{path}: not a {stream} segment (it has no column {missing[0]!r}); skipped"
                )
                return schema.empty_table()
            table = parquet.read(columns=schema.names)
        finally:
            parquet.close()
        required = [f.name for f in schema if not f.nullable and table.column(f.name).null_count]
        if required:
            import pyarrow.compute as pc  # a damaged file only: a writer never needs it

            valid = pc.is_valid(table.column(required[0]))
            for name in required[1:]:
                valid = pc.and_(valid, pc.is_valid(table.column(name)))
            kept = table.filter(valid)
            problems.append(
                f"{path}: {table.num_rows - kept.num_rows} records without a "
                f"{required[0]!r}; skipped"
            )
            table = kept
        return table.cast(schema)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        problems.append(f"{path}: unreadable Parquet segment ({exc}); skipped")
        return schema.empty_table()


def unreadable(path: Path, exc: OSError) -> str:
    """The problem of a segment file the OS will not let us read."""
    return f"{path}: cannot be read ({exc.strerror or exc}); skipped"


def check_sealed(stream: str, path: Path) -> tuple[bool, list[str]]:
    """Whether DuckDB can read a sealed segment as the stream's table, and what is
    wrong with it, from its footer alone: its columns, in order, and their types; and,
    where the file counts them, nulls where the schema requires a value (the rows are
    left out, the rest is read)."""
    import pyarrow.parquet as pq

    schema = SCHEMAS[stream]
    try:
        metadata = pq.read_metadata(path)
        found = metadata.schema.to_arrow_schema()
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        return False, [f"{path}: unreadable Parquet segment ({exc}); skipped"]
    if found.names != schema.names:
        columns = "its columns are not the stream's"
        return False, [f"{path}: not a {stream} segment ({columns}); skipped"]
    for expected, actual in zip(schema, found, strict=True):
        kind = actual.type.value_type if pa.types.is_dictionary(actual.type) else actual.type
        if not kind.equals(expected.type):
            return False, [
                f"{path}: not a {stream} segment (column {expected.name!r} is {kind}, not "
                f"{expected.type}); skipped"
            ]
    # Where the file keeps null counts (a writer keeps them for ts and seq): rows
    # without what the schema requires are left out (the store filters them anyway).
    required = {i for i, f in enumerate(schema) if not f.nullable}
    nulls = 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in required:
            statistics = row_group.column(index).statistics
            if statistics is not None and statistics.has_null_count:
                nulls = max(nulls, statistics.null_count)
    if nulls:
        return True, [f"{path}: {nulls} records without a required value; skipped"]
    return True, []


def remove_temp_files(run_dir: Path) -> int:
    """Remove what writers killed mid-write left behind (`.<name>.tmp` files of sealing
    and of manifests) from a run no writer can write to any more; how many went."""
    removed = 0
    folders = [run_dir, run_dir / WRITERS_DIR, *(run_dir / STREAMS_DIR / s for s in STREAMS)]
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False):
                        os.unlink(entry.path)
                        removed += 1
    return removed


# -- files ----------------------------------------------------------------------------

_PARQUET_OPTIONS: Final[dict[str, Any]] = {
    "compression": "zstd",
    "compression_level": 1,  # sealing is on the job's clock; compaction may squeeze more
    "use_dictionary": ["writer", "category", "event", "level", "key", "kind", "status"],
    "column_encoding": {"ts": "DELTA_BINARY_PACKED", "seq": "DELTA_BINARY_PACKED"},
    # Min/max where a query can skip a file by them: time and order. Not for the
    # dictionary columns (category, key): ~11% of the write, and queries across many
    # runs read the archive (`compact`), which keeps every statistic.
    "write_statistics": ["ts", "seq"],
}


def sealed_table(tables: list[pa.Table]) -> pa.Table:
    """A live segment's tables, converted drain by drain, as the one table to seal."""
    return pa.concat_tables(tables)


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write `table` so that `path` appears whole or not at all, and survives power loss.
    A write that fails (disk full) leaves no temp file.

    Dictionary columns (SEAL_SCHEMAS) go to Parquet as they are and read back as
    strings: no Arrow schema is stored, only Parquet's own types."""
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table.unify_dictionaries(), tmp, store_schema=False, **_PARQUET_OPTIONS)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
