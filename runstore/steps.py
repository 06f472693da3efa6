"""Step workflows: step contexts, steps with weights, a registry and an orchestrator.

The orchestrator runs registered steps in order, makes each the current step of the
run (so its progress and metrics are categorised by its name), records `step` events
(started, completed, skipped, failed, rolled_back) and the weighted overall progress,
and on a failure rolls back the executed steps in reverse order before raising
`StepFailedError` ("Step '<name>' failed: <error>").
"""

from __future__ import annotations

import os
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from .context import RuntimeContext
from .errors import StepFailedError
from .format import LogLevel

__all__ = [
    "AddTaskDataContext",
    "BaseStep",
    "BaseStepContext",
    "DeploymentContext",
    "ExportContext",
    "InferenceContext",
    "Orchestrator",
    "StepRegistry",
    "StepResult",
    "TrainContext",
    "UploadContext",
]

STEP_EVENT = "step"


@dataclass
class StepResult:
    """What a step's `execute` returns; `rollback_data` is handed back to `rollback`."""

    success: bool = True
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    rollback_data: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class BaseStepContext:
    """State shared by the steps of one workflow, and logging under the current step."""

    runtime_ctx: RuntimeContext
    step_results: list[StepResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    current_step: str | None = None

    def log(
        self, event: str, data: Mapping[str, Any], file: str | os.PathLike[str] | None = None
    ) -> None:
        self.runtime_ctx.log(event, data, file, step=self.current_step)

    def log_message(
        self, message: str | Mapping[str, str], context: str | None = None, **kwargs: Any
    ) -> None:
        self.runtime_ctx.log_message(message, context, **kwargs)

    def set_progress(self, current: float, total: float, step: str | None = None) -> None:
        """Progress of `step`, by default the current step."""
        self.runtime_ctx.set_progress(current, total, step or self.current_step)

    def set_metrics(self, value: Mapping[str, Any], step: str | None = None) -> None:
        """Metrics of `step`, by default the current step; `ValueError` with neither."""
        category = step or self.current_step
        if category is None:
            raise ValueError("set_metrics needs a step: none given and no step is running")
        self.runtime_ctx.set_metrics(value, category)


@dataclass
class TrainContext(BaseStepContext):
    dataset: Any = None
    model_path: str | None = None
    model: Any = None


@dataclass
class ExportContext(BaseStepContext):
    results: list[Any] = field(default_factory=list)
    exported_count: int = 0
    output_path: str | None = None


@dataclass
class UploadContext(BaseStepContext):
    uploaded_files: list[Any] = field(default_factory=list)
    data_units: list[Any] = field(default_factory=list)


@dataclass
class InferenceContext(BaseStepContext):
    model: Any = None
    results: list[Any] = field(default_factory=list)
    processed_count: int = 0


@dataclass
class DeploymentContext(BaseStepContext):
    serve_app_id: str | None = None
    deployed: bool = False


@dataclass
class AddTaskDataContext(BaseStepContext):
    task_ids: list[Any] = field(default_factory=list)
    success_count: int = 0
    failures: list[Any] = field(default_factory=list)


C = TypeVar("C", bound=BaseStepContext)


class BaseStep(ABC, Generic[C]):
    """One step of a workflow. Subclasses give `name`, `progress_weight`, `execute`."""

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    @abstractmethod
    def progress_weight(self) -> float:
        """This step's share of the whole workflow (any positive scale)."""

    @abstractmethod
    def execute(self, context: C) -> StepResult: ...

    def can_skip(self, context: C) -> bool:
        return False

    def rollback(self, context: C, result: StepResult) -> None:
        """Undo what `execute` did; called in reverse order after a later step failed."""


class StepRegistry(Generic[C]):
    """Steps in the order they run."""

    def __init__(self) -> None:
        self._steps: list[BaseStep[C]] = []

    def _index(self, name: str) -> int:
        for index, step in enumerate(self._steps):
            if step.name == name:
                return index
        known = ", ".join(s.name for s in self._steps) or "none"
        raise KeyError(f"no step named {name!r} (registered: {known})")

    def _check_new(self, step: BaseStep[C]) -> None:
        if any(s.name == step.name for s in self._steps):
            raise ValueError(f"a step named {step.name!r} is already registered")
        if not step.progress_weight >= 0:
            raise ValueError(f"step {step.name!r}: progress_weight must be >= 0")

    def register(self, step: BaseStep[C]) -> None:
        self._check_new(step)
        self._steps.append(step)

    def unregister(self, name: str) -> None:
        del self._steps[self._index(name)]

    def insert_after(self, name: str, step: BaseStep[C]) -> None:
        self._check_new(step)
        self._steps.insert(self._index(name) + 1, step)

    def insert_before(self, name: str, step: BaseStep[C]) -> None:
        self._check_new(step)
        self._steps.insert(self._index(name), step)

    def get_steps(self) -> list[BaseStep[C]]:
        return list(self._steps)

    @property
    def total_weight(self) -> float:
        return sum(step.progress_weight for step in self._steps)

    def __iter__(self) -> Iterator[BaseStep[C]]:
        return iter(list(self._steps))

    def __len__(self) -> int:
        return len(self._steps)


class Orchestrator(Generic[C]):
    """Runs the steps of a registry against one context, with rollback on failure."""

    def __init__(self, registry: StepRegistry[C], context: C) -> None:
        self.registry = registry
        self.context = context

    def _event(self, step: BaseStep[C], order: int, status: str, **data: Any) -> None:
        level = LogLevel.ERROR if status == "failed" else LogLevel.INFO
        payload = {
            "name": step.name,
            "order": order,
            "weight": step.progress_weight,
            "status": status,
            **data,
        }
        self.context.runtime_ctx.logger.log(level, STEP_EVENT, payload, step=step.name)

    def execute(self) -> dict[str, Any]:
        """Run every step; a summary of what ran. Raises `StepFailedError` on a failure,
        after the rollback."""
        logger = self.context.runtime_ctx.logger
        steps = self.registry.get_steps()
        logger.begin_workflow({step.name: step.progress_weight for step in steps})
        executed: list[tuple[int, BaseStep[C], StepResult]] = []
        try:
            for order, step in enumerate(steps):
                self.context.current_step = step.name
                logger.set_step(step.name, order)
                if step.can_skip(self.context):
                    result = StepResult(skipped=True)
                    self.context.step_results.append(result)
                    logger.complete_step(step.name)
                    self._event(step, order, "skipped")
                    continue
                self._event(step, order, "started")
                try:
                    outcome: object = step.execute(self.context)
                except Exception as exc:
                    result = StepResult(success=False, error=f"{type(exc).__name__}: {exc}")
                    self._event(
                        step,
                        order,
                        "failed",
                        error=result.error,
                        traceback=traceback.format_exc(limit=20),
                    )
                else:
                    if isinstance(outcome, StepResult):
                        result = outcome
                    else:
                        kind = type(outcome).__name__
                        result = StepResult(
                            success=False, error=f"execute() returned {kind}, not a StepResult"
                        )
                    if not result.success:
                        self._event(step, order, "failed", error=result.error)
                self.context.step_results.append(result)
                if not result.success:
                    error = result.error or "unknown error"
                    self.context.errors.append(error)
                    logger.set_progress_failed(step.name)
                    self._rollback(executed)
                    raise StepFailedError(step.name, error)
                executed.append((order, step, result))
                logger.complete_step(step.name)
                self._event(step, order, "completed")
        finally:
            self.context.current_step = None
            logger.set_step(None)
        return {
            "success": True,
            "steps": [step.name for step in steps],
            "executed": [step.name for _, step, _ in executed],
            "skipped": [
                s.name for s, r in zip(steps, self.context.step_results, strict=False) if r.skipped
            ],
        }

    def _rollback(self, executed: list[tuple[int, BaseStep[C], StepResult]]) -> None:
        """Best effort: a rollback that raises is recorded and the others still run."""
        for order, step, result in reversed(executed):
            self.context.current_step = step.name
            try:
                step.rollback(self.context, result)
            except Exception as exc:
                message = f"rollback of step '{step.name}' failed: {type(exc).__name__}: {exc}"
                self.context.errors.append(message)
                self._event(step, order, "rollback_failed", error=message)
            else:
                self._event(step, order, "rolled_back")
