"""RuntimeContext: the object a plugin job logs through, writing into a run directory.

`open_run()` starts a run and gives its context; `attach_run()` gives another process
(a Ray worker, a subprocess) a context writing into an existing run with a writer of
its own. Every call of the Synapse SDK's RuntimeContext works as documented there
(`category=` and the newer `step=`, `context=` and the newer `level=`).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from ._version import __version__
from .env import PluginEnvironment, mask_secrets
from .errors import RunDirectoryError
from .format import (
    DEV_EVENT,
    LogLevel,
    RunManifest,
    load_run_manifest,
    utc_now,
)
from .jsonl import json_options
from .logger import COMPLETE_MESSAGE, RunLogger, check_category, repr_with_warning
from .writer import RunWriter, WriterOptions

__all__ = ["RuntimeContext", "attach_run", "open_run"]


def _new_run_id() -> str:
    return f"{datetime.now().strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def _jsonable(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, option=json_options(), default=repr_with_warning))


class RuntimeContext:
    """What a plugin job logs through: progress, metrics, messages, events.

    Methods follow the Synapse SDK's `RuntimeContext`; records go to the run directory
    `run_dir` through a background writer, so calls return in about a microsecond.
    Use it as a context manager (or call `end_log()` and `close()`): leaving the block
    normally completes the run, an exception fails it.
    """

    def __init__(
        self,
        logger: RunLogger,
        *,
        env: PluginEnvironment | None = None,
        job_id: str | None = None,
        checkpoint: dict[str, Any] | None = None,
        language: str | None = None,
        client: Any = None,
        agent_client: Any = None,
    ) -> None:
        self.logger = logger
        self.env = env if env is not None else PluginEnvironment()
        self.job_id = job_id
        self.checkpoint = checkpoint
        self.language = language
        self.client = client
        self.agent_client = agent_client
        # The hot path: one call frame less than delegating (same signature, same docs).
        self.set_metrics = logger.set_metrics  # type: ignore[method-assign]

    @property
    def run_dir(self) -> Path:
        return self.logger.writer.run_dir

    @property
    def run_id(self) -> str:
        return self.logger.writer.run_id

    @property
    def writer_id(self) -> str:
        return self.logger.writer.writer_id

    def __repr__(self) -> str:
        return f"RuntimeContext(run_dir={str(self.run_dir)!r}, job_id={self.job_id!r})"

    # -- the seed API, with the newer SDK spellings -------------------------------------

    def set_progress(
        self, current: float, total: float, category: str | None = None, *, step: str | None = None
    ) -> None:
        """Progress `current` of `total` for a category (`step=` is the newer name)."""
        self.logger.set_progress(current, total, category if category is not None else step)

    def set_progress_failed(self, category: str | None = None, *, step: str | None = None) -> None:
        self.logger.set_progress_failed(category if category is not None else step)

    def set_metrics(
        self,
        value: Mapping[str, Any],
        category: str | None = None,
        *,
        step: str | None = None,
    ) -> None:
        """Metric values of a category (`step=` is the newer name); see RunLogger.

        Each context binds this name to its logger's `set_metrics` directly.
        """
        self.logger.set_metrics(value, category, step=step)

    def log(
        self,
        event: str,
        data: Mapping[str, Any],
        file: str | os.PathLike[str] | None = None,
        level: str | LogLevel = LogLevel.INFO,
        *,
        step: str | None = None,
    ) -> None:
        """An event with data; `file` is copied into the run's attachments."""
        self.logger.log(level, event, data, file, step)

    def log_message(
        self,
        message: str | Mapping[str, str],
        context: str | LogLevel | None = None,
        *,
        level: str | LogLevel | None = None,
        language: str | None = None,
        **format_args: Any,
    ) -> None:
        """A user-facing message: info (blue), success (green), warning (yellow), danger
        (red), or debug/error/critical. `message` may be {language: template}."""
        chosen = level if level is not None else context
        if isinstance(message, Mapping):
            lang = language or self.language or self.env.get("SYNAPSE_LANGUAGE") or "en"
            template = message.get(lang) or message.get("en") or next(iter(message.values()), "")
            text = str(template).format(**format_args) if format_args else str(template)
            self.logger.message(text, chosen or LogLevel.INFO, i18n=dict(message), language=lang)
            return
        if not isinstance(message, str):
            raise TypeError(f"message must be a string or a dict, got {type(message).__name__}")
        text = message.format(**format_args) if format_args else message
        self.logger.message(text, chosen or LogLevel.INFO)

    def log_dev_event(self, message: str, data: Mapping[str, Any] | None = None) -> None:
        """A developer's event (level debug), hidden from end users by default."""
        if data is not None and not isinstance(data, Mapping):
            raise TypeError(f"data must be a dict or None, got {type(data).__name__}")
        self.logger.log(LogLevel.DEBUG, DEV_EVENT, {"message": message, "data": data})

    def log_metric(self, category: str, key: str, value: Any, **metrics: Any) -> None:
        """One metric (and more as keywords) of a category: an event and metric values."""
        check_category(category, "category")
        values = {key: value, **metrics}
        self.logger.log(LogLevel.INFO, "metric", {"category": category, **values})
        self.logger.set_metrics(values, category)

    def log_visualization(
        self, category: str, group: str, index: int, image: str | os.PathLike[str], **meta: Any
    ) -> None:
        """An image of a category/group; the image file is copied into the run."""
        check_category(category, "category")
        data = {"category": category, "group": group, "index": index, **meta}
        self.logger.log(LogLevel.INFO, "visualization", data, image)

    def log_trials(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        trials: Any = None,
        base: Any = None,
        hyperparameters: Any = None,
        metrics: Any = None,
        best_trial: Any = None,
    ) -> None:
        """A Ray Tune trials table (`trials`, column lists, and the best trial)."""
        fields = {
            "trials": trials,
            "base": base,
            "hyperparameters": hyperparameters,
            "metrics": metrics,
            "best_trial": best_trial,
        }
        payload = dict(data or {})
        payload.update({k: v for k, v in fields.items() if v is not None})
        self.logger.log(LogLevel.INFO, "trials", payload)

    def end_log(self) -> None:
        """Log 'Plugin run is complete.' and complete the run; later logging raises."""
        self.logger.message(COMPLETE_MESSAGE, LogLevel.INFO)
        self.logger.finish("completed")

    # -- lifecycle -----------------------------------------------------------------------

    def flush(self) -> None:
        """Write every record logged so far to disk now."""
        self.logger.flush()

    def fail(self, error: str) -> None:
        """End the run as failed with `error` (a danger message is logged)."""
        if not self.logger.finished:
            self.logger.message(error, LogLevel.DANGER)
            self.logger.finish("failed", error)

    def close(self) -> None:
        """Flush, seal every segment and release the writer. Idempotent."""
        self.logger.close()

    def __enter__(self) -> RuntimeContext:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None and not self.logger.finished:
            self.fail(f"{kind.__name__}: {value}")
        elif not self.logger.finished and self.logger.writer.manifest is not None:
            self.end_log()
        self.close()


def open_run(
    root: str | os.PathLike[str],
    *,
    plugin: str | None = None,
    action: str | None = None,
    params: Mapping[str, Any] | None = None,
    job_id: str | None = None,
    env: PluginEnvironment | Mapping[str, Any] | None = None,
    checkpoint: dict[str, Any] | None = None,
    language: str | None = None,
    run_id: str | None = None,
    options: WriterOptions | None = None,
) -> RuntimeContext:
    """Start a run in a new directory under `root` and return its context.

    `env` defaults to this process's environment (recorded in `run.json` with
    secret-looking values masked). Raises `RunDirectoryError` if the run cannot be
    created (root not writable, run id taken).
    """
    run_id = run_id or _new_run_id()
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise RunDirectoryError(f"run id {run_id!r} is not a valid directory name")
    plugin_env = (
        env
        if isinstance(env, PluginEnvironment)
        else PluginEnvironment(env)
        if env is not None
        else PluginEnvironment.from_environ()
    )
    base = Path(root)
    run_dir = base / run_id
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirectoryError(
            f"cannot create run directory {run_dir}: the root {base} is not a writable "
            f"folder ({exc.strerror or exc})"
        ) from None
    try:
        run_dir.mkdir()
    except FileExistsError:
        raise RunDirectoryError(f"{run_dir}: a run with this id already exists") from None
    except OSError as exc:
        raise RunDirectoryError(
            f"cannot create run directory {run_dir}: {exc.strerror or exc}"
        ) from None
    writer_options = options or WriterOptions()
    from .writer import new_writer_id

    writer_id = new_writer_id()
    manifest = RunManifest(
        run_id=run_id,
        job_id=job_id,
        plugin=plugin,
        action=action,
        params=_jsonable(dict(params or {})),
        env=mask_secrets(plugin_env),
        checkpoint=_jsonable(checkpoint) if checkpoint is not None else None,
        language=language,
        host=socket.gethostname(),
        pid=os.getpid(),
        writer_id=writer_id,
        started_at=utc_now(),
        runstore_version=__version__,
    )
    writer = RunWriter(
        run_dir, run_id, manifest=manifest, writer_id=writer_id, options=writer_options
    )
    return RuntimeContext(
        RunLogger(writer),
        env=plugin_env,
        job_id=job_id,
        checkpoint=checkpoint,
        language=language,
    )


def attach_run(
    run_dir: str | os.PathLike[str],
    *,
    env: PluginEnvironment | Mapping[str, Any] | None = None,
    options: WriterOptions | None = None,
    labels: Mapping[str, str] | None = None,
) -> RuntimeContext:
    """A context that writes into an existing run with a writer of its own.

    For other processes of the same job (Ray workers, subprocesses): records are
    attributed to the new writer, whose manifest keeps `labels` (and Ray's ids inside a
    Ray worker); ending it does not end the run, which stays the business of the
    process that opened it. See docs/cluster.md.
    """
    path = Path(run_dir)
    manifest = load_run_manifest(path)
    if labels is not None and not all(
        type(key) is str and type(value) is str for key, value in labels.items()
    ):
        raise TypeError(f"labels must map strings to strings, got {dict(labels)!r}")
    writer = RunWriter(path, manifest.run_id, options=options, labels=labels)
    plugin_env = env if isinstance(env, PluginEnvironment) else PluginEnvironment(env or {})
    return RuntimeContext(
        RunLogger(writer),
        env=plugin_env,
        job_id=manifest.job_id,
        checkpoint=manifest.checkpoint,
        language=manifest.language,
    )
