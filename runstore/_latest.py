"""The newest metric value per category and key, kept off the logging hot path.

`set_metrics` only appends a record; the writer folds each drained batch in here, and
`get_metrics` folds the records not yet drained on top of a copy. Folding a batch costs
a few C-level passes when its records share one category and key set (the usual
training loop), so keeping the latest values is nearly free per call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any, Final

import orjson

from .segments import JsonText

__all__ = ["LatestMetrics"]

_SEQ: Final = itemgetter(1)
_CATEGORY: Final = itemgetter(2)
_KEYS: Final = itemgetter(3)


def _newest_per_key_set(records: Sequence[Sequence[Any]]) -> Iterable[Sequence[Any]]:
    """The records that may hold a newest value: the one of highest seq per
    (category, keys); the others are wholly shadowed."""
    categories = list(map(_CATEGORY, records))
    keys = list(map(_KEYS, records))
    if categories.count(categories[0]) == len(records) and keys.count(keys[0]) == len(records):
        return (max(records, key=_SEQ),)
    newest: dict[tuple[Any, Any], Sequence[Any]] = {}
    for record in records:
        combo = (record[2], record[3])
        prior = newest.get(combo)
        if prior is None or prior[1] < record[1]:
            newest[combo] = record
    return newest.values()


class LatestMetrics:
    """{category: {key: (seq, value)}} of one writer; values as the records hold them
    (JSON values as `JsonText`). Not thread-safe: the writer guards it with its lock."""

    def __init__(self) -> None:
        self._values: dict[str | None, dict[str, tuple[int, Any]]] = {}

    def fold(self, records: Sequence[Sequence[Any]]) -> None:
        """Take metrics records `(ts, seq, category, keys, values[, special])`: a
        value replaces the one kept for its key if its seq is higher."""
        if not records:
            return
        values = self._values
        for record in _newest_per_key_set(records):
            seq = record[1]
            slot = values.get(record[2])
            if slot is None:
                slot = values[record[2]] = {}
            for key, value in zip(record[3], record[4], strict=True):
                kept = slot.get(key)
                if kept is None or kept[0] < seq:
                    slot[key] = (seq, value)

    def snapshot(self, pending: Sequence[Sequence[Any]] = ()) -> dict[str | None, dict[str, Any]]:
        """{category: {key: value}} with `pending` records folded in (not kept)."""
        merged = LatestMetrics()
        merged._values = {category: dict(slot) for category, slot in self._values.items()}
        merged.fold(pending)
        return {
            category: {
                key: orjson.loads(bytes(value)) if isinstance(value, JsonText) else value
                for key, (_, value) in slot.items()
            }
            for category, slot in merged._values.items()
        }
