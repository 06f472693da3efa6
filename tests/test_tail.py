"""Following runs: exactly once, in order, across seals, writers, crashes and restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runstore import open_run, read_run
from runstore.tail import GAP_SECONDS, STATUS, Follower, TailRecord, _Writer, follow

from .conftest import SAMPLE_RUNS, run_python

_JOB = """
import sys, time
from runstore import WriterOptions, open_run, attach_run
root, calls, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
options = WriterOptions(flush_interval=0.01, seal_bytes=4_000)
ctx = open_run(root, run_id="job", env={}, options=options) if mode != "attach" else attach_run(
    root + "/job", env={}, options=options)
for step in range(calls):
    ctx.set_metrics({"loss": 1.0 / (step + 1), "step": step}, "train")
    if step % 25 == 0:
        ctx.log_message(f"step {step}", "info")
        time.sleep(0.01)
if mode == "crash":
    ctx.flush()
    import os, signal
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "attach":
    ctx.close()
else:
    ctx.end_log()
"""


def collect(follower: Follower, timeout: float = 30) -> list[TailRecord]:
    """Every record of a follower, stopping it if it runs past `timeout`."""
    records: list[TailRecord] = []
    timer = threading.Timer(timeout, follower.stop)
    timer.start()
    try:
        records.extend(follower)
    finally:
        timer.cancel()
    return records


def start_job(root: Path, calls: int, mode: str = "complete") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _JOB, str(root), str(calls), mode], text=True)


def wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def check_exactly_once(records: list[TailRecord]) -> dict[str | None, list[int]]:
    by_writer: dict[str | None, list[int]] = {}
    for record in records:
        if record.stream != STATUS:
            by_writer.setdefault(record.writer, []).append(record.seq or 0)
    for seqs in by_writer.values():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # in order, no gap, no repeat
    return by_writer


def test_a_live_run_is_followed_exactly_once_across_seals(root: Path) -> None:
    job = start_job(root, 2_000)
    wait_for(lambda: (root / "job" / "run.json").exists())
    records = collect(follow(root / "job", from_start=True))
    assert job.wait(timeout=30) == 0
    check_exactly_once(records)
    metrics = [r for r in records if r.stream == "metrics"]
    assert [r.data["values"]["step"] for r in metrics] == list(range(2_000))
    assert records[-1].stream == STATUS and records[-1].data["status"] == "completed"
    sealed = list((root / "job" / "streams" / "metrics").glob("*.parquet"))
    assert len(sealed) > 2  # the job sealed segments while it was followed


def test_a_killed_writer_ends_the_follow_as_crashed(root: Path) -> None:
    job = start_job(root, 300, "crash")
    wait_for(lambda: (root / "job" / "run.json").exists())
    records = collect(follow(root / "job", from_start=True))
    job.wait(timeout=30)
    assert records[-1].data["status"] == "crashed"
    assert len([r for r in records if r.stream == "metrics"]) == 300


def test_several_writers_are_each_delivered_in_order(root: Path) -> None:
    with open_run(root, run_id="job", env={}) as ctx:
        ctx.set_metrics({"loss": 1.0}, "driver")
        attached = run_python(_JOB, str(root), "200", "attach")
        assert attached.returncode == 0, attached.stderr
    by_writer = check_exactly_once(collect(follow(root / "job", from_start=True)))
    run = read_run(root / "job")
    expected: dict[str, set[int]] = {}
    for table in (run.events, run.progress, run.metrics):
        for writer, seq in zip(table["writer"].to_pylist(), table["seq"].to_pylist(), strict=True):
            expected.setdefault(writer, set()).add(seq)
    assert len(by_writer) == 2
    assert {w: set(seqs) for w, seqs in by_writer.items()} == expected
    assert sorted(len(seqs) for seqs in by_writer.values())[1] == 208  # 200 metrics, 8 messages


def test_a_root_is_followed_with_runs_that_appear_later(root: Path) -> None:
    make = (
        "from runstore import open_run\n"
        "with open_run({root!r}, run_id={name!r}, env={{}}) as c:\n"
        "    c.log_message('hello from ' + {name!r}, 'info')\n"
    )
    assert run_python(make.format(root=str(root), name="before")).returncode == 0
    follower = follow(root)
    seen: list[TailRecord] = []
    thread = threading.Thread(target=follower.run, args=(seen.append,))
    thread.start()
    time.sleep(0.3)
    assert run_python(make.format(root=str(root), name="after")).returncode == 0
    wait_for(lambda: any(r.stream == STATUS and r.run == "after" for r in seen))
    follower.stop()
    thread.join(timeout=10)
    texts = [r.data["data"]["content"] for r in seen if r.stream == "events"]
    assert "hello from after" in texts and "hello from before" not in texts


def test_runs_that_ended_before_following_began_are_not_read(root: Path) -> None:
    import shutil

    shutil.copytree(SAMPLE_RUNS / "demo-train", root / "finished")
    segment = next((root / "finished" / "streams" / "metrics").glob("*.parquet"))
    segment.write_bytes(b"PAR1 damaged beyond reading PAR1")
    follower = follow(root)
    seen: list[TailRecord] = []
    thread = threading.Thread(target=follower.run, args=(seen.append,))
    thread.start()
    time.sleep(0.5)
    follower.stop()
    thread.join(timeout=10)
    assert [r.stream for r in seen] == [STATUS] and seen[0].data["status"] == "completed"
    assert follower.problems == []  # its segments were never opened
    replay = collect(follow(root, from_start=True), timeout=5)
    assert any(r.stream == STATUS for r in replay)  # from the start it is read


def test_its_own_reads_never_wake_the_follower(root: Path) -> None:
    import resource

    ctx = open_run(root, run_id="idle", env={})
    for step in range(50):
        ctx.set_metrics({"loss": 1 / (step + 1)}, "train")
    ctx.flush()
    follower = follow(root / "idle", from_start=True)
    seen: list[TailRecord] = []
    thread = threading.Thread(target=follower.run, args=(seen.append,))
    thread.start()
    wait_for(lambda: len(seen) >= 50)
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(2)  # the run writes nothing: the follower has nothing to do
    after = resource.getrusage(resource.RUSAGE_SELF)
    ctx.end_log()
    ctx.close()
    thread.join(timeout=10)
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # Waking on its own reads, it spent the whole 2 s reading; idle it spends ~0.
    assert spent < 0.5, f"{spent:.2f} s of CPU in 2 s of nothing to do"


def test_a_saved_position_resumes_without_missing_or_repeating(root: Path) -> None:
    ctx = open_run(root, run_id="job", env={})
    for step in range(50):
        ctx.set_metrics({"step": step}, "train")
    ctx.flush()
    first = follow(root / "job", from_start=True)
    taken: list[TailRecord] = []
    for record in first:
        taken.append(record)
        if len(taken) == 20:
            first.stop()
            break
    position = json.loads(json.dumps(first.position()))
    for step in range(50, 80):
        ctx.set_metrics({"step": step}, "train")
    ctx.end_log()
    ctx.close()
    rest = collect(follow(root / "job", position=position))
    steps = [r.data["values"]["step"] for r in taken + rest if r.stream == "metrics"]
    assert steps == list(range(80))


def test_polling_gives_the_same_records_as_inotify(root: Path) -> None:
    job = start_job(root, 500)
    wait_for(lambda: (root / "job" / "run.json").exists())
    polled = collect(follow(root / "job", from_start=True, polling=True, interval=0.05))
    assert job.wait(timeout=30) == 0
    notified = collect(follow(root / "job", from_start=True))

    def records(found: list[TailRecord]) -> list[object]:
        return [(r.writer, r.seq, r.data) for r in found if r.stream != STATUS]

    assert records(polled) == records(notified) and len(records(polled)) == 521
    assert polled[-1].data["status"] == notified[-1].data["status"] == "completed"


def test_a_torn_line_is_waited_for_and_a_corrupt_one_reported_once(root: Path) -> None:
    from runstore.jsonl import header_line

    ctx = open_run(root, run_id="job", env={})  # running while we write a segment by hand
    segment = root / "job" / "streams" / "metrics" / "wother-abcdef-000001.jsonl"
    torn = b'{"ts_ns":[1700000000000000000],"seq":[2],"category":["c"],"values":[{"b":2.0}]}'
    with open(segment, "wb") as handle:
        handle.write(header_line("metrics", "wother-abcdef", 1))
        handle.write(
            b'{"ts_ns":[1700000000000000000],"seq":[1],"category":["c"],"values":[{"a":1.0}]}\n'
        )
        handle.write(b"garbage that is not json\n")
        handle.write(torn[:20])  # half a line: to be waited for
    follower = follow(root / "job", from_start=True)
    seen: list[TailRecord] = []
    thread = threading.Thread(target=follower.run, args=(seen.append,))
    thread.start()
    wait_for(lambda: any(r.writer == "wother-abcdef" for r in seen))
    with open(segment, "ab") as handle:
        handle.write(torn[20:] + b"\n")
    wait_for(lambda: any(r.seq == 2 and r.writer == "wother-abcdef" for r in seen))
    time.sleep(0.3)
    assert [r.data["values"] for r in seen if r.writer == "wother-abcdef"] == [
        {"a": 1.0},
        {"b": 2.0},
    ]
    assert len(follower.problems) == 1 and "not valid JSON" in follower.problems[0]
    assert str(segment) in follower.problems[0]
    follower.stop()
    thread.join(timeout=10)
    ctx.close()


def test_a_gap_is_waited_for_then_given_up_and_a_late_record_still_delivered() -> None:
    def record(seq: int) -> TailRecord:
        from datetime import UTC, datetime

        return TailRecord("r", "metrics", datetime.now(UTC), "w", seq)

    writer = _Writer()
    for seq in (1, 2, 4):
        writer.add(record(seq))
    assert [r.seq for r in writer.ready(0.0, final=False)] == [1, 2]
    assert writer.ready(GAP_SECONDS / 2, final=False) == []
    assert [r.seq for r in writer.ready(GAP_SECONDS * 2, final=False)] == [4]
    late = writer.add(record(3))
    assert late is not None and late.seq == 3
    assert writer.add(record(4)) is None and writer.ready(10.0, final=True) == []


def test_follow_refuses_a_missing_path(tmp_path: Path) -> None:
    from runstore import RunDirectoryError

    with pytest.raises(RunDirectoryError, match="no such run directory"):
        follow(tmp_path / "missing")


def _tail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runstore.cli", "tail", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("run", "code"), [("demo-train", 0), ("demo-upload", 3), ("demo-crashed", 4)]
)
def test_tail_exits_with_how_the_run_ended(run: str, code: int) -> None:
    result = _tail(str(SAMPLE_RUNS / run), "--json")
    assert result.returncode == code, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["stream"] for line in lines] == ["status"]


def test_tail_json_from_start_filters_by_kind() -> None:
    result = _tail(str(SAMPLE_RUNS / "demo-train"), "--json", "--from-start", "--only", "messages")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {line["stream"] for line in lines} == {"events", "status"}
    assert all(line["event"] == "message" for line in lines if line["stream"] == "events")
    everything = _tail(str(SAMPLE_RUNS / "demo-train"), "--json", "--from-start", "--dev")
    kinds = {json.loads(line).get("event") for line in everything.stdout.splitlines()}
    assert {"message", "dev_event", "step"} <= kinds
    old_enough = _tail(str(SAMPLE_RUNS / "demo-train"), "--json", "--since", "100000d", "--dev")
    assert old_enough.stdout == everything.stdout  # the sample run is younger than that
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    none_yet = _tail(str(SAMPLE_RUNS / "demo-train"), "--json", "--since", future)
    assert [json.loads(line)["stream"] for line in none_yet.stdout.splitlines()] == ["status"]
    bad = _tail(str(SAMPLE_RUNS / "demo-train"), "--only", "colours")
    assert bad.returncode == 2 and "choose from" in bad.stderr
    since = _tail(str(SAMPLE_RUNS / "demo-train"), "--since", "yesterday-ish")
    assert since.returncode == 2 and "30s, 10m" in since.stderr


def test_tail_terminal_view_shows_bars_metrics_and_messages() -> None:
    result = _tail(str(SAMPLE_RUNS / "demo-train"))
    assert result.returncode == 0, result.stderr
    for text in ("overall", "100.0%", "train/loss", "Training finished", "completed"):
        assert text in result.stdout, text
