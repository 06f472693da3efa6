"""Values JSON and Arrow cannot take as they are: one rule, live and sealed, C and Python."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstore import RunstoreWarning, Store, open_run, read_run
from runstore._storable import clean_text, json_ready, key_text

from .conftest import IMPLEMENTATIONS, implementation

SURROGATE = "bad \udc80 name"  # what os.fsdecode makes of a file name that is not UTF-8
STORED = "bad \\udc80 name"


def _metrics(run_dir: Path) -> list[tuple[Any, ...]]:
    table = read_run(run_dir).metrics
    return [(r["category"], r["key"], r["kind"], r["value"], r["text"]) for r in table.to_pylist()]


def _messages(run_dir: Path) -> list[str]:
    return [m["text"] for m in read_run(run_dir).messages()]


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_lone_surrogates_are_kept_escaped_and_lose_no_neighbour(tmp_path: Path, kind: str) -> None:
    with implementation(kind):
        ctx = open_run(tmp_path, run_id="r", env={})
        ctx.log_message("before", "info")
        ctx.log_message(SURROGATE, "info")
        ctx.log("upload", {"file": SURROGATE, SURROGATE: 1}, step=SURROGATE)
        ctx.set_metrics({SURROGATE: 1.0, "b": 2.0}, "train")
        ctx.set_metrics({"k": SURROGATE}, "train")
        ctx.set_metrics({"ok": 1.0}, SURROGATE)
        ctx.set_progress(1, 2, SURROGATE)
        ctx.log_message("after", "info")
        ctx.flush()
        run_dir = ctx.run_dir
        live = (_messages(run_dir), _metrics(run_dir))
        ctx.end_log()
        ctx.close()
    assert live[0][:3] == ["before", STORED, "after"]
    expected = [
        ("train", STORED, "float", 1.0, None),
        ("train", "b", "float", 2.0, None),
        ("train", "k", "str", None, STORED),
        (STORED, "ok", "float", 1.0, None),
    ]
    assert live[1] == expected
    assert _metrics(run_dir) == expected  # sealed: the same
    events = read_run(run_dir).events.to_pylist()
    upload = next(e for e in events if e["event"] == "upload")
    assert upload["category"] == STORED
    assert orjson.loads(upload["data"]) == {"file": STORED, STORED: 1}
    assert read_run(run_dir).progress.column("category").to_pylist() == [STORED]
    with Store(tmp_path) as store:
        texts = store.sql("SELECT text FROM messages ORDER BY seq").fetchall()
        assert [t for (t,) in texts][:3] == ["before", STORED, "after"]


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_keys_that_are_not_strings_are_stored_as_json_names_them(tmp_path: Path, kind: str) -> None:
    with implementation(kind):
        ctx = open_run(tmp_path, run_id="r", env={})
        ctx.set_metrics({None: 1.0}, "t")
        ctx.set_metrics({True: 2.0, 1.5: 3.0}, "t")
        ctx.set_metrics({(1, 2): 4.0}, "t")
        ctx.set_metrics({1: 5.0, "1": 6.0}, "t")  # same text: the later one wins
        ctx.log("event", {(1, 2): "tuple", None: "none"})
        ctx.flush()
        run_dir = ctx.run_dir
        live = _metrics(run_dir)
        newest = ctx.logger.get_metrics("t")
        ctx.end_log()
        ctx.close()  # once raised pyarrow.ArrowInvalid for the None key
    expected = [
        ("t", "null", "float", 1.0, None),
        ("t", "true", "float", 2.0, None),
        ("t", "1.5", "float", 3.0, None),
        ("t", "(1, 2)", "float", 4.0, None),
        ("t", "1", "float", 6.0, None),
    ]
    assert live == expected and _metrics(run_dir) == expected
    assert newest == {"null": 1.0, "true": 2.0, "1.5": 3.0, "(1, 2)": 4.0, "1": 6.0}
    event = next(e for e in read_run(run_dir).events.to_pylist() if e["event"] == "event")
    assert event["data"] == '{"(1, 2)":"tuple","null":"none"}'


def test_an_int_too_long_for_decimal_is_stored_as_hex(tmp_path: Path) -> None:
    huge = 10**5000
    ctx = open_run(tmp_path, run_id="r", env={})
    with pytest.warns(RunstoreWarning, match="too long to store in decimal"):
        ctx.set_metrics({"huge": huge, "loss": 0.5}, "t")
    with pytest.warns(RunstoreWarning, match="too long"):
        ctx.log("event", {"huge": huge})
    ctx.flush()
    assert ctx.logger.get_metrics("t") == {"huge": hex(huge), "loss": 0.5}
    live = _metrics(ctx.run_dir)
    ctx.end_log()
    ctx.close()
    assert live == _metrics(ctx.run_dir)
    assert live == [("t", "huge", "str", None, hex(huge)), ("t", "loss", "float", 0.5, None)]


def test_event_data_with_nan_and_a_huge_int_is_kept(tmp_path: Path) -> None:
    with open_run(tmp_path, run_id="r", env={}) as ctx:
        ctx.log("event", {"nan": math.nan, "big": 2**80, "inf": -math.inf})
    event = next(e for e in read_run(ctx.run_dir).events.to_pylist() if e["event"] == "event")
    assert event["data"] == f'{{"nan":null,"big":{2**80},"inf":null}}'


def test_a_value_stored_as_its_repr_is_text_live_and_sealed(tmp_path: Path) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    ctx = open_run(tmp_path, run_id="r", env={})
    with pytest.warns(RunstoreWarning, match="stored as its repr"):
        ctx.set_metrics({"obj": Opaque(), "nested": {"a": 1}}, "t")
    ctx.flush()
    live = _metrics(ctx.run_dir)
    ctx.end_log()
    ctx.close()
    expected = [("t", "obj", "str", None, "<opaque>"), ("t", "nested", "json", None, '{"a":1}')]
    assert live == expected and _metrics(ctx.run_dir) == expected


@pytest.mark.parametrize("total", [math.inf, -math.inf, math.nan])
def test_progress_needs_a_finite_total(tmp_path: Path, total: float) -> None:
    with open_run(tmp_path, env={}) as ctx, pytest.raises(ValueError, match="total must be > 0"):
        ctx.set_progress(1, total, "t")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_clean_text_always_encodes_and_leaves_valid_text_alone(text: str) -> None:
    cleaned = clean_text(text)
    cleaned.encode("utf-8")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        assert "\\ud" in cleaned
    else:
        assert cleaned == text


_JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**100), max_value=2**100)
    | st.floats()
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.none() | st.integers() | st.text() | st.booleans(), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(_JSONISH)
def test_json_ready_values_encode_as_json(value: Any) -> None:
    import json

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunstoreWarning)
        ready = json_ready(value)
    text = json.dumps(ready, allow_nan=False)
    text.encode("utf-8")
    assert json.loads(text) == ready


def test_key_text_follows_json() -> None:
    assert [key_text(k) for k in (None, True, False, 1, 1.5, "x", (1, 2))] == [
        "null",
        "true",
        "false",
        "1",
        "1.5",
        "x",
        "(1, 2)",
    ]


def test_a_file_whose_name_is_not_utf8_is_attached(tmp_path: Path) -> None:
    source = tmp_path / "files"
    source.mkdir()
    raw = bytes(source) + b"/image-\xff.png"
    with open(raw, "wb") as handle:
        handle.write(b"png")
    name = os.fsdecode(raw)  # holds a lone surrogate
    with open_run(tmp_path / "runs", run_id="r", env={}) as ctx:
        ctx.log_message("before", "info")
        ctx.log("visualization", {"index": 1}, file=name)
        ctx.log_message("after", "info")
    events = read_run(ctx.run_dir).events.to_pylist()
    event = next(e for e in events if e["event"] == "visualization")
    assert event["file"] == clean_text(name) and "\\udcff" in event["file"]
    assert (ctx.run_dir / event["attachment"]).read_bytes() == b"png"
    assert _messages(ctx.run_dir)[:2] == ["before", "after"]
