"""The segment codec: records round-trip, torn tails read as a prefix, garbage is reported."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstore import segments
from runstore.format import EVENTS, METRICS, PROGRESS, SCHEMAS
from runstore.reader import decode_metric
from runstore.segments import (
    MAX_RECORDS_PER_LINE,
    Columns,
    JsonText,
    columns_of_records,
    decode_lines,
    encode_lines,
    header_line,
    read_segment,
    table_from_columns,
    uniform_keys,
)

from .conftest import IMPLEMENTATIONS, implementation

finite = st.floats(allow_nan=False, allow_infinity=False)
metric_values = st.one_of(
    st.floats(),  # NaN and infinities included
    st.integers(min_value=-(2**80), max_value=2**80),
    st.booleans(),
    st.text(max_size=8),
    st.none(),
    st.lists(st.integers(-5, 5), max_size=3),
)
categories = st.one_of(st.none(), st.text(min_size=1, max_size=6))


def encode_columns(stream: str, columns: Columns, *, finite: bool = False) -> bytes:
    return b"".join(encode_lines(stream, columns, finite=finite))


@st.composite
def metric_records(draw: st.DrawFn) -> list[tuple[object, ...]]:
    count = draw(st.integers(0, 20))
    records = []
    for seq in range(1, count + 1):
        values = draw(st.dictionaries(st.text(min_size=1, max_size=5), metric_values, max_size=4))
        stored = {
            k: JsonText(orjson.dumps(v)) if isinstance(v, list) else v for k, v in values.items()
        }
        records.append((1_700_000_000_000_000_000 + seq, seq, draw(categories), stored))
    return records


def _metrics(records: list[tuple[object, ...]]) -> Columns:
    return columns_of_records(METRICS, records)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b and type(a) is type(b)


def _same_table(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and rows, NaN equal to NaN."""
    rows_a, rows_b = a.to_pylist(), b.to_pylist()
    return (
        a.schema == b.schema
        and len(rows_a) == len(rows_b)
        and all(_same(x[name], y[name]) for x, y in zip(rows_a, rows_b, strict=True) for name in x)
    )


@given(metric_records())
@settings(max_examples=150, deadline=None)
def test_metrics_round_trip_through_jsonl_with_their_types(
    records: list[tuple[object, ...]],
) -> None:
    data = header_line(METRICS, "w1", 1) + encode_columns(METRICS, _metrics(records))
    decoded = decode_lines(METRICS, data, where="seg")
    assert decoded.problems == [] and decoded.torn_bytes == 0
    table = table_from_columns(METRICS, "w1", decoded.columns)
    assert table.schema == SCHEMAS[METRICS]
    # In memory (the writer's own conversion) and decoded from the line: the same table.
    assert _same_table(table, table_from_columns(METRICS, "w1", _metrics(records)))
    got = [decode_metric(r["value"], r["kind"], r["text"]) for r in table.to_pylist()]
    expected = [
        orjson.loads(bytes(v)) if isinstance(v, JsonText) else v
        for r in records
        for v in r[3].values()  # type: ignore[attr-defined]
    ]
    assert len(got) == len(expected)
    assert all(_same(e, g) for e, g in zip(expected, got, strict=True))
    keys = [r["key"] for r in table.to_pylist()]
    assert keys == [k for r in records for k in r[3]]  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
@given(st.lists(st.tuples(st.floats(), finite), max_size=30))
@settings(max_examples=50, deadline=None)
def test_all_float_fast_path_matches_exact_path(
    kind: str, pairs: list[tuple[float, float]]
) -> None:
    records = [(i, i, "c", {"a": a, "b": b}) for i, (a, b) in enumerate(pairs)]
    with implementation(kind):
        fast = table_from_columns(METRICS, "w", _metrics(records), all_floats=True)
    exact = table_from_columns(METRICS, "w", _metrics(records), all_floats=False)
    assert _same_table(fast, exact)


def _progress(seq: int) -> tuple[object, ...]:
    return (seq * 1000, seq, "train", float(seq), 100.0, float(seq), 0.5, 1.0, "running", None)


def _progress_line(seq: int) -> bytes:
    return encode_columns(PROGRESS, columns_of_records(PROGRESS, [_progress(seq)]))


def _events_line(record: tuple[object, ...]) -> bytes:
    return encode_columns(EVENTS, columns_of_records(EVENTS, [record]))


@given(st.integers(1, 30), st.data())
@settings(max_examples=100, deadline=None)
def test_any_torn_tail_reads_as_a_prefix(count: int, data: st.DataObject) -> None:
    lines = [_progress_line(seq) for seq in range(1, count + 1)]
    blob = header_line(PROGRESS, "w", 1) + b"".join(lines)
    cut = data.draw(st.integers(0, len(blob)))
    decoded = decode_lines(PROGRESS, blob[:cut])
    seqs = decoded.columns["seq"]
    assert seqs == list(range(1, len(seqs) + 1)), "a prefix, in order, nothing invented"
    complete = blob[:cut].count(b"\n") - 1  # minus the header line
    assert len(seqs) == max(complete, 0)
    assert decoded.problems == []
    assert decoded.end + decoded.torn_bytes == cut


@given(st.binary(max_size=200))
@settings(max_examples=200, deadline=None)
def test_garbage_tail_never_hides_the_good_lines_and_never_raises(garbage: bytes) -> None:
    good = header_line(PROGRESS, "w", 1) + encode_columns(
        PROGRESS, columns_of_records(PROGRESS, [_progress(1), _progress(2)])
    )
    decoded = decode_lines(PROGRESS, good + garbage, where="seg")
    assert decoded.columns["seq"][:2] == [1, 2]
    first_two = {name: values[:2] for name, values in decoded.columns.items()}
    assert table_from_columns(PROGRESS, "w", first_two).num_rows == 2


def test_garbage_line_is_reported_with_its_offset_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "w-000001.jsonl"
    first = _events_line((1000, 1, "a", "info", None, {"x": 1}, None, None))
    last = _events_line((3000, 3, "c", "info", None, {}, None, None))
    path.write_bytes(header_line(EVENTS, "w", 1) + first + b"{not json\n" + b"[[1]]\n" + last)
    table, problems = read_segment(EVENTS, path, "w")
    assert table.column("event").to_pylist() == ["a", "c"]
    assert len(problems) == 2
    assert "not valid JSON" in problems[0] and str(path) in problems[0]
    assert "not a line of events records" in problems[1]


def test_record_with_wrong_types_is_isolated(tmp_path: Path) -> None:
    path = tmp_path / "w-000001.jsonl"
    bad = _progress_line(2).replace(b'"current":[2.0]', b'"current":["many"]')
    assert bad != _progress_line(2)
    path.write_bytes(_progress_line(1) + bad + _progress_line(3))
    table, problems = read_segment(PROGRESS, path, "w")
    assert table.column("seq").to_pylist() == [1, 3]
    assert len(problems) == 1 and "wrong type" in problems[0]


def test_newer_segment_header_is_reported() -> None:
    header = orjson.dumps({"runstore": 99, "stream": "events"}) + b"\n"
    decoded = decode_lines(EVENTS, header, where="seg")
    assert "format version 99" in decoded.problems[0]


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
    decoded = decode_lines(EVENTS, _events_line(record))
    table = table_from_columns(EVENTS, "w", decoded.columns)
    row = table.to_pylist()[0]
    assert orjson.loads(row["data"]) == {"a": [1, 2]}
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert row["ts"].timestamp() == 1_700_000_000.123456


def test_unreadable_parquet_segment_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "w-000001.parquet"
    path.write_bytes(b"PAR1 definitely not parquet")
    table, problems = read_segment(METRICS, path, "w")
    assert table.num_rows == 0 and "unreadable Parquet" in problems[0]


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
@given(st.lists(st.dictionaries(st.sampled_from("abcd"), finite, min_size=1), max_size=20))
@settings(max_examples=50, deadline=None)
def test_all_float_batches_with_varying_keys_match_the_exact_path(
    kind: str, maps: list[dict[str, float]]
) -> None:
    records = [(i, i, ("c", "d")[i % 2] if i % 3 else "c", m) for i, m in enumerate(maps)]
    with implementation(kind):
        fast = table_from_columns(METRICS, "w", _metrics(records), all_floats=True)
    exact = table_from_columns(METRICS, "w", _metrics(records), all_floats=False)
    assert _same_table(fast, exact)


def test_finite_float_hint_encodes_the_same_lines_and_still_names_any_key() -> None:
    records = [(1, 1, "c", {"a": 0.5, 2: 1.5}), (2, 2, "c", {"a": 0.25, 2: 1.0})]
    columns = columns_of_records(METRICS, records)
    assert encode_columns(METRICS, columns, finite=True) == encode_columns(METRICS, columns)
    decoded = decode_lines(METRICS, encode_columns(METRICS, columns, finite=True))
    assert decoded.columns["values"] == [{"a": 0.5, "2": 1.5}, {"a": 0.25, "2": 1.0}]


def test_a_large_batch_is_cut_into_lines_that_decode_to_the_batch() -> None:
    count = MAX_RECORDS_PER_LINE * 2 + 3
    records = [(i, i, "c", {"loss": i / 7}) for i in range(count)]
    lines = encode_lines(METRICS, columns_of_records(METRICS, records), finite=True)
    assert len(lines) == 3
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    decoded = decode_lines(METRICS, b"".join(lines))
    assert decoded.columns["seq"] == list(range(count))
    assert decoded.columns["values"][-1] == {"loss": (count - 1) / 7}


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
        METRICS, "w", _metrics([(i, i, "c", d) for i, d in enumerate(calls)]), all_floats=True
    )
    assert table.column("key").to_pylist()[:4] == ["loss", "acc", "loss", "acc"]
    assert table.column("value").to_pylist()[-2:] == [2999.0, 0.5]


@pytest.mark.usefixtures("pure_python")  # the Python path's row index cache
def test_uniform_batches_of_many_shapes_convert_like_the_exact_path() -> None:
    # The row index arrays are kept per width and sliced: shapes come and go.
    for width, count in [(2, 50), (1, 7), (3, 200), (5, 3), (6, 10), (2, 9), (4, 1), (2, 300)]:
        keys = [f"k{j}" for j in range(width)]
        records = [(i, i, "c", {k: i + j / 8 for j, k in enumerate(keys)}) for i in range(count)]
        fast = table_from_columns(METRICS, "w", _metrics(records), all_floats=True)
        exact = table_from_columns(METRICS, "w", _metrics(records), all_floats=False)
        assert _same_table(fast, exact), (width, count)


@pytest.mark.usefixtures("pure_python")  # the C conversion looks at keys in its one pass
def test_keys_the_caller_found_are_not_looked_for_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # The writer finds a batch's uniform keys once, for the latest values and Arrow.
    records = [(i, i, "c", {"loss": i / 4, "acc": 0.5}) for i in range(5)]
    expected = table_from_columns(METRICS, "w", _metrics(records), all_floats=True)

    def looked(values: object) -> None:
        raise AssertionError("uniform_keys called again")

    monkeypatch.setattr(segments, "uniform_keys", looked)
    for keys in (["loss", "acc"], None):
        found = table_from_columns(METRICS, "w", _metrics(records), all_floats=True, keys=keys)
        assert _same_table(found, expected)
    with pytest.raises(AssertionError, match="called again"):
        table_from_columns(METRICS, "w", _metrics(records), all_floats=True)
