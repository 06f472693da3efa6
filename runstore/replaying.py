"""Replaying a finished (or crashed) run into a synapse-sdk logger, after the fact.

`replay(run_dir, logger)` sends the run's records, in the order they were logged, into
any object with the SDK `BaseLogger`'s methods: progress per step (`set_progress`,
`set_progress_failed`), metrics per step (`set_metrics`), events with their level, step
and attached file (`log`: messages, dev events and every other event), then
`finish()`. `runstore.upload.upload_run` does it into a platform job through the SDK's
`JobLogger` and `BackendClient` (`runstore replay --synapse-url`).

With a `target`, a ledger in the run folder (`runstore.ledger`) remembers what was
delivered there, so a replay that stopped and runs again sends only the rest. Progress
and metrics are state, not entries: a resumed replay first restates each step's
latest progress and metrics (the SDK's JobLogger sends them as whole snapshots, which
would otherwise lose what came before), then goes on; events are never sent twice.

Order: one writer's records by `seq` (its counter across the three streams), the
writers of a run interleaved by time. The logger's API has no place for the original
times, so elapsed times and timestamps on the target are the replay's.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import orjson
from pydantic import BaseModel

from .errors import ReplayError
from .format import ATTACHMENTS_DIR, LogLevel
from .ledger import Ledger
from .reader import RunData, decode_metric, read_run

__all__ = [
    "Confirmations",
    "EventRecord",
    "MetricsRecord",
    "ProgressRecord",
    "ReplayLogger",
    "ReplayReport",
    "replay",
    "replay_records",
]

#: Log entries handed to a confirming logger and not yet confirmed, at most: well under
#: the SDK JobLogger's queue bound (2,000, past which it drops the oldest).
HIGH_WATER: Final = 500


class ReplayLogger(Protocol):
    """What replay calls: the SDK `BaseLogger`'s methods."""

    def log(
        self,
        level: Any,
        event: str,
        data: dict[str, Any],
        file: str | None = None,
        step: str | None = None,
    ) -> None: ...

    def set_progress(self, current: int, total: int, step: str | None = None) -> None: ...

    def set_progress_failed(self, step: str | None = None) -> None: ...

    def set_metrics(self, value: dict[str, Any], step: str | None = None) -> None: ...

    def finish(self) -> None: ...


# -- the run's records, in order --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventRecord:
    event: str
    level: LogLevel
    step: str | None
    data: dict[str, Any]
    #: The attached copy inside the run folder, if there is one.
    file: Path | None


@dataclass(frozen=True, slots=True)
class ProgressRecord:
    step: str | None
    current: float
    total: float
    failed: bool


@dataclass(frozen=True, slots=True)
class MetricsRecord:
    step: str
    values: dict[str, Any]


Record = EventRecord | ProgressRecord | MetricsRecord


def _attachment(run_dir: Path, name: str | None, problems: list[str]) -> Path | None:
    """The attached copy `name` names, if it is a regular file inside the run's
    attachments: a damaged or hostile run never makes replay read outside it."""
    if not name:
        return None
    parts = Path(name).parts
    if Path(name).is_absolute() or ".." in parts or not parts or parts[0] != ATTACHMENTS_DIR:
        problems.append(f"{run_dir}: attachment {name!r} is outside the run; sent without it")
        return None
    path = run_dir / name
    try:
        inside = path.resolve(strict=True).is_relative_to(run_dir.resolve())
        regular = path.is_file() and not path.is_symlink()
    except OSError:
        inside = regular = False
    if not (inside and regular):
        problems.append(f"{run_dir}: attachment {name!r} is missing; sent without it")
        return None
    return path


def _level(text: str, where: str, problems: list[str]) -> LogLevel:
    try:
        return LogLevel(text)
    except ValueError:
        problems.append(f"{where}: unknown level {text!r}, sent as info")
        return LogLevel.INFO


def _event(run: RunData, row: dict[str, Any], problems: list[str]) -> EventRecord:
    where = f"{run.path}: event {row['writer']}#{row['seq']}"
    try:
        data = orjson.loads(row["data"]) if row["data"] else {}
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        problems.append(f"{where}: its data is not a JSON object; sent as {{}}")
        data = {}
    return EventRecord(
        event=row["event"],
        level=_level(row["level"], where, problems),
        step=row["category"],
        data=data,
        file=_attachment(run.path, row["attachment"], problems),
    )


def _integral(value: float) -> float | int:
    return int(value) if value.is_integer() else value


def _by_writer(run: RunData, problems: list[str]) -> dict[str, list[tuple[int, Any, Record]]]:
    """Each writer's records as (seq, ts, record), in seq order."""
    writers: dict[str, list[tuple[int, Any, Record]]] = {}
    for row in run.events.to_pylist():
        item = (row["seq"], row["ts"], _event(run, row, problems))
        writers.setdefault(row["writer"], []).append(item)
    for row in run.progress.to_pylist():
        progress = ProgressRecord(
            step=row["category"],
            current=_integral(row["current"]),
            total=_integral(row["total"]),
            failed=row["status"] == "failed",
        )
        writers.setdefault(row["writer"], []).append((row["seq"], row["ts"], progress))
    calls: dict[tuple[str, int], tuple[Any, MetricsRecord]] = {}
    for row in run.metrics.to_pylist():
        key = (row["writer"], row["seq"])
        found = calls.get(key)
        if found is None:
            found = calls[key] = (row["ts"], MetricsRecord(step=row["category"] or "", values={}))
        value = decode_metric(row["value"], row["kind"], row["text"])
        found[1].values[row["key"]] = value
    for (writer, seq), (ts, metrics) in calls.items():
        writers.setdefault(writer, []).append((seq, ts, metrics))
    for items in writers.values():
        items.sort(key=lambda item: item[0])
    return writers


def replay_records(run: RunData, problems: list[str] | None = None) -> list[Record]:
    """The run's records in the order replay sends them: each writer's by its `seq`,
    the writers interleaved by time. What cannot be sent as it is (an attachment
    outside the run, data that is not an object) is described in `problems`."""
    found: list[str] = [] if problems is None else problems
    writers = _by_writer(run, found)
    merged = heapq.merge(*writers.values(), key=lambda item: item[1])
    return [record for _, _, record in merged]


# -- what a replay reports ----------------------------------------------------------


class ReplayReport(BaseModel):
    """What a replay did (the `--json` summary of `runstore replay`)."""

    run_id: str
    run_status: str
    target: str | None
    records: int
    #: Records handed to the logger by this replay.
    sent: int = 0
    #: Records an earlier replay to this target settled, not sent again.
    skipped: int = 0
    #: Of `sent`, those the target confirmed (with `confirmations`: events by the
    #: answer to their batch, progress and metrics by the answer to the last snapshot),
    #: or whose call returned (any other logger).
    confirmed: int = 0
    #: Sent, and no answer came (the connection broke after the request went out); not
    #: sent again: the target may have them.
    unconfirmed: int = 0
    #: Records the logger rejected (a ValueError or TypeError: e.g. a progress total of
    #: 0), which no replay can deliver.
    refused: int = 0
    #: A range of records a stopped replay left on their way, [start, end).
    in_doubt: tuple[int, int] | None = None
    #: Whether the logger was finished: the run is on the target whole.
    finished: bool = False
    problems: list[str] = []


# -- delivery confirmed by the logger's sending -----------------------------------------


class Confirmations:
    """Entries a logger was given and its sender has not yet answered for, in order.

    For loggers that send on their own thread (the SDK's JobLogger): a call returning
    means only "queued". The logger's client reports each batch it sends (see
    `runstore.upload`); replay waits on this to keep the logger's queue below its bound
    (the SDK drops entries past it) and writes each answer into the ledger.
    """

    def __init__(self) -> None:
        self._pending: deque[tuple[int, str]] = deque()
        self._changed = threading.Condition()
        self._ledger: Ledger | None = None
        self.confirmed = 0
        self.unconfirmed = 0
        self.last_change = time.monotonic()
        self.broken: str | None = None
        self.closed = False
        self.snapshot_error: str | None = None

    def _attach(self, ledger: Ledger | None) -> None:
        """Start: answers go into `ledger`, and the wait for the first one starts now."""
        self._ledger = ledger
        self.last_change = time.monotonic()

    def given(self, number: int, event: str) -> None:
        with self._changed:
            self._pending.append((number, event))

    def pending(self) -> int:
        return len(self._pending)

    def has_room(self) -> bool:
        return len(self._pending) < HIGH_WATER

    def empty(self) -> bool:
        return not self._pending

    def withdraw(self, number: int) -> None:
        """Forget entry `number`, which the logger refused before queueing it."""
        with self._changed:
            if self._pending and self._pending[-1][0] == number:
                self._pending.pop()

    def wait(self, until: Callable[[], bool], stall_timeout: float) -> None:
        """Block until `until()` holds; ReplayError when nothing was answered for
        `stall_timeout` seconds or the order of deliveries was lost."""
        with self._changed:
            while not until():
                if self.broken:
                    raise ReplayError(self.broken)
                idle = time.monotonic() - self.last_change
                if idle >= stall_timeout:
                    raise ReplayError(
                        f"the target took no record for {stall_timeout:g} s "
                        f"({len(self._pending)} waiting)"
                    )
                self._changed.wait(min(0.5, stall_timeout - idle))

    def numbers_of(self, events: Iterable[str]) -> tuple[int, int] | None:
        """The record numbers [start, end) of a batch about to be sent: the oldest
        pending entries, whose event names must match; None for entries the logger
        made itself (the SDK's loss report)."""
        names = list(events)
        with self._changed:
            if self.closed:
                raise ReplayError("the replay stopped; this logger sends nothing more")
            if not names:
                return None
            if len(names) > len(self._pending) or any(
                name != self._pending[k][1] for k, name in enumerate(names)
            ):
                if not self._pending or names[0] != self._pending[0][1]:
                    return None  # not ours
                self.broken = (
                    "the logger sent records out of the order they were given; the "
                    "replay stopped so that the ledger stays true"
                )
                self._changed.notify_all()
                raise ReplayError(self.broken)
            start = self._pending[0][0]
            end = self._pending[len(names) - 1][0] + 1
        self._note({"sending": [start, end]})
        return start, end

    def answered(
        self, numbers: tuple[int, int], outcome: Literal["delivered", "failed", "unconfirmed"]
    ) -> None:
        """The sender's answer for the batch `numbers_of` named."""
        self._note({outcome: list(numbers)})
        with self._changed:
            if outcome != "failed":
                count = 0
                while self._pending and self._pending[0][0] < numbers[1]:
                    self._pending.popleft()
                    count += 1
                if outcome == "delivered":
                    self.confirmed += count
                else:
                    self.unconfirmed += count
                self.last_change = time.monotonic()
            self._changed.notify_all()

    def snapshot_answered(self, error: str | None) -> None:
        """The answer to a progress-and-metrics snapshot; the last one decides."""
        with self._changed:
            self.snapshot_error = error
            if error is None:
                self.last_change = time.monotonic()

    def _note(self, entry: dict[str, Any]) -> None:
        if self._ledger is not None:
            self._ledger.record(entry)


# -- replay -------------------------------------------------------------------------


def _restate(logger: ReplayLogger, records: list[Record]) -> None:
    """The latest progress and merged metrics of each step of `records`, sent once."""
    progress: dict[str | None, ProgressRecord] = {}
    metrics: dict[str, dict[str, Any]] = {}
    for record in records:
        if isinstance(record, ProgressRecord):
            progress.pop(record.step, None)
            progress[record.step] = record
        elif isinstance(record, MetricsRecord):
            metrics.setdefault(record.step, {}).update(record.values)
    for record in progress.values():
        _send(logger, record)
    for step, values in metrics.items():
        logger.set_metrics(values, step=step)


def _send(logger: ReplayLogger, record: Record) -> None:
    if isinstance(record, EventRecord):
        file = None if record.file is None else os.fspath(record.file)
        logger.log(record.level, record.event, dict(record.data), file, record.step)
    elif isinstance(record, ProgressRecord):
        if record.failed:
            logger.set_progress_failed(step=record.step)
        else:
            logger.set_progress(record.current, record.total, step=record.step)  # type: ignore[arg-type]
    else:
        logger.set_metrics(dict(record.values), step=record.step)


def replay(
    run_dir: str | os.PathLike[str],
    logger: ReplayLogger,
    *,
    target: str | None = None,
    resend_in_doubt: bool = False,
    progress: Callable[[int, int], None] | None = None,
    confirmations: Confirmations | None = None,
    stall_timeout: float = 120.0,
) -> ReplayReport:
    """Send the records of the run at `run_dir` into `logger`, in order, then finish it.

    `target` names where the records go (e.g. a platform URL and job id): a ledger for
    it in the run folder makes a replay that stopped resume, and a replay after a
    finished one send nothing. Without a target every replay sends everything.
    A range left in doubt by a kill (sent, no answer written) is not sent again unless
    `resend_in_doubt`. `progress(done, total)` is called as records are settled.
    `confirmations` is for loggers that send on their own thread (see
    `runstore.upload`); any other logger has delivered a record when its call returns.

    Raises `ReplayError` if the run is still running, its ledger is damaged or in use,
    or the logger stopped taking records (its `report` says what was delivered).
    """
    run = read_run(run_dir)
    if not run.final:
        raise ReplayError(
            f"{run.path}: the run is still running; replay it once it has ended "
            "(or crashed: a run whose writers are gone)"
        )
    problems: list[str] = []
    records = replay_records(run, problems)
    report = ReplayReport(
        run_id=run.run_id, run_status=run.status, target=target, records=len(records)
    )
    report.problems = problems
    options: dict[str, Any] = {
        "progress": progress,
        "confirmations": confirmations,
        "stall_timeout": stall_timeout,
    }
    if target is None:
        _Delivery(run, logger, records, report, ledger=None, **options).run_from(0)
        return report
    with Ledger(
        run.path, target, run.run_id, len(records), durable=confirmations is not None
    ) as ledger:
        doubt = ledger.resolve_doubt(resend=resend_in_doubt)
        if doubt is not None and not resend_in_doubt:
            report.in_doubt = doubt
        state = ledger.state
        report.skipped = state.through
        if state.finished:
            logger.finish()  # nothing is left to send: a JobLogger sends nothing
            report.finished = True
            return report
        if state.through:
            try:
                _restate(logger, records[: state.through])
            except (ValueError, TypeError) as exc:
                report.problems.append(f"restating progress and metrics: {exc}")
        _Delivery(run, logger, records, report, ledger=ledger, **options).run_from(state.through)
        return report


class _Delivery:
    """One replay's sending: records from `start` on into the logger, each settled in
    the ledger (if any) as the logger's answers come."""

    def __init__(
        self,
        run: RunData,
        logger: ReplayLogger,
        records: list[Record],
        report: ReplayReport,
        *,
        ledger: Ledger | None,
        progress: Callable[[int, int], None] | None,
        confirmations: Confirmations | None,
        stall_timeout: float,
    ) -> None:
        self.run = run
        self.logger = logger
        self.records = records
        self.report = report
        self.ledger = ledger
        self.progress = progress
        self.confirmations = confirmations
        self.stall_timeout = stall_timeout
        self.at = 0

    def _note(self, entry: dict[str, Any]) -> None:
        if self.ledger is not None:
            self.ledger.record(entry)

    def _wait(self, until: Callable[[], bool]) -> None:
        assert self.confirmations is not None
        try:
            self.confirmations.wait(until, self.stall_timeout)
        except ReplayError as exc:
            raise self._stopped(str(exc)) from None

    def _stopped(self, why: str, cause: BaseException | None = None) -> ReplayError:
        report, confirmations = self.report, self.confirmations
        if confirmations is not None:
            if not confirmations.closed:
                confirmations.closed = True  # its client sends nothing more
                with contextlib.suppress(Exception):
                    self.logger.finish()  # stops the logger's sending thread
            report.confirmed = confirmations.confirmed
            report.unconfirmed = confirmations.unconfirmed
        total = len(self.records)
        done = report.skipped + report.confirmed + report.unconfirmed + report.refused
        again = "; run the replay again to send the rest" if self.ledger is not None else ""
        error = ReplayError(
            f"{self.run.path}: replay stopped at record {self.at} of {total}: {why}. "
            f"{done} of {total} records are settled{again}",
            report,
        )
        error.__cause__ = cause
        return error

    def _one(self, number: int, record: Record) -> None:
        report, confirmations = self.report, self.confirmations
        if confirmations is not None and isinstance(record, EventRecord):
            # Room in the logger's queue; a file is sent on its own, after the rest.
            self._wait(confirmations.empty if record.file is not None else confirmations.has_room)
            confirmations.given(number, record.event)
        try:
            _send(self.logger, record)
        except (ValueError, TypeError) as exc:
            report.refused += 1
            report.problems.append(f"record {number} refused by the logger: {exc}")
            if confirmations is None:
                self._note({"refused": number})
            elif isinstance(record, EventRecord):
                # Not written down: records before it may still be on their way. A
                # resumed replay asks again, and is refused again.
                confirmations.withdraw(number)
            return
        except Exception as exc:
            raise self._stopped(f"the logger raised {type(exc).__name__}: {exc}", exc) from None
        report.sent += 1
        if confirmations is None:
            report.confirmed += 1
            self._note({"through": number + 1})

    def run_from(self, start: int) -> None:
        total = len(self.records)
        confirmations = self.confirmations
        if confirmations is not None:
            confirmations._attach(self.ledger)
        for number in range(start, total):
            self.at = number
            self._one(number, self.records[number])
            if self.progress is not None:
                waiting = 0 if confirmations is None else confirmations.pending()
                self.progress(number + 1 - waiting, total)
        self.at = total
        if confirmations is not None:
            self._wait(confirmations.empty)
        try:
            self.logger.finish()
        except Exception as exc:
            why = f"finishing the logger raised {type(exc).__name__}: {exc}"
            raise self._stopped(why, exc) from None
        if confirmations is not None:
            if confirmations.snapshot_error is not None:
                why = (
                    f"the last progress and metrics were not taken ({confirmations.snapshot_error})"
                )
                confirmations.closed = True  # finished already
                raise self._stopped(why)
            # Progress and metrics went whole in the last snapshot, which was answered.
            states = sum(not isinstance(r, EventRecord) for r in self.records[start:])
            self.report.confirmed = confirmations.confirmed + states
            self.report.unconfirmed = confirmations.unconfirmed
        self._note({"through": total})
        self._note({"finished": True})
        self.report.finished = True
        if self.progress is not None:
            self.progress(total, total)
