"""The real synapse-sdk (Python 3.12+) logging through runstore.synapse.

Runs where `synapse_sdk` is installed: `.venv-sdk` (see README); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("synapse_sdk", reason="synapse-sdk not installed (runs in .venv-sdk)")

from pydantic import BaseModel
from synapse_sdk.loggers import BaseLogger
from synapse_sdk.plugins.action import BaseAction
from synapse_sdk.plugins.context import RuntimeContext as SdkRuntimeContext
from synapse_sdk.plugins.errors import ExecutionError
from synapse_sdk.plugins.log_messages import CommonLogMessageCode
from synapse_sdk.plugins.models.logger import LogLevel
from synapse_sdk.plugins.steps import (
    BaseStep,
    BaseStepContext,
    Orchestrator,
    StepRegistry,
    StepResult,
)

from runstore import Store, attach_run, read_run
from runstore.synapse import (
    RunstoreExecutor,
    RunstoreLogger,
    runtime_context,
)
from runstore.tail import follow


def _only_run(root: Path) -> Path:
    (run_dir,) = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run_dir


def _events(run_dir: Path) -> list[dict[str, Any]]:
    rows = read_run(run_dir).events.to_pylist()
    for row in rows:
        row["data"] = json.loads(row["data"])
    return rows


def test_the_logger_is_the_sdks(root: Path) -> None:
    ctx = runtime_context(root, plugin="p", action="train")
    assert isinstance(ctx, SdkRuntimeContext)
    assert isinstance(ctx.logger, BaseLogger)
    assert isinstance(ctx.logger, RunstoreLogger)
    ctx.logger.finish()


def test_every_call_of_the_sdk_context_lands(root: Path, tmp_path: Path) -> None:
    image = tmp_path / "pred.png"
    image.write_bytes(b"\x89PNG fake")
    ctx = runtime_context(
        root, plugin="yolo", action="train", job_id="job-7", params={"epochs": 2}, language="ko"
    )
    ctx.set_progress(0, 10, step="train")
    ctx.set_progress(5, 10, step="train")
    ctx.set_metrics({"loss": 0.5, "count": 3, "ok": True}, step="train")
    ctx.set_metrics({"loss": 0.25}, step="train")
    ctx.log_message("plain", LogLevel.SUCCESS)
    ctx.log_message({"en": "n={n}", "ko": "개수 {n}"}, n=4)
    with pytest.warns(DeprecationWarning, match="'context' parameter is deprecated"):
        ctx.log_message("warned", context="warning")
    ctx.log_metric("val", "accuracy", 0.9, f1=0.8)
    ctx.log_visualization("val", "predictions", 0, str(image), epoch=1)
    ctx.log_trials(trials={"t1": {"loss": 0.1}}, metrics=["loss"], best_trial="t1")
    ctx.log_dev_event("debug info", {"k": "v"})
    ctx.log("upload_data_file", {"files": {"image": "a.jpg"}, "status": "success"})
    ctx.logger.debug("internal detail")
    ctx.logger.log_message("legacy", LogLevel.DANGER)  # the JobLogger's own spelling
    with pytest.warns(DeprecationWarning):
        ctx.logger.log_message("legacy context", context="warning")
    ctx.end_log()
    ctx.logger.finish()

    run_dir = ctx.logger.run_dir
    run = read_run(run_dir)
    assert run.status == "completed"
    assert run.manifest.job_id == "job-7" and run.manifest.params == {"epochs": 2}
    progress = run.progress.to_pylist()
    assert [(p["category"], p["current"], p["total"]) for p in progress] == [
        ("train", 0, 10),
        ("train", 5, 10),
    ]
    metrics = [(m["category"], m["key"]) for m in run.metrics.to_pylist()]
    # every call's values, not only the merged latest the SDK keeps
    assert metrics.count(("train", "loss")) == 2
    assert ("val", "accuracy") in metrics and ("val", "f1") in metrics
    assert run.latest_metrics() == {
        "train": {"loss": 0.25, "count": 3, "ok": True},
        "val": {"accuracy": 0.9, "f1": 0.8},
    }
    events = _events(run_dir)
    messages = [(e["level"], e["data"]["content"]) for e in events if e["event"] == "message"]
    assert messages[:3] == [("success", "plain"), ("info", "개수 4"), ("warning", "warned")]
    assert messages[-1][1] == "플러그인 실행이 완료되었습니다."  # the SDK's end_log, in ko
    assert events[-1]["data"].get("key") == CommonLogMessageCode.PLUGIN_RUN_COMPLETE.value
    by_event = {e["event"]: e for e in events}
    assert by_event["metric"]["data"] == {
        "category": "val",
        "key": "accuracy",
        "value": 0.9,
        "metrics": {"f1": 0.8},
    }
    visual = by_event["visualization"]
    assert visual["data"]["group"] == "predictions"
    assert (run_dir / visual["attachment"]).read_bytes() == b"\x89PNG fake"
    assert by_event["trials"]["data"]["best_trial"] == "t1"
    assert by_event["dev_event"]["level"] == "debug"
    assert by_event["upload_data_file"]["data"]["status"] == "success"

    store = Store(root)
    assert store.sql("SELECT message FROM dev_events ORDER BY seq").fetchall() == [
        ("debug info",),
        ("internal detail",),  # the SDK logger's debug(): a developer's message
    ]
    assert store.sql("SELECT count(*) FROM messages WHERE level='warning'").fetchall() == [(2,)]
    assert ("danger", "legacy") in messages
    tailed = [r for r in follow(run_dir, from_start=True) if r.stream == "events"]
    assert [r.seq for r in tailed] == [e["seq"] for e in events]


def test_sdk_validation_stays_and_nothing_logged_is_lost(root: Path) -> None:
    ctx = runtime_context(root)
    ctx.set_progress(1, 2, step="s")
    with pytest.raises(ValueError, match="total must be > 0"):
        ctx.set_progress(1, 0, step="s")
    with pytest.raises(ValueError, match="step must be specified"):
        ctx.logger.set_metrics({"a": 1.0})
    with pytest.raises(TypeError, match="level must be a LogLevel"):
        ctx.logger.log("info", "event", {})
    ctx.logger.finish()
    with pytest.raises(RuntimeError, match="finished"):
        ctx.set_progress(2, 2, step="s")
    run = read_run(ctx.logger.run_dir)
    assert run.progress.num_rows == 1
    assert run.status == "completed"


@dataclass
class _Work(BaseStepContext):
    done: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)


class _Step(BaseStep[_Work]):
    def __init__(self, name: str, weight: int, fail: bool = False) -> None:
        self._name = name
        self._weight = weight
        self._fail = fail

    @property
    def name(self) -> str:
        return self._name

    @property
    def progress_weight(self) -> float:
        return self._weight / 100

    @property
    def progress_proportion(self) -> int:
        return self._weight

    def execute(self, context: _Work) -> StepResult:
        for i in range(1, 4):
            context.set_progress(i, 4)
        context.set_metrics({"items": 3})
        context.log_message(f"{self._name} working", LogLevel.INFO)
        if self._fail:
            return StepResult(success=False, error=f"{self._name} broke")
        context.done.append(self._name)
        return StepResult(success=True)

    def rollback(self, context: _Work, result: StepResult) -> None:
        context.rolled_back.append(self._name)
        context.log("rollback", {"step": self._name})


def _workflow(ctx: SdkRuntimeContext, fail_last: bool) -> tuple[_Work, Orchestrator[_Work]]:
    registry = StepRegistry[_Work]()
    registry.register(_Step("prepare", 20))
    registry.register(_Step("upload", 70))
    registry.register(_Step("cleanup", 10, fail=fail_last))
    work = _Work(runtime_ctx=ctx)
    ctx.logger.set_step_proportions(registry.get_step_proportions())
    orchestrator = Orchestrator(
        registry=registry, context=work, progress_callback=lambda c, t: ctx.set_progress(c, t)
    )
    return work, orchestrator


def test_the_sdks_orchestrator_and_step_contexts_log_per_step(root: Path) -> None:
    ctx = runtime_context(root, action="upload")
    work, orchestrator = _workflow(ctx, fail_last=False)
    assert orchestrator.execute()["success"]
    assert work.done == ["prepare", "upload", "cleanup"]
    ctx.logger.finish()

    run = read_run(ctx.logger.run_dir)
    assert run.status == "completed"
    progress = run.progress.to_pylist()
    assert {p["category"] for p in progress} == {"prepare", "upload", "cleanup"}
    assert progress[-1]["overall"] == 100.0  # weighted by the registry's proportions
    overall = [p["overall"] for p in progress]
    assert overall == sorted(overall)
    last_prepare = [p for p in progress if p["category"] == "prepare"][-1]
    assert last_prepare["overall"] == 20.0
    assert {(m["category"], m["key"]) for m in run.metrics.to_pylist()} == {
        ("prepare", "items"),
        ("upload", "items"),
        ("cleanup", "items"),
    }
    messages = [e for e in _events(run.path) if e["event"] == "message"]
    assert [m["category"] for m in messages] == ["prepare", "upload", "cleanup"]


def test_a_failing_step_rolls_back_and_the_run_fails(root: Path) -> None:
    ctx = runtime_context(root)
    work, orchestrator = _workflow(ctx, fail_last=True)
    try:
        orchestrator.execute()
    except RuntimeError:
        ctx.logger.finish()  # as the SDK's executors do, inside their except block
    assert work.rolled_back == ["cleanup", "upload", "prepare"]  # the failed step too
    run = read_run(ctx.logger.run_dir)
    assert run.status == "failed"
    assert run.manifest.error == "RuntimeError: Step 'cleanup' failed: cleanup broke"
    events = _events(run.path)
    assert [e["data"]["step"] for e in events if e["event"] == "rollback"] == [
        "cleanup",
        "upload",
        "prepare",
    ]
    assert events[-1]["level"] == "danger"


@pytest.mark.parametrize(
    "context_class",
    ["TrainContext", "UploadContext", "ExportContext", "InferenceContext", "DeploymentContext"],
)
def test_the_sdks_step_contexts_log_under_their_step(root: Path, context_class: str) -> None:
    import synapse_sdk.plugins.actions as actions

    ctx = runtime_context(root)
    step_ctx = getattr(actions, context_class)(runtime_ctx=ctx)
    step_ctx._set_current_step("work", order=0)  # what the Orchestrator does
    ctx.logger.set_step("work", order=0)
    step_ctx.set_progress(1, 2)
    step_ctx.set_metrics({"done": 1})
    step_ctx.log_message("halfway", LogLevel.WARNING)
    step_ctx.log("custom", {"n": 1})
    ctx.logger.finish()
    run = read_run(ctx.logger.run_dir)
    assert [(p["category"], p["percent"]) for p in run.progress.to_pylist()] == [("work", 50.0)]
    assert run.latest_metrics() == {"work": {"done": 1}}
    events = _events(run.path)
    assert [(e["event"], e["level"], e["category"]) for e in events] == [
        ("message", "warning", "work"),
        ("custom", "info", "work"),
    ]


class _Params(BaseModel):
    files: int = 3


class _UploadAction(BaseAction[_Params]):
    action_name = "upload"

    def execute(self) -> dict[str, Any]:
        for i in range(self.params.files):
            self.ctx.log("upload_data_file", {"files": {"image": f"{i}.jpg"}, "status": "success"})
            self.ctx.set_progress(i + 1, self.params.files, step="upload")
        if self.params.files == 0:
            raise ValueError("nothing to upload")
        return {"uploaded": self.params.files}


def test_the_executor_runs_an_sdk_action_into_a_run(root: Path) -> None:
    executor = RunstoreExecutor(root, plugin="uploader", job_id="j1")
    assert executor.execute(_UploadAction, {"files": 4}) == {"uploaded": 4}
    run = read_run(executor.run_dir)
    assert run.status == "completed"
    assert (run.manifest.plugin, run.manifest.action) == ("uploader", "upload")
    assert run.manifest.params == {"files": 4}
    assert [e["event"] for e in _events(run.path)] == ["upload_data_file"] * 4

    with pytest.raises(ExecutionError, match="nothing to upload"):
        executor.execute(_UploadAction, {"files": 0})
    failed = read_run(executor.run_dir)
    assert failed.path != run.path
    assert failed.status == "failed"
    assert failed.manifest.error == "ValueError: nothing to upload"


def test_many_upload_events_all_land(root: Path) -> None:
    ctx = runtime_context(root, action="upload")
    count = 20_000
    for i in range(count):
        ctx.log("upload_data_file", {"files": {"image": f"/data/{i}.jpg"}, "status": "success"})
    ctx.logger.finish()
    seqs = read_run(ctx.logger.run_dir).events.column("seq").to_pylist()
    assert len(seqs) == count
    assert sorted(seqs) == list(range(1, count + 1))


def test_a_worker_process_attaches_with_the_sdk_context(root: Path) -> None:
    ctx = runtime_context(root, action="upload")
    ctx.log_message("driver starts", LogLevel.INFO)
    code = textwrap.dedent(
        """
        import sys
        from runstore.synapse import attach_runtime_context
        ctx = attach_runtime_context(sys.argv[1], labels={"worker": "shard-1"})
        for i in range(50):
            ctx.log("upload_data_file", {"i": i})
        ctx.set_progress(50, 50, step="upload")
        ctx.logger.finish()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(ctx.logger.run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ctx.logger.finish()
    run = read_run(ctx.logger.run_dir)
    assert run.status == "completed"  # the worker's finish did not end the run
    workers = {w.writer_id: w for w in run.writers}
    (worker,) = [w for w in workers.values() if w.labels.get("worker") == "shard-1"]
    rows = run.events.to_pylist()
    assert sum(r["writer"] == worker.writer_id for r in rows) == 50
    assert run.progress.to_pylist()[-1]["writer"] == worker.writer_id


def test_the_tailer_follows_an_sdk_job_live(root: Path) -> None:
    code = textwrap.dedent(
        """
        import sys, time
        from runstore.synapse import runtime_context
        ctx = runtime_context(sys.argv[1], run_id="live", action="upload")
        for i in range(200):
            ctx.log("upload_data_file", {"i": i})
            ctx.set_progress(i + 1, 200, step="upload")
            if i % 50 == 0:
                time.sleep(0.2)
        ctx.end_log()
        ctx.logger.finish()
        """
    )
    job = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", code, str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = root / "live"
    deadline = time.monotonic() + 30
    while not (run_dir / "run.json").exists():
        assert time.monotonic() < deadline and job.poll() is None, job.stderr
        time.sleep(0.02)
    records = list(follow(run_dir, from_start=True))
    assert job.wait(timeout=30) == 0
    events = [r for r in records if r.stream == "events"]
    assert [r.data["data"]["i"] for r in events if r.data["event"] == "upload_data_file"] == list(
        range(200)
    )
    assert [r.data["current"] for r in records if r.stream == "progress"][-1] == 200
    assert records[-1].stream == "status" and records[-1].data["status"] == "completed"


def test_a_runstore_context_can_be_wrapped(root: Path) -> None:
    """An existing runstore run (open_run / attach_run) logs through the SDK too."""
    owner = runtime_context(root)
    with attach_run(owner.logger.run_dir) as own:
        sdk_ctx = SdkRuntimeContext(logger=RunstoreLogger(own), env=_sdk_env())
        sdk_ctx.log_message("through the sdk", LogLevel.INFO)
        own.log_message("through runstore", "info")
    owner.logger.finish()
    texts = [e["data"]["content"] for e in _events(own.run_dir) if e["event"] == "message"]
    assert texts == ["through the sdk", "through runstore"]


def _sdk_env() -> Any:
    from synapse_sdk.plugins.context import PluginEnvironment

    return PluginEnvironment({})
