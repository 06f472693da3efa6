"""What a value the job logs becomes when JSON and Arrow cannot take it as it is.

One set of rules for every stream, live and sealed alike (docs/format.md, "Values"):

- text with lone surrogates (what `os.fsdecode` makes of a file name that is not
  UTF-8) keeps them as `\\udcXX` escapes written out, so the text stays readable and
  every neighbouring record is kept;
- a key that is not a string is stored as the text JSON gives it (`None` -> "null",
  `True` -> "true", `1` -> "1"; a tuple as its `str()`); when two keys of one call
  end up with the same text, the later one wins;
- an int too long to write out in decimal (more digits than Python converts,
  `sys.get_int_max_str_digits()`) is stored as its hex text, with a warning;
- in event data, NaN and infinities are null (as JSON makes them).

These run only when the fast path (orjson on the values as they are) has failed or a
cheap check says it would, never on every call.
"""

from __future__ import annotations

import itertools
import math
import sys
import warnings
from typing import Any, Final

from .errors import RunstoreWarning

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "clean_text",
    "is_clean_text",
    "json_ready",
    "key_text",
    "storable_columns",
    "storable_int",
]

#: The ints JSON (orjson) and Arrow's int64 hold.
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def is_clean_text(text: str) -> bool:
    """Whether `text` encodes as UTF-8 (no lone surrogates); cheap for ASCII."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_text(text: str) -> str:
    """`text` with any lone surrogate written out as a `\\udcXX` escape."""
    if is_clean_text(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def key_text(key: object) -> str:
    """A key as the text it is stored under (what JSON makes of it)."""
    if type(key) is str:
        return clean_text(key)
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(storable_int(int(key)))
    if isinstance(key, float):
        return repr(float(key)) if math.isfinite(key) else str(key)
    return clean_text(str(key))


def _too_long(value: int) -> bool:
    limit = sys.get_int_max_str_digits()
    # bit_length * log10(2) digits, give or take one: exact enough to stay below limit.
    return limit > 0 and value.bit_length() * 0.30103 > limit - 2


def storable_int(value: int) -> int | str:
    """`value`, or its hex text if it is too long to write out in decimal."""
    if INT64_MIN <= value <= INT64_MAX or not _too_long(value):
        return value
    warnings.warn(
        f"runstore: an int of {value.bit_length():,} bits is too long to store in decimal; "
        "stored as its hex text",
        RunstoreWarning,
        stacklevel=5,
    )
    return hex(value)


def json_ready(value: Any) -> Any:
    """`value` with every part JSON (orjson or the stdlib) can write: see the module."""
    if type(value) is str:
        return clean_text(value)
    if isinstance(value, dict):
        return {key_text(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, int):
        return storable_int(int(value))
    if isinstance(value, str):  # a subclass (StrEnum)
        return clean_text(str(value))
    return value


def storable_columns(columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """A batch of metrics records (by column) with every key and category as its
    stored text. The usual batch (ASCII text) is returned as it is, after a pass in C.
    """
    values = columns["values"]
    try:
        if all(map(str.isascii, itertools.chain.from_iterable(values))) and all(
            map(str.isascii, columns["category"])
        ):
            return columns
    except TypeError:  # a key that is not a str (a category always is one)
        pass
    return {
        **columns,
        "category": [clean_text(category) for category in columns["category"]],
        "values": [
            record
            if all(type(key) is str and key.isascii() for key in record)
            else {key_text(key): value for key, value in record.items()}
            for record in values
        ],
    }
