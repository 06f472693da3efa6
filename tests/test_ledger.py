"""The replay ledger: what it wrote is what it reads, whole or cut anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstore import ledger as ledger_module
from runstore.ledger import Ledger, LedgerState, ledger_path

RECORDS = 1000


@st.composite
def _entries(draw: st.DrawFn) -> list[dict[str, object]]:
    """Entries in the order a replay writes them: numbers only grow."""
    at = 0
    entries: list[dict[str, object]] = []
    for _ in range(draw(st.integers(0, 30))):
        step = draw(st.integers(1, 20))
        kind = draw(
            st.sampled_from(
                ["delivered", "sent-failed", "unconfirmed", "refused", "through", "sending"]
            )
        )
        if kind == "sent-failed":
            entries += [{"sending": [at, at + step]}, {"failed": [at, at + step]}]
        elif kind in ("delivered", "unconfirmed"):
            entries += [{"sending": [at, at + step]}, {kind: [at, at + step]}]
            at += step
        elif kind == "sending":
            entries.append({"sending": [at, at + step]})
        elif kind == "refused":
            entries.append({"refused": at})
            at += 1
        else:
            at += step
            entries.append({"through": at})
    return entries


def _write(tmp_path: Path, entries: list[dict[str, object]]) -> LedgerState:
    with Ledger(tmp_path, "t", "r", RECORDS, durable=False) as ledger:
        for entry in entries:
            ledger.record(entry)
        return ledger.state


def _read(tmp_path: Path) -> LedgerState:
    with Ledger(tmp_path, "t", "r", RECORDS, durable=False) as ledger:
        return ledger.state


@settings(max_examples=60, deadline=None)
@given(entries=_entries(), data=st.data())
def test_a_ledger_reads_back_what_was_written_and_a_cut_reads_as_its_whole_lines(
    tmp_path_factory: pytest.TempPathFactory, entries: list[dict[str, object]], data: st.DataObject
) -> None:
    folder = tmp_path_factory.mktemp("ledger")
    written = _write(folder, entries)
    assert _read(folder) == written

    path = ledger_path(folder, "t")
    content = path.read_bytes()
    cut = data.draw(st.integers(0, len(content)))
    path.write_bytes(content[:cut])
    whole = content[: content.rfind(b"\n", 0, cut) + 1] if cut else b""
    cut_state = _read(folder)
    path.write_bytes(whole)
    assert cut_state == _read(folder)


@settings(max_examples=20, deadline=None)
@given(entries=_entries())
def test_a_compacted_ledger_says_what_the_long_one_said(
    tmp_path_factory: pytest.TempPathFactory, entries: list[dict[str, object]]
) -> None:
    folder = tmp_path_factory.mktemp("ledger")
    long = _write(folder, entries)
    compacted = tmp_path_factory.mktemp("compacted")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ledger_module, "_COMPACT_BYTES", 1)  # every write compacts
        assert _write(compacted, entries) == long
    assert _read(compacted) == long
    assert len(ledger_path(compacted, "t").read_bytes().splitlines()) <= 2


def test_a_replay_killed_with_a_batch_on_its_way_leaves_that_batch_in_doubt(tmp_path: Path) -> None:
    state = _write(tmp_path, [{"sending": [0, 5]}, {"delivered": [0, 5]}, {"sending": [5, 9]}])
    assert state.in_doubt == (5, 9) and state.through == 5 and state.delivered == 5
    with Ledger(tmp_path, "t", "r", RECORDS, durable=False) as ledger:
        assert ledger.resolve_doubt(resend=False) == (5, 9)
    after = _read(tmp_path)
    assert (after.in_doubt, after.through, after.unconfirmed) == (None, 9, 4)
