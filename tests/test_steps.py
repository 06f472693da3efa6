"""Step contexts, the registry and the orchestrator, as the spec describes them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest

from runstore import StepFailedError, open_run, read_run
from runstore.steps import (
    AddTaskDataContext,
    BaseStep,
    BaseStepContext,
    DeploymentContext,
    ExportContext,
    InferenceContext,
    Orchestrator,
    StepRegistry,
    StepResult,
    TrainContext,
    UploadContext,
)


class Step(BaseStep[BaseStepContext]):
    def __init__(
        self,
        name: str,
        weight: float,
        *,
        fail: str = "",
        skip: bool = False,
        rollback_fails: bool = False,
        ticks: int = 4,
    ) -> None:
        self._name, self._weight = name, weight
        self.fail, self.skip, self.rollback_fails, self.ticks = fail, skip, rollback_fails, ticks
        self.rolled_back = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def progress_weight(self) -> float:
        return self._weight

    def can_skip(self, context: BaseStepContext) -> bool:
        return self.skip

    def execute(self, context: BaseStepContext) -> StepResult:
        for tick in range(1, self.ticks + 1):
            context.set_progress(tick, self.ticks)
            context.set_metrics({"tick": float(tick)})
        if self.fail == "raise":
            raise RuntimeError("disk on fire")
        if self.fail == "result":
            return StepResult(success=False, error="quota exceeded")
        return StepResult(data={"done": self.name}, rollback_data={"undo": self.name})

    def rollback(self, context: BaseStepContext, result: StepResult) -> None:
        if self.rollback_fails:
            raise OSError("cannot undo")
        self.rolled_back = True
        context.log("undone", result.rollback_data)


def _step_events(run_dir: Path) -> list[tuple[str, str]]:
    events = read_run(run_dir).events.to_pylist()
    return [
        (e["category"], orjson.loads(e["data"])["status"]) for e in events if e["event"] == "step"
    ]


@pytest.mark.parametrize(
    ("cls", "attributes"),
    [
        (TrainContext, {"dataset": None, "model_path": None, "model": None}),
        (ExportContext, {"results": [], "exported_count": 0, "output_path": None}),
        (UploadContext, {"uploaded_files": [], "data_units": []}),
        (InferenceContext, {"model": None, "results": [], "processed_count": 0}),
        (DeploymentContext, {"serve_app_id": None, "deployed": False}),
        (AddTaskDataContext, {"task_ids": [], "success_count": 0, "failures": []}),
    ],
)
def test_specialised_contexts_have_the_spec_attributes(
    root: Path, cls: type[BaseStepContext], attributes: dict[str, object]
) -> None:
    with open_run(root, env={}) as ctx:
        step_ctx = cls(ctx)
        assert isinstance(step_ctx, BaseStepContext) and dataclasses.is_dataclass(step_ctx)
        assert step_ctx.runtime_ctx is ctx and step_ctx.step_results == [] and step_ctx.errors == []
        for name, default in attributes.items():
            assert getattr(step_ctx, name) == default


def test_step_context_uses_current_step_as_category(root: Path) -> None:
    with open_run(root, env={}) as ctx:
        step_ctx = TrainContext(ctx, current_step="train")
        step_ctx.set_progress(1, 2)
        step_ctx.set_metrics({"loss": 0.5})
        step_ctx.set_metrics({"x": 1.0}, step="other")
        step_ctx.log("note", {"a": 1})
        step_ctx.log_message("hello", "success")
        step_ctx.current_step = None
        with pytest.raises(ValueError, match="needs a step"):
            step_ctx.set_metrics({"loss": 0.5})
    run = read_run(ctx.run_dir)
    assert run.latest_progress()[0]["category"] == "train"
    assert run.latest_metrics() == {"train": {"loss": 0.5}, "other": {"x": 1.0}}
    assert run.events.to_pylist()[0]["category"] == "train"


def test_registry_order_insert_and_unregister() -> None:
    registry: StepRegistry[BaseStepContext] = StepRegistry()
    registry.register(Step("a", 1))
    registry.register(Step("c", 2))
    registry.insert_after("a", Step("b", 3))
    registry.insert_before("a", Step("start", 0.5))
    assert [s.name for s in registry.get_steps()] == ["start", "a", "b", "c"]
    assert registry.total_weight == 6.5 and len(registry) == 4
    registry.unregister("b")
    assert [s.name for s in registry] == ["start", "a", "c"]
    with pytest.raises(KeyError, match="no step named 'zzz'"):
        registry.unregister("zzz")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Step("a", 1))


def test_orchestrator_runs_in_order_with_weighted_overall_progress(root: Path) -> None:
    registry: StepRegistry[BaseStepContext] = StepRegistry()
    for step in (Step("prepare", 1), Step("skipme", 1, skip=True), Step("train", 8)):
        registry.register(step)
    with open_run(root, env={}) as ctx:
        step_ctx = TrainContext(ctx)
        summary = Orchestrator(registry, step_ctx).execute()
    assert summary["executed"] == ["prepare", "train"] and summary["skipped"] == ["skipme"]
    assert [r.skipped for r in step_ctx.step_results] == [False, True, False]
    run = read_run(ctx.run_dir)
    overall = [v for v in run.progress.column("overall").to_pylist() if v is not None]
    assert overall == sorted(overall), "overall progress never goes backwards"
    assert overall[-1] == 100.0 and overall[0] == 2.5  # 1/4 of prepare's weight of 1 in 10
    assert run.overall_progress() == 100.0
    latest = {p["category"]: p["percent"] for p in run.latest_progress()}
    assert latest == {"prepare": 100.0, "skipme": 100.0, "train": 100.0}
    assert _step_events(ctx.run_dir) == [
        ("prepare", "started"),
        ("prepare", "completed"),
        ("skipme", "skipped"),
        ("train", "started"),
        ("train", "completed"),
    ]
    assert run.latest_metrics()["train"] == {"tick": 4.0}


@pytest.mark.parametrize(
    ("fail", "error"), [("raise", "RuntimeError: disk on fire"), ("result", "quota exceeded")]
)
def test_failure_rolls_back_in_reverse_and_raises(root: Path, fail: str, error: str) -> None:
    first, second, broken = Step("first", 1), Step("second", 1), Step("third", 1, fail=fail)
    registry: StepRegistry[BaseStepContext] = StepRegistry()
    for step in (first, second, broken):
        registry.register(step)
    with pytest.raises(StepFailedError) as raised, open_run(root, env={}) as ctx:
        step_ctx = UploadContext(ctx)
        Orchestrator(registry, step_ctx).execute()
    assert str(raised.value) == f"Step 'third' failed: {error}"
    assert isinstance(raised.value, RuntimeError)
    assert first.rolled_back and second.rolled_back and not broken.rolled_back
    assert step_ctx.errors == [error]
    events = read_run(ctx.run_dir).events.to_pylist()
    undone = [orjson.loads(e["data"])["undo"] for e in events if e["event"] == "undone"]
    assert undone == ["second", "first"]
    assert _step_events(ctx.run_dir)[-3:] == [
        ("third", "failed"),
        ("second", "rolled_back"),
        ("first", "rolled_back"),
    ]
    run = read_run(ctx.run_dir)
    assert run.status == "failed"
    assert {p["category"]: p["status"] for p in run.latest_progress()}["third"] == "failed"


def test_rollback_is_best_effort(root: Path) -> None:
    first, second = Step("first", 1), Step("second", 1, rollback_fails=True)
    registry: StepRegistry[BaseStepContext] = StepRegistry()
    for step in (first, second, Step("third", 1, fail="result")):
        registry.register(step)
    with open_run(root, env={}) as ctx:
        step_ctx = BaseStepContext(ctx)
        with pytest.raises(StepFailedError):
            Orchestrator(registry, step_ctx).execute()
    assert first.rolled_back
    assert any(
        "rollback of step 'second' failed: OSError: cannot undo" in e for e in step_ctx.errors
    )
    assert ("second", "rollback_failed") in _step_events(ctx.run_dir)


def test_current_step_is_recorded(root: Path) -> None:
    class Stop(Step):
        def execute(self, context: BaseStepContext) -> StepResult:
            assert read_run(context.runtime_ctx.run_dir).current_step() is None  # not flushed yet
            context.runtime_ctx.flush()
            assert read_run(context.runtime_ctx.run_dir).current_step() == self.name
            return StepResult()

    registry: StepRegistry[BaseStepContext] = StepRegistry()
    registry.register(Stop("probe", 1))
    with open_run(root, env={}) as ctx:
        Orchestrator(registry, BaseStepContext(ctx)).execute()
    assert read_run(ctx.run_dir).current_step() is None
