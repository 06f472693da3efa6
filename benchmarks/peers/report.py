"""The peers benchmark's report: medians of the samples `run.py` took, and ratios
runstore/peer, as Markdown tables, one per workload (see run.py for the workloads)."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from datetime import UTC, datetime
from typing import Any

__all__ = ["markdown"]


def _median(samples: list[dict[str, Any]], key: str, scale: float = 1.0) -> float | None:
    values = [s[key] for s in samples if s.get(key) is not None]
    return statistics.median(values) * scale if values else None


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{unit}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return "—"
    return f"{ours / theirs:.2f}x"


def _section(title: str, columns: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table under its heading; the first column left-aligned, the rest right."""
    aligns = ["---"] + ["---:"] * (len(columns) - 1)
    return [
        f"## {title}",
        "",
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join(aligns) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


_MIB = 1 / (1024 * 1024)


def _w1(workload: str, samples: dict[str, list[dict[str, Any]]], budget: float) -> list[str]:
    ours = _median(samples.get("runstore", []), "process_steps_per_second")
    rows = []
    for peer, taken in samples.items():
        rate = _median(taken, "process_steps_per_second")
        rows.append([
            peer, _fmt(_median(taken, "steps")), _fmt(_median(taken, "steps_per_second")),
            _fmt(rate), _fmt(_median(taken, "tree_rss", _MIB), " MiB"),
            _fmt(_median(taken, "bytes_per_point"), "", 1), _ratio(ours, rate),
        ])  # fmt: skip
    steps = int(workload.split()[1])
    return _section(
        f"W1: {steps:,} steps x 2 metrics (budget {budget:g} s)",
        ["peer", "steps done", "steps/s logging", "steps/s process", "peak RSS",
         "bytes/point", "runstore/peer steps/s (process)"],
        rows,
    )  # fmt: skip


def _tiny(samples: dict[str, list[dict[str, Any]]]) -> list[str]:
    wall = _median(samples.get("runstore", []), "wall")
    rss = _median(samples.get("runstore", []), "tree_rss")
    rows = [
        [peer, _fmt(_median(taken, "wall", 1000), " ms"),
         _fmt(_median(taken, "peak_rss", _MIB), " MiB"),
         _fmt(_median(taken, "tree_rss", _MIB), " MiB"),
         _ratio(wall, _median(taken, "wall")), _ratio(rss, _median(taken, "tree_rss"))]
        for peer, taken in samples.items()
    ]  # fmt: skip
    return _section(
        "Tiny job: import, open a run, log one step, end (whole process)",
        ["peer", "wall", "peak RSS (process)", "peak RSS (with helpers)",
         "runstore/peer wall", "runstore/peer RSS"],
        rows,
    )  # fmt: skip


def _w3(
    samples: dict[str, list[dict[str, Any]]],
    setup: dict[str, list[dict[str, Any]]],
    run_steps: int,
) -> list[str]:
    ours = _median(samples.get("runstore", []), "wall")
    rows = []
    for peer, taken in samples.items():
        made = setup.get(peer.split(",")[0], [{}])[0]
        rows.append([
            peer, _fmt(made.get("runs")), _fmt(made.get("seconds"), " s", 1),
            _fmt(_median(taken, "seconds", 1000), " ms"), _fmt(_median(taken, "wall", 1000), " ms"),
            "yes" if all(s["correct"] for s in taken) else "**no**",
            _ratio(ours, _median(taken, "wall")),
        ])  # fmt: skip
    lines = _section(
        f"W3: final loss per run, sorted ({run_steps} steps a run; fresh process)",
        ["peer", "runs", "setup", "query in process", "process wall", "answer right",
         "runstore/peer (process)"],
        rows,
    )  # fmt: skip
    for extra in ("aim index", "runstore archive"):
        if extra in setup:
            lines += [f"{extra}: {setup[extra][0]['seconds']:.1f} s", ""]
    return lines


def _w4(samples: dict[str, list[dict[str, Any]]], seconds: float) -> list[str]:
    rows = []
    for peer, taken in samples.items():
        logged, lost = _median(taken, "logged"), _median(taken, "lost")
        errors = [s["error"] for s in taken if s.get("error")]
        readable = _fmt(_median(taken, "readable"))
        if errors:
            readable += f" (unreadable: {errors[0]})"
        lost_ms = lost / (logged / seconds) * 1000 if lost is not None and logged else None
        rows.append([peer, _fmt(logged), readable, _fmt(lost), _fmt(lost_ms, " ms")])
    return _section(
        f"W4: SIGKILL after {seconds:g} s of logging as fast as it can",
        ["peer", "logged", "readable", "lost", "lost, as time logging"],
        rows,
    )


def _w5(samples: dict[str, list[dict[str, Any]]], interval: float) -> list[str]:
    rows = [
        [peer, f"{_fmt(_median(taken, 'seen'))} of {_fmt(_median(taken, 'sent'))}",
         _fmt(_median(taken, "median_delay", 1000), " ms"),
         _fmt(_median(taken, "max_delay", 1000), " ms")]
        for peer, taken in samples.items()
    ]  # fmt: skip
    return _section(
        f"W5: live, a step every {interval:g} s seen by another process",
        ["peer", "seen of sent", "median delay", "longest delay"],
        rows,
    )


def markdown(
    samples: dict[str, dict[str, list[dict[str, Any]]]],
    versions: dict[str, str],
    notes: list[str],
    args: argparse.Namespace,
    seconds: float,
) -> str:
    """The whole report: peers and versions, then a table per workload that ran."""
    lines = [
        f"# runstore and its peers, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`benchmarks/peers/run.py`, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {args.repeats} repeats interleaved (medians), "
        f"{seconds / 60:.1f} min in all. Ratios are runstore / peer: above 1.0x runstore "
        "does more (a rate) or uses more (time, memory).",
        "",
        "| peer | version |",
        "| --- | --- |",
        *(f"| {name} | {version} |" for name, version in versions.items()),
        *(f"| {note} | |" for note in notes),
        "",
    ]
    for workload in [w for w in samples if w.startswith("W1 ")]:
        lines += _w1(workload, samples[workload], args.budget)
    if "tiny" in samples:
        lines += _tiny(samples["tiny"])
    if "W3" in samples:
        lines += _w3(samples["W3"], samples.get("W3 setup", {}), args.run_steps)
    if "W4" in samples:
        lines += _w4(samples["W4"], args.crash_seconds)
    if "W5" in samples:
        lines += _w5(samples["W5"], args.live_interval)
    return "\n".join(lines)
