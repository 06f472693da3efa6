"""Records to Arrow: the fast paths (C and Python) give the exact path's tables."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from unittest import mock

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstore import tables
from runstore.format import EVENTS, METRICS, SCHEMAS
from runstore.jsonl import (
    JsonText,
    columns_of_records,
    decode_lines,
    uniform_keys,
)
from runstore.tables import MetricsHint, table_from_columns, table_of_batches

from .conftest import IMPLEMENTATIONS, implementation
from .records import (
    events_line,
    finite,
    metric_records,
    metrics_columns,
    same_table,
)

#: The exact path: nothing known, every value converted with its kind.
EXACT = MetricsHint(all_floats=False, keys=None)


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
@given(st.lists(st.tuples(st.floats(), finite), max_size=30))
@settings(max_examples=50, deadline=None)
def test_all_float_fast_path_matches_exact_path(
    kind: str, pairs: list[tuple[float, float]]
) -> None:
    records = [(i, i, "c", {"a": a, "b": b}) for i, (a, b) in enumerate(pairs)]
    with implementation(kind):
        fast = table_from_columns(METRICS, "w", metrics_columns(records), hint=None)
    exact = table_from_columns(METRICS, "w", metrics_columns(records), hint=EXACT)
    assert same_table(fast, exact)


def test_event_data_is_json_text_and_timestamps_are_utc_microseconds() -> None:
    record = (
        1_700_000_000_123_456_789,
        7,
        "ev",
        "info",
        "step",
        JsonText(b'{"a":[1,2]}'),
        None,
        None,
    )
    decoded = decode_lines(EVENTS, events_line(record))
    table = table_from_columns(EVENTS, "w", decoded.columns)
    row = table.to_pylist()[0]
    assert orjson.loads(row["data"]) == {"a": [1, 2]}
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert row["ts"].timestamp() == 1_700_000_000.123456


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
@given(st.lists(st.dictionaries(st.sampled_from("abcd"), finite, min_size=1), max_size=20))
@settings(max_examples=50, deadline=None)
def test_all_float_batches_with_varying_keys_match_the_exact_path(
    kind: str, maps: list[dict[str, float]]
) -> None:
    records = [(i, i, ("c", "d")[i % 2] if i % 3 else "c", m) for i, m in enumerate(maps)]
    with implementation(kind):
        fast = table_from_columns(METRICS, "w", metrics_columns(records), hint=None)
    exact = table_from_columns(METRICS, "w", metrics_columns(records), hint=EXACT)
    assert same_table(fast, exact)


def test_uniform_keys_are_found_only_when_every_call_has_them_in_order() -> None:
    calls = [{"loss": float(i), "acc": 0.5} for i in range(3000)]  # several check slices
    assert uniform_keys(calls) == ["loss", "acc"]
    reordered = [*calls[:2500], {"acc": 0.5, "loss": 1.0}, *calls[2501:]]
    assert uniform_keys(reordered) is None
    assert uniform_keys([*calls, {"loss": 1.0}]) is None  # fewer keys, last
    assert uniform_keys([*calls[:1500], {**calls[0], "lr": 0.1}, *calls[1500:]]) is None
    assert uniform_keys([{1: 0.5}, {1: 0.25}]) is None  # keys JSON would turn to text
    assert uniform_keys([{}, {}]) is None
    assert uniform_keys([]) is None
    table = table_from_columns(
        METRICS,
        "w",
        metrics_columns([(i, i, "c", d) for i, d in enumerate(calls)]),
    )
    assert table.column("key").to_pylist()[:4] == ["loss", "acc", "loss", "acc"]
    assert table.column("value").to_pylist()[-2:] == [2999.0, 0.5]


@pytest.mark.usefixtures("pure_python")  # the Python path's row index cache
def test_uniform_batches_of_many_shapes_convert_like_the_exact_path() -> None:
    # The row index arrays are kept per width and sliced: shapes come and go.
    for width, count in [(2, 50), (1, 7), (3, 200), (5, 3), (6, 10), (2, 9), (4, 1), (2, 300)]:
        keys = [f"k{j}" for j in range(width)]
        records = [(i, i, "c", {k: i + j / 8 for j, k in enumerate(keys)}) for i in range(count)]
        fast = table_from_columns(METRICS, "w", metrics_columns(records), hint=None)
        exact = table_from_columns(METRICS, "w", metrics_columns(records), hint=EXACT)
        assert same_table(fast, exact), (width, count)


@pytest.mark.usefixtures("pure_python")  # the C conversion looks at keys in its one pass
def test_keys_the_caller_found_are_not_looked_for_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # The writer finds a batch's uniform keys once, for the latest values and Arrow.
    records = [(i, i, "c", {"loss": i / 4, "acc": 0.5}) for i in range(5)]
    expected = table_from_columns(METRICS, "w", metrics_columns(records), hint=None)

    def looked(values: object) -> None:
        raise AssertionError("uniform_keys called again")

    monkeypatch.setattr(tables, "uniform_keys", looked)
    for keys in (["loss", "acc"], None):
        hint = MetricsHint(all_floats=True, keys=keys)
        found = table_from_columns(METRICS, "w", metrics_columns(records), hint=hint)
        assert same_table(found, expected)
    with pytest.raises(AssertionError, match="called again"):
        table_from_columns(METRICS, "w", metrics_columns(records), hint=None)


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
@given(st.lists(metric_records(), max_size=5))
@settings(max_examples=60, deadline=None)
def test_batches_converted_at_once_are_the_batches_converted_one_by_one(
    kind: str, batches: list[list[tuple[object, ...]]]
) -> None:
    writers = [f"w{i}" for i in range(len(batches))]
    laid = metrics_columns([record for batch in batches for record in batch])
    bounds = list(itertools.accumulate(map(len, batches), initial=0))
    with implementation(kind):
        table, counts = table_of_batches(METRICS, laid, bounds, writers)
    one_by_one = [
        table_from_columns(METRICS, writer, metrics_columns(batch))
        for writer, batch in zip(writers, batches, strict=True)
    ]
    assert counts == [t.num_rows for t in one_by_one]
    assert same_table(table, pa.concat_tables(one_by_one) if one_by_one else table)


def test_batches_of_events_keep_their_writers() -> None:
    record = (1_700_000_000_000_000_000, 1, "message", "info", None, {"content": "hi"}, None, None)
    laid = columns_of_records(EVENTS, [record, record, record])
    table, counts = table_of_batches(EVENTS, laid, [0, 2, 2, 3], ["a", "b", "c"])
    assert counts == [2, 0, 1]
    assert table.column("writer").to_pylist() == ["a", "a", "c"]
    assert table.schema == SCHEMAS[EVENTS]


def test_repeat_each_skips_the_values_counted_zero_times() -> None:
    assert tables.repeat_each(["a", "b", "c"], [0, 2, 1]).to_pylist() == ["b", "b", "c"]
    assert tables.repeat_each(["a"], [0]).to_pylist() == []


# -- columns made without pyarrow.compute (a store's first look at short runs) ----------

_INT64_VALUES = st.integers(-(2**63), 2**63 - 1)


def _both_ways(make: Callable[[], pa.Array]) -> tuple[pa.Array, pa.Array]:
    """What `make` gives in Python and with pyarrow.compute."""
    with mock.patch.object(tables, "_compute_pays", lambda values: False):
        in_python = make()
    with mock.patch.object(tables, "_compute_pays", lambda values: True):
        computed = make()
    return in_python, computed


@given(st.lists(st.one_of(st.none(), _INT64_VALUES), max_size=50))
def test_timestamps_made_in_python_are_arrows_own(ts_ns: list[int | None]) -> None:
    in_python, computed = _both_ways(lambda: tables._timestamps(ts_ns))
    assert in_python.equals(computed)  # negative ones truncated toward zero too


@given(
    st.lists(st.text(max_size=5), min_size=1, max_size=6, unique=True),
    st.lists(st.one_of(st.none(), st.integers(0, 5)), max_size=50),
)
def test_dictionary_text_decoded_in_python_is_arrows_own(
    words: list[str], picks: list[int | None]
) -> None:
    indices = pa.array([None if p is None else p % len(words) for p in picks], pa.int32())
    array = pa.DictionaryArray.from_arrays(indices, pa.array(words, pa.string()))
    in_python, computed = _both_ways(lambda: tables._text(array, dictionary=False))
    assert in_python.equals(computed)


@given(st.lists(st.tuples(st.text(max_size=4), st.integers(0, 5)), max_size=20))
def test_repeat_each_in_python_is_arrows_own(runs: list[tuple[str, int]]) -> None:
    values, counts = [v for v, _ in runs], [c for _, c in runs]
    in_python, computed = _both_ways(lambda: tables.repeat_each(values, counts))
    assert in_python.equals(computed)
    assert in_python.to_pylist() == [v for v, c in runs for _ in range(c)]


def test_large_columns_are_made_with_pyarrow_compute() -> None:
    with mock.patch.dict(sys.modules):
        sys.modules.pop("pyarrow.compute", None)  # as in a process that never loaded it
        assert not tables._compute_pays(10)
        assert tables._compute_pays(1 << 16)
    import pyarrow.compute  # noqa: F401  (once loaded, every size pays)

    assert tables._compute_pays(10)
