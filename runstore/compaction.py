"""Compaction: finished runs merged into the root's archive, so queries over thousands
of runs read a few large Parquet files instead of thousands of small ones.

The archive is derived data (docs/sql.md). Compaction only adds runs that are final
(no writer can write to them any more), drops runs whose directory changed or vanished
(a changed one is read from its directory again), and writes every new file under a
temporary name before the catalog that lists it is replaced; a crash at any moment
leaves the previous archive in force. One compaction runs at a time per root (a lock
file); queries never wait for it.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa

from ._durable import fsync_dir
from .archive import (
    LATEST_METRICS,
    LATEST_PROGRESS,
    PART_TABLES,
    RUNS,
    WRITERS,
    ArchivedRun,
    ArchivePart,
    Catalog,
    RunDir,
    archive_dir,
    latest_select,
    load_catalog,
    runs_table,
    save_catalog,
    scan_root,
    sql_path,
    store_schema,
    with_run_id,
    writers_table,
)
from .errors import ManifestError, RunDirectoryError, RunstoreError
from .format import METRICS, PROGRESS, STREAMS
from .reader import RunData, read_run
from .segments import remove_temp_files

__all__ = ["BACKGROUND_RUNS", "CompactReport", "compact", "compact_in_background"]

_LOCK: Final = "compact.lock"
#: Metric rows per new part: bounds compaction's memory (about 100 MB of Arrow).
BATCH_ROWS: Final = 2_000_000
#: More parts than this and the smallest are merged (queries pay per file).
MAX_PARTS: Final = 16


@dataclass
class CompactReport:
    """What a compaction did."""

    added: int = 0  # runs newly archived
    dropped: int = 0  # archived runs removed because their directory changed or vanished
    archived: int = 0  # runs in the archive afterwards
    parts: int = 0  # parts in the archive afterwards
    live: int = 0  # runs left to be read from their directories (still running)
    temp_files_removed: int = 0  # half-written files that killed writers left in runs
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    #: Another compaction of the root was under way (`wait=False`): nothing was done.
    busy: bool = False


@contextmanager
def _locked(directory: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold the root's compaction lock; yields False if `wait` is off and it is taken."""
    with open(directory / _LOCK, "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _part_name() -> str:
    return f"part-{datetime.now().strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def _write_part(
    con: duckdb.DuckDBPyConnection, directory: Path, selects: dict[str, str]
) -> tuple[str, dict[str, int]]:
    """Write one part (a Parquet file per table from its SELECT); it appears whole."""
    name = _part_name()
    tmp = directory / f".{name}.tmp"
    tmp.mkdir()
    rows: dict[str, int] = {}
    for table in PART_TABLES:
        target = tmp / f"{table}.parquet"
        result = con.execute(
            f"COPY ({selects[table]}) TO {sql_path(target)} "
            "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)"
        ).fetchone()
        rows[table] = int(result[0]) if result else 0
        with open(target, "rb") as handle:
            os.fsync(handle.fileno())
    fsync_dir(tmp)
    os.rename(tmp, directory / name)
    fsync_dir(directory)
    return name, rows


def _new_part(
    con: duckdb.DuckDBPyConnection, directory: Path, batch: list[tuple[RunDir, RunData]]
) -> ArchivePart:
    """A part of runs read from their directories."""
    tables: dict[str, list[pa.Table]] = {stream: [] for stream in STREAMS}
    for _, run in batch:
        for stream in STREAMS:
            tables[stream].append(with_run_id(getattr(run, stream), run.run_id))
    sources = {
        RUNS: runs_table((run_dir.name, run) for run_dir, run in batch),
        WRITERS: writers_table(run for _, run in batch),
    }
    for stream in STREAMS:
        sources[stream] = pa.concat_tables(tables[stream]).cast(store_schema(stream))
    for table, source in sources.items():
        con.register(f"_new_{table}", source)
    selects = {table: f"SELECT * FROM _new_{table}" for table in sources}
    selects[LATEST_METRICS] = latest_select(LATEST_METRICS, f"_new_{METRICS}")
    selects[LATEST_PROGRESS] = latest_select(LATEST_PROGRESS, f"_new_{PROGRESS}")
    try:
        name, rows = _write_part(con, directory, selects)
    finally:
        for table in sources:
            con.unregister(f"_new_{table}")
    runs = {
        d.name: ArchivedRun(run_id=r.run_id, signature=d.signature, problems=r.problems)
        for d, r in batch
    }
    return ArchivePart(name=name, runs=runs, rows=rows)


def _merged_part(
    con: duckdb.DuckDBPyConnection,
    directory: Path,
    parts: list[ArchivePart],
    keep: dict[str, ArchivedRun],
) -> ArchivePart | None:
    """One part holding the runs in `keep` from `parts` (which are left in place)."""
    if not keep:
        return None
    kept_ids = ", ".join("'" + run.run_id.replace("'", "''") + "'" for run in keep.values())
    selects = {}
    for table in PART_TABLES:
        files = ", ".join(sql_path(directory / part.name / f"{table}.parquet") for part in parts)
        selects[table] = f"SELECT * FROM read_parquet([{files}]) WHERE run_id IN ({kept_ids})"
    name, rows = _write_part(con, directory, selects)
    return ArchivePart(name=name, runs=keep, rows=rows)


def _load_candidates(
    candidates: list[RunDir], taken: set[str], report: CompactReport
) -> Iterator[tuple[RunDir, RunData]]:
    """The final runs among `candidates`, read from their directories."""
    for run_dir in candidates:
        try:
            run = read_run(run_dir.path)
        except RunstoreError as exc:
            report.problems.append(f"{exc}; not archived")
            continue
        if not run.final:
            report.live += 1
            continue
        # No writer can write to it any more: a temp file in it is a killed one's.
        report.temp_files_removed += remove_temp_files(run_dir.path)
        if run.run_id in taken:
            report.problems.append(
                f"{run_dir.path}: run id {run.run_id} is already held by another "
                "directory (a copy?); not archived"
            )
            continue
        taken.add(run.run_id)
        for stream in STREAMS:
            getattr(run, stream)  # read now, so that the problems are known
        report.problems.extend(run.problems)
        yield run_dir, run


def compact(
    root: str | os.PathLike[str],
    *,
    rebuild: bool = False,
    wait: bool = True,
    batch_rows: int = BATCH_ROWS,
    max_parts: int = MAX_PARTS,
) -> CompactReport:
    """Archive the finished runs under `root` that are not archived yet.

    `rebuild` starts a new archive from the run directories alone. Raises
    `RunDirectoryError` if `root` is not a folder of runs or the archive cannot be
    written there; a run that cannot be read is reported in the result and skipped.
    """
    started = time.perf_counter()
    base = Path(root)
    report = CompactReport()
    run_dirs = {run.name: run for run in scan_root(base)}
    directory = archive_dir(base)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirectoryError(
            f"{directory}: cannot create the archive ({exc.strerror}); queries still work "
            "without it, reading every run from its directory"
        ) from None
    with _locked(directory, wait=wait) as locked:
        if not locked:
            report.busy = True
            return report
        catalog = Catalog()
        if not rebuild:
            try:
                catalog = load_catalog(base) or Catalog()
            except ManifestError as exc:
                report.problems.append(str(exc))
        con = duckdb.connect()
        try:
            _compact_locked(con, base, directory, catalog, run_dirs, report, batch_rows, max_parts)
        finally:
            con.close()
    report.seconds = time.perf_counter() - started
    return report


def _compact_locked(
    con: duckdb.DuckDBPyConnection,
    base: Path,
    directory: Path,
    catalog: Catalog,
    run_dirs: dict[str, RunDir],
    report: CompactReport,
    batch_rows: int,
    max_parts: int,
) -> None:
    parts: list[ArchivePart] = []
    for part in catalog.parts:
        valid = {
            name: run
            for name, run in part.runs.items()
            if name in run_dirs and run_dirs[name].signature == run.signature
        }
        report.dropped += len(part.runs) - len(valid)
        if len(valid) == len(part.runs):
            parts.append(part)
        elif (merged := _merged_part(con, directory, [part], valid)) is not None:
            parts.append(merged)
    archived = {name for part in parts for name in part.runs}
    taken = {run.run_id for part in parts for run in part.runs.values()}
    candidates = [run for name, run in run_dirs.items() if name not in archived]
    batch: list[tuple[RunDir, RunData]] = []
    rows = 0
    for run_dir, run in _load_candidates(candidates, taken, report):
        batch.append((run_dir, run))
        rows += run.metrics.num_rows
        if rows >= batch_rows:
            parts.append(_new_part(con, directory, batch))
            report.added += len(batch)
            batch, rows = [], 0
    if batch:
        parts.append(_new_part(con, directory, batch))
        report.added += len(batch)
    if len(parts) > max_parts:
        parts.sort(key=lambda part: part.rows.get(METRICS, 0))
        count = len(parts) - max_parts + 1
        smallest, parts = parts[:count], parts[count:]
        keep = {name: run for part in smallest for name, run in part.runs.items()}
        merged = _merged_part(con, directory, smallest, keep)
        if merged is not None:
            parts.append(merged)
    if parts != catalog.parts:
        save_catalog(base, Catalog(parts=parts))
    report.archived = sum(len(part.runs) for part in parts)
    report.parts = len(parts)
    _remove_unlisted(directory, {part.name for part in parts})


def _remove_unlisted(directory: Path, listed: set[str]) -> None:
    """Delete parts the catalog no longer lists (and leftovers of a crashed compaction).

    A query that planned over an old catalog and finds a part gone retries with the
    new one (query.py)."""
    for entry in os.scandir(directory):
        if entry.is_dir() and entry.name not in listed:
            shutil.rmtree(entry.path, ignore_errors=True)


#: Finished runs outside the archive at which `runstore sql` archives them in the
#: background.
BACKGROUND_RUNS: Final = 20

_BACKGROUND_JOB: Final = (
    "import sys\nfrom runstore.compaction import compact\ncompact(sys.argv[1], wait=False)\n"
)


def compact_in_background(root: str | os.PathLike[str]) -> bool:
    """Start a compaction of `root` in a process of its own, and return at once.

    The process outlives its caller, leaves if another compaction holds the root's lock,
    and writes nothing but the archive. False if `root` cannot be written (nothing is
    started): queries then go on reading runs from their folders.
    """
    base = Path(root)
    target = archive_dir(base) if archive_dir(base).exists() else base
    if not os.access(target, os.W_OK):
        return False
    subprocess.Popen(
        [sys.executable, "-c", _BACKGROUND_JOB, str(base)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C of the caller does not cut it short
        close_fds=True,
    )
    return True
