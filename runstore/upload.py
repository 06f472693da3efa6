"""Uploading a run to a Synapse platform job after the fact: `runstore.replay` into the
SDK's own `JobLogger`, whose `BackendClient` tells replay what the platform took.

Importable only where `synapse_sdk` is installed (`pip install 'runstore[synapse]'`,
Python 3.12+). The JobLogger sends from its own thread, in order, and drops entries
when its queue stays full; replay keeps the queue well below that bound, waits while
the platform is slow or away (up to `stall_timeout`), and writes down each batch the
platform answered for. A batch whose request went out but whose answer never came
(the SDK's `ClientResponseIncompleteError`) is not sent again, as the SDK does: the
platform has probably stored it. See docs/offline.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

try:
    from synapse_sdk.exceptions import ClientConnectionError, ClientResponseIncompleteError
    from synapse_sdk.loggers import JobLogger
except ImportError as exc:
    raise ImportError(
        "runstore.upload needs the synapse-sdk (Python 3.12+): pip install 'runstore[synapse]'"
    ) from exc

from .replaying import Confirmations, ReplayReport, replay

__all__ = ["upload_run", "upload_target"]

#: The environment variable holding the platform's access token (the SDK's own name).
TOKEN_VARIABLE = "SYNAPSE_ACCESS_TOKEN"


class _ConfirmingClient:
    """The `BackendClient` as the JobLogger uses it, reporting each answer."""

    def __init__(self, client: Any, confirmations: Confirmations) -> None:
        self._client = client
        self._confirmations = confirmations

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def create_logs(self, data: dict[str, Any] | list[dict[str, Any]]) -> Any:
        items = data if isinstance(data, list) else [data]
        if self._confirmations.closed:
            raise ClientConnectionError("the replay stopped; nothing more is sent")
        numbers = self._confirmations.numbers_of(str(item.get("event")) for item in items)
        if numbers is None:  # the JobLogger's own entry (its loss report)
            return self._client.create_logs(data)
        try:
            result = self._client.create_logs(data)
        except ClientResponseIncompleteError:
            self._confirmations.answered(numbers, "unconfirmed")
            raise
        except BaseException:
            self._confirmations.answered(numbers, "failed")  # the JobLogger sends it again
            raise
        self._confirmations.answered(numbers, "delivered")
        return result

    def update_job(self, job_id: Any, data: dict[str, Any]) -> Any:
        if self._confirmations.closed:
            raise ClientConnectionError("the replay stopped; nothing more is sent")
        try:
            result = self._client.update_job(job_id, data)
        except Exception as exc:
            self._confirmations.snapshot_answered(f"{type(exc).__name__}: {exc}")
            raise
        self._confirmations.snapshot_answered(None)
        return result


def upload_target(base_url: str, job_id: str) -> str:
    """The ledger's name for a platform job: replays to it share one ledger."""
    return f"synapse {base_url.rstrip('/')} job {job_id}"


def upload_run(
    run_dir: str | os.PathLike[str],
    client: Any,
    job_id: str,
    *,
    resend_in_doubt: bool = False,
    progress: Callable[[int, int], None] | None = None,
    stall_timeout: float = 120.0,
    **job_logger_options: Any,
) -> ReplayReport:
    """Replay the run at `run_dir` into platform job `job_id` through `client` (a
    `synapse_sdk.clients.backend.BackendClient`), once: a ledger in the run folder
    makes a stopped upload resume and a finished one send nothing more.

    `job_logger_options` go to the SDK's `JobLogger` (`log_batch_size`,
    `log_flush_interval`, ...), which prints every record to stdout as it does in a
    job (`runstore replay` sends that to /dev/null). Raises `ReplayError` when the
    platform took nothing for `stall_timeout` seconds; its `report` says what was
    delivered.
    """
    confirmations = Confirmations()
    logger = JobLogger(_ConfirmingClient(client, confirmations), job_id, **job_logger_options)
    return replay(
        run_dir,
        logger,
        target=upload_target(client.base_url, job_id),
        resend_in_doubt=resend_in_doubt,
        progress=progress,
        confirmations=confirmations,
        stall_timeout=stall_timeout,
    )
