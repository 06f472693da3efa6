"""Reading runs back: manifests, derived status, and the streams as Arrow tables.

Readers never write and never lock. They read sealed (Parquet) and live (JSONL)
segments together: when both files of one segment exist the Parquet wins, so a segment
being sealed is never read twice nor missed. A torn last line is left out silently; any
other damage is collected in `problems` and the rest of the run is still read.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pyarrow as pa

from ._process import pid_alive
from .errors import ManifestError, RunDirectoryError, RunstoreError
from .format import (
    CRASH_TIMEOUT_SECONDS,
    DEV_EVENTS,
    EVENTS,
    MANIFEST_SUFFIX,
    MESSAGE_EVENT,
    METRICS,
    PROGRESS,
    SCHEMAS,
    STREAMS_DIR,
    WRITERS_DIR,
    RunManifest,
    RunStatus,
    SegmentName,
    WriterManifest,
    event_text,
    is_run_dir,
    load_run_manifest,
    load_writer_manifest,
    looks_like_run_dir,
    missing_manifest,
    utc_now,
)
from .segments import read_segment, unreadable

__all__ = [
    "RunData",
    "RunInfo",
    "SegmentCache",
    "decode_metric",
    "derive_status",
    "iter_run_dirs",
    "list_runs",
    "read_run",
    "read_run_info",
    "read_segments",
    "read_stream",
    "segment_files",
    "writer_alive",
]

_T = TypeVar("_T")


def writer_alive(writer: WriterManifest, now: datetime | None = None) -> bool:
    """Whether a writer may still write: its process lives (same host) or its heartbeat
    is younger than `CRASH_TIMEOUT_SECONDS` (another host, e.g. a network filesystem)."""
    if writer.status == "closed":
        return False
    if writer.host == socket.gethostname():
        return pid_alive(writer.pid, writer.pid_start)
    age = ((now or utc_now()) - writer.heartbeat_at).total_seconds()
    return age < CRASH_TIMEOUT_SECONDS


def derive_status(
    manifest: RunManifest, writers: list[WriterManifest], now: datetime | None = None
) -> RunStatus:
    """The status readers show: the manifest's, or `crashed` for a running run that has
    no live writer left."""
    if manifest.status != "running":
        return manifest.status
    if not writers:
        owner = WriterManifest(
            writer_id=manifest.writer_id,
            run_id=manifest.run_id,
            host=manifest.host,
            pid=manifest.pid,
            started_at=manifest.started_at,
            heartbeat_at=manifest.started_at,
        )
        writers = [owner]
    return "running" if any(writer_alive(w, now) for w in writers) else "crashed"


def segment_files(run_dir: Path, stream: str) -> list[tuple[SegmentName, Path]]:
    """The segments of one stream, one file per segment: Parquet where it exists.
    Anything but a regular file under a segment's name (a folder, a link) is ignored."""
    # Paths as strings until the chosen few: a store lists the streams of thousands
    # of runs, and each pathlib join costs more than the listing's system call.
    try:
        with os.scandir(os.path.join(run_dir, STREAMS_DIR, stream)) as entries:
            found = [
                (name, entry.path)
                for entry in entries
                if (name := SegmentName.parse(entry.name)) is not None
                # Segments are regular files: a folder in one's place is no data, and a
                # link could lead out of the run.
                and entry.is_file(follow_symlinks=False)
            ]
    except (FileNotFoundError, NotADirectoryError):
        return []
    chosen: dict[tuple[str, int], tuple[SegmentName, str]] = {}
    for name, path in found:
        current = chosen.get((name.writer, name.number))
        if current is None or (name.sealed and not current[0].sealed):
            chosen[name.writer, name.number] = (name, path)
    return [(name, Path(path)) for _, (name, path) in sorted(chosen.items())]


#: Segments read before, by path: (size and mtime of a live file, or None for a sealed
#: one, which never changes), the table and the problems found in it.
SegmentCache = dict[Path, tuple[tuple[int, int] | None, pa.Table, list[str]]]


def _read_cached(
    stream: str, name: SegmentName, path: Path, cache: SegmentCache | None
) -> tuple[pa.Table, list[str]]:
    if cache is None:
        return read_segment(stream, path, name.writer)
    key = None
    if not name.sealed:
        status = os.stat(path)
        key = (status.st_size, status.st_mtime_ns)
    hit = cache.get(path)
    if hit is not None and hit[0] == key:
        return hit[1], hit[2]
    table, found = read_segment(stream, path, name.writer)
    cache[path] = (key, table, found)
    return table, found


def read_segments(
    run_dir: Path,
    stream: str,
    cache: dict[Path, Any] | None,
    problems: list[str],
    *,
    sealed: Callable[[SegmentName, Path], _T | None],
    live: Callable[[SegmentName, Path], _T | None],
) -> list[_T]:
    """The tables `live` and `sealed` give for each of a stream's segments, by kind
    (one sealed while we read it goes to `sealed`); segments gone from `cache` (a
    segment cache keyed by path) since the last call are dropped from it, and one that
    cannot be read is a problem."""
    tables: list[_T] = []
    listed = segment_files(run_dir, stream)
    if cache is not None and cache:
        for gone in set(cache) - {path for _, path in listed}:
            del cache[gone]
    for name, path in listed:
        try:
            table = (sealed if name.sealed else live)(name, path)
        except FileNotFoundError:
            if name.sealed:
                problems.append(f"{path}: vanished while reading (run deleted?); skipped")
                continue
            # Sealed between listing and reading: the Parquet holds the same records.
            sealed_name = dataclasses.replace(name, sealed=True)
            try:
                table = sealed(sealed_name, path.with_name(sealed_name.filename))
            except FileNotFoundError:
                problems.append(f"{path}: vanished while reading (run deleted?); skipped")
                continue
        except OSError as exc:
            problems.append(unreadable(path, exc))
            continue
        if table is not None:
            tables.append(table)
    return tables


def read_stream(
    run_dir: Path, stream: str, cache: SegmentCache | None = None
) -> tuple[pa.Table, list[str]]:
    """All records of a stream, ordered by time (then writer and sequence).

    With a `cache` (one per run and stream, kept by the caller between calls),
    segments that have not changed since the last call are not read again: a store
    refreshing a live run rereads only its growing JSONL segments.
    """
    problems: list[str] = []

    def read(name: SegmentName, path: Path) -> pa.Table:
        table, found = _read_cached(stream, name, path, cache)
        problems.extend(found)
        return table

    tables = read_segments(run_dir, stream, cache, problems, sealed=read, live=read)
    if not tables:
        return SCHEMAS[stream].empty_table(), problems
    import pyarrow.compute as pc  # not at import: a store's first look does without it

    table = pa.concat_tables(tables)
    order = pc.sort_indices(
        table, sort_keys=[("ts", "ascending"), ("writer", "ascending"), ("seq", "ascending")]
    )
    return table.take(order), problems


def _read_writers(run_dir: Path, problems: list[str]) -> list[WriterManifest]:
    writers = []
    try:
        with os.scandir(os.path.join(run_dir, WRITERS_DIR)) as entries:
            paths = sorted(e.path for e in entries if e.name.endswith(MANIFEST_SUFFIX))
    except OSError:
        return []
    for path in paths:
        try:
            writers.append(load_writer_manifest(path))
        except ManifestError as exc:
            problems.append(str(exc))
    return writers


@dataclass
class RunInfo:
    """A run as its manifests describe it: cheap, no stream is read."""

    path: Path
    manifest: RunManifest
    writers: list[WriterManifest]
    status: RunStatus
    problems: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    @property
    def last_seen(self) -> datetime | None:
        """When the run ended, or, for a run without end (running or crashed), its
        writers' last heartbeat; None if no writer left a manifest."""
        if self.manifest.ended_at is not None:
            return self.manifest.ended_at
        beats = [w.ended_at or w.heartbeat_at for w in self.writers]
        return max(beats) if beats else None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or to the last heartbeat for a run without end."""
        end = self.last_seen
        return None if end is None else (end - self.manifest.started_at).total_seconds()

    @property
    def lost_records(self) -> int:
        return sum(w.lost_records for w in self.writers)

    @property
    def final(self) -> bool:
        """Whether nothing more can be written: the status is final and no writer of
        the run (an attached one included) can write any more."""
        return self.status != "running" and not any(writer_alive(w) for w in self.writers)


@dataclass
class RunData(RunInfo):
    """A run with its streams; each table is read on first use."""

    def _stream(self, stream: str) -> pa.Table:
        table, problems = read_stream(self.path, stream)
        self.problems.extend(problems)
        return table

    @cached_property
    def events(self) -> pa.Table:
        return self._stream(EVENTS)

    @cached_property
    def progress(self) -> pa.Table:
        return self._stream(PROGRESS)

    @cached_property
    def metrics(self) -> pa.Table:
        return self._stream(METRICS)

    def latest_progress(self) -> list[dict[str, Any]]:
        """The last progress record of each category, in order of first appearance."""
        latest: dict[str | None, dict[str, Any]] = {}
        for row in self.progress.to_pylist():
            latest[row["category"]] = row
        return list(latest.values())

    def overall_progress(self) -> float | None:
        """The weighted overall percent of the run's workflow, if it ran one."""
        import pyarrow.compute as pc

        overall = self.progress.column("overall").drop_null()
        return None if len(overall) == 0 else float(pc.max(overall).as_py())

    def latest_metrics(self) -> dict[str | None, dict[str, Any]]:
        """{category: {key: last value}}, values decoded to their logged type."""
        table = self.metrics
        if table.num_rows == 0:
            return {}
        last = table.group_by(["category", "key"], use_threads=False).aggregate(
            [("seq", "count"), ("value", "last"), ("kind", "last"), ("text", "last")]
        )
        result: dict[str | None, dict[str, Any]] = {}
        for row in last.to_pylist():
            value = decode_metric(row["value_last"], row["kind_last"], row["text_last"])
            result.setdefault(row["category"], {})[row["key"]] = value
        return result

    def messages(self, *, dev: bool = False) -> list[dict[str, Any]]:
        """User messages (and dev events if `dev`) as dicts: ts, level, text, category."""
        wanted = {MESSAGE_EVENT, *DEV_EVENTS} if dev else {MESSAGE_EVENT}
        out = []
        for row in self.events.to_pylist():
            if row["event"] not in wanted:
                continue
            data = orjson.loads(row["data"]) if row["data"] else {}
            out.append(
                {
                    "ts": row["ts"],
                    "level": row["level"],
                    "event": row["event"],
                    "text": event_text(row["event"], data),
                    "category": row["category"],
                }
            )
        return out

    def current_step(self) -> str | None:
        """The step running now (or when the run stopped), from the `step` events."""
        import pyarrow.compute as pc

        current = None
        for row in self.events.filter(pc.equal(self.events["event"], "step")).to_pylist():
            status = orjson.loads(row["data"]).get("status")
            if status == "started":
                current = row["category"]
            elif row["category"] == current:
                current = None
        return current


def decode_metric(value: float | None, kind: str, text: str | None) -> Any:
    """A metric value back in the type it was logged with (see docs/format.md)."""
    if kind == "float":
        return value
    if kind == "int":
        return int(text) if text is not None else (None if value is None else int(value))
    if kind == "bool":
        return None if value is None else bool(value)
    if kind == "str":
        return text
    return None if text is None else orjson.loads(text)


def _info(path: Path, cls: type[RunInfo]) -> RunInfo:
    try:
        manifest = load_run_manifest(path)
    except ManifestError:
        # Asked only then: a store reads thousands of runs, each found as a folder.
        if not path.is_dir():
            raise RunDirectoryError(f"{path}: no such run directory") from None
        raise
    problems: list[str] = []
    writers = _read_writers(path, problems)
    return cls(path, manifest, writers, derive_status(manifest, writers), problems)


def read_run_info(path: str | os.PathLike[str]) -> RunInfo:
    """One run as its manifests describe it (no stream is read): `read_run`'s errors."""
    return _info(Path(path), RunInfo)


def read_run(path: str | os.PathLike[str]) -> RunData:
    """One run with its events, progress and metrics as Arrow tables.

    Raises `RunDirectoryError` if `path` is not a directory and `ManifestError` /
    `FormatVersionError` if its `run.json` is missing, damaged or too new.
    """
    info = _info(Path(path), RunData)
    assert isinstance(info, RunData)
    return info


def iter_run_dirs(
    root: str | os.PathLike[str], problems: list[str] | None = None
) -> Iterator[Path]:
    """Run directories directly under `root` (those with a `run.json`), sorted by name.
    A folder that looks like a run without its `run.json` is described in `problems`."""
    base = Path(root)
    if not base.is_dir():
        raise RunDirectoryError(f"{base}: no such folder of runs")
    for entry in sorted(base.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if is_run_dir(entry):
            yield entry
        elif problems is not None and looks_like_run_dir(entry):
            problems.append(missing_manifest(entry))


def list_runs(root: str | os.PathLike[str], problems: list[str] | None = None) -> list[RunInfo]:
    """Every readable run under `root`, oldest first. A run whose manifest cannot be read
    is left out and described in `problems` (if given): one bad run never hides the rest.
    """
    runs = []
    for path in iter_run_dirs(root, problems):
        try:
            runs.append(_info(path, RunInfo))
        except RunstoreError as exc:
            if problems is not None:
                problems.append(str(exc))
    runs.sort(key=lambda run: (run.manifest.started_at, run.run_id))
    return runs
