"""runstore: file-based run tracking for plugin jobs, offline.

A job logs through a `RuntimeContext` (the Synapse SDK's API) into a run directory;
`read_run`/`list_runs` read runs back as Arrow tables. See README.md and docs/.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .context import RunLogger, RuntimeContext, attach_run, open_run
from .env import PluginEnvironment
from .errors import (
    FinishedLoggerError,
    FormatVersionError,
    ManifestError,
    RunDirectoryError,
    RunstoreError,
    RunstoreWarning,
    StepFailedError,
)
from .format import FORMAT_VERSION, LogLevel, RunManifest, WriterManifest
from .reader import RunData, RunInfo, list_runs, read_run
from .writer import WriterOptions

__all__ = [
    "FORMAT_VERSION",
    "FinishedLoggerError",
    "FormatVersionError",
    "LogLevel",
    "ManifestError",
    "PluginEnvironment",
    "RunData",
    "RunDirectoryError",
    "RunInfo",
    "RunLogger",
    "RunManifest",
    "RunstoreError",
    "RunstoreWarning",
    "RuntimeContext",
    "StepFailedError",
    "WriterManifest",
    "WriterOptions",
    "__version__",
    "attach_run",
    "list_runs",
    "open_run",
    "read_run",
]
