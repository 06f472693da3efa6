"""Exceptions raised by runstore.

Every error names what was wrong, where, and what to do about it. All derive from
`RunstoreError` so a caller can catch runstore's failures in one place.
"""

from __future__ import annotations

__all__ = [
    "FinishedLoggerError",
    "FormatVersionError",
    "ManifestError",
    "QueryError",
    "ReplayError",
    "RunDirectoryError",
    "RunstoreError",
    "RunstoreWarning",
    "StepFailedError",
]


class RunstoreError(Exception):
    """Base of every error runstore raises on purpose."""


class RunDirectoryError(RunstoreError):
    """A run directory cannot be created or opened (missing, not writable, not a run).

    Raised when a run starts, never in the middle of a job: storage faults after a run
    has started are reported in the run and on stderr instead.
    """


class ManifestError(RunstoreError):
    """A `run.json` or writer manifest is missing, unreadable or malformed."""


class FormatVersionError(RunstoreError):
    """A run was written by a newer runstore whose format this version cannot read."""


class QueryError(RunstoreError):
    """A SQL query over a store failed, or was refused by a confined store.

    The message carries DuckDB's own explanation and, when a query was refused, what
    confined SQL may do (read the store's views with SELECT, nothing else).
    """


class PackError(RunstoreError):
    """A pack file cannot be written or read: not a runstore pack, damaged, cut short,
    of a newer pack version, or nothing to pack. The message says which, and that
    nothing was unpacked (a damaged run inside a good pack is refused on its own)."""


class ReplayError(RunstoreError):
    """A replay cannot start or stopped: the run is still running, its ledger is damaged
    or in use, or the logger (the platform) stopped taking records. The message says how
    many records were delivered; running the replay again sends only the rest."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        #: The `ReplayReport` so far, when records were sent before it stopped.
        self.report = report


class FinishedLoggerError(RunstoreError, RuntimeError):
    """Logging was attempted after `end_log()` (or after the run was closed).

    A `RuntimeError` too, as in the Synapse SDK ("Cannot log to a finished logger").
    """


class StepFailedError(RunstoreError, RuntimeError):
    """A workflow step failed; the orchestrator rolled back the steps already executed.

    A `RuntimeError` too, with the SDK's message: "Step '<name>' failed: <error>".
    """

    def __init__(self, step: str, error: str) -> None:
        super().__init__(f"Step '{step}' failed: {error}")
        self.step = step
        self.error = error


class RunstoreWarning(UserWarning):
    """Something was logged in a changed form (a value stored as its repr, a missing
    attachment), or a call is deprecated. The record is kept; the warning says how."""
