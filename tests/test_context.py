"""RuntimeContext: the seed API verbatim, the newer SDK spellings, validation, ending."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from runstore import (
    FinishedLoggerError,
    LogLevel,
    RunDirectoryError,
    RunstoreWarning,
    RuntimeContext,
    attach_run,
    open_run,
    read_run,
)
from runstore.env import MASK, PluginEnvironment


def _events(ctx: RuntimeContext) -> list[dict[str, object]]:
    rows = read_run(ctx.run_dir).events.to_pylist()
    for row in rows:
        row["data"] = orjson.loads(row["data"])
    return rows


def train(params: dict[str, object], ctx: RuntimeContext) -> dict[str, object]:
    """The seed's quick reference, verbatim but for the import path."""
    # Progress tracking
    ctx.set_progress(0, 100)

    # Metrics recording
    ctx.set_metrics({"loss": 0.05}, "training")

    # User-facing message
    ctx.log_message("Training started", "info")

    # Event logging
    ctx.log("checkpoint", {"epoch": 5}, "/path/to/file")

    # Debug logging
    ctx.log_dev_event("Debug info", {"data": "value"})

    # Signal completion
    ctx.end_log()

    return {"status": "completed"}


def test_seed_quick_reference_runs_verbatim(root: Path) -> None:
    ctx = open_run(root, plugin="yolo", action="train", env={})
    with pytest.warns(RunstoreWarning, match="/path/to/file"):
        assert train({}, ctx) == {"status": "completed"}
    ctx.close()
    run = read_run(ctx.run_dir)
    assert run.status == "completed"
    assert run.latest_metrics() == {"training": {"loss": 0.05}}
    progress = run.progress.to_pylist()[0]
    assert (progress["current"], progress["total"], progress["percent"]) == (0, 100, 0.0)
    events = _events(ctx)
    assert [e["event"] for e in events] == ["message", "checkpoint", "dev_event", "message"]
    assert events[0]["data"] == {"content": "Training started"} and events[0]["level"] == "info"
    assert events[1]["data"] == {"epoch": 5} and events[1]["file"] == "/path/to/file"
    assert events[1]["attachment"] is None
    assert events[2]["level"] == "debug"
    assert events[2]["data"] == {"message": "Debug info", "data": {"data": "value"}}
    assert events[3]["data"] == {"content": "Plugin run is complete."}


def test_seed_keyword_calls_and_message_contexts(root: Path) -> None:
    with open_run(root, env={"API_KEY": "k", "DEBUG": "true"}) as ctx:
        ctx.set_progress(current=50, total=100)
        ctx.set_progress(5, 10, category="download")
        ctx.set_progress(3, 100, category="training")
        ctx.set_metrics(value={"loss": 0.05, "accuracy": 0.95}, category="training")
        for context in ("success", "warning", "danger", "info"):
            ctx.log_message(f"{context}!", context)
        assert ctx.env.get("API_KEY", "") == "k"
        assert ctx.env.get("DEBUG", "false") == "true"
    run = read_run(ctx.run_dir)
    assert [p["category"] for p in run.latest_progress()] == [None, "download", "training"]
    assert [m["level"] for m in run.messages()][:4] == ["success", "warning", "danger", "info"]
    assert run.manifest.env == {"API_KEY": MASK, "DEBUG": "true"}


def test_context_attributes(root: Path) -> None:
    checkpoint = {"path": "models/base.pt", "category": "base"}
    env = PluginEnvironment({"A": "1"})
    with open_run(root, job_id="job-1", checkpoint=checkpoint, env=env, language="ko") as ctx:
        assert ctx.job_id == "job-1"
        assert ctx.checkpoint == checkpoint and ctx.checkpoint.get("category") == "base"
        assert ctx.env is env
        assert ctx.client is None and ctx.agent_client is None
        assert ctx.logger is not None and ctx.language == "ko"
    manifest = read_run(ctx.run_dir).manifest
    assert manifest.job_id == "job-1" and manifest.checkpoint == checkpoint


def test_newer_sdk_spellings(root: Path, tmp_path: Path) -> None:
    image = tmp_path / "pred.png"
    image.write_bytes(b"\x89PNG fake")
    with open_run(root, env={}) as ctx:
        ctx.set_progress(1, 4, step="train")
        ctx.set_metrics({"loss": 1.0}, step="train")
        ctx.log_message("careful", level=LogLevel.WARNING)
        ctx.log_message("bad", level="error")
        ctx.log_message("old style", context="success")  # the seed's name: no warning
        ctx.log_metric("train", "mAP", 0.5, recall=0.7)
        ctx.log_visualization("val", "predictions", 3, image, caption="epoch 3")
        ctx.log_trials(trials=[{"id": 1, "loss": 0.2}], best_trial={"id": 1})
        ctx.set_progress_failed(step="train")
    run = read_run(ctx.run_dir)
    assert run.latest_metrics()["train"] == {"loss": 1.0, "mAP": 0.5, "recall": 0.7}
    events = {e["event"]: e for e in _events(ctx)}
    assert events["metric"]["data"] == {"category": "train", "mAP": 0.5, "recall": 0.7}
    visual = events["visualization"]
    assert visual["data"] == {
        "category": "val",
        "group": "predictions",
        "index": 3,
        "caption": "epoch 3",
    }
    assert (ctx.run_dir / visual["attachment"]).read_bytes() == b"\x89PNG fake"
    assert events["trials"]["data"] == {"trials": [{"id": 1, "loss": 0.2}], "best_trial": {"id": 1}}
    assert [m["level"] for m in run.messages()][:3] == ["warning", "error", "success"]
    assert run.latest_progress()[0]["status"] == "failed"


def test_i18n_message_picks_language_and_formats(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    templates = {"en": "Exported {n} items", "ko": "{n}개 항목"}
    with open_run(root, env={"SYNAPSE_LANGUAGE": "ko"}) as ctx:
        ctx.log_message(templates, "success", n=3)
        ctx.log_message(templates, language="en", n=4)
        ctx.language = "fr"  # no French template: falls back to English
        ctx.log_message(templates, n=5)
    texts = [m["text"] for m in read_run(ctx.run_dir).messages()]
    assert texts[:3] == ["3개 항목", "Exported 4 items", "Exported 5 items"]
    assert _events(ctx)[0]["data"]["i18n"] == templates


def test_metric_values_keep_their_type(root: Path) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    values = {
        "f": 0.5,
        "nan": math.nan,
        "inf": -math.inf,
        "i": 3,
        "big": 2**70,
        "b": True,
        "s": "text",
        "np_f": np.float32(0.25),
        "np_i": np.int64(7),
        "np_b": np.bool_(False),
        "arr": np.array([1, 2]),
        "list": [1, {"a": 2}],
        "none": None,
    }
    with open_run(root, env={}) as ctx:
        ctx.set_metrics(values, "c")
        with pytest.warns(RunstoreWarning, match="Opaque value is not JSON-serialisable"):
            ctx.set_metrics({"obj": Opaque()}, "c")
    got = read_run(ctx.run_dir).latest_metrics()["c"]
    assert got["f"] == 0.5 and math.isnan(got["nan"]) and got["inf"] == -math.inf
    assert got["i"] == 3 and type(got["i"]) is int
    assert got["big"] == 2**70 and got["b"] is True and got["s"] == "text"
    assert got["np_f"] == 0.25 and got["np_i"] == 7 and type(got["np_i"]) is int
    assert got["np_b"] is False
    assert got["arr"] == [1, 2] and got["list"] == [1, {"a": 2}] and got["none"] is None
    assert got["obj"] == "<opaque>"


def test_metric_keys_are_stored_as_text_alike_live_and_sealed(root: Path) -> None:
    with open_run(root, env={}) as ctx:
        ctx.set_metrics({(1, 2): 1.0, None: 2.0}, "c")  # all floats: the fast path
        ctx.set_metrics({3: 1, "s": "x"}, "c")  # mixed values
        ctx.flush()
        live = read_run(ctx.run_dir).metrics.column("key").to_pylist()
    sealed = read_run(ctx.run_dir).metrics.column("key").to_pylist()
    assert live == sealed == ["(1, 2)", "null", "3", "s"]  # as JSON names them


def test_logged_data_is_a_copy(root: Path) -> None:
    data = {"nested": [1]}
    values = {"loss": 1.0}
    with open_run(root, env={}) as ctx:
        ctx.log("ev", data)
        ctx.set_metrics(values, "c")
        data["nested"].append(2)
        values["loss"] = 99.0
    assert _events(ctx)[0]["data"] == {"nested": [1]}
    assert read_run(ctx.run_dir).latest_metrics() == {"c": {"loss": 1.0}}


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda c: c.set_progress(1, 0), ValueError, "total must be > 0"),
        (lambda c: c.set_progress(5, 4), ValueError, "current must be between 0 and total"),
        (lambda c: c.set_progress(-1, 4), ValueError, "current must be between"),
        (lambda c: c.set_progress("1", 4), TypeError, "current must be a number"),
        (lambda c: c.set_progress(True, 4), TypeError, "current must be a number"),
        (lambda c: c.set_metrics([1], "c"), TypeError, "metrics value must be a dict"),
        (lambda c: c.set_metrics({"a": 1.0}, ""), ValueError, "category must not be empty"),
        (lambda c: c.set_metrics({"a": 1.0}, 3), TypeError, "category must be a string"),
        (lambda c: c.set_metrics({"a": 1.0}), ValueError, "needs a category"),
        (lambda c: c.log("ev", ["not", "a", "dict"]), TypeError, "must be a dict"),
        (lambda c: c.log("", {}), ValueError, "event must be a non-empty string"),
        (lambda c: c.log("ev", {}, level="loud"), ValueError, "unknown level 'loud'"),
        (lambda c: c.log_message(42), TypeError, "message must be a string or a dict"),
        (lambda c: c.log_message("x", "purple"), ValueError, "unknown level"),
        (lambda c: c.log_dev_event("x", [1]), TypeError, "data must be a dict or None"),
    ],
)
def test_bad_input_raises_at_the_call_and_loses_nothing(
    root: Path, call: object, error: type[Exception], match: str
) -> None:
    with open_run(root, env={}) as ctx:
        ctx.set_metrics({"before": 1.0}, "c")
        with pytest.raises(error, match=match):
            call(ctx)  # type: ignore[operator]
        ctx.set_metrics({"after": 2.0}, "c")
    assert read_run(ctx.run_dir).latest_metrics() == {"c": {"before": 1.0, "after": 2.0}}


def test_progress_takes_numpy_numbers(root: Path) -> None:
    with open_run(root, env={}) as ctx:
        ctx.set_progress(np.int64(3), np.int32(4), "s")
        ctx.set_progress(np.float32(4.0), 4, "s")
        with pytest.raises(ValueError, match="current must be between"):
            ctx.set_progress(np.int64(5), 4, "s")
    rows = read_run(ctx.run_dir).progress.to_pylist()
    assert [(r["current"], r["total"], r["status"]) for r in rows] == [
        (3.0, 4.0, "running"),
        (4.0, 4.0, "completed"),
    ]


def test_logging_after_end_log_raises_runtime_error(root: Path) -> None:
    with open_run(root, env={}) as ctx:
        ctx.end_log()
        for call in (
            lambda: ctx.set_metrics({"a": 1.0}, "c"),
            lambda: ctx.set_progress(1, 2),
            lambda: ctx.log_message("late"),
            lambda: ctx.log("ev", {}),
        ):
            with pytest.raises(RuntimeError, match="Cannot log to a finished logger"):
                call()
        with pytest.raises(FinishedLoggerError):
            ctx.end_log()
    assert read_run(ctx.run_dir).status == "completed"


def test_get_progress_and_get_metrics_snapshot(root: Path) -> None:
    with open_run(root, env={}) as ctx:
        ctx.set_metrics({"a": 1.0, "b": 2.0}, "train")
        ctx.set_metrics({"a": 3.0}, "train")
        ctx.set_progress(3, 4, "train")
        assert ctx.logger.get_metrics("train") == {"a": 3.0, "b": 2.0}
        assert ctx.logger.get_metrics() == {"train": {"a": 3.0, "b": 2.0}}
        progress = ctx.logger.get_progress("train")
        assert progress is not None and progress["percent"] == 75.0
        assert ctx.logger.get_progress("nothing") is None


def test_elapsed_restarts_at_zero_and_time_remaining(root: Path) -> None:
    with open_run(root, env={}) as ctx:
        ctx.set_progress(0, 10, "a")
        ctx.set_progress(5, 10, "a")
        ctx.set_progress(10, 10, "a")
    rows = read_run(ctx.run_dir).progress.to_pylist()
    assert rows[0]["time_remaining"] is None and rows[0]["elapsed"] == 0
    assert rows[1]["time_remaining"] == pytest.approx(rows[1]["elapsed"], abs=1e-5)
    assert [r["status"] for r in rows] == ["running", "running", "completed"]
    assert rows[2]["time_remaining"] == 0


def test_exception_in_block_fails_the_run(root: Path) -> None:
    with pytest.raises(KeyError), open_run(root, env={}) as ctx:
        raise KeyError("missing")
    run = read_run(ctx.run_dir)
    assert run.status == "failed" and "KeyError" in (run.manifest.error or "")
    assert run.messages()[-1]["level"] == "danger"


def test_leaving_the_block_without_end_log_completes(root: Path) -> None:
    with open_run(root, env={}) as ctx:
        ctx.set_progress(1, 1)
    assert read_run(ctx.run_dir).status == "completed"


def test_attachment_copied_so_the_run_is_movable(root: Path, tmp_path: Path) -> None:
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"weights")
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "a.json").write_text("{}")
    with open_run(root, env={}) as ctx:
        ctx.log("checkpoint", {"epoch": 1}, weights)
        ctx.log("export", {}, str(folder))
    weights.write_bytes(b"overwritten later")
    moved = tmp_path / "moved"
    ctx.run_dir.rename(moved)
    events = read_run(moved).events.to_pylist()
    assert (moved / events[0]["attachment"]).read_bytes() == b"weights"
    assert (moved / events[1]["attachment"] / "a.json").exists()


def test_open_run_errors(root: Path, tmp_path: Path) -> None:
    with open_run(root, run_id="same", env={}):
        pass
    with pytest.raises(RunDirectoryError, match="already exists"):
        open_run(root, run_id="same", env={})
    with pytest.raises(RunDirectoryError, match="not a valid directory name"):
        open_run(root, run_id="../escape", env={})
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunDirectoryError, match="cannot create run directory"):
        open_run(blocker, env={})


def test_default_env_is_the_process_environment_masked(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "t0k3n")
    monkeypatch.setenv("MY_SETTING", "on")
    with open_run(root) as ctx:
        assert ctx.env.get("MY_SETTING") == "on"
    env = read_run(ctx.run_dir).manifest.env
    assert env["MY_SERVICE_TOKEN"] == MASK and env["MY_SETTING"] == "on"
    assert "t0k3n" not in (ctx.run_dir / "run.json").read_text()


def test_attach_run_adds_a_writer_that_does_not_end_the_run(root: Path) -> None:
    ctx = open_run(root, job_id="j", env={})
    worker = attach_run(ctx.run_dir)
    assert worker.writer_id != ctx.writer_id and worker.job_id == "j"
    worker.set_metrics({"w": 1.0}, "worker")
    worker.close()
    assert read_run(ctx.run_dir).status == "running"
    ctx.set_metrics({"d": 1.0}, "driver")
    ctx.close()
    run = read_run(ctx.run_dir)
    assert run.status == "completed" and len(run.writers) == 2
    assert set(run.metrics.column("writer").to_pylist()) == {ctx.writer_id, worker.writer_id}


def test_attach_run_keeps_the_workers_labels(root: Path) -> None:
    with open_run(root, env={}) as ctx:
        with attach_run(ctx.run_dir, labels={"worker": "shard-3", "host-group": "a"}) as worker:
            worker.log("ev", {})
        with pytest.raises(TypeError, match="labels must map strings to strings"):
            attach_run(ctx.run_dir, labels={"shard": 3})  # type: ignore[dict-item]
    writers = {w.writer_id: w for w in read_run(ctx.run_dir).writers}
    assert len(writers) == 2  # the refused attach made no writer
    assert writers[worker.writer_id].labels == {"worker": "shard-3", "host-group": "a"}
    assert writers[ctx.writer_id].labels == {}  # no Ray here: no ray.* labels


def test_the_synapse_module_says_how_to_get_the_sdk() -> None:
    import importlib.util

    if importlib.util.find_spec("synapse_sdk") is not None:
        pytest.skip("synapse-sdk is installed here")
    with pytest.raises(ImportError, match=r"pip install 'runstore\[synapse\]'"):
        import runstore.synapse  # noqa: F401


def test_seq_increases_per_writer_across_streams(root: Path) -> None:
    with open_run(root, env={}) as ctx:
        ctx.set_metrics({"a": 1.0}, "c")
        ctx.set_progress(1, 2)
        ctx.log("ev", {})
        ctx.set_metrics({"a": 2.0}, "c")
    run = read_run(ctx.run_dir)
    seqs = sorted(
        run.metrics.column("seq").to_pylist()
        + run.progress.column("seq").to_pylist()
        + run.events.column("seq").to_pylist()
    )
    assert seqs == list(range(1, len(seqs) + 1))
