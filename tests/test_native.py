"""The C speedups against pure Python: the same records, tables and errors either way."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import runstore
from runstore import FinishedLoggerError, open_run, read_run
from runstore.format import METRICS
from runstore.segments import columns_of_records, table_from_columns

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
    ctx.set_metrics({"epoch": 3, "name": "x"}, "train")  # not all floats
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


def test_recorder_appends_whole_records_and_wakes_the_writer() -> None:
    with implementation("c"):
        from runstore._native import speedups
    assert speedups is not None
    records: list[Any] = []
    woken: list[int] = []
    fallback_calls: list[tuple[Any, ...]] = []
    sequence = itertools.count(1)

    def fallback(*args: Any, **kwargs: Any) -> str:
        fallback_calls.append((args, kwargs))
        return "fallback"

    record = speedups.MetricsRecorder(
        records, sequence, lambda: woken.append(len(records)), fallback, 0x3
    )
    for i in range(9):
        assert record({"loss": float(i)}, "train") is None
    assert len(records) == 9 * 4
    assert records[1::4] == list(range(1, 10)) and set(records[2::4]) == {"train"}
    assert woken == [16, 32]  # after the 4th and 8th record
    assert record({"loss": 1}, "train") == "fallback"  # an int
    assert record({"loss": 1.0}, step="train") == "fallback"
    assert record({"loss": 1.0}) == "fallback"
    assert record({"loss": 1.0}, "") == "fallback"
    record.close()
    assert record({"loss": 1.0}, "train") == "fallback"
    assert len(fallback_calls) == 5 and len(records) == 9 * 4
    assert "closed" in repr(record)


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
            expected = table_from_columns(
                METRICS, "w", columns, all_floats=True, dictionary=dictionary
            )
        with implementation("c"):
            found = table_from_columns(
                METRICS, "w", columns, all_floats=True, dictionary=dictionary
            )
        assert found.schema == expected.schema
        assert _decoded(found) == _decoded(expected)


def _decoded(table: pa.Table) -> list[dict[str, Any]]:
    rows = table.to_pylist()
    for row in rows:  # NaN == NaN here
        row["value"] = repr(row["value"])
    return rows


def test_c_conversion_leaves_other_batches_to_python() -> None:
    from runstore._native import float_rows

    with implementation("c"):
        assert float_rows(columns_of_records(METRICS, [(1, 1, "c", {"a": 1})])) is None
        assert float_rows(columns_of_records(METRICS, [(1, 1, "c", {2: 1.0})])) is None
        assert float_rows(columns_of_records(METRICS, [(1, 1, None, {"a": 1.0})])) is None
        assert float_rows(columns_of_records(METRICS, [(2**70, 1, "c", {"a": 1.0})])) is None
        rows = float_rows(columns_of_records(METRICS, [(1000, 1, "c", {"a": 1.0, "b": 2.0})]))
    assert rows is not None and rows.uniform and rows.finite and rows.keys == ["a", "b"]


def test_pure_python_variable_turns_the_speedups_off() -> None:
    code = "import runstore._native as n; print(n.speedups is None)"
    assert run_python(code).stdout.strip() in ("True", "False")
    found = run_python(f"import os; os.environ['RUNSTORE_PURE_PYTHON'] = '1'\n{code}")
    assert found.stdout.strip() == "True", found.stderr
