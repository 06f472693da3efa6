"""runstore against the loggers people use today, the same work for each, interleaved.

    .venv/bin/python benchmarks/peers/run.py            # every peer, default sizes (~15 min)
    .venv/bin/python benchmarks/peers/run.py --peers runstore,tensorboardx --repeats 5
    .venv/bin/python benchmarks/peers/run.py --steps 1000 --runs 20 --repeats 1   # a smoke run

Each peer runs in a virtualenv of its own, made on first use from
`benchmarks/peers/requirements/PEER.txt` (pinned; kept under `--venvs`, default
~/.cache/runstore-peers); runstore and the plain-JSONL baseline run in this
interpreter, its modules byte-compiled first as `pip install` leaves an installed
package (a checkout under PYTHONDONTWRITEBYTECODE would compile them in every
process, ~20 ms). A peer that does not install is reported and left out. The workloads,
each in fresh processes (`worker.py`, the peer's adapter in `adapters/`):

- W1 logging: `--steps` steps of two metrics (loss, accuracy): steps/s while logging
  (open to close) and as a whole process, peak RSS, bytes on disk per point. A peer
  still logging after `--budget` seconds stops there (its rate is over what it did);
  one that did not finish a size is not run at the next.
- tiny job: a process that imports the logger, opens a run, logs one step and ends:
  wall time and peak RSS (also of the processes it starts, sampled, for W&B's service).
- W3 cross-run: `--runs` runs (or as many as `--setup-budget` allows) of
  `--run-steps` steps; "final loss per run, sorted" with each peer's own API, in a
  fresh process; the answer is checked against what was logged. runstore is asked
  as jobs left the root (each repeat a copy of it: its first query starts archiving
  in the background) and again after archiving (what `runstore sql`/`ui` do by
  themselves); Aim's UI index is built first (without it Aim's query sees no run).
- W4 crash: a process logs as fast as it can and is SIGKILLed after `--crash-seconds`
  (stopped first, so the count of calls that returned is exact); then the records a
  reader finds, against those logged.
- W5 live: one process logs a step every `--live-interval` s; another, started first,
  follows with the peer's own means (runstore's tailer; others are read again every
  50 ms); the delay from a call's return to the reader seeing it.

Results: `--out` (default benchmarks/results/) gets peers-DATE.json (every sample) and
peers-DATE.md, copied to peers-latest.md: medians, and ratios runstore/peer (made by
`report.py`).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from report import markdown

from runstore.pruning import folder_bytes

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORKER = HERE / "worker.py"
PEERS = ("runstore", "jsonl", "tensorboardx", "wandb", "mlflow", "dvclive", "aim")
#: Peers that run in this interpreter: runstore itself, and the baseline.
LOCAL = ("runstore", "jsonl")
ENVIRONMENT = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_ERROR_REPORTING": "false",
    "MLFLOW_ALLOW_FILE_STORE": "true",
    "DVCLIVE_OPEN": "false",
    "DVC_NO_ANALYTICS": "1",
    "AIM_UI_TELEMETRY_ENABLED": "0",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PYTHONWARNINGS": "ignore",
}


class PeerUnavailable(Exception):
    """A peer's virtualenv could not be made (the reason is reported, the peer left out)."""


@dataclass
class Peer:
    name: str
    python: str
    adapter: Path
    version: str


@dataclass
class Outcome:
    lines: list[dict[str, Any]]
    wall: float
    peak_rss: int  # bytes, the worker process itself (its VmHWM, from the kernel)
    tree_rss: int  # bytes, the worker and what it started, sampled
    returncode: int
    stderr: str = ""

    @property
    def result(self) -> dict[str, Any]:
        if self.returncode != 0 or not self.lines:
            raise RuntimeError(f"worker failed ({self.returncode}): {self.stderr[-2000:]}")
        return self.lines[-1]


@dataclass
class Results:
    samples: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, workload: str, peer: str, sample: dict[str, Any]) -> None:
        self.samples.setdefault(workload, {}).setdefault(peer, []).append(sample)


# -- virtualenvs --------------------------------------------------------------------


def make_peer(name: str, venvs: Path) -> Peer:
    adapter = HERE / "adapters" / f"{name}.py"
    if name in LOCAL:
        version = _local_version(name)
        if name == "runstore":  # as installed: pip byte-compiles what it installs
            compileall.compile_dir(REPO / "runstore", quiet=1)
        return Peer(name, sys.executable, adapter, version)
    requirements = HERE / "requirements" / f"{name}.txt"
    text = requirements.read_text()
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    venv = venvs / f"{name}-{digest}"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists():
        shutil.rmtree(venv, ignore_errors=True)
        print(f"  making a virtualenv for {name} in {venv} ...", flush=True)
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True)
        installed = made.returncode == 0 and (
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
                capture_output=True,
                text=True,
            )
        )
        if not installed or installed.returncode != 0:
            reason = (installed.stderr if installed else made.stderr.decode()).strip()
            raise PeerUnavailable(reason.splitlines()[-1] if reason else "venv failed")
        marker.write_text(text)
    pins = [line for line in text.splitlines() if line and not line.startswith("#")]
    return Peer(name, str(python), adapter, ", ".join(pins))


def _local_version(name: str) -> str:
    if name == "jsonl":
        return f"python {platform.python_version()} json"
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"runstore {commit or 'checkout'}"


# -- processes ----------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    pending.extend(int(child) for child in handle.read().split())
    return found


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


class _TreeSampler(threading.Thread):
    """The highest summed RSS of a process and its descendants, every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak = pid, 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            self.peak = max(self.peak, sum(_rss(pid) for pid in _tree(self.pid)))


def spawn(peer: Peer, task: str, **arguments: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [peer.python, str(WORKER), str(peer.adapter), task, json.dumps(arguments)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENVIRONMENT},
        start_new_session=True,  # its helpers (W&B's service) are killed with it
    )


def finish(process: subprocess.Popen[str], started: float, sampler: _TreeSampler) -> Outcome:
    """Wait for `process`, read its output and its peak memory (from the kernel)."""
    out, err = [], []
    readers = [
        threading.Thread(target=lambda: out.append(process.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err.append(process.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    sampler.stopped.set()
    _kill_group(process.pid)
    for reader in readers:
        reader.join(5)
    lines = [json.loads(line) for line in "".join(out).splitlines() if line.startswith("{")]
    # The worker's own VmHWM when it ended normally: the kernel's ru_maxrss of a child
    # includes the driver's memory it was forked from (exec keeps that high-water mark).
    reported = [line["peak_rss"] for line in lines if "peak_rss" in line]
    lines = [line for line in lines if "peak_rss" not in line]
    peak = reported[-1] if reported and reported[-1] else usage.ru_maxrss * 1024
    return Outcome(lines, wall, peak, max(sampler.peak, peak), process.returncode, "".join(err))


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_worker(peer: Peer, task: str, **arguments: Any) -> Outcome:
    started = time.perf_counter()
    process = spawn(peer, task, **arguments)
    sampler = _TreeSampler(process.pid)
    sampler.start()
    return finish(process, started, sampler)


@contextlib.contextmanager
def scratch(base: Path, name: str) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- workloads ----------------------------------------------------------------------


def w1(peer: Peer, base: Path, steps: int, budget: float) -> dict[str, Any]:
    with scratch(base, peer.name) as directory:
        outcome = run_worker(peer, "log", directory=str(directory), steps=steps, budget=budget)
        result = outcome.result
        size = folder_bytes(directory)
    done = result["steps"]
    return {
        "steps": done,
        "finished": done == steps,
        "steps_per_second": done / result["seconds"],
        "process_steps_per_second": done / outcome.wall,
        "wall": outcome.wall,
        "peak_rss": outcome.peak_rss,
        "tree_rss": outcome.tree_rss,
        "bytes_per_point": size / (2 * done),
    }


def tiny(peer: Peer, base: Path) -> dict[str, Any]:
    with scratch(base, peer.name) as directory:
        outcome = run_worker(peer, "tiny", directory=str(directory))
        outcome.result  # noqa: B018 - raises if the job failed
    return {"wall": outcome.wall, "peak_rss": outcome.peak_rss, "tree_rss": outcome.tree_rss}


def w3_setup(peer: Peer, directory: Path, runs: int, steps: int, budget: float) -> dict[str, Any]:
    made = run_worker(
        peer, "make_runs", directory=str(directory), runs=runs, steps=steps, budget=budget
    ).result
    return {"runs": made["runs"], "seconds": made["seconds"]}


def w3_query(peer: Peer, directory: Path, runs: int, steps: int) -> dict[str, Any]:
    outcome = run_worker(peer, "query", directory=str(directory))
    result = outcome.result
    expected = [(f"run-{n:04d}", 1.0 / steps + n / 1000) for n in range(runs)]
    answer = [(name, value) for name, value in result["answer"]]
    correct = len(answer) == len(expected) and all(
        name == want_name and abs(value - want) < 1e-5
        for (name, value), (want_name, want) in zip(answer, expected, strict=True)
    )
    return {
        "seconds": result["seconds"],
        "wall": outcome.wall,
        "peak_rss": outcome.peak_rss,
        "correct": correct,
    }


def w4(peer: Peer, base: Path, seconds: float) -> dict[str, Any]:
    with scratch(base, peer.name) as directory:
        counter = directory / "counter"
        counter.write_bytes(bytes(8))
        data = directory / "data"
        process = spawn(peer, "crash", directory=str(data), counter=str(counter))
        assert process.stdout is not None
        process.stdout.readline()  # started
        time.sleep(seconds)
        os.kill(process.pid, signal.SIGSTOP)
        logged = int.from_bytes(counter.read_bytes()[:8], "little")
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        time.sleep(1.0)  # helper processes (W&B's service) may still write what they hold
        _kill_group(process.pid)
        found = run_worker(peer, "count", directory=str(data))
        readable = found.result["steps"] if found.returncode == 0 else None
    return {
        "logged": logged,
        "readable": readable,
        # A step under way when the process was stopped can be on disk already.
        "lost": None if readable is None else max(0, logged - readable),
        "error": None if readable is not None else found.stderr.strip().splitlines()[-1:],
    }


def w5(peer: Peer, base: Path, steps: int, interval: float, timeout: float) -> dict[str, Any]:
    with scratch(base, peer.name) as directory:
        data = directory / "data"
        reader = spawn(
            peer,
            "live_read",
            directory=str(data),
            expect=steps,
            timeout=steps * interval + timeout,
        )
        assert reader.stdout is not None
        reader.stdout.readline()  # ready
        time.sleep(0.5)  # the reader is following before the first record
        written = run_worker(
            peer, "live_write", directory=str(data), steps=steps, interval=interval
        )
        sent = {line["step"]: line["t"] for line in written.lines if "step" in line}
        try:
            out, _ = reader.communicate(timeout=steps * interval + timeout + 30)
        except subprocess.TimeoutExpired:
            reader.kill()
            out, _ = reader.communicate()
        _kill_group(reader.pid)
    seen = {}
    for line in out.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if "seen" in record:
                seen.setdefault(record["seen"] - 1, record["t"])
    delays = [seen[step] - sent[step] for step in sent if step in seen]
    return {
        "sent": len(sent),
        "seen": len(delays),
        "median_delay": statistics.median(delays) if delays else None,
        "max_delay": max(delays) if delays else None,
    }


# -- the run ------------------------------------------------------------------------


def _each(peers: list[Peer], label: str) -> Iterator[Peer]:
    for peer in peers:
        print(f"  {label}: {peer.name}", flush=True)
        yield peer


def bench(peers: list[Peer], args: argparse.Namespace, base: Path, results: Results) -> None:
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1} of {args.repeats}", flush=True)
        for peer in _each(peers, "tiny job"):
            results.add("tiny", peer.name, tiny(peer, base))
        running = list(peers)
        for steps in args.steps:
            for peer in _each(running, f"W1 {steps:,} steps"):
                results.add(f"W1 {steps}", peer.name, w1(peer, base, steps, args.budget))
            # A peer that could not finish this size in the budget skips the next ones.
            running = [
                peer
                for peer in running
                if all(s["finished"] for s in results.samples[f"W1 {steps}"][peer.name])
            ]
        for peer in _each(peers, "W4 crash"):
            results.add("W4", peer.name, w4(peer, base, args.crash_seconds))
        for peer in _each(peers, "W5 live"):
            results.add(
                "W5",
                peer.name,
                w5(peer, base, args.live_steps, args.live_interval, args.live_timeout),
            )
    print("W3: making the runs", flush=True)
    roots: dict[str, tuple[Path, int]] = {}
    for peer in _each(peers, "W3 setup"):
        directory = base / f"w3-{peer.name}"
        setup = w3_setup(peer, directory, args.runs, args.run_steps, args.setup_budget)
        results.add("W3 setup", peer.name, setup)
        roots[peer.name] = (directory, setup["runs"])
    aim = next((peer for peer in peers if peer.name == "aim"), None)
    if aim is not None:
        indexed = run_worker(aim, "archive", directory=str(roots["aim"][0]))
        results.add("W3 setup", "aim index", {"seconds": indexed.result["seconds"]})
    for repeat in range(args.repeats):
        for peer in _each(peers, "W3 query"):
            directory, made = roots[peer.name]
            if peer.name == "runstore":
                # Its query starts archiving the root in the background: each repeat
                # asks a copy of the root as the jobs left it, or the later ones would
                # find the archive the first one made.
                copy = base / f"w3-runstore-{repeat}"
                shutil.copytree(directory, copy, ignore=shutil.ignore_patterns(".runstore"))
                directory = copy
            results.add("W3", peer.name, w3_query(peer, directory, made, args.run_steps))
    own = next((peer for peer in peers if peer.name == "runstore"), None)
    if own is not None:
        directory, made = roots["runstore"]
        archived = run_worker(own, "archive", directory=str(directory))
        results.add("W3 setup", "runstore archive", {"seconds": archived.result["seconds"]})
        for _ in range(args.repeats):
            results.add("W3", "runstore, archived", w3_query(own, directory, made, args.run_steps))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated")
    parser.add_argument("--steps", default="100000,1000000", help="W1 sizes, comma-separated")
    parser.add_argument("--budget", type=float, default=20.0, help="W1 seconds a run at most")
    parser.add_argument("--runs", type=int, default=1000, help="W3 runs")
    parser.add_argument("--run-steps", type=int, default=20, help="W3 steps a run")
    parser.add_argument("--setup-budget", type=float, default=60.0, help="W3 setup seconds")
    parser.add_argument("--crash-seconds", type=float, default=2.0)
    parser.add_argument("--live-steps", type=int, default=20)
    parser.add_argument("--live-interval", type=float, default=0.2)
    parser.add_argument("--live-timeout", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--venvs", type=Path, default=Path.home() / ".cache" / "runstore-peers")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    args.steps = [int(n) for n in args.steps.split(",")]
    names = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        parser.error(f"unknown peers {', '.join(unknown)}; known: {', '.join(PEERS)}")
    results = Results()
    peers = []
    for name in names:
        try:
            peers.append(make_peer(name, args.venvs))
        except PeerUnavailable as exc:
            print(f"  {name} left out: it did not install ({exc})", flush=True)
            results.notes.append(f"{name}: did not install ({exc})")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="runstore-peers-") as base:
        bench(peers, args, Path(base), results)
    seconds = time.perf_counter() - started
    versions = {peer.name: peer.version for peer in peers}
    text = markdown(results.samples, versions, results.notes, args, seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = f"{datetime.now(UTC):%Y%m%d-%H%M}"
    (args.out / f"peers-{stamp}.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "peers": versions,
                "notes": results.notes,
                "seconds": seconds,
                "samples": results.samples,
            },
            indent=1,
        )
    )
    (args.out / f"peers-{stamp}.md").write_text(text + "\n")
    shutil.copyfile(args.out / f"peers-{stamp}.md", args.out / "peers-latest.md")
    print(text)
    print(f"\nwritten: {args.out / f'peers-{stamp}.md'} (and .json, peers-latest.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
