"""Live segments' JSONL lines: torn tails read as a prefix, garbage never hides good lines."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from runstore.format import EVENTS, METRICS, PROGRESS
from runstore.jsonl import (
    MAX_RECORDS_PER_LINE,
    columns_of_records,
    decode_lines,
    encode_lines,
    header_line,
)
from runstore.tables import table_from_columns

from .records import (
    encode_columns,
    progress_line,
    progress_record,
)


@given(st.integers(1, 30), st.data())
@settings(max_examples=100, deadline=None)
def test_any_torn_tail_reads_as_a_prefix(count: int, data: st.DataObject) -> None:
    lines = [progress_line(seq) for seq in range(1, count + 1)]
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
        PROGRESS, columns_of_records(PROGRESS, [progress_record(1), progress_record(2)])
    )
    decoded = decode_lines(PROGRESS, good + garbage, where="seg")
    assert decoded.columns["seq"][:2] == [1, 2]
    first_two = {name: values[:2] for name, values in decoded.columns.items()}
    assert table_from_columns(PROGRESS, "w", first_two).num_rows == 2


def test_newer_segment_header_is_reported() -> None:
    header = orjson.dumps({"runstore": 99, "stream": "events"}) + b"\n"
    decoded = decode_lines(EVENTS, header, where="seg")
    assert "format version 99" in decoded.problems[0]


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


def test_a_line_that_is_not_a_batch_of_records_is_named_and_skipped() -> None:
    good = progress_line(1)
    line = orjson.loads(good)
    bad = [
        ({**line, "extra": [1]}, "unknown field 'extra'"),
        ({**line, "special": [None]}, "unknown field 'special'"),  # metrics' only
        ({k: v for k, v in line.items() if k != "total"}, "field 'total' missing"),
        ({**line, "current": [1.0, 2.0]}, "field 'current' missing or of another length"),
        ({**line, "seq": 1}, "not a line of progress records"),
    ]
    blob = b"".join(orjson.dumps(one) + b"\n" for one, _ in bad) + progress_line(2)
    decoded = decode_lines(PROGRESS, blob, where="seg")
    assert decoded.columns["seq"] == [2]
    assert len(decoded.problems) == len(bad)
    for problem, (_, expected) in zip(decoded.problems, bad, strict=True):
        assert expected in problem and problem.startswith("seg byte ")
    # Metrics lines may hold `special` (the non-finite values), and nothing else extra.
    metrics = orjson.dumps({"ts_ns": [1], "seq": [1], "category": ["c"], "values": [{}]})
    extra = metrics[:-1] + b',"more":[1]}\n'
    decoded = decode_lines(METRICS, metrics + b"\n" + extra, where="seg")
    assert decoded.columns["seq"] == [1]
    assert len(decoded.problems) == 1 and "unknown field 'more'" in decoded.problems[0]
