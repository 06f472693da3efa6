"""Replay: a run's records into a logger in their order, once per target, resumable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from runstore import ReplayError, attach_run, open_run, replay
from runstore.ledger import Ledger, ledger_path
from runstore.reader import read_run
from runstore.replaying import _attachment, replay_records

from .conftest import replay_command, run_python


class Recorder:
    """A logger with the SDK BaseLogger's methods that writes down every call; it can
    fail (as a network would) at a given call."""

    def __init__(self, fail_at: int | None = None, refuse: str | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail_at = fail_at
        self.refuse = refuse

    def _call(self, *call: Any) -> None:
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise ConnectionError("the network went away")
        self.calls.append(call)

    def log(
        self, level: Any, event: str, data: dict[str, Any], file: Any = None, step: Any = None
    ) -> None:
        if event == self.refuse:
            raise ValueError(f"{event} is not taken here")
        self._call("log", level.value, event, data, file, step)

    def set_progress(self, current: Any, total: Any, step: Any = None) -> None:
        self._call("progress", current, total, step)

    def set_progress_failed(self, step: Any = None) -> None:
        self._call("progress_failed", step)

    def set_metrics(self, value: dict[str, Any], step: Any = None) -> None:
        self._call("metrics", value, step)

    def finish(self) -> None:
        self.calls.append(("finish",))

    def events(self) -> list[tuple[Any, ...]]:
        return [call for call in self.calls if call[0] == "log"]


def _make_run(root: Path, tmp_path: Path, steps: int = 3) -> Path:
    attached = tmp_path / "report.txt"
    attached.write_text("the report")
    with open_run(root, plugin="demo", run_id="r1") as ctx:
        for i in range(steps):
            ctx.set_progress(i + 1, steps, category="train")
            ctx.set_metrics({"loss": 1.0 / (i + 1), "epoch": i, "note": f"e{i}"}, "train")
            ctx.log_message(f"epoch {i}", "warning" if i == 1 else "info")
        ctx.logger.set_progress_failed("export")
        ctx.log("report", {"pages": 2}, str(attached), step="export")
        ctx.log_dev_event("cache warm", {"hits": 7})
        ctx.end_log()
    return root / "r1"


def test_every_record_reaches_the_logger_in_order_with_its_level_step_and_file(
    tmp_path: Path,
) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    logger = Recorder()
    report = replay(run_dir, logger)

    kinds = [call[0] if call[0] != "log" else call[2] for call in logger.calls]
    assert kinds == [
        *["progress", "metrics", "message"] * 3,
        "progress_failed",
        "report",
        "dev_event",
        "message",
        "finish",
    ]
    assert logger.calls[0] == ("progress", 1, 3, "train")
    assert logger.calls[4] == ("metrics", {"loss": 0.5, "epoch": 1, "note": "e1"}, "train")
    assert logger.calls[5] == ("log", "warning", "message", {"content": "epoch 1"}, None, None)
    assert logger.calls[9] == ("progress_failed", "export")
    _, level, _, data, file, step = logger.calls[10]
    assert (level, data, step) == ("info", {"pages": 2}, "export")
    assert Path(file).read_text() == "the report" and Path(file).is_relative_to(run_dir)
    assert logger.calls[11][1:4] == (
        "debug",
        "dev_event",
        {"message": "cache warm", "data": {"hits": 7}},
    )
    assert logger.calls[12][3] == {"content": "Plugin run is complete."}
    assert (report.records, report.sent, report.confirmed, report.finished) == (13, 13, 13, True)
    assert report.run_status == "completed" and report.problems == []
    assert not (run_dir / "replays").exists()  # no target: no ledger


def test_writers_of_one_run_are_interleaved_by_time_each_in_its_own_order(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    with open_run(root, run_id="r1") as owner, attach_run(root / "r1") as worker:
        for i in range(4):
            owner.log_message(f"owner {i}")
            worker.log_message(f"worker {i}")
    logger = Recorder()
    replay(root / "r1", logger)
    texts = [call[3]["content"] for call in logger.events()]
    assert [t for t in texts if t.startswith("owner")] == [f"owner {i}" for i in range(4)]
    assert [t for t in texts if t.startswith("worker")] == [f"worker {i}" for i in range(4)]
    assert texts[:2] == ["owner 0", "worker 0"]  # interleaved, not one writer after the other


def test_a_running_run_is_refused(tmp_path: Path) -> None:
    with open_run(tmp_path / "runs", run_id="r1") as ctx:
        ctx.log_message("still going")
        ctx.flush()
        with pytest.raises(ReplayError, match="still running"):
            replay(ctx.run_dir, Recorder())


def test_a_crashed_run_replays_what_it_wrote(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    code = """
        import os, sys
        from runstore import open_run
        ctx = open_run(sys.argv[1], run_id="r1")
        for i in range(5):
            ctx.log_message(f"m{i}")
        ctx.flush()
        os._exit(9)
    """
    assert run_python(code, str(root)).returncode == 9
    logger = Recorder()
    report = replay(root / "r1", logger, target="t")
    assert report.run_status == "crashed"
    assert [call[3]["content"] for call in logger.events()] == [f"m{i}" for i in range(5)]
    assert logger.calls[-1] == ("finish",)


def test_a_second_replay_to_the_same_target_sends_nothing_another_target_everything(
    tmp_path: Path,
) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    first = replay(run_dir, Recorder(), target="platform job 1")
    again = Recorder()
    second = replay(run_dir, again, target="platform job 1")
    other = Recorder()
    replay(run_dir, other, target="platform job 2")
    assert first.sent == 13 and first.finished
    assert again.calls == [("finish",)]
    assert (second.sent, second.skipped, second.finished) == (0, 13, True)
    assert len(other.calls) == 14
    assert ledger_path(run_dir, "platform job 1").is_file()


def test_a_stopped_replay_resumes_and_never_sends_an_event_twice(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    broken = Recorder(fail_at=7)
    with pytest.raises(ReplayError, match="replay stopped at record 7 of 13") as stopped:
        replay(run_dir, broken, target="t")
    assert stopped.value.report.confirmed == 7
    resumed = Recorder()
    report = replay(run_dir, resumed, target="t")

    # The state (latest progress, merged metrics of each step) is restated first...
    assert resumed.calls[:2] == [
        ("progress", 3, 3, "train"),
        ("metrics", {"loss": 0.5, "epoch": 1, "note": "e1"}, "train"),
    ]
    assert resumed.calls[2] == ("metrics", {"loss": 1 / 3, "epoch": 2, "note": "e2"}, "train")
    # ...and across both replays every event arrived exactly once, in order.
    events = broken.events() + resumed.events()
    everything = Recorder()
    replay(run_dir, everything)
    assert events == everything.events()
    assert (report.skipped, report.sent, report.finished) == (7, 6, True)


def test_a_record_the_logger_refuses_is_counted_and_not_asked_again(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    report = replay(run_dir, Recorder(refuse="dev_event"), target="t")
    assert report.refused == 1 and report.finished
    assert "refused by the logger" in report.problems[0]
    assert replay(run_dir, Recorder(refuse="dev_event"), target="t").refused == 0


def test_a_damaged_ledger_stops_the_replay_and_is_left_as_it_is(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    path = ledger_path(run_dir, "t")
    path.parent.mkdir()
    damaged = b'{"runstore_replay":1,"target":"t","run_id":"r1","records":13}\n{"through":\n{}\n'
    path.write_bytes(damaged)
    logger = Recorder()
    with pytest.raises(ReplayError, match="damaged at line 2"):
        replay(run_dir, logger, target="t")
    assert logger.calls == [] and path.read_bytes() == damaged


def test_a_ledger_of_another_run_is_refused(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    path = ledger_path(run_dir, "t")
    path.parent.mkdir()
    path.write_bytes(b'{"runstore_replay":1,"target":"t","run_id":"other","records":99}\n')
    with pytest.raises(ReplayError, match="written for run 'other' of 99 records"):
        replay(run_dir, Recorder(), target="t")


def test_a_torn_last_line_of_the_ledger_is_read_as_not_written(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    path = ledger_path(run_dir, "t")
    path.parent.mkdir()
    path.write_bytes(
        b'{"runstore_replay":1,"target":"t","run_id":"r1","records":13}\n{"through":4}\n{"thro'
    )
    logger = Recorder()
    report = replay(run_dir, logger, target="t")
    assert report.skipped == 4 and report.sent == 9


def test_two_replays_to_one_target_at_once_are_refused(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    busy = pytest.raises(ReplayError, match="another replay of this run to t is running")
    with Ledger(run_dir, "t", "r1", 13, durable=False), busy:
        replay(run_dir, Recorder(), target="t")
    assert replay(run_dir, Recorder(), target="t").finished


def test_records_left_in_doubt_are_not_sent_again_unless_asked(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    with Ledger(run_dir, "t", "r1", 13, durable=True) as ledger:
        ledger.record({"delivered": [0, 3]})
        ledger.record({"sending": [3, 6]})  # then the replay was killed
    skipping = Recorder()
    report = replay(run_dir, skipping, target="t")
    assert report.in_doubt == (3, 6) and report.skipped == 6
    assert skipping.events()[0][3] == {"content": "epoch 2"}

    again = tmp_path / "again"
    run_dir = _make_run(again, tmp_path)
    with Ledger(run_dir, "t", "r1", 13, durable=True) as ledger:
        ledger.record({"delivered": [0, 3]})
        ledger.record({"sending": [3, 6]})
    resending = Recorder()
    report = replay(run_dir, resending, target="t", resend_in_doubt=True)
    assert report.in_doubt is None and report.skipped == 3
    assert resending.events()[0][3] == {"content": "epoch 1"}


def test_a_long_ledger_is_compacted_and_still_says_the_same(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    with open_run(root, run_id="r1") as ctx:
        for i in range(6000):
            ctx.set_metrics({"x": float(i)}, "train")
    run_dir = root / "r1"
    report = replay(run_dir, Recorder(), target="t")
    assert report.sent == 6001  # and the end's message
    assert ledger_path(run_dir, "t").stat().st_size < 80 * 1024
    assert replay(run_dir, Recorder(), target="t").skipped == 6001


def test_an_attachment_outside_the_run_is_never_read(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (run_dir / "attachments" / "link").symlink_to(outside)
    problems: list[str] = []
    for name in ["/etc/passwd", "attachments/../../../secret.txt", "attachments/link", "x/y"]:
        assert _attachment(run_dir, name, problems) is None
    assert len(problems) == 4 and all("sent without it" in p for p in problems)
    copied = next((run_dir / "attachments").rglob("*report.txt"))
    name = copied.relative_to(run_dir).as_posix()
    assert _attachment(run_dir, name, problems) == copied


def test_an_attachment_gone_from_the_run_is_sent_as_the_event_without_its_file(
    tmp_path: Path,
) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    for copied in (run_dir / "attachments").rglob("*report.txt"):
        os.unlink(copied)
    logger = Recorder()
    report = replay(run_dir, logger)
    report_call = next(call for call in logger.events() if call[2] == "report")
    assert report_call[4] is None
    assert any("is missing; sent without it" in p for p in report.problems)


def test_replay_records_group_one_metrics_call_back_into_one_record(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path, steps=2)
    records = replay_records(read_run(run_dir))
    metrics = [r for r in records if type(r).__name__ == "MetricsRecord"]
    assert [m.values for m in metrics] == [
        {"loss": 1.0, "epoch": 0, "note": "e0"},
        {"loss": 0.5, "epoch": 1, "note": "e1"},
    ]


def test_a_replayed_run_is_still_the_same_run_to_unpack(tmp_path: Path) -> None:
    from runstore import pack, unpack

    run_dir = _make_run(tmp_path / "runs", tmp_path)
    packed = pack([run_dir], tmp_path / "r1.runs.tar.gz")
    unpack(packed.path, tmp_path / "elsewhere")
    replay(tmp_path / "elsewhere" / "r1", Recorder(), target="platform")
    again = unpack(packed.path, tmp_path / "elsewhere")
    assert again.present == ["r1"] and again.refused == []


def test_the_replay_command_without_the_sdk_says_what_to_install(tmp_path: Path) -> None:
    import importlib.util
    import subprocess

    if importlib.util.find_spec("synapse_sdk") is not None:
        pytest.skip("the SDK is installed here: tests/test_upload.py runs the command")
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    done = subprocess.run(
        replay_command(run_dir, "http://127.0.0.1:9", "j"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "needs the synapse-sdk (Python 3.12+): pip install 'runstore[synapse]'" in done.stderr
    assert not (run_dir / "replays").exists()
