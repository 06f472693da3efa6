"""A root of runs as a store: its run directories, their tables, and the archive.

Run directories are the source of truth. Beside them, `ROOT/.runstore/archive/` holds
finished runs compacted into a few large Parquet files (see docs/sql.md): derived,
rebuildable by `runstore compact`, safe to delete at any time. This module defines the
store-level tables (every stream with a `run_id` column, and `runs` from the
manifests), how a run directory is recognised as unchanged since it was archived, and
the archive's catalog. `compact.py` writes the archive, `query.py` reads it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NamedTuple

import orjson
import pyarrow as pa

from ._durable import atomic_write_bytes
from ._exact import validate
from ._regular import read_regular
from ._version import __version__
from .errors import ManifestError, RunDirectoryError
from .format import (
    METRICS,
    PROGRESS,
    RUN_MANIFEST,
    SCHEMAS,
    STORE_DIR,
    STREAMS,
    WRITERS_DIR,
    looks_like_run_dir,
    missing_manifest,
)
from .reader import RunInfo

__all__ = [
    "ARCHIVE_VERSION",
    "LATEST_METRICS",
    "LATEST_PROGRESS",
    "PART_TABLES",
    "RUNS",
    "RUNS_SCHEMA",
    "WRITERS",
    "WRITERS_SCHEMA",
    "ArchivePart",
    "ArchivedRun",
    "Catalog",
    "RunDir",
    "archive_dir",
    "catalog_path",
    "latest_select",
    "load_catalog",
    "runs_table",
    "save_catalog",
    "scan_root",
    "sql_path",
    "store_schema",
    "with_run_id",
    "writers_table",
]

ARCHIVE_DIR: Final = "archive"
CATALOG: Final = "catalog.json"
#: Version of the archive's layout; an archive of another version is ignored (and
#: rebuilt by the next compaction), never misread.
ARCHIVE_VERSION: Final = 2  # 2: the writers table

RUNS: Final = "runs"
WRITERS: Final = "writers"
LATEST_METRICS: Final = "latest_metrics"
LATEST_PROGRESS: Final = "latest_progress"
#: One Parquet file of each of these per archive part.
PART_TABLES: Final = (RUNS, WRITERS, *STREAMS, LATEST_METRICS, LATEST_PROGRESS)

_TS = pa.timestamp("us", tz="UTC")
_RUN_ID = pa.field("run_id", pa.string(), nullable=False)

RUNS_SCHEMA: Final = pa.schema(
    [
        _RUN_ID,
        pa.field("dir", pa.string(), nullable=False),  # directory name under the root
        pa.field("plugin", pa.string()),
        pa.field("action", pa.string()),
        pa.field("job_id", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # derived: incl. crashed
        pa.field("started_at", _TS, nullable=False),
        pa.field("ended_at", _TS),
        pa.field("duration", pa.float64()),  # seconds; to the last heartbeat if no end
        pa.field("error", pa.string()),
        pa.field("host", pa.string()),
        pa.field("pid", pa.int64()),
        pa.field("writers", pa.int64()),
        pa.field("records", pa.int64()),
        pa.field("lost_records", pa.int64()),
        pa.field("language", pa.string()),
        pa.field("params", pa.string()),  # JSON text
        pa.field("env", pa.string()),  # JSON text, secrets masked
        pa.field("checkpoint", pa.string()),  # JSON text
        pa.field("runstore_version", pa.string()),
        pa.field("format_version", pa.int64()),
    ]
)

WRITERS_SCHEMA: Final = pa.schema(
    [
        _RUN_ID,
        pa.field("writer", pa.string(), nullable=False),
        pa.field("host", pa.string()),
        pa.field("pid", pa.int64()),
        pa.field("status", pa.string()),  # open or closed, as the writer manifest says
        pa.field("started_at", _TS),
        pa.field("heartbeat_at", _TS),
        pa.field("ended_at", _TS),
        pa.field("records", pa.int64()),
        pa.field("lost_records", pa.int64()),
        pa.field("last_fault", pa.string()),
        pa.field("labels", pa.map_(pa.string(), pa.string())),
    ]
)


def store_schema(table: str) -> pa.Schema:
    """The schema of a store-level table: `runs`, `writers`, or a stream (or its
    latest_* view) with `run_id` in front."""
    if table == RUNS:
        return RUNS_SCHEMA
    if table == WRITERS:
        return WRITERS_SCHEMA
    stream = {LATEST_METRICS: METRICS, LATEST_PROGRESS: PROGRESS}.get(table, table)
    if stream not in SCHEMAS:
        raise ValueError(f"unknown store table {table!r}")
    return SCHEMAS[stream].insert(0, _RUN_ID)


def with_run_id(table: pa.Table, run_id: str | pa.Array) -> pa.Table:
    """A stream's table with `run_id` in front: one run's id, or a column of them."""
    if isinstance(run_id, str):
        run_id = pa.repeat(pa.scalar(run_id, pa.string()), len(table))
    return table.add_column(0, _RUN_ID, run_id)


def _json(value: object) -> str | None:
    return None if value is None else orjson.dumps(value, default=repr).decode()


def runs_table(runs: Iterable[tuple[str, RunInfo]]) -> pa.Table:
    """The `runs` rows of (directory name, run) pairs."""
    rows = []
    for name, run in runs:
        manifest = run.manifest
        rows.append(
            {
                "run_id": manifest.run_id,
                "dir": name,
                "plugin": manifest.plugin,
                "action": manifest.action,
                "job_id": manifest.job_id,
                "status": run.status,
                "started_at": manifest.started_at,
                "ended_at": manifest.ended_at,
                "duration": run.duration,
                "error": manifest.error,
                "host": manifest.host,
                "pid": manifest.pid,
                "writers": len(run.writers),
                "records": sum(w.records_written for w in run.writers),
                "lost_records": run.lost_records,
                "language": manifest.language,
                "params": _json(manifest.params),
                "env": _json(manifest.env),
                "checkpoint": _json(manifest.checkpoint),
                "runstore_version": manifest.runstore_version,
                "format_version": manifest.format_version,
            }
        )
    return pa.Table.from_pylist(rows, schema=RUNS_SCHEMA)


def writers_table(runs: Iterable[RunInfo]) -> pa.Table:
    """The `writers` rows of runs: one per writer process, with its labels."""
    rows = [
        {
            "run_id": run.run_id,
            "writer": writer.writer_id,
            "host": writer.host,
            "pid": writer.pid,
            "status": writer.status,
            "started_at": writer.started_at,
            "heartbeat_at": writer.heartbeat_at,
            "ended_at": writer.ended_at,
            "records": writer.records_written,
            "lost_records": writer.lost_records,
            "last_fault": writer.last_fault,
            "labels": list(writer.labels.items()),
        }
        for run in runs
        for writer in run.writers
    ]
    return pa.Table.from_pylist(rows, schema=WRITERS_SCHEMA)


# -- run directories ------------------------------------------------------------------


class RunDir(NamedTuple):
    """A run directory and its signature: what changes whenever the run can have
    changed. `run.json` is replaced atomically (new inode) at start and end; every
    writer manifest update renames a file into `writers/` (new directory mtime); a
    finished run whose signature holds has not changed. A tuple: a root holds
    thousands and every query looks at them all."""

    name: str
    location: str  # the path as a string: a root holds thousands, Paths cost more
    signature: tuple[int, ...]

    @property
    def path(self) -> Path:
        return Path(self.location)


def scan_root(root: Path, problems: list[str] | None = None) -> list[RunDir]:
    """The run directories directly under `root`, by name; two `stat` calls each. A
    folder that looks like a run but has no `run.json` is described in `problems`."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        raise RunDirectoryError(f"{root}: no such folder of runs") from None
    except NotADirectoryError:
        raise RunDirectoryError(f"{root}: not a folder of runs") from None
    found = []
    manifest_name, writers_name = "/" + RUN_MANIFEST, "/" + WRITERS_DIR
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            manifest = os.stat(entry.path + manifest_name)
        except OSError:
            manifest = None
        if manifest is None or not stat.S_ISREG(manifest.st_mode):
            if problems is not None and looks_like_run_dir(Path(entry.path)):
                problems.append(missing_manifest(Path(entry.path)))
            continue
        try:
            writers = os.stat(entry.path + writers_name).st_mtime_ns
        except OSError:
            writers = 0
        signature = (manifest.st_ino, manifest.st_mtime_ns, manifest.st_size, writers)
        found.append(RunDir(entry.name, entry.path, signature))
    found.sort()  # by name: names are unique
    return found


# -- the archive's catalog ------------------------------------------------------------


@dataclass
class ArchivedRun:
    run_id: str
    signature: tuple[int, ...]
    #: What was wrong with the run's files when it was archived (records that could not
    #: be read were left out): queries over the archive go on reporting it.
    problems: list[str] = field(default_factory=list)


@dataclass
class ArchivePart:
    """A folder of Parquet files (one per table in PART_TABLES) holding some runs."""

    name: str
    runs: dict[str, ArchivedRun]  # by directory name
    rows: dict[str, int] = field(default_factory=dict)


@dataclass
class Catalog:
    """`catalog.json`: which runs the archive holds, in which part, as of which
    signature. Written atomically; a part not listed here is not part of the archive.

    Dataclasses, like the manifests: pydantic checks a catalog only when it is not as
    runstore writes it (`_exact`), so a query over an archived root never imports it."""

    archive_version: int = ARCHIVE_VERSION
    runstore_version: str = __version__
    parts: list[ArchivePart] = field(default_factory=list)

    def runs(self) -> dict[str, tuple[ArchivePart, ArchivedRun]]:
        return {name: (part, run) for part in self.parts for name, run in part.runs.items()}


def archive_dir(root: Path) -> Path:
    return root / STORE_DIR / ARCHIVE_DIR


def catalog_path(root: Path) -> Path:
    return archive_dir(root) / CATALOG


def load_catalog(root: Path) -> Catalog | None:
    """The archive's catalog, or None if there is no archive.

    Raises `ManifestError` when the catalog is damaged or of another archive version:
    callers ignore the archive then (it is only derived data) and say so.
    """
    path = catalog_path(root)
    try:
        raw, _ = read_regular(path)  # a FIFO in its place would block `read_bytes`
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        catalog = validate(Catalog, orjson.loads(raw))
    except ValueError as exc:  # orjson's and pydantic's errors both are ValueErrors
        detail = str(exc).splitlines()[0]
        raise ManifestError(
            f"{path}: damaged archive catalog ({detail}); the archive is ignored, "
            "run `runstore compact` to rebuild it"
        ) from None
    if catalog.archive_version != ARCHIVE_VERSION:
        raise ManifestError(
            f"{path}: archive version {catalog.archive_version}, this runstore reads "
            f"version {ARCHIVE_VERSION}; the archive is ignored, run `runstore compact` "
            "to rebuild it"
        )
    return catalog


def save_catalog(root: Path, catalog: Catalog) -> None:
    atomic_write_bytes(catalog_path(root), orjson.dumps(catalog))


_LATEST_KEYS: Final = {LATEST_METRICS: "run_id, category, key", LATEST_PROGRESS: "run_id, category"}


def latest_select(table: str, source: str) -> str:
    """SQL for `latest_metrics` / `latest_progress` over `source` (a table or view with
    the stream's store schema): the last record per run and category (and key), the
    newest by ts, then writer, then seq.

    Grouped aggregates, not a window: memory grows with the groups, not the rows (a
    window over 35 M rows of runs never archived took 2.2 GB and 4.3 s; this, 173 MB
    and 1.3 s), and a filter on a key column applies before it. `arg_max_null`: a
    newest record's NULL (a text metric's value) is its value, not skipped."""
    keys = _LATEST_KEYS[table]
    grouped = {name.strip() for name in keys.split(",")}
    newest = "(ts, writer, seq)"
    columns = ", ".join(
        f'"{name}"' if name in grouped else f'arg_max_null("{name}", {newest}) AS "{name}"'
        for name in store_schema(table).names
    )
    return f"SELECT {columns} FROM {source} GROUP BY {keys}"


def sql_path(path: Path) -> str:
    """`path` as a SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"
