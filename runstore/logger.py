"""RunLogger: the records of a run, checked and handed to its writer.

The counterpart of the Synapse SDK's `BaseLogger`: every call the `RuntimeContext`
(`context`) offers becomes a record here, on the job's thread, in about a microsecond;
the writer (`writer`) does the rest on its own.
"""

from __future__ import annotations

import math
import numbers
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any, Final

import orjson

from . import _native
from ._storable import clean_text, json_ready, storable_int
from .errors import FinishedLoggerError, RunstoreWarning
from .format import (
    EVENTS,
    MESSAGE_EVENT,
    METRICS,
    PROGRESS,
    LogLevel,
    utc_now,
)
from .jsonl import JsonText, json_options
from .writer import RunWriter

__all__ = ["COMPLETE_MESSAGE", "RunLogger", "check_category", "repr_with_warning"]

_PLAIN: Final = frozenset({float, int, str, bool, type(None)})
_LEVELS: Final = frozenset(level.value for level in LogLevel)
_WAKE_MASK: Final = 0x3FFF  # writer.wake() every 16,384 records: see RunWriter.wake
COMPLETE_MESSAGE: Final = "Plugin run is complete."
_time_ns = time.time_ns  # bound once: a module attribute lookup less on the hot path


def repr_with_warning(value: object) -> str:
    """orjson's `default` for the job's values: a repr, with a warning saying so."""
    warnings.warn(
        f"runstore: {type(value).__name__} value is not JSON-serialisable; stored as its "
        f"repr {repr(value)[:80]!r}",
        RunstoreWarning,
        stacklevel=4,
    )
    return repr(value)


def _json_bytes(data: object) -> bytes:
    """`data` as JSON now, so later changes by the job cannot alter what was logged.
    The writer takes plain bytes in a record as JSON (an event's data)."""
    try:
        return orjson.dumps(data, option=json_options(), default=repr_with_warning)
    except (TypeError, orjson.JSONEncodeError):
        pass
    # Lone surrogates, keys JSON cannot name, ints beyond 64 bits: see _storable.
    ready = json_ready(data)
    try:
        return orjson.dumps(ready, option=json_options(), default=repr_with_warning)
    except (TypeError, orjson.JSONEncodeError):  # ints beyond 64 bits, very deep nesting
        import json

        text = json.dumps(ready, default=repr_with_warning, allow_nan=False, separators=(",", ":"))
        return text.encode()


def _json_text(data: object) -> JsonText:
    """A metric value as JSON, marked as such among the other values."""
    return JsonText(_json_bytes(data))


def _freeze_metric(value: object) -> object:
    """A metric value the writer can encode: plain scalars as they are, numpy scalars
    as Python scalars, anything else as JSON text, or as text if that is all JSON can
    make of it (a repr). Text and ints as `_storable` says."""
    kind = type(value)
    if kind is str:
        return clean_text(value)  # type: ignore[arg-type]
    if kind is int:
        return storable_int(value)  # type: ignore[arg-type]
    if kind in _PLAIN:
        return value
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        return value.item()  # type: ignore[attr-defined]
    for base in (bool, int, float, str):  # subclasses: IntEnum, numpy.float64, StrEnum
        if isinstance(value, base):
            return _freeze_metric(base(value))
    text = _json_text(value)
    if text.startswith(b'"'):  # a value stored as its repr is a str, live and sealed
        return orjson.loads(bytes(text))
    return text


def _number(value: object, what: str) -> float:
    """A progress count: ints and floats as they are, other real numbers (numpy's) as
    floats; bools are refused."""
    if type(value) is int or type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    return float(value)


def check_category(category: object, what: str) -> str:
    """A category or step name as stored; TypeError or ValueError saying what was wrong."""
    if type(category) is not str:
        raise TypeError(f"{what} must be a string, got {type(category).__name__}")
    if not category:
        raise ValueError(f"{what} must not be empty")
    return clean_text(category)


def _check_level(level: object) -> str:
    text = level.value if isinstance(level, LogLevel) else level
    if text not in _LEVELS:
        raise ValueError(f"unknown level {level!r}; use one of: {', '.join(sorted(_LEVELS))}")
    return str(text)


class _Workflow:
    """Step weights of the running workflow, for the weighted overall progress."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        self.weights = dict(weights)
        self.total = sum(self.weights.values()) or 1.0
        self.done: dict[str, float] = {}
        self.overall = 0.0

    def update(self, step: str, fraction: float) -> float:
        if step in self.weights:
            self.done[step] = min(max(fraction, 0.0), 1.0)
            weighted = sum(self.weights[s] * f for s, f in self.done.items())
            self.overall = max(self.overall, round(weighted / self.total * 100, 2))
        return self.overall


class RunLogger:
    """Writes a run's records; the counterpart of the Synapse SDK's `BaseLogger`.

    `RuntimeContext` delegates to it. Methods raise `FinishedLoggerError` (a
    `RuntimeError`) after `finish()`; storage faults never raise here.
    """

    def __init__(self, writer: RunWriter) -> None:
        self.writer = writer
        self._step: str | None = None
        self._step_order: int | None = None
        self._finished = False
        self._progress: dict[str | None, dict[str, Any]] = {}
        self._started: dict[str | None, float] = {}
        self._workflow: _Workflow | None = None
        # Looked up once: the hot path takes `next(self._seq)` and calls bound methods.
        self._seq = writer.seq
        # Metrics records go in flat (see RunWriter): `extend` with the record's fields.
        self._extend_metrics = writer.buffers[METRICS].records.extend
        self._extend_mixed_metrics = writer.buffers[METRICS].mixed.extend
        self._append_progress = writer.buffers[PROGRESS].records.append
        self._append_event = writer.buffers[EVENTS].records.append
        self._recorder: Any = None
        numbers, speedups = writer.buffers[METRICS].numbers, _native.speedups
        if (
            numbers is not None
            and speedups is not None
            and type(self).set_metrics is RunLogger.set_metrics
        ):
            # The same method in C (runstore/_speedups.c): a call of numbers only goes into
            # C arrays with no Python object made; every other call comes to the method.
            self._recorder = speedups.MetricsRecorder(
                numbers, self._seq, writer.wake, RunLogger.set_metrics.__get__(self), _WAKE_MASK
            )
            self.set_metrics = self._recorder  # type: ignore[method-assign]

    # -- steps -------------------------------------------------------------------------

    def set_step(self, step: str | None, order: int | None = None) -> None:
        """Make `step` the category of records that name none."""
        self._step = step
        self._step_order = order

    def get_step(self) -> str | None:
        return self._step

    def begin_workflow(self, weights: Mapping[str, float]) -> None:
        """Weights of the steps about to run; progress then carries the overall percent."""
        self._workflow = _Workflow(weights)

    def complete_step(self, step: str) -> None:
        """Report `step` as 100% done (a finished or skipped step)."""
        last = self._progress.get(step)
        if last is not None and last["status"] == "completed":
            return
        total = last["total"] if last else 1
        self.set_progress(total, total, step)

    # -- records -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._finished:
            raise FinishedLoggerError(
                "Cannot log to a finished logger: end_log() was already called for run "
                f"{self.writer.run_id}"
            )

    def log(
        self,
        level: str | LogLevel,
        event: str,
        data: Mapping[str, Any] | None,
        file: str | os.PathLike[str] | None = None,
        step: str | None = None,
    ) -> None:
        """Record an event. `data` is serialised now (later changes do not alter it);
        values JSON cannot hold are stored as their repr, with a `RunstoreWarning`."""
        self._check_open()
        if type(event) is not str or not event:
            raise ValueError(f"event must be a non-empty string, got {event!r}")
        if not isinstance(data, Mapping):
            raise TypeError(f"data of event {event!r} must be a dict, got {type(data).__name__}")
        level_text = _check_level(level)
        category = self._step if step is None else step
        if category is not None:
            category = clean_text(category)
        payload = _json_bytes(data if type(data) is dict else dict(data))
        seq = next(self._seq)
        attachment = None
        file_text = None
        if file is not None:
            file_text = os.fsdecode(file)  # a bytes path as os.fsdecode makes it
            if os.path.exists(file_text):
                attachment = self.writer.attach(file_text, seq)
            else:
                warnings.warn(
                    f"runstore: file {file_text!r} of event {event!r} does not exist; the "
                    "event is logged with its path but nothing is copied into the run",
                    RunstoreWarning,
                    stacklevel=3,
                )
        if file_text is not None:
            file_text = clean_text(file_text)  # a name that is not UTF-8, once copied
        record = (_time_ns(), seq, clean_text(event), level_text, category, payload)
        self._append_event((*record, file_text, attachment))

    def message(self, content: str, level: str | LogLevel = LogLevel.INFO, **extra: Any) -> None:
        self.log(level, MESSAGE_EVENT, {"content": content, **extra})

    def debug(self, message: str) -> None:
        self.message(message, LogLevel.DEBUG)

    def info(self, message: str) -> None:
        self.message(message, LogLevel.INFO)

    def warning(self, message: str) -> None:
        self.message(message, LogLevel.WARNING)

    def error(self, message: str) -> None:
        self.message(message, LogLevel.ERROR)

    def critical(self, message: str) -> None:
        self.message(message, LogLevel.CRITICAL)

    def set_progress(self, current: float, total: float, step: str | None = None) -> None:
        """Progress of `step` (default: the current step, else the default category).

        `ValueError` unless `total > 0` and `0 <= current <= total`.
        """
        self._check_open()
        current = _number(current, "current")
        total = _number(total, "total")
        if not 0 < total < math.inf:
            raise ValueError(f"total must be > 0 and finite, got {total}")
        if not 0 <= current <= total:
            raise ValueError(f"current must be between 0 and total ({total}), got {current}")
        category = self._step if step is None else step
        if category is not None:
            category = check_category(category, "step/category")
        now = time.monotonic()
        started = self._started.get(category)
        if started is None or current == 0:
            started = self._started[category] = now
        elapsed = round(now - started, 6)
        remaining = round(elapsed / current * (total - current), 6) if current > 0 else None
        percent = round(current / total * 100, 2)
        status = "completed" if current == total else "running"
        self._write_progress(
            category, float(current), float(total), percent, elapsed, remaining, status
        )

    def set_progress_failed(self, step: str | None = None) -> None:
        """Mark the progress of `step` (default: current step) as failed."""
        self._check_open()
        category = self._step if step is None else step
        last = self._progress.get(category) or {"current": 0.0, "total": 1.0, "percent": 0.0}
        started = self._started.get(category)
        elapsed = round(time.monotonic() - started, 6) if started is not None else None
        self._write_progress(
            category, last["current"], last["total"], last["percent"], elapsed, None, "failed"
        )

    def _write_progress(
        self,
        category: str | None,
        current: float,
        total: float,
        percent: float,
        elapsed: float | None,
        remaining: float | None,
        status: str,
    ) -> None:
        workflow = self._workflow
        overall = None
        if workflow is not None and category is not None:
            overall = workflow.update(category, current / total)
        self._progress[category] = {
            "current": current,
            "total": total,
            "percent": percent,
            "elapsed": elapsed,
            "time_remaining": remaining,
            "status": status,
            "overall": overall,
        }
        self._append_progress(
            (
                _time_ns(),
                next(self._seq),
                category,
                current,
                total,
                percent,
                elapsed,
                remaining,
                status,
                overall,
            )
        )

    def set_metrics(
        self, value: Mapping[str, Any], category: str | None = None, *, step: str | None = None
    ) -> None:
        """Record metric values of a category (`step=` is the SDK's newer name; default:
        the current step): the full history, and the merged latest values per category.

        The hot path, guarded by benchmarks/bench_logging.py: check, copy the dict,
        extend the writer's list with one record (the writer keeps the latest values as
        it drains). Values keep their type; see docs/format.md. With the C speedups, a
        logger's `set_metrics` is a `MetricsRecorder` that does the same for calls of
        numbers (floats, ints, bools) in C and hands every other call to this method.
        """
        if type(value) is not dict or type(category) is not str or not category or self._finished:
            value, category = self._metrics_arguments(value, category, step)
        value = value.copy()  # the job may change its dict; the record must not change
        extend = self._extend_metrics  # all floats: the writer converts them in C
        for item in value.values():
            if type(item) is not float:
                # Frozen now: numpy scalars as Python's, anything else as JSON.
                value = {key: _freeze_metric(item) for key, item in value.items()}
                extend = self._extend_mixed_metrics
                break
        seq = next(self._seq)
        extend((_time_ns(), seq, category, value))
        if not seq & _WAKE_MASK:
            self.writer.wake()

    def _metrics_arguments(
        self, value: object, category: object, step: str | None
    ) -> tuple[dict[Any, Any], str]:
        """`set_metrics`' arguments checked the long way: a Mapping as a dict, the
        current step as category."""
        self._check_open()
        if category is None:
            category = self._step if step is None else step
            if category is None:
                raise ValueError("set_metrics needs a category (step): none given, no current step")
        if not isinstance(value, Mapping):
            raise TypeError(f"metrics value must be a dict, got {type(value).__name__}")
        return dict(value), check_category(category, "category")

    def get_progress(self, step: str | None = None) -> dict[str, Any] | None:
        """The last progress of `step` (default: current step), or None."""
        found = self._progress.get(self._step if step is None else step)
        return None if found is None else dict(found)

    def get_metrics(self, step: str | None = None) -> dict[Any, Any]:
        """Latest values of one step, or of every step as {step: {key: value}}, as
        logged (numpy scalars as Python's; kept by the writer, off the hot path)."""
        latest = self.writer.latest_metrics()
        if step is not None:
            return latest.get(step, {})
        return latest

    # -- ending ------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._finished

    def finish(self, status: str = "completed", error: str | None = None) -> None:
        """Stop logging and end the run (if this logger's writer owns it); records flush."""
        if self._finished:
            return
        self._finished = True
        if self._recorder is not None:
            self._recorder.close()
        self.writer.update_manifest(status=status, error=error, ended_at=utc_now())
        self.writer.flush()

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        """Finish (as completed if nothing ended the run) and close the writer; later
        logging raises `FinishedLoggerError`, as after `finish`."""
        self._finished = True
        if self._recorder is not None:
            self._recorder.close()
        self.writer.close(status="completed")
