"""Real processes: SIGKILL, SIGTERM, exit without end_log, many writers in one run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runstore import open_run, read_run

from .conftest import run_python

_KILLED_JOB = """
import sys
from runstore import open_run, WriterOptions
ctx = open_run(sys.argv[1], run_id="victim", env={}, options=WriterOptions(flush_interval=0.02))
index = 0
while True:
    ctx.set_metrics({"i": float(index)}, "train")
    ctx.set_progress(index % 100, 100, "train")
    index += 1
    if index % 5000 == 0:
        ctx.flush()
        print(index, flush=True)   # durable up to here
"""


def test_sigkill_loses_at_most_the_last_flush_and_the_run_stays_readable(root: Path) -> None:
    job = subprocess.Popen(
        [sys.executable, "-c", _KILLED_JOB, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert job.stdout is not None
    flushed = 0
    while flushed < 40_000:
        flushed = int(job.stdout.readline())
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    run = read_run(root / "victim")
    assert run.status == "crashed"
    assert run.problems == [], "a torn last line is not a problem"
    seqs = run.metrics.column("seq").to_pylist()
    values = run.metrics.column("value").to_pylist()
    assert values == [float(i) for i in range(len(values))], "a gap-free prefix, no duplicates"
    assert len(values) >= flushed
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert run.progress.num_rows >= flushed


def test_sigterm_flushes_and_marks_the_run_failed(root: Path) -> None:
    job = subprocess.Popen(
        [sys.executable, "-c", _KILLED_JOB, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert job.stdout is not None
    job.stdout.readline()
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=30) == -signal.SIGTERM
    run = read_run(root / "victim")
    assert run.status == "failed" and run.manifest.error == "terminated by SIGTERM"
    values = run.metrics.column("value").to_pylist()
    assert values == [float(i) for i in range(len(values))] and len(values) >= 5000
    # The writer closed: its final manifest written, every segment whole (no temp file).
    assert [writer.status for writer in run.writers] == ["closed"]
    files = list((root / "victim" / "streams").rglob("*"))
    assert not [f for f in files if f.name.endswith(".tmp")] and run.problems == []


def test_exit_without_end_log_and_uncaught_exception_fail_the_run(root: Path) -> None:
    forgot = run_python(
        """
        import sys
        from runstore import open_run
        ctx = open_run(sys.argv[1], run_id="forgot", env={})
        ctx.set_metrics({"a": 1.0}, "c")
        """,
        str(root),
    )
    assert forgot.returncode == 0, forgot.stderr
    run = read_run(root / "forgot")
    assert run.status == "failed" and "exited before end_log()" in (run.manifest.error or "")
    assert run.metrics.num_rows == 1

    crashed = run_python(
        """
        import sys
        from runstore import open_run
        ctx = open_run(sys.argv[1], run_id="raised", env={})
        ctx.set_metrics({"a": 1.0}, "c")
        raise ValueError("bad config")
        """,
        str(root),
    )
    assert crashed.returncode == 1 and "ValueError: bad config" in crashed.stderr
    run = read_run(root / "raised")
    assert run.status == "failed" and run.manifest.error == "uncaught ValueError: bad config"


def test_concurrent_writer_processes_into_one_run(root: Path) -> None:
    with open_run(root, run_id="shared", env={}) as ctx:
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    """
import sys
from runstore import attach_run
worker = attach_run(sys.argv[1])
for index in range(3000):
    worker.set_metrics({"i": float(index), "w": float(sys.argv[2])}, "work")
    if index % 500 == 0:
        worker.set_progress(index, 3000, "work")
        worker.log_message(f"worker {sys.argv[2]} at {index}")
worker.close()
print(worker.writer_id)
""",
                    str(ctx.run_dir),
                    str(n),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in range(3)
        ]
        ids = []
        for worker in workers:
            out, _ = worker.communicate(timeout=60)
            assert worker.returncode == 0
            ids.append(out.strip())
        ctx.set_metrics({"driver": 1.0}, "main")
    run = read_run(ctx.run_dir)
    assert run.status == "completed" and len(run.writers) == 4
    table = run.metrics.to_pylist()
    for worker_number, writer_id in enumerate(ids):
        rows = [r for r in table if r["writer"] == writer_id]
        assert len(rows) == 6000
        assert {r["value"] for r in rows if r["key"] == "w"} == {float(worker_number)}
        assert [r["value"] for r in rows if r["key"] == "i"] == [float(i) for i in range(3000)]
        seqs = [r["seq"] for r in rows if r["key"] == "i"]
        assert len(set(seqs)) == 3000
    assert len([m for m in run.messages() if m["text"].startswith("worker")]) == 18


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_its_own_writer(root: Path) -> None:
    with open_run(root, env={}) as ctx:
        ctx.set_metrics({"parent": 1.0}, "c")
        pid = os.fork()
        if pid == 0:  # the child
            try:
                ctx.set_metrics({"child": 1.0}, "c")
                ctx.logger.writer.close()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.05)
    run = read_run(ctx.run_dir)
    by_key = {r["key"]: r["writer"] for r in run.metrics.to_pylist()}
    assert set(by_key) == {"parent", "child"}
    assert by_key["parent"] == ctx.writer_id and by_key["child"] != ctx.writer_id
    assert run.status == "completed"
