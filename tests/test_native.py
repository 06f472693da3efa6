"""The C speedups against pure Python: the same records, tables and errors either way."""

from __future__ import annotations

import itertools
import math
import threading
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import runstore
from runstore import FinishedLoggerError, open_run, read_run
from runstore.format import METRICS, RECORD_FIELDS
from runstore.jsonl import columns_of_records, decode_lines
from runstore.tables import batch_rows, number_rows_table, table_from_columns

from .conftest import IMPLEMENTATIONS, implementation, run_python


def _metrics_rows(run_dir: Path) -> list[tuple[Any, ...]]:
    table = read_run(run_dir).metrics.sort_by("seq")
    return [
        (r["seq"], r["category"], r["key"], repr(r["value"]), r["kind"], r["text"])
        for r in table.to_pylist()
    ]


def _job(ctx: runstore.RuntimeContext) -> None:
    """Every kind of set_metrics call: the C path takes some, the Python method the rest."""
    ctx.set_metrics({"loss": 0.5, "acc": 0.25}, "train")
    ctx.set_metrics({"loss": math.nan, "acc": math.inf}, "train")
    ctx.set_metrics({"epoch": 3, "name": "x"}, "train")  # text: the Python method
    ctx.set_metrics({"epoch": 4, "loss": 0.5, "ok": False}, "train")  # numbers: C
    ctx.set_metrics({"epoch": 2**60}, "train")  # beyond 2^53: the Python method
    ctx.set_metrics({"loss": 0.125}, step="validation")  # keyword
    ctx.set_metrics({"loss": 0.75}, category="train")
    ctx.set_metrics({}, "train")
    ctx.logger.set_step("fit")
    ctx.set_metrics({"loss": 1.5})  # the current step
    changing = {"loss": 2.0}
    ctx.set_metrics(changing, "train")
    changing["loss"] = 99.0  # after the call: the record keeps 2.0


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_both_ways_store_the_same_metrics(kind: str, tmp_path: Path) -> None:
    with implementation("python"), open_run(tmp_path / "py", env={}) as python_ctx:
        _job(python_ctx)
    with implementation(kind), open_run(tmp_path / kind, env={}) as ctx:
        _job(ctx)
        latest = ctx.logger.get_metrics()
    assert _metrics_rows(ctx.run_dir) == _metrics_rows(python_ctx.run_dir)
    assert latest["train"]["loss"] == 2.0 and latest["fit"] == {"loss": 1.5}
    # newest by seq across the C buffer and the Python method's records, types kept
    assert latest["train"]["epoch"] == 2**60 and latest["train"]["ok"] is False


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_bad_calls_raise_the_same_errors(kind: str, tmp_path: Path) -> None:
    with implementation(kind), open_run(tmp_path, env={}) as ctx:
        with pytest.raises(TypeError, match="must be a dict"):
            ctx.set_metrics([0.5], "train")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="category"):
            ctx.set_metrics({"loss": 0.5}, "")
        with pytest.raises(TypeError, match="category must be a string"):
            ctx.set_metrics({"loss": 0.5}, 3)  # type: ignore[arg-type]
        ctx.set_metrics({"loss": 0.5}, "train")
        ctx.end_log()
        with pytest.raises(FinishedLoggerError):
            ctx.set_metrics({"loss": 0.5}, "train")
    assert len(read_run(ctx.run_dir).metrics) == 1


def test_the_c_path_is_the_one_taken_when_built(tmp_path: Path) -> None:
    with implementation("c"), open_run(tmp_path, env={}) as ctx:
        assert type(ctx.set_metrics).__name__ == "MetricsRecorder"
        assert ctx.set_metrics.open  # type: ignore[attr-defined]
    assert not ctx.set_metrics.open  # type: ignore[attr-defined]


def _speedups() -> Any:
    with implementation("c"):
        from runstore._native import speedups
    assert speedups is not None
    return speedups


def test_recorder_fills_the_buffer_and_wakes_the_writer() -> None:
    speedups = _speedups()
    buffer = speedups.MetricsBuffer()
    woken: list[int] = []
    fallback_calls: list[tuple[Any, ...]] = []

    def fallback(*args: Any, **kwargs: Any) -> str:
        fallback_calls.append((args, kwargs))
        return "fallback"

    wake = lambda: woken.append(len(buffer))  # noqa: E731
    record = speedups.MetricsRecorder(buffer, itertools.count(1), wake, fallback, 0x3)
    for i in range(9):
        assert record({"loss": float(i), "acc": 0.5}, "train") is None
    assert len(buffer) == 9 and buffer.rows == 18 and buffer.uniform and buffer.finite
    assert woken == [4, 8]  # after the 4th and 8th record
    for call in (
        (({"loss": "x"}, "train"), {}),  # text
        (({"loss": 2**53 + 1}, "train"), {}),  # an int beyond a float64's exact ones
        (({1: 1.0}, "train"), {}),  # a key that is not text
        (({"loss": 1.0},), {"step": "train"}),
        (({"loss": 1.0},), {}),
        (({"loss": 1.0}, ""), {}),
        (({f"k{i}": 0.5 for i in range(65)}, "train"), {}),  # more keys than C holds
    ):
        assert record(*call[0], **call[1]) == "fallback"
    assert fallback_calls[0] == (({"loss": "x"}, "train"), {})
    assert fallback_calls[3] == (({"loss": 1.0},), {"step": "train"})
    record.close()
    assert record({"loss": 1.0}, "train") == "fallback"
    assert len(fallback_calls) == 8 and len(buffer) == 9
    assert "closed" in repr(record)

    batch = buffer.take()
    assert len(buffer) == 0 and len(batch) == 9
    ts, seq, category, values = batch.columns()
    assert seq == list(range(1, 10)) and set(category) == {"train"}
    assert values == [{"loss": float(i), "acc": 0.5} for i in range(9)]
    assert batch.last() == (9, "train", {"loss": 8.0, "acc": 0.5})
    assert ts == sorted(ts) and all(type(t) is int for t in ts)
    # ints (exact in a float64) and bools stay in C and come back as logged
    numbers = speedups.MetricsRecorder(buffer, itertools.count(10), lambda: None, fallback, 0xFF)
    numbers({"epoch": 3, "ok": True, "lr": 0.5, "big": -(2**53)}, "train")
    assert len(buffer) == 1 and buffer.rows == 4 and len(fallback_calls) == 8
    assert buffer.last() == (10, "train", {"epoch": 3, "ok": True, "lr": 0.5, "big": -(2**53)})
    assert [type(v) for v in buffer.last()[2].values()] == [int, bool, float, int]


def test_a_batch_knows_when_its_calls_differ() -> None:
    speedups = _speedups()
    buffer = speedups.MetricsBuffer()
    record = speedups.MetricsRecorder(buffer, itertools.count(1), lambda: None, print, 0xFFFF)
    record({"loss": 0.5}, "train")
    record({"loss": 0.25}, "validation")
    assert not buffer.uniform and buffer.finite
    record({"loss": math.nan}, "train")
    assert not buffer.finite
    batch = buffer.take()
    assert batch.lines(orjson.dumps, 10) is None  # NaN: Python's path, with `special`
    assert len(buffer) == 0 and buffer.finite and buffer.last() is None
    buffer.clear()


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["train", "validation", "검증", 'a"b\\c']),
            st.dictionaries(
                st.sampled_from(["loss", "acc", "정확도", "x\ny", "back\\slash", ""]),
                st.floats(allow_nan=False, allow_infinity=False)
                | st.integers(-(2**53), 2**53)
                | st.booleans(),
                max_size=5,
            ),
        ),
        max_size=30,
    ),
    st.integers(1, 7),
)
@settings(max_examples=100, deadline=None)
def test_lines_of_a_batch_decode_to_its_records(
    calls: list[tuple[str, dict[str, float]]], per_line: int
) -> None:
    speedups = _speedups()
    buffer = speedups.MetricsBuffer()
    record = speedups.MetricsRecorder(buffer, itertools.count(1), lambda: None, print, 0xFFFF)
    for category, values in calls:
        record(values, category)
    batch = buffer.take()
    lines = batch.lines(orjson.dumps, per_line)
    assert len(lines) == -(-len(calls) // per_line)
    decoded = decode_lines(METRICS, b"".join(lines))
    assert not decoded.problems and decoded.torn_bytes == 0
    assert decoded.columns == dict(zip(RECORD_FIELDS[METRICS], batch.columns(), strict=True))
    assert [v for _, v in calls] == decoded.columns["values"]
    typed = [[type(x) for x in v.values()] for v in decoded.columns["values"]]
    assert typed == [[type(x) for x in v.values()] for _, v in calls]
    # and the same batch as Arrow, against the Python conversion of its columns
    columns = decoded.columns
    with implementation("python"):
        expected = table_from_columns(METRICS, "w", columns)
    found = number_rows_table("w", batch_rows(batch), dictionary=False)
    assert _decoded(found) == _decoded(expected)


_finite_or_not = st.floats(allow_nan=True, allow_infinity=True)
_calls = st.lists(
    st.tuples(
        st.sampled_from(["train", "validation", "test"]),
        st.dictionaries(st.sampled_from(["loss", "acc", "lr", "f1"]), _finite_or_not),
    ),
    max_size=40,
)


@given(_calls)
@settings(max_examples=100, deadline=None)
def test_c_conversion_makes_the_python_table(calls: list[tuple[str, dict[str, float]]]) -> None:
    records = [
        (10**18 + i * 1001, i, category, values) for i, (category, values) in enumerate(calls)
    ]
    columns = columns_of_records(METRICS, records)
    for dictionary in (False, True):
        with implementation("python"):
            expected = table_from_columns(METRICS, "w", columns, dictionary=dictionary)
        with implementation("c"):
            found = table_from_columns(METRICS, "w", columns, dictionary=dictionary)
        assert found.schema == expected.schema
        assert _decoded(found) == _decoded(expected)


def _decoded(table: pa.Table) -> list[dict[str, Any]]:
    rows = table.to_pylist()
    for row in rows:  # NaN == NaN here
        row["value"] = repr(row["value"])
    return rows


def test_c_conversion_leaves_other_batches_to_python() -> None:
    from runstore.tables import float_rows

    with implementation("c"):
        assert float_rows(columns_of_records(METRICS, [(1, 1, "c", {"a": 1})])) is None
        assert float_rows(columns_of_records(METRICS, [(1, 1, "c", {2: 1.0})])) is None
        assert float_rows(columns_of_records(METRICS, [(1, 1, None, {"a": 1.0})])) is None
        assert float_rows(columns_of_records(METRICS, [(2**70, 1, "c", {"a": 1.0})])) is None
        rows = float_rows(columns_of_records(METRICS, [(1000, 1, "c", {"a": 1.0, "b": 2.0})]))
    assert rows is not None and rows.uniform and rows.finite and rows.keys == ["a", "b"]


def test_pure_python_variable_turns_the_speedups_off() -> None:
    import importlib.util

    built = importlib.util.find_spec("runstore._speedups") is not None
    code = "import runstore._native as n; print(n.speedups is None)"
    default = run_python(f"import os; os.environ.pop('RUNSTORE_PURE_PYTHON', None)\n{code}")
    assert default.stdout.strip() == str(not built), default.stderr  # on wherever built
    found = run_python(f"import os; os.environ['RUNSTORE_PURE_PYTHON'] = '1'\n{code}")
    assert found.stdout.strip() == "True", found.stderr


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_threads_logging_at_once_lose_and_double_nothing(kind: str, tmp_path: Path) -> None:
    # The writer takes batches (every 1 ms) while four threads append: each record once.
    calls = 20_000
    options = runstore.WriterOptions(flush_interval=0.001, seal_bytes=256 * 1024)

    def log(ctx: runstore.RuntimeContext, worker: int) -> None:
        for i in range(calls):
            ctx.set_metrics({"i": float(i), "worker": float(worker)}, f"w{worker}")

    with implementation(kind), open_run(tmp_path, env={}, options=options) as ctx:
        threads = [threading.Thread(target=log, args=(ctx, w)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        latest = ctx.logger.get_metrics()
    table = read_run(ctx.run_dir).metrics
    assert table.num_rows == 2 * 4 * calls
    seqs = table.column("seq").unique()
    assert len(seqs) == 4 * calls
    rows = table.filter(pc.equal(table["key"], "i")).to_pylist()
    for worker in range(4):
        values = [
            r["value"]
            for r in sorted(rows, key=lambda r: r["seq"])
            if r["category"] == f"w{worker}"
        ]
        assert values == [float(i) for i in range(calls)]
        assert latest[f"w{worker}"] == {"i": float(calls - 1), "worker": float(worker)}
