"""The on-disk contract of a run directory, format version 1 (see docs/format.md).

Every reader and writer takes file names, schemas and manifest models from here; no
other module spells a file name or a column list.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from ._exact import validate
from ._regular import read_regular
from .errors import FormatVersionError, ManifestError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "ATTACHMENTS_DIR",
    "DEBUG_EVENT",
    "DEV_EVENT",
    "DEV_EVENTS",
    "EVENTS",
    "FORMAT_VERSION",
    "MANIFEST_SUFFIX",
    "MESSAGE_EVENT",
    "METRICS",
    "PROGRESS",
    "RECORD_FIELDS",
    "REPLAYS_DIR",
    "RUN_MANIFEST",
    "SCHEMAS",
    "SPECIAL",
    "STATUS",
    "STORAGE_FAULT_EVENT",
    "STORE_DIR",
    "STREAMS",
    "STREAMS_DIR",
    "TEMP_SUFFIX",
    "WRITERS_DIR",
    "LogLevel",
    "RunManifest",
    "RunStatus",
    "SegmentName",
    "WriterManifest",
    "check_format_version",
    "event_text",
    "is_run_dir",
    "load_run_manifest",
    "load_writer_manifest",
    "looks_like_run_dir",
    "missing_manifest",
    "parse_manifest",
    "utc_now",
]

FORMAT_VERSION: Final = 1

RUN_MANIFEST: Final = "run.json"
WRITERS_DIR: Final = "writers"
STREAMS_DIR: Final = "streams"
ATTACHMENTS_DIR: Final = "attachments"
#: Folder of derived data under a root (the archive, unpacks under way); not a run.
STORE_DIR: Final = ".runstore"
#: Folder of a run holding replay ledgers: what was delivered where (runstore.ledger).
REPLAYS_DIR: Final = "replays"

EVENTS: Final = "events"
PROGRESS: Final = "progress"
METRICS: Final = "metrics"
STREAMS: Final = (EVENTS, PROGRESS, METRICS)
#: Not a stream on disk: the tailer's records of a run's status (`running` seen, then
#: how it ended).
STATUS: Final = "status"

#: The events runstore itself names: a `log_message` (text in data "content"), a
#: `log_dev_event` (text in data "message"), the synapse-sdk logger's `debug()` (text in
#: data "content"), and a writer's report of a storage fault.
MESSAGE_EVENT: Final = "message"
DEV_EVENT: Final = "dev_event"
DEBUG_EVENT: Final = "debug"
STORAGE_FAULT_EVENT: Final = "storage_fault"
#: Events for developers, not end users.
DEV_EVENTS: Final = (DEV_EVENT, DEBUG_EVENT)


def event_text(event: str, data: dict[str, Any]) -> str:
    """The text of a message or developer event: a dev_event's "message", else "content"."""
    text = data.get("message") if event == DEV_EVENT else data.get("content")
    return "" if text is None else str(text)


LIVE_SUFFIX: Final = ".jsonl"
SEALED_SUFFIX: Final = ".parquet"
#: Writer manifests: `writers/<writer>.json`.
MANIFEST_SUFFIX: Final = ".json"
#: Files being written (`.<name>.tmp`, renamed into place once whole): a writer killed
#: mid-write leaves one, which no reader reads.
TEMP_SUFFIX: Final = ".tmp"

#: Seconds between a live writer's heartbeats in its writer manifest.
HEARTBEAT_SECONDS: Final = 2.0
#: A writer on another host whose heartbeat is older than this is taken as dead.
CRASH_TIMEOUT_SECONDS: Final = 30.0

RunStatus = Literal["running", "completed", "failed", "crashed"]


class LogLevel(StrEnum):
    """Levels of events and messages, as the Synapse SDK names them."""

    DEBUG = "debug"
    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    DANGER = "danger"
    ERROR = "error"
    CRITICAL = "critical"


# A record, as the context hands it to the writer, holds these fields. A live (JSONL)
# segment holds them by column: each data line is one JSON object, field name -> array
# of values, one per record (one line per flush). A metrics record's `values` is the
# call's {key: value} dict; a line may add a `special` column, {key: text} or null per
# record, for what JSON cannot hold: "NaN", "Infinity", "-Infinity", or the digits of an
# int beyond 64 bits.
RECORD_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    EVENTS: ("ts_ns", "seq", "event", "level", "category", "data", "file", "attachment"),
    PROGRESS: (
        "ts_ns",
        "seq",
        "category",
        "current",
        "total",
        "percent",
        "elapsed",
        "time_remaining",
        "status",
        "overall",
    ),
    METRICS: ("ts_ns", "seq", "category", "values"),
}
#: The optional column of a metrics line restoring values JSON cannot hold.
SPECIAL: Final = "special"

if TYPE_CHECKING:
    #: The Arrow schema of each stream, as sealed segments and the SQL views have it.
    SCHEMAS: dict[str, pa.Schema]


def _schemas() -> dict[str, pa.Schema]:
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    common = [
        pa.field("ts", ts, nullable=False),
        pa.field("writer", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
    ]

    return {
        EVENTS: pa.schema(
            [
                *common,
                pa.field("event", pa.string(), nullable=False),
                pa.field("level", pa.string(), nullable=False),
                pa.field("category", pa.string()),
                pa.field("data", pa.string()),  # JSON text of the event's data
                pa.field("file", pa.string()),  # the path the job gave
                pa.field("attachment", pa.string()),  # its copy, relative to the run directory
            ]
        ),
        PROGRESS: pa.schema(
            [
                *common,
                pa.field("category", pa.string()),
                pa.field("current", pa.float64(), nullable=False),
                pa.field("total", pa.float64(), nullable=False),
                pa.field("percent", pa.float64(), nullable=False),
                pa.field("elapsed", pa.float64()),
                pa.field("time_remaining", pa.float64()),
                pa.field("status", pa.string(), nullable=False),
                pa.field("overall", pa.float64()),
            ]
        ),
        METRICS: pa.schema(
            [
                *common,
                pa.field("category", pa.string()),
                pa.field("key", pa.string(), nullable=False),
                pa.field("value", pa.float64()),  # numeric view: float, int, bool as 0/1
                pa.field("kind", pa.string(), nullable=False),  # float|int|bool|str|json
                pa.field("text", pa.string()),  # str value, JSON text, or digits of a huge int
            ]
        ),
    }


def __getattr__(name: str) -> Any:
    """`SCHEMAS`, built on first use: a job that only logs small runs never imports
    pyarrow (the writer needs Arrow only to seal)."""
    if name == "SCHEMAS":
        schemas = globals()["SCHEMAS"] = _schemas()
        return schemas
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_SEGMENT_RE = re.compile(
    r"^(?P<writer>[A-Za-z0-9_-]+)-(?P<number>\d{6,})(?P<suffix>\.jsonl|\.parquet)$"
)


@dataclass(frozen=True, slots=True)
class SegmentName:
    """`<writer>-<number>.jsonl` while live, `<writer>-<number>.parquet` once sealed."""

    writer: str
    number: int
    sealed: bool

    @property
    def stem(self) -> str:
        return f"{self.writer}-{self.number:06d}"

    @property
    def filename(self) -> str:
        return self.stem + (SEALED_SUFFIX if self.sealed else LIVE_SUFFIX)

    @classmethod
    def parse(cls, filename: str) -> SegmentName | None:
        """The parts of a segment file name, or None for any other file (temp files)."""
        match = _SEGMENT_RE.match(filename)
        if match is None:
            return None
        return cls(
            writer=match["writer"],
            number=int(match["number"]),
            sealed=match["suffix"] == SEALED_SUFFIX,
        )


def utc_now() -> datetime:
    return datetime.now(UTC)


_Self = TypeVar("_Self", bound="_Manifest")


@dataclass(kw_only=True)
class _Manifest:
    """Manifests are plain dataclasses, checked by pydantic only where they are read
    and not as runstore writes them (`_exact`): a job that writes them, and a query
    that reads them, never imports pydantic (a tenth of a second, issue 14)."""

    format_version: int = FORMAT_VERSION
    #: Fields this runstore does not know, kept as read and written back: a newer minor
    #: writer may add some without a version bump.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def replace(self: _Self, **changes: Any) -> _Self:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> bytes:
        """The manifest file's bytes: fields in declaration order, then the unknown ones."""
        import orjson

        known = {name: getattr(self, name) for name in _stored(type(self))[0]}
        document = {**known, **{k: v for k, v in self.extra.items() if k not in known}}
        return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z) + b"\n"

    def as_json(self) -> dict[str, Any]:
        """The manifest as JSON values (times as ISO text), for `--json` output."""
        import orjson

        result: dict[str, Any] = orjson.loads(self.to_json())
        return result


@dataclass(kw_only=True)
class RunManifest(_Manifest):
    """`run.json`: what the run is. Written atomically at start and at end."""

    run_id: str
    job_id: str | None = None
    plugin: str | None = None
    action: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # secret-looking values masked
    checkpoint: dict[str, Any] | None = None
    language: str | None = None
    host: str
    pid: int
    writer_id: str  # the writer that owns the run's status
    started_at: datetime
    ended_at: datetime | None = None
    status: Literal["running", "completed", "failed"] = "running"
    error: str | None = None
    runstore_version: str | None = None


@dataclass(kw_only=True)
class WriterManifest(_Manifest):
    """`writers/<writer>.json`: one writer process, its heartbeat and its faults."""

    writer_id: str
    run_id: str
    host: str
    pid: int
    pid_start: int | None = None  # process start time (Linux clock ticks), against pid reuse
    started_at: datetime
    heartbeat_at: datetime
    ended_at: datetime | None = None
    status: Literal["open", "closed"] = "open"
    records_written: int = 0
    lost_records: int = 0
    fault_count: int = 0
    last_fault: str | None = None
    #: Who this writer is, beyond host and pid: given to `attach_run(labels=...)`, and
    #: Ray's ids (`ray.node_id`, `ray.worker_id`, `ray.actor_id`, `ray.task_id`, ...)
    #: when the writer starts inside a Ray worker.
    labels: dict[str, str] = field(default_factory=dict)


_M = TypeVar("_M", bound=_Manifest)


def check_format_version(version: object, where: Path | str) -> None:
    """Refuse data of a format this runstore does not know."""
    if not isinstance(version, int) or version < 1:
        raise ManifestError(f"{where}: format_version {version!r} is not a valid version")
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{where}: written in runstore format version {version}, but this runstore "
            f"reads up to version {FORMAT_VERSION}; upgrade runstore to read it"
        )


#: Each manifest class's fields as its file holds them, in order (`extra` apart), and
#: as a set, to sort a file's keys into known and extra.
_STORED: dict[type[_Manifest], tuple[tuple[str, ...], frozenset[str]]] = {}


def _stored(model: type[_Manifest]) -> tuple[tuple[str, ...], frozenset[str]]:
    if model not in _STORED:
        names = tuple(f.name for f in fields(model) if f.name != "extra")
        _STORED[model] = (names, frozenset(names))
    return _STORED[model]


def parse_manifest(model: type[_M], data: object, where: Path | str) -> _M:
    """A manifest from its JSON object, checked: `ManifestError` says what is wrong."""
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    check_format_version(data.get("format_version"), where)
    _, names = _stored(model)
    known = {k: v for k, v in data.items() if k in names}
    try:
        manifest = validate(model, known)
    except ValueError as exc:  # pydantic's ValidationError
        detail = "; ".join(str(exc).splitlines()[:3])
        raise ManifestError(f"{where}: malformed manifest: {detail}") from None
    manifest.extra = {k: v for k, v in data.items() if k not in names}
    return manifest


def _load_manifest(model: type[_M], path: Path | str) -> _M:
    try:
        raw, _ = read_regular(path)  # a FIFO in a manifest's place would block `open`
    except FileNotFoundError:
        raise ManifestError(f"{path}: missing; this is not a runstore run directory") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read ({exc.strerror})") from None
    import orjson

    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc}); the manifest is damaged") from None
    return parse_manifest(model, data, path)


def load_run_manifest(run_dir: Path) -> RunManifest:
    """The run's manifest; `ManifestError`/`FormatVersionError` say what is wrong."""
    return _load_manifest(RunManifest, os.path.join(run_dir, RUN_MANIFEST))


def load_writer_manifest(path: Path | str) -> WriterManifest:
    return _load_manifest(WriterManifest, path)


def is_run_dir(path: Path) -> bool:
    return (path / RUN_MANIFEST).is_file()


def looks_like_run_dir(path: Path) -> bool:
    """Whether `path` holds what a writer makes (a manifest, streams or writers), even
    if its `run.json` is missing or damaged: such a folder is a broken run, not a root."""
    return any(os.path.lexists(path / name) for name in (RUN_MANIFEST, STREAMS_DIR, WRITERS_DIR))


def missing_manifest(path: Path) -> str:
    """The problem of a folder that looks like a run but has no `run.json` file."""
    return (
        f"{path / RUN_MANIFEST}: missing or not a file; {path} is not a readable run "
        "(left out). A run folder without its manifest cannot be read: restore it from a "
        "copy, or remove the folder"
    )
