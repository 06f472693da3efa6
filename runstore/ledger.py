"""What a replay delivered to one target, kept in the run folder
(`RUN/replays/<key>.jsonl`), so that a replay stopped by a kill or a network error and
run again sends each record once, and a replay run after a finished one sends nothing.

The ledger is append-only JSON lines, written as deliveries are confirmed: a kill
loses at most the line being written, and a torn last line is read as not written.
Record numbers are positions in the run's records in replay order (see
`runstore.replay`); `through` N means every record before N is settled (delivered,
refused by the logger, or sent without an answer and not sent again). One replay per
run and target at a time: a second one is refused while the first holds the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import IO, Any, Final

import orjson

from ._durable import atomic_write_bytes
from .errors import ReplayError
from .format import REPLAYS_DIR

__all__ = ["LEDGER_VERSION", "Ledger", "LedgerState", "ledger_path"]

LEDGER_VERSION: Final = 1
#: A ledger past this size is rewritten as its header and one state line.
_COMPACT_BYTES: Final = 64 * 1024


def ledger_path(run_dir: Path, target: str) -> Path:
    """The ledger of replays of `run_dir` to `target` (any text naming where records go)."""
    key = hashlib.sha256(target.encode()).hexdigest()[:16]
    return run_dir / REPLAYS_DIR / f"{key}.jsonl"


@dataclass
class LedgerState:
    """What earlier replays to this target settled."""

    #: Records before this number are settled.
    through: int = 0
    #: Records [start, end) handed to the network whose answer was never written down:
    #: the replay stopped while they were on their way. The target may have them.
    in_doubt: tuple[int, int] | None = None
    delivered: int = 0
    unconfirmed: int = 0
    refused: int = 0
    finished: bool = False

    def line(self) -> dict[str, Any]:
        return {
            "state": {
                "through": self.through,
                "in_doubt": list(self.in_doubt) if self.in_doubt else None,
                "delivered": self.delivered,
                "unconfirmed": self.unconfirmed,
                "refused": self.refused,
                "finished": self.finished,
            }
        }


class Ledger:
    """The ledger of one run and target, open for one replay (a context manager).

    Lines are written as the replay settles records; `durable` makes each one reach
    the disk before the call returns (for deliveries whose duplicates matter).
    Thread-safe: a logger's own sending thread may confirm deliveries.
    """

    def __init__(
        self, run_dir: Path, target: str, run_id: str, records: int, *, durable: bool
    ) -> None:
        self.path = ledger_path(run_dir, target)
        self.target = target
        self.run_id = run_id
        self.records = records
        self.durable = durable
        self.state = LedgerState()
        self._lock = Lock()
        self._lock_file: IO[bytes] | None = None
        self._file: IO[bytes] | None = None

    # -- opening -------------------------------------------------------------------------

    def __enter__(self) -> Ledger:
        try:
            self.path.parent.mkdir(exist_ok=True)
            self._lock_file = open(self.path.with_suffix(".lock"), "ab")
        except OSError as exc:
            raise ReplayError(
                f"{self.path.parent}: cannot write the replay ledger ({exc.strerror}); a "
                "replay needs to write in the run folder to remember what it delivered"
            ) from exc
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise ReplayError(
                f"{self.path}: another replay of this run to {self.target} is running; "
                "wait for it to end (two at once would send records twice)"
            ) from None
        try:
            self._load()
            self._file = open(self.path, "ab")
            if self.path.stat().st_size == 0:
                self._write(self._header())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    def _header(self) -> dict[str, Any]:
        return {
            "runstore_replay": LEDGER_VERSION,
            "target": self.target,
            "run_id": self.run_id,
            "records": self.records,
        }

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        lines = data.split(b"\n")
        if not data.endswith(b"\n"):
            lines = lines[:-1]  # a torn last line: never written
        lines = [line for line in lines if line]
        if not lines:
            return
        for number, line in enumerate(lines, 1):
            try:
                entry = orjson.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
                if number == 1:
                    self._check_header(entry)
                else:
                    self._apply(entry)
            except (ValueError, TypeError, KeyError) as exc:
                raise ReplayError(
                    f"{self.path}: the replay ledger is damaged at line {number} ({exc}); "
                    "it says what was already delivered, so nothing is sent. Delete the "
                    "file to send every record again (the target may then get some twice)"
                ) from exc

    def _check_header(self, entry: dict[str, Any]) -> None:
        version = entry.get("runstore_replay")
        if version != LEDGER_VERSION:
            raise ValueError(f"replay ledger version {version!r}, this runstore reads 1")
        if entry.get("run_id") != self.run_id or entry.get("records") != self.records:
            raise ValueError(
                f"written for run {entry.get('run_id')!r} of {entry.get('records')} records, "
                f"this is run {self.run_id!r} of {self.records}"
            )

    def _apply(self, entry: dict[str, Any]) -> None:
        state = self.state
        if "state" in entry:
            saved = entry["state"]
            doubt = saved["in_doubt"]
            self.state = LedgerState(
                through=int(saved["through"]),
                in_doubt=(int(doubt[0]), int(doubt[1])) if doubt else None,
                delivered=int(saved["delivered"]),
                unconfirmed=int(saved["unconfirmed"]),
                refused=int(saved["refused"]),
                finished=bool(saved["finished"]),
            )
        elif "sending" in entry:
            start, end = (int(n) for n in entry["sending"])
            state.in_doubt = (start, end)
        elif "failed" in entry:
            state.in_doubt = None  # answered with an error: it will be sent again
        elif "delivered" in entry:
            start, end = (int(n) for n in entry["delivered"])
            state.delivered += end - start
            state.through = max(state.through, end)
            state.in_doubt = None
        elif "unconfirmed" in entry:
            start, end = (int(n) for n in entry["unconfirmed"])
            state.unconfirmed += end - start
            state.through = max(state.through, end)
            state.in_doubt = None
        elif "refused" in entry:
            number = int(entry["refused"])
            state.refused += 1
            state.through = max(state.through, number + 1)
        elif "through" in entry:
            state.through = max(state.through, int(entry["through"]))
        elif "finished" in entry:
            state.finished = True
        else:
            raise ValueError(f"unknown entry {sorted(entry)}")

    # -- writing -------------------------------------------------------------------------

    def _write(self, entry: dict[str, Any]) -> None:
        assert self._file is not None, "the ledger is not open"
        self._file.write(orjson.dumps(entry) + b"\n")
        self._file.flush()  # in the kernel: a kill of this process loses nothing
        if self.durable:
            os.fsync(self._file.fileno())

    def record(self, entry: dict[str, Any]) -> None:
        """Settle what `entry` says (`{"delivered": [a, b]}`, `{"sending": [a, b]}`,
        `{"failed": ...}`, `{"unconfirmed": ...}`, `{"refused": n}`, `{"through": n}`,
        `{"finished": true}`) and write it down."""
        with self._lock:
            self._apply(entry)
            self._write(entry)
            if self._file is not None and self._file.tell() > _COMPACT_BYTES:
                self._compact()

    def resolve_doubt(self, *, resend: bool) -> tuple[int, int] | None:
        """Decide about records left in doubt by a stopped replay: counted as
        unconfirmed and not sent again (the SDK's own rule: sending twice is worse), or,
        with `resend`, sent again. Returns the range that was in doubt."""
        doubt = self.state.in_doubt
        if doubt is None:
            return None
        if resend:
            self.record({"failed": list(doubt)})
        else:
            self.record({"unconfirmed": list(doubt)})
        return doubt

    def _compact(self) -> None:
        assert self._file is not None
        content = orjson.dumps(self._header()) + b"\n" + orjson.dumps(self.state.line()) + b"\n"
        atomic_write_bytes(self.path, content, durable=True)
        self._file.close()
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open until close()
