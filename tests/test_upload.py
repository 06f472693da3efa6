"""Upload: a run replayed into a platform job through the real synapse-sdk JobLogger and
BackendClient, against a local stand-in for the platform (tests/platform_server.py)
that fails, dies and comes back; every record arrives once, in order.

Runs on .venv-sdk (Python 3.12, scripts/test-sdk); skipped where the SDK is missing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("synapse_sdk")

from synapse_sdk.clients.backend import BackendClient

from runstore import ReplayError, open_run, read_run, replay
from runstore.synapse import RunstoreLogger
from runstore.upload import upload_run

from .conftest import replay_command

SERVER = Path(__file__).parent / "platform_server.py"
FAST = {"log_flush_interval": 0.05, "progress_flush_interval": 0.05}


class Platform:
    """The stand-in platform as a process, restartable on its port."""

    def __init__(self, folder: Path) -> None:
        self.record = folder / "platform.jsonl"
        self.port = 0
        self.process: subprocess.Popen[str] | None = None

    def start(self, *faults: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER), str(self.record), "--port", str(self.port), *faults],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> BackendClient:
        return BackendClient(self.url, access_token="test-token")

    def arrived(self, kind: str = "log") -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        lines = [json.loads(line) for line in self.record.read_text().splitlines()]
        return [line for line in lines if line["kind"] == kind]


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    server = Platform(tmp_path)
    yield server
    server.stop()


def _make_run(root: Path, tmp_path: Path, messages: int = 300) -> Path:
    picture = tmp_path / "confusion.png"
    picture.write_bytes(b"\x89PNG not really")
    with open_run(root, plugin="demo", run_id="r1") as ctx:
        for i in range(messages):
            ctx.set_progress(i + 1, messages, category="train")
            ctx.set_metrics({"loss": 1.0 / (i + 1)}, "train")
            ctx.log_message(f"step {i}", "warning" if i % 50 == 0 else "info")
        ctx.log("visualization", {"index": 0}, str(picture), step="evaluate")
        ctx.set_metrics({"accuracy": 0.9}, "evaluate")
        ctx.log_dev_event("done", {"n": messages})
        ctx.end_log()
    return root / "r1"


def _expected(run_dir: Path) -> list[tuple[str, str, Any]]:
    """(event, level, data) of every event of the run, in replay order."""
    return [(call[2], call[1], call[3]) for call in _recorded_events(run_dir)]


def _recorded_events(run_dir: Path) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    class _Events:
        def log(
            self, level: Any, event: str, data: Any, file: Any = None, step: Any = None
        ) -> None:
            calls.append(("log", level.value, event, data))

        def set_progress(self, *args: Any, **kwargs: Any) -> None: ...
        def set_progress_failed(self, *args: Any, **kwargs: Any) -> None: ...
        def set_metrics(self, *args: Any, **kwargs: Any) -> None: ...
        def finish(self) -> None: ...

    replay(run_dir, _Events())
    return calls


def _got(platform: Platform) -> list[tuple[str, str, Any]]:
    return [(e["event"], e["level"], e["data"]) for e in platform.arrived()]


def _quiet_upload(*args: Any, **kwargs: Any) -> Any:
    with contextlib.redirect_stdout(io.StringIO()):  # the JobLogger echoes every record
        return upload_run(*args, **kwargs)


def test_every_record_arrives_once_in_order_though_requests_fail(
    tmp_path: Path, platform: Platform
) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    platform.start("--fail-every", "3")
    report = _quiet_upload(run_dir, platform.client(), "job-1", **FAST, log_batch_size=40)

    assert _got(platform) == _expected(run_dir)
    assert len(_expected(run_dir)) == 303
    assert report.confirmed == report.sent == report.records and report.finished
    file_entry = next(e for e in platform.arrived() if e["event"] == "visualization")
    assert file_entry["file"].startswith("data:") and file_entry["step"] == "evaluate"
    updates = [update["body"] for update in platform.arrived("update_job")]
    metrics = [body["metrics_record"] for body in updates if "metrics_record" in body]
    progress = [body["progress_record"] for body in updates if "progress_record" in body]
    assert metrics[-1]["record"]["steps"] == {
        "train": {"loss": 1 / 300},
        "evaluate": {"accuracy": 0.9},
    }
    assert progress[-1]["record"]["steps"]["train"]["percent"] == 100.0

    requests_before = len(platform.record.read_text().splitlines())
    again = _quiet_upload(run_dir, platform.client(), "job-1", **FAST)
    assert (again.sent, again.skipped, again.finished) == (0, report.records, True)
    assert len(platform.record.read_text().splitlines()) == requests_before


def test_a_platform_that_dies_and_comes_back_gets_every_record_once(
    tmp_path: Path, platform: Platform
) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    platform.start("--exit-after", "2")  # answers two log requests, then is gone
    import threading

    def come_back() -> None:
        assert platform.process is not None
        platform.process.wait()
        time.sleep(1.0)
        platform.start()

    threading.Thread(target=come_back, daemon=True).start()
    report = _quiet_upload(run_dir, platform.client(), "job-1", **FAST, log_batch_size=40)
    assert _got(platform) == _expected(run_dir)
    assert report.finished and report.unconfirmed == 0


def test_a_platform_that_stays_away_stops_the_replay_which_resumes_later(
    tmp_path: Path, platform: Platform
) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path)
    platform.start("--exit-after", "2")
    client = platform.client()
    with pytest.raises(ReplayError, match="took no record for 2 s") as stopped:
        _quiet_upload(run_dir, client, "job-1", **FAST, log_batch_size=40, stall_timeout=2)
    assert 0 < stopped.value.report.confirmed < 303  # two batches, then nothing
    assert "run the replay again" in str(stopped.value)

    platform.start()  # same port: the same target
    report = _quiet_upload(run_dir, platform.client(), "job-1", **FAST)
    assert _got(platform) == _expected(run_dir)
    assert report.skipped > 0 and report.finished


def test_a_slow_platform_makes_the_replay_wait_and_nothing_is_dropped(
    tmp_path: Path, platform: Platform
) -> None:
    # 6,000 entries against a JobLogger that drops past 2,000 queued.
    run_dir = _make_run(tmp_path / "runs", tmp_path, messages=6000)
    platform.start("--delay", "0.05")
    report = _quiet_upload(run_dir, platform.client(), "job-1", **FAST)
    assert report.confirmed == report.records and report.unconfirmed == 0
    assert _got(platform) == _expected(run_dir)


def _cli(run_dir: Path, platform: Platform, *extra: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        replay_command(run_dir, platform.url, "job-9", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def test_the_cli_killed_mid_replay_resumes_without_sending_twice(
    tmp_path: Path, platform: Platform
) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path, messages=2000)
    platform.start("--hold-after", "3")  # stores the third batch, never answers it
    replayer = _cli(run_dir, platform, SYNAPSE_ACCESS_TOKEN="secret")
    held = Path(f"{platform.record}.held")
    deadline = time.monotonic() + 60
    while not held.exists():
        assert time.monotonic() < deadline and replayer.poll() is None
        time.sleep(0.05)
    replayer.send_signal(signal.SIGKILL)
    replayer.wait()
    platform.stop()
    platform.start()

    resumed = _cli(run_dir, platform, "--json", SYNAPSE_ACCESS_TOKEN="secret")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    summary = json.loads(out)
    assert summary["finished"] and summary["in_doubt"] is not None
    assert _got(platform) == _expected(run_dir)  # the held batch was stored: not sent again
    assert summary["skipped"] > 0


def test_the_cli_reads_the_token_from_the_environment_only(
    tmp_path: Path, platform: Platform
) -> None:
    run_dir = _make_run(tmp_path / "runs", tmp_path, messages=3)
    platform.start()
    env = {k: v for k, v in os.environ.items() if k != "SYNAPSE_ACCESS_TOKEN"}
    missing = subprocess.run(
        replay_command(run_dir, platform.url, "j"),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert missing.returncode == 2 and "set SYNAPSE_ACCESS_TOKEN" in missing.stderr
    flag = _cli(run_dir, platform, "--token", "x")
    assert flag.wait(timeout=60) == 2
    done = _cli(run_dir, platform, SYNAPSE_ACCESS_TOKEN="secret")
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    assert "replayed run r1 (completed) into job job-9: 13 of 13 records sent, 13 confirmed" in out
    assert len(platform.arrived()) == 6


def test_a_run_replays_into_another_runstore_run_through_the_sdk_logger(tmp_path: Path) -> None:
    source = _make_run(tmp_path / "runs", tmp_path, messages=5)
    with open_run(tmp_path / "copies", run_id="copy") as target:
        report = replay(source, RunstoreLogger(target))
    assert report.finished
    original, copy = read_run(source), read_run(tmp_path / "copies" / "copy")
    assert copy.latest_metrics() == original.latest_metrics()
    assert [(m["level"], m["text"]) for m in copy.messages(dev=True)] == [
        (m["level"], m["text"]) for m in original.messages(dev=True)
    ]
    assert copy.status == "completed"


def test_the_offline_page_replay_commands_run_as_written(
    tmp_path: Path, platform: Platform
) -> None:
    page = (Path(__file__).parent.parent / "docs" / "offline.md").read_text()
    block = re.findall(r"```sh\n(.*?)```", page, flags=re.DOTALL)[1]
    platform.start()
    (tmp_path / "token.txt").write_text("secret")
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    outputs = []
    for line in block.splitlines():
        command = line.replace("https://synapse.example.com", platform.url)
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, env=environment, capture_output=True, text=True
        )
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout)
    assert "into job 5f0c2f9e" in outputs[1] and "confirmed" in outputs[1]
    assert "already replayed into job 5f0c2f9e; nothing sent" in outputs[2]
    assert {entry["job"] for entry in platform.arrived()} == {"5f0c2f9e"}
