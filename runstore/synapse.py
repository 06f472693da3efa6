"""runstore as a logger of the real synapse-sdk: its `RuntimeContext`, step contexts,
`StepRegistry` and `Orchestrator` run unchanged and log into a run directory.

Importable only where `synapse_sdk` is installed (`pip install 'runstore[synapse]'`,
Python 3.12+). Unlike the SDK's `JobLogger`, nothing is sent anywhere and nothing is
dropped: every call appends to the run writer's buffer, which a background thread
writes out (see docs/synapse.md).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    from synapse_sdk.loggers import BaseLogger
    from synapse_sdk.plugins.context import PluginEnvironment as SdkEnvironment
    from synapse_sdk.plugins.context import RuntimeContext as SdkRuntimeContext
    from synapse_sdk.plugins.models.logger import LogLevel as SdkLogLevel
except ImportError as exc:  # the message is checked by tests/test_context.py
    raise ImportError(
        "runstore.synapse needs the synapse-sdk (Python 3.12+): pip install 'runstore[synapse]'"
    ) from exc

from .context import RuntimeContext, attach_run, open_run
from .errors import RunstoreError
from .writer import WriterOptions

__all__ = ["RunstoreExecutor", "RunstoreLogger", "attach_runtime_context", "runtime_context"]


def _trial_id() -> str | None:
    """The Ray Tune trial of this process, as the SDK's `JobLogger` finds it."""
    if os.environ.get("IS_TUNE") != "true":
        return None
    trial_id = os.environ.get("SYNAPSE_TRIAL_ID")
    if trial_id:
        return trial_id
    try:
        from ray import train

        found = train.get_context().get_trial_id()
    except Exception:  # not inside a Tune trial: no id, as in the SDK
        return None
    return str(found) if found else None


def _with_trial(data: dict[str, Any]) -> dict[str, Any]:
    trial_id = _trial_id()
    if trial_id:
        data["trial_id"] = trial_id
    return data


class RunstoreLogger(BaseLogger):  # type: ignore[misc]
    """A `synapse_sdk.loggers.BaseLogger` that writes into a runstore run.

    Wraps a runstore context from `open_run` (the run's owner) or `attach_run` (another
    worker of the same run). The SDK's own bookkeeping (`get_progress`,
    `get_metrics`, the finished flag) is kept as `BaseLogger` keeps it; every record also
    goes to the run: progress with its current/total, each `set_metrics` call's values
    (the SDK only keeps the merged latest), events with their level and step, attached
    files copied in. `finish()` ends the run: failed if it is called while an
    exception is being handled (as the SDK's executors do), else completed.
    """

    def __init__(self, run: RuntimeContext) -> None:
        super().__init__()
        self.run = run

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    @property
    def run_id(self) -> str:
        return self.run.run_id

    # -- BaseLogger's hooks --------------------------------------------------------------

    # The SDK's current step (`set_step`, as the Orchestrator sets it) is the one step
    # state: each call hands runstore the step it resolves to.

    def _step(self, step: str | None) -> str | None:
        return step if step is not None else self._current_step

    def _log_impl(
        self,
        event: str,
        data: dict[str, Any],
        file: str | None,
        step: str | None,
        level: Any = None,
    ) -> None:
        self.run.logger.log(level.value if level is not None else "info", event, data, file, step)

    def set_progress(self, current: int, total: int, step: str | None = None) -> None:
        super().set_progress(current, total, step)  # the SDK's checks and state first
        self.run.logger.set_progress(current, total, self._step(step))

    def set_progress_failed(self, step: str | None = None) -> None:
        super().set_progress_failed(step)
        self.run.logger.set_progress_failed(self._step(step))

    def set_metrics(self, value: dict[str, Any], step: str | None = None) -> None:
        super().set_metrics(value, step)
        self.run.logger.set_metrics(value, self._step(step))

    def _on_finish(self) -> None:
        error = sys.exc_info()[1]
        if error is not None:
            self.run.fail(f"{type(error).__name__}: {error}")
        self.run.close()

    # -- what the SDK's JobLogger adds, which RuntimeContext uses when present ------------

    def log_event(self, event: str, data: dict[str, Any], file: str | None = None) -> None:
        self.log(SdkLogLevel.INFO, event, data, file)

    def log_metric(self, category: str, key: str, value: float | int, **metrics: Any) -> None:
        """The SDK's `metric` event, and its values in the run's metrics of `category`."""
        data = {"category": category, "key": key, "value": value, "metrics": metrics}
        self.log(SdkLogLevel.INFO, "metric", _with_trial(data))
        self.run.logger.set_metrics({key: value, **metrics}, category)

    def log_visualization(
        self, category: str, group: str, index: int, image: str, **meta: Any
    ) -> None:
        data = {"category": category, "group": group, "index": index, **meta}
        self.log(SdkLogLevel.INFO, "visualization", _with_trial(data), image)

    def log_trials(
        self,
        data: dict[str, Any] | None = None,
        *,
        trials: dict[str, Any] | None = None,
        base: list[str] | None = None,
        hyperparameters: list[str] | None = None,
        metrics: list[str] | None = None,
        best_trial: str = "",
    ) -> None:
        if data is None:
            data = {
                "base": base or [],
                "trials": trials or {},
                "hyperparameters": hyperparameters or [],
                "metrics": metrics or [],
                "best_trial": best_trial,
            }
        elif not isinstance(data, dict):
            raise ValueError("log_trials expects a dictionary payload")
        if "trials" not in data:
            raise ValueError('log_trials payload must include "trials" key')
        self.log(SdkLogLevel.INFO, "trials", data)

    def log_message(self, message: str, level: Any = None, *, context: Any = None) -> None:
        """A message event (`context=` is the SDK's deprecated name of `level`)."""
        if context is not None:
            warnings.warn(
                "The 'context' parameter is deprecated. Use 'level' instead.",
                DeprecationWarning,
                stacklevel=2,
            )
        chosen = level if level is not None else context
        resolved = SdkLogLevel(chosen) if chosen is not None else SdkLogLevel.INFO
        self.log(resolved, "message", self._build_message_data(message))

    def set_step_proportions(
        self, proportions: Mapping[str, float], orders: Mapping[str, int] | None = None
    ) -> None:
        """Step weights: progress then carries the weighted overall percent.

        The SDK's `Orchestrator` passes its registry's weights only to a `JobLogger`;
        call this with `registry.get_step_proportions()` to record the overall progress.
        """
        self.run.logger.begin_workflow(proportions)

    # -- runstore's own ----------------------------------------------------------------

    def flush(self) -> None:
        """Write every record logged so far to disk now."""
        self.run.flush()


def _sdk_context(run: RuntimeContext, env: Mapping[str, Any]) -> SdkRuntimeContext:
    return SdkRuntimeContext(
        logger=RunstoreLogger(run),
        env=SdkEnvironment(dict(env)),
        job_id=run.job_id,
        checkpoint=run.checkpoint,
        language=run.language,
    )


def _env_values(env: SdkEnvironment | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if env is None:
        return None
    if isinstance(env, SdkEnvironment):
        return dict(env.to_dict())
    return dict(env)


def runtime_context(
    root: str | os.PathLike[str],
    *,
    plugin: str | None = None,
    action: str | None = None,
    params: Mapping[str, Any] | None = None,
    job_id: str | None = None,
    env: SdkEnvironment | Mapping[str, Any] | None = None,
    checkpoint: dict[str, Any] | None = None,
    language: str | None = None,
    run_id: str | None = None,
    options: WriterOptions | None = None,
) -> SdkRuntimeContext:
    """A new run under `root` and the SDK `RuntimeContext` that logs into it.

    Arguments as `runstore.open_run`. End the run with `ctx.logger.finish()` (as the
    SDK's executors do); a process that exits without it leaves the run failed.
    """
    run = open_run(
        root,
        plugin=plugin,
        action=action,
        params=params,
        job_id=job_id,
        env=_env_values(env),
        checkpoint=checkpoint,
        language=language,
        run_id=run_id,
        options=options,
    )
    return _sdk_context(run, run.env)


def attach_runtime_context(
    run_dir: str | os.PathLike[str],
    *,
    labels: Mapping[str, str] | None = None,
    env: SdkEnvironment | Mapping[str, Any] | None = None,
    options: WriterOptions | None = None,
) -> SdkRuntimeContext:
    """An SDK `RuntimeContext` for another worker of an existing run (a Ray task or
    actor): a writer of its own, as `runstore.attach_run`. Its `logger.finish()` closes
    that writer and leaves the run to its owner."""
    run = attach_run(run_dir, env=_env_values(env), options=options, labels=labels)
    return _sdk_context(run, run.env)


class RunstoreExecutor:
    """The SDK's `LocalExecutor`, each `execute` logging into a new run under `root`.

    Same protocol (`execute(action_cls, params)`), same result and `ExecutionError`;
    offline: `ctx.client` and `ctx.agent_client` are None. `run_dir` is the last run.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        plugin: str | None = None,
        env: SdkEnvironment | Mapping[str, Any] | None = None,
        job_id: str | None = None,
        language: str | None = None,
        options: WriterOptions | None = None,
    ) -> None:
        self.root = Path(root)
        self.plugin = plugin
        self.env = env
        self.job_id = job_id
        self.language = language
        self.options = options
        self._run_dir: Path | None = None

    @property
    def run_dir(self) -> Path:
        """The run of the last `execute`."""
        if self._run_dir is None:
            raise RunstoreError("RunstoreExecutor.run_dir: no action was executed yet")
        return self._run_dir

    def execute(self, action_cls: type[Any], params: dict[str, Any], **kwargs: Any) -> Any:
        from synapse_sdk.plugins.action import NoResult, validate_result
        from synapse_sdk.plugins.errors import ExecutionError

        del kwargs  # the executor protocol's extras; LocalExecutor ignores them too
        ctx = runtime_context(
            self.root,
            plugin=self.plugin,
            action=getattr(action_cls, "action_name", None) or action_cls.__name__,
            params=params,
            job_id=self.job_id,
            env=self.env,
            language=self.language,
            options=self.options,
        )
        self._run_dir = ctx.logger.run_dir
        try:
            result = action_cls.dispatch(params, ctx)
        except Exception as exc:
            ctx.logger.finish()  # inside the except block: the run ends as failed
            raise ExecutionError(f"Action execution failed: {exc}") from exc
        result_model = getattr(action_cls, "result_model", NoResult)
        if result_model is not NoResult:
            result = validate_result(result, result_model, ctx.logger)
        ctx.logger.finish()
        return result
