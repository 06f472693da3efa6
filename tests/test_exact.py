"""`_exact.build`: for any JSON object it declines or agrees with pydantic."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from runstore._exact import build
from runstore.archive import Catalog
from runstore.format import RunManifest, WriterManifest

MODELS = (RunManifest, WriterManifest, Catalog)
_PYDANTIC = {model: TypeAdapter(model) for model in MODELS}

#: JSON as orjson reads it: ints within 64 bits.
_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_json = st.recursive(
    st.none() | st.booleans() | _ints | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=4,
)
_written_times = st.datetimes(timezones=st.just(UTC)).map(
    lambda moment: orjson.dumps(moment, option=orjson.OPT_UTC_Z).decode().strip('"')
)
#: Times almost as runstore writes them: other fractions, offsets, impossible days.
_near_times = st.from_regex(
    r"\A\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,7})?(Z|[+-]\d{2}:\d{2})?\Z"
)


@functools.cache
def _values(hint: Any, junk: bool) -> st.SearchStrategy[Any]:
    """Values of a declared type as runstore writes them; with `junk`, now and then
    (one in 12, at any depth) any JSON value, and times almost in the writer's form."""
    written = _written_values(hint, junk)
    if not junk:
        return written
    return st.integers(0, 11).flatmap(lambda pick: _json if pick == 0 else written)


def _written_values(hint: Any, junk: bool) -> st.SearchStrategy[Any]:
    if hint is Any:
        return _json
    if hint is str:
        return st.text(max_size=8)
    if hint is int:
        return _ints
    if hint is type(None):
        return st.none()
    if hint is datetime:
        return st.one_of(_written_times, _written_times, _near_times) if junk else _written_times
    if dataclasses.is_dataclass(hint):
        return _objects(hint, junk)  # type: ignore[arg-type]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is types.UnionType:
        return st.one_of(*(_values(arg, junk) for arg in args))
    if origin is dict:  # JSON keys are text
        return st.dictionaries(_values(args[0], False), _values(args[1], junk), max_size=2)
    if origin in (list, tuple):
        return st.lists(_values(args[0], junk), max_size=2)
    raise AssertionError(f"no strategy for {hint}")


@functools.cache
def _objects(model: type, junk: bool) -> st.SearchStrategy[dict[str, Any]]:
    """The model's fields (the required ones always) and now and then a key it does not
    know (ignored)."""
    hints = typing.get_type_hints(model)
    required, optional = {}, {}
    for f in dataclasses.fields(model):
        if f.name == "extra":
            continue
        given = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        (required if given else optional)[f.name] = _values(hints[f.name], junk)
    return st.fixed_dictionaries(required, optional=optional | {"unknown": _json}).map(dict)


def _check_agrees(model: type, document: dict[str, Any], built: object) -> None:
    try:
        validated = _PYDANTIC[model].validate_python(document)
    except ValidationError as exc:
        raise AssertionError(f"built {built!r}, which pydantic refuses: {exc}") from None
    assert built == validated
    option = orjson.OPT_UTC_Z
    assert orjson.dumps(built, option=option) == orjson.dumps(validated, option=option)


def _for_each_model(test: Callable[..., None]) -> Callable[..., None]:
    """A property test of each model, 300 examples, drawing with `data`."""
    drawing = given(data=st.data())(test)
    each = pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
    return settings(max_examples=300, deadline=None)(each(drawing))


@_for_each_model
def test_what_runstore_writes_is_built_as_pydantic_reads_it(
    model: type, data: st.DataObject
) -> None:
    document = data.draw(_objects(model, junk=False))
    built = build(model, document)
    assert built is not None, document
    _check_agrees(model, document, built)


@_for_each_model
def test_any_other_document_is_declined_or_built_as_pydantic_reads_it(
    model: type, data: st.DataObject
) -> None:
    document = data.draw(st.one_of(_objects(model, junk=True), _json))
    built = build(model, document) if isinstance(document, dict) else None
    event("declined" if built is None else "built")
    if built is not None:
        _check_agrees(model, document, built)


def _written(model: type) -> dict[str, Any]:
    moment = datetime(2026, 12, 2, 11, 37, 40, 123456, tzinfo=UTC)
    if model is Catalog:
        return {
            "archive_version": 2,
            "runstore_version": "0.1.0",
            "parts": [
                {
                    "name": "part-1",
                    "runs": {"run-1": {"run_id": "a", "signature": [1, 2, 3, 4], "problems": []}},
                    "rows": {"metrics": 3},
                }
            ],
        }
    common = {"run_id": "a", "host": "h", "pid": 7, "started_at": moment, "writer_id": "w"}
    if model is WriterManifest:
        return orjson.loads(WriterManifest(**common, heartbeat_at=moment).to_json())
    return orjson.loads(RunManifest(**common, env={"A": "1"}, ended_at=moment).to_json())


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_a_written_manifest_and_catalog_are_built(model: type) -> None:
    document = _written(model)
    built = build(model, document)
    assert built is not None
    assert built == _PYDANTIC[model].validate_python(document)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pid", True),  # a bool is not an int here, though pydantic may take it
        ("pid", 7.0),
        ("started_at", "2026-12-02T11:37:40+00:00"),  # not the writer's form
        ("started_at", "2026-02-30T11:37:40Z"),  # no such day
        ("status", "paused"),
        ("env", {"A": 1}),
        ("run_id", None),
    ],
)
def test_values_not_as_written_are_left_to_pydantic(field: str, value: object) -> None:
    document = _written(RunManifest) | {field: value}
    assert build(RunManifest, document) is None


def test_a_missing_required_field_is_left_to_pydantic() -> None:
    document = _written(RunManifest)
    del document["host"]
    assert build(RunManifest, document) is None
