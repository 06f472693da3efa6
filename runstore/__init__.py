"""runstore: file-based run tracking for plugin jobs, offline.

A job logs through a `RuntimeContext` (the Synapse SDK's API) into a run directory;
`read_run`/`list_runs` read runs back as Arrow tables, `Store` asks SQL of them all.
See README.md and docs/.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    FinishedLoggerError,
    FormatVersionError,
    ManifestError,
    PackError,
    QueryError,
    ReplayError,
    RunDirectoryError,
    RunstoreError,
    RunstoreWarning,
    StepFailedError,
)

if TYPE_CHECKING:
    from .compaction import CompactReport, compact
    from .confinement import QueryLimits
    from .context import RuntimeContext, attach_run, open_run
    from .env import PluginEnvironment
    from .export import export_store
    from .format import FORMAT_VERSION, LogLevel, RunManifest, WriterManifest
    from .logger import RunLogger
    from .packing import pack, unpack
    from .query import QueryResult, Store
    from .reader import RunData, RunInfo, list_runs, read_run, read_run_info
    from .replaying import ReplayReport, replay
    from .writer import WriterOptions

#: Every public name but the errors, imported on first use, so that each process loads
#: only what it uses: `from runstore import open_run` imports no DuckDB and no reader's
#: Arrow, and `runstore sql` (or any `import runstore.x`) loads no job-side logging.
_LAZY: dict[str, str] = {
    "CompactReport": "compaction",
    "compact": "compaction",
    "QueryLimits": "confinement",
    "RuntimeContext": "context",
    "attach_run": "context",
    "open_run": "context",
    "PluginEnvironment": "env",
    "export_store": "export",
    "FORMAT_VERSION": "format",
    "LogLevel": "format",
    "RunManifest": "format",
    "WriterManifest": "format",
    "RunLogger": "logger",
    "QueryResult": "query",
    "RunData": "reader",
    "RunInfo": "reader",
    "list_runs": "reader",
    "read_run": "reader",
    "read_run_info": "reader",
    "Store": "query",
    "pack": "packing",
    "unpack": "packing",
    "ReplayReport": "replaying",
    "replay": "replaying",
    "WriterOptions": "writer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "FORMAT_VERSION",
    "CompactReport",
    "FinishedLoggerError",
    "FormatVersionError",
    "LogLevel",
    "ManifestError",
    "PackError",
    "PluginEnvironment",
    "QueryError",
    "QueryLimits",
    "QueryResult",
    "ReplayError",
    "ReplayReport",
    "RunData",
    "RunDirectoryError",
    "RunInfo",
    "RunLogger",
    "RunManifest",
    "RunstoreError",
    "RunstoreWarning",
    "RuntimeContext",
    "StepFailedError",
    "Store",
    "WriterManifest",
    "WriterOptions",
    "__version__",
    "attach_run",
    "compact",
    "export_store",
    "list_runs",
    "open_run",
    "pack",
    "read_run",
    "read_run_info",
    "replay",
    "unpack",
]
