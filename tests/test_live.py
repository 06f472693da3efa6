"""The runs a store reads from their own folders: the live segments of all of them
converted together hold what each run holds, and a damaged record stays in its run."""

from __future__ import annotations

import warnings
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runstore import RuntimeContext, Store, open_run, read_run
from runstore._live import LiveTable, joined
from runstore.format import METRICS, PROGRESS


def job(root: Path, name: str, steps: int, *, finish: bool = True) -> RuntimeContext:
    """A small job whose values are of several kinds (floats, ints, text)."""
    ctx = open_run(root, run_id=name, plugin="train", env={})
    for step in range(1, steps + 1):
        ctx.set_progress(step, steps, "train")
        ctx.set_metrics({"loss": 1.0 / step, "epoch": step, "note": f"s{step}"}, "train")
    ctx.log_message(f"{name} trained")
    if finish:
        ctx.end_log()
        ctx.close()
    else:
        ctx.flush()
    return ctx


def store_rows(store: Store, stream: str, run_id: str) -> list[dict[str, object]]:
    query = f"SELECT * EXCLUDE (run_id) FROM {stream} WHERE run_id = ?"
    table = store.query(query, [run_id]).table
    return sorted(table.to_pylist(), key=lambda row: (row["seq"], str(row.get("key"))))


def run_rows(table: pa.Table) -> list[dict[str, object]]:
    return sorted(table.to_pylist(), key=lambda row: (row["seq"], str(row.get("key"))))


@pytest.mark.parametrize("batch_bytes", [None, 1], ids=["together", "one-by-one"])
def test_runs_read_together_hold_what_each_run_holds(
    root: Path, batch_bytes: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if batch_bytes is not None:  # every segment converted by itself
        monkeypatch.setattr("runstore._live._BATCH_BYTES", batch_bytes)
    for index, steps in enumerate([3, 0, 7, 1, 12]):
        job(root, f"run-{index}", steps)
    running = job(root, "running", 4, finish=False)
    with Store(root, archive=False) as store:
        for path in sorted(root.iterdir()):
            run = read_run(path)
            for stream in ("events", PROGRESS, METRICS):
                expected = run_rows(getattr(run, stream))
                assert store_rows(store, stream, run.run_id) == expected, (path.name, stream)
        assert store.problems == []
        # A second look reads the running run's segments again and keeps the others'.
        running.set_metrics({"loss": 0.01, "epoch": 5, "note": "s5"}, "train")
        running.flush()
        for path in sorted(root.iterdir()):
            run = read_run(path)
            for stream in ("events", PROGRESS, METRICS):
                expected = run_rows(getattr(run, stream))
                assert store_rows(store, stream, run.run_id) == expected, (path.name, stream)
    running.close()


@st.composite
def _pieces(draw: st.DrawFn) -> list[LiveTable]:
    """Ranges of two tables, in any order: neighbours, gaps, repeats and empty ones."""
    tables = [pa.table({"n": list(range(start, start + 30))}) for start in (0, 100)]
    pieces = []
    for _ in range(draw(st.integers(0, 12))):
        table = tables[draw(st.integers(0, 1))]
        start = draw(st.integers(0, 30))
        pieces.append(LiveTable(table, start, draw(st.integers(0, 30 - start))))
    return pieces


@given(_pieces())
def test_pieces_joined_hold_each_piece_in_order(pieces: list[LiveTable]) -> None:
    result = joined(pieces, pa.schema([("n", pa.int64())]))
    expected = [
        value
        for piece in pieces
        for value in piece.table["n"].to_pylist()[piece.start : piece.start + piece.length]
    ]
    assert result["n"].to_pylist() == expected
    # One chunk for each place where a piece does not go on from the one before it.
    breaks = sum(
        1
        for before, piece in zip([None, *pieces], pieces, strict=False)
        if before is None
        or piece.table is not before.table
        or piece.start != before.start + before.length
    )
    assert result["n"].num_chunks <= max(breaks, 1)


def test_a_record_of_the_wrong_type_stays_in_its_own_run(root: Path) -> None:
    for name in ("a", "bad", "c"):
        job(root, name, 5)
    segment = next((root / "bad" / "streams" / PROGRESS).glob("*.jsonl"))
    lines = segment.read_bytes().splitlines()
    records = orjson.loads(lines[-1])
    records["current"][1] = "many"  # the second record's
    segment.write_bytes(b"\n".join([*lines[:-1], orjson.dumps(records)]) + b"\n")
    with warnings.catch_warnings(record=True), Store(root, archive=False) as store:
        counts = store.sql("SELECT run_id, count(*) FROM progress GROUP BY 1 ORDER BY 1")
        assert counts.fetchall() == [("a", 5), ("bad", 4), ("c", 5)]
        assert store.sql("SELECT count(*) FROM metrics").fetchall() == [(45,)]
        [problem] = store.problems
        assert str(segment) in problem and "record 2 has a value of the wrong type" in problem


def test_a_run_given_another_id_is_read_again_under_it(root: Path) -> None:
    ctx = job(root, "first", 3, finish=False)
    manifest = root / "first" / "run.json"
    with Store(root, archive=False) as store:
        assert store.sql("SELECT DISTINCT run_id FROM metrics").fetchall() == [("first",)]
        manifest.write_bytes(manifest.read_bytes().replace(b'"first"', b'"again"'))
        assert store.sql("SELECT DISTINCT run_id FROM metrics").fetchall() == [("again",)]
    ctx.close()
