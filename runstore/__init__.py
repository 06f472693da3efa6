"""runstore: file-based run tracking for plugin jobs, offline.

A job logs through a `RuntimeContext` (the Synapse SDK's API) into a run directory;
`read_run`/`list_runs` read runs back as Arrow tables, `Store` asks SQL of them all.
See README.md and docs/.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .compact import CompactReport, compact
from .confinement import QueryLimits
from .context import RunLogger, RuntimeContext, attach_run, open_run
from .env import PluginEnvironment
from .errors import (
    FinishedLoggerError,
    FormatVersionError,
    ManifestError,
    QueryError,
    RunDirectoryError,
    RunstoreError,
    RunstoreWarning,
    StepFailedError,
)
from .export import export_store
from .format import FORMAT_VERSION, LogLevel, RunManifest, WriterManifest
from .query import QueryResult, Store
from .reader import RunData, RunInfo, list_runs, read_run
from .writer import WriterOptions

__all__ = [
    "FORMAT_VERSION",
    "CompactReport",
    "FinishedLoggerError",
    "FormatVersionError",
    "LogLevel",
    "ManifestError",
    "PluginEnvironment",
    "QueryError",
    "QueryLimits",
    "QueryResult",
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
    "read_run",
]
