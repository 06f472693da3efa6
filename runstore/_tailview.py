"""The live terminal view of `runstore tail`: progress bars, metrics, messages (rich)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .format import (
    DEV_EVENT,
    DEV_EVENTS,
    EVENTS,
    MESSAGE_EVENT,
    METRICS,
    PROGRESS,
    STATUS,
    event_text,
)
from .reader import RunData

if TYPE_CHECKING:  # the terminal view loads no watcher until a follower is made
    from .tail import Follower, TailRecord

__all__ = [
    "LEVEL_STYLES",
    "STATUS_STYLES",
    "TailView",
    "clock",
    "log_line",
    "message_line",
    "sparkline",
]

LEVEL_STYLES: Final = {
    "debug": "dim",
    "info": "blue",
    "success": "green",
    "warning": "yellow",
    "danger": "red",
    "error": "red",
    "critical": "bold red",
}
STATUS_STYLES: Final = {
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "crashed": "magenta",
}
_SPARKS: Final = "▁▂▃▄▅▆▇█"
_HISTORY: Final = 30  # metric values kept per key for the sparkline
_SHOWN_RUNS: Final = 8  # runs drawn at once when following a root


def sparkline(values: list[float]) -> str:
    numbers = [v for v in values if v == v and abs(v) != float("inf")]
    if not numbers:
        return ""
    low, high = min(numbers), max(numbers)
    span = (high - low) or 1.0
    return "".join(_SPARKS[int((v - low) / span * (len(_SPARKS) - 1))] for v in numbers)


def clock(seconds: float | None) -> str:
    """Seconds as m:ss or h:mm:ss."""
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def log_line(ts: datetime, run: str | None, level: str, text: str) -> Text:
    """A message as one line: local time, the run (when several), level in colour."""
    line = Text(ts.astimezone().strftime("%H:%M:%S "))
    if run:
        line.append(f"{run} ", style="bold")
    line.append(f"{level:>8} ", style=LEVEL_STYLES.get(level, ""))
    line.append(text)
    return line


def message_line(run: str | None, record: TailRecord) -> Text:
    """A message or dev event record as one coloured line."""
    data = record.data.get("data") or {}
    event = record.data.get("event", "")
    text = event_text(event, data)
    if event == DEV_EVENT:
        text = f"{text} {data.get('data', '')}".rstrip()
    if event != MESSAGE_EVENT:
        text = f"[dev] {text}"
    return log_line(record.ts, run, record.data.get("level", "info"), text)


@dataclass
class _RunView:
    name: str
    status: str = "running"
    plugin: str | None = None
    action: str | None = None
    progress: dict[str | None, dict[str, Any]] = field(default_factory=dict)
    overall: float | None = None
    step: str | None = None
    metrics: dict[tuple[str | None, str], deque[Any]] = field(default_factory=dict)
    updated: float = field(default_factory=time.monotonic)

    def add(self, record: TailRecord) -> None:
        self.updated = time.monotonic()
        if record.stream == PROGRESS:
            self.progress[record.category] = record.data
            if record.data.get("overall") is not None:
                self.overall = record.data["overall"]
        elif record.stream == METRICS:
            for key, value in record.data["values"].items():
                history = self.metrics.setdefault((record.category, key), deque(maxlen=_HISTORY))
                history.append(value)
        elif record.stream == EVENTS and record.data.get("event") == "step":
            status = (record.data.get("data") or {}).get("status")
            if status == "started":
                self.step = record.category
            elif record.category == self.step:
                self.step = None
        elif record.stream == STATUS:
            self.status = record.data["status"]
            self.plugin = record.data.get("plugin") or self.plugin
            self.action = record.data.get("action") or self.action

    def load(self, run: RunData) -> None:
        """Start from the run as it is on disk now."""
        self.status = run.status
        self.plugin, self.action = run.manifest.plugin, run.manifest.action
        for row in run.latest_progress():
            self.progress[row["category"]] = row
        self.overall = run.overall_progress()
        self.step = run.current_step()
        rows = run.metrics.slice(max(0, run.metrics.num_rows - 2_000)).to_pylist()
        for row in rows:
            history = self.metrics.setdefault((row["category"], row["key"]), deque(maxlen=_HISTORY))
            history.append(row["value"] if row["kind"] in ("float", "int", "bool") else row["text"])

    def render(self) -> RenderableType:
        style = STATUS_STYLES.get(self.status, "")
        title = Text.assemble(
            (self.name, "bold"),
            "  ",
            (self.status, style),
            f"  {self.plugin or ''} {self.action or ''}".rstrip(),
        )
        if self.step:
            title.append(f"  step {self.step}", style="cyan")
        bars = Table.grid(padding=(0, 1))
        for column in ("category", "bar", "percent", "elapsed", "remaining"):
            bars.add_column(column, justify="right" if column != "category" else "left")
        if self.overall is not None:
            bars.add_row(
                Text("overall", style="bold"),
                ProgressBar(total=100, completed=self.overall, width=30),
                f"{self.overall:5.1f}%",
                "",
                "",
            )
        for category, row in self.progress.items():
            bar_style = "red" if row.get("status") == "failed" else "bar.complete"
            bars.add_row(
                category or "(default)",
                ProgressBar(
                    total=100, completed=row["percent"], width=30, complete_style=bar_style
                ),
                f"{row['percent']:5.1f}%",
                clock(row.get("elapsed")),
                f"-{clock(row['time_remaining'])}" if row.get("time_remaining") else "",
            )
        metrics = Table.grid(padding=(0, 1))
        for (category, key), history in self.metrics.items():
            value = history[-1]
            text = f"{value:.6g}" if isinstance(value, float) else str(value)
            numbers = [float(v) for v in history if isinstance(v, int | float)]
            metrics.add_row(f"{category or ''}/{key}".lstrip("/"), text, sparkline(numbers))
        return Group(title, bars, metrics)


class TailView:
    """Draws the followed runs and prints their messages above the drawing."""

    def __init__(self, follower: Follower, console: Console, *, dev: bool) -> None:
        self.follower = follower
        self.console = console
        self.dev = dev
        self.runs: dict[str, _RunView] = {}
        self.problems_shown = 0

    def load(self, runs: list[RunData], messages: int = 10) -> None:
        for run in runs:
            view = self.runs.setdefault(run.path.name, _RunView(run.path.name))
            view.load(run)
            for message in run.messages(dev=self.dev)[-messages:]:
                self.console.print(self._snapshot_line(run.path.name, message))

    def _snapshot_line(self, run: str, message: dict[str, Any]) -> Text:
        dev = "" if message["event"] == MESSAGE_EVENT else "[dev] "
        shown_run = None if self.follower.single else run
        return log_line(message["ts"], shown_run, message["level"], dev + message["text"])

    def render(self) -> RenderableType:
        shown = sorted(self.runs.values(), key=lambda v: v.updated, reverse=True)
        return Group(*(view.render() for view in shown[:_SHOWN_RUNS]))

    def run(self) -> str | None:
        """Follow until the end (one run) or Ctrl-C; returns the last status seen."""
        last_status = None
        with Live(self.render(), console=self.console, refresh_per_second=8) as live:
            for record in self.follower:
                view = self.runs.setdefault(record.run, _RunView(record.run))
                view.add(record)
                if record.stream == STATUS:
                    last_status = record.data["status"]
                event = record.data.get("event")
                if record.stream == EVENTS and (
                    event == MESSAGE_EVENT or (event in DEV_EVENTS and self.dev)
                ):
                    live.console.print(
                        message_line(None if self.follower.single else record.run, record)
                    )
                for problem in self.follower.problems[self.problems_shown :]:
                    live.console.print(Text(f"problem: {problem}", style="yellow"))
                self.problems_shown = len(self.follower.problems)
                live.update(self.render())
        return last_status
