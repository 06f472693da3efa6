"""Reading runstore's own JSON files without pydantic when nothing in them needs it.

A manifest or catalog as runstore writes it holds every value in its declared type
already: a str where a str is declared, a list of ints for `tuple[int, ...]`, a time in
the writer's own `...Z` form. `build` makes the dataclass from such a JSON object
directly and declines (returns None) anything else; `validate` then has pydantic
validate it, so pydantic stays the validator of record (its coercions, its errors).
Importing pydantic and building its validator cost more than reading 2,000 manifests
(issue 14), and a fresh `runstore sql` reads a root's manifests and its catalog only.

A test checks that for any JSON object `build` either declines or agrees with pydantic.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from pydantic import TypeAdapter

__all__ = ["build", "validate"]

_T = TypeVar("_T")

#: Turns a JSON value into the declared type's value, or raises `_Declined`.
_Convert = Callable[[Any], Any]

#: A time exactly as orjson writes an aware UTC datetime with `OPT_UTC_Z`.
_WRITTEN_TIME: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{6})?Z\Z", re.ASCII)


class _Declined(Exception):
    """A value that is not already of its declared type: pydantic's to judge."""


class _Unsupported(Exception):
    """A declared type `build` has no exact reading for: that class always declines."""


#: Each dataclass's fields: name -> (convert, required). None: not supported.
_PLANS: dict[type, dict[str, tuple[_Convert, bool]] | None] = {}


#: pydantic's validator of each class, made the first time a document needs it.
_VALIDATORS: dict[type, TypeAdapter[Any]] = {}


def validate(model: type[_T], data: object) -> _T:
    """`model` from a JSON value: built directly if it is as runstore writes it, else
    validated by pydantic. Raises pydantic's `ValidationError` (a `ValueError`)."""
    built = build(model, data) if type(data) is dict else None
    if built is not None:
        return built
    if model not in _VALIDATORS:
        from pydantic import TypeAdapter

        _VALIDATORS[model] = TypeAdapter(model)
    result: _T = _VALIDATORS[model].validate_python(data)
    return result


def build(model: type[_T], data: dict[str, Any]) -> _T | None:
    """`model` made from `data`, or None unless every value already has its type.

    Keys `model` does not declare are ignored, as pydantic ignores them."""
    try:
        result: _T = _build(model, data)
    except _Declined:
        return None
    return result


def _build(model: type[_T], data: object) -> _T:
    if type(data) is not dict:
        raise _Declined
    plan = _plan(model)
    if plan is None:
        raise _Declined
    values = {}
    for name, (convert, required) in plan.items():
        if name in data:
            values[name] = convert(data[name])
        elif required:
            raise _Declined
    return model(**values)


def _plan(model: type) -> dict[str, tuple[_Convert, bool]] | None:
    if model not in _PLANS:
        hints = typing.get_type_hints(model)
        try:
            _PLANS[model] = {
                f.name: (
                    _converter(hints[f.name]),
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                )
                for f in dataclasses.fields(model)
                if f.init
            }
        except _Unsupported:
            _PLANS[model] = None
    return _PLANS[model]


def _converter(hint: Any) -> _Convert:
    if hint is Any:
        return _same
    if hint in (str, int, bool):
        return _exactly(hint)
    if hint is type(None):
        return _none
    if hint is datetime:
        return _written_time
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return lambda value: _build(hint, value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return _one_of(args)
    if origin in (types.UnionType, typing.Union):
        others = tuple(_converter(arg) for arg in args if arg is not type(None))
        one = others[0] if len(others) == 1 else _first_of(others)
        return _or_none(one) if len(others) < len(args) else one
    if origin is dict and len(args) == 2:
        return _dict_of(_converter(args[0]), _converter(args[1]))
    if origin is list and len(args) == 1:
        return _list_of(_converter(args[0]))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _tuple_of(_converter(args[0]))
    raise _Unsupported(hint)


def _same(value: Any) -> Any:
    return value


def _none(value: Any) -> None:
    if value is not None:
        raise _Declined


def _exactly(kind: type) -> _Convert:
    def convert(value: Any) -> Any:
        if type(value) is not kind:  # not a bool for an int, nor a subclass
            raise _Declined
        return value

    return convert


def _written_time(value: Any) -> datetime:
    if type(value) is not str or _WRITTEN_TIME.match(value) is None:
        raise _Declined
    try:
        return datetime.fromisoformat(value)
    except ValueError:  # a day or hour that does not exist
        raise _Declined from None


def _one_of(choices: tuple[Any, ...]) -> _Convert:
    allowed = {(type(choice), choice) for choice in choices}
    kinds = {kind for kind, _ in allowed}

    def convert(value: Any) -> Any:
        # A choice's type first: a list or dict value is not hashable.
        if type(value) not in kinds or (type(value), value) not in allowed:
            raise _Declined
        return value

    return convert


def _or_none(convert: _Convert) -> _Convert:
    # Not one more option of `_first_of`: most optional fields hold None, and a raise
    # costs more than the test.
    return lambda value: None if value is None else convert(value)


def _first_of(options: tuple[_Convert, ...]) -> _Convert:
    def convert(value: Any) -> Any:
        for option in options:
            try:
                return option(value)
            except _Declined:
                continue
        raise _Declined

    return convert


def _dict_of(key: _Convert, item: _Convert) -> _Convert:
    def convert(value: Any) -> dict[Any, Any]:
        if type(value) is not dict:
            raise _Declined
        return {key(k): item(v) for k, v in value.items()}

    return convert


def _list_of(item: _Convert) -> _Convert:
    def convert(value: Any) -> list[Any]:
        if type(value) is not list:
            raise _Declined
        return [item(v) for v in value]

    return convert


def _tuple_of(item: _Convert) -> _Convert:
    def convert(value: Any) -> tuple[Any, ...]:
        if type(value) is not list and type(value) is not tuple:
            raise _Declined
        return tuple(item(v) for v in value)

    return convert
