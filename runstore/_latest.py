"""The newest metric value per category and key, kept off the logging hot path.

`set_metrics` only appends a record; the writer folds each drained batch in here, and
`get_metrics` folds the records not yet drained on top of a copy. Folding a batch costs
a few C-level passes when its records share one category and key set (the usual
training loop), so keeping the latest values is nearly free per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from .jsonl import Columns, JsonText

__all__ = ["LatestMetrics"]


class LatestMetrics:
    """{category: {key: (seq, value)}} of one writer; values as the records hold them
    (JSON values as `JsonText`). Not thread-safe: the writer guards it with its lock."""

    def __init__(self) -> None:
        self._values: dict[str | None, dict[str, tuple[int, Any]]] = {}

    def fold(self, columns: Columns, keys: list[str] | None = None) -> None:
        """Take a batch of metrics records (columns `seq`, `category`, `values`): a value
        replaces the one kept for its key if its seq is higher. `keys`: the batch's
        `uniform_keys`, if the caller found them."""
        seqs = columns["seq"]
        if not seqs:
            return
        categories, values = columns["category"], columns["values"]
        first = categories[0]
        last = values[-1]
        if (
            categories.count(first) == len(seqs)
            and max(seqs) == seqs[-1]
            and (keys is not None or len(set().union(*values)) == len(last))
        ):
            # One category, and the newest call holds every key of the batch (a training
            # loop): it alone holds the newest values. A few C-level passes.
            self._keep(first, seqs[-1], last)
            return
        for seq, category, record in zip(seqs, categories, values, strict=True):
            self._keep(category, seq, record)

    def _keep(self, category: str | None, seq: int, record: dict[str, Any]) -> None:
        slot = self._values.get(category)
        if slot is None:
            slot = self._values[category] = {}
        for key, value in record.items():
            kept = slot.get(key)
            if kept is None or kept[0] < seq:
                slot[key] = (seq, value)

    def snapshot(self, pending: Sequence[Columns] = ()) -> dict[str | None, dict[str, Any]]:
        """{category: {key: value}} with `pending` batches folded in (not kept)."""
        merged = LatestMetrics()
        merged._values = {category: dict(slot) for category, slot in self._values.items()}
        for columns in pending:
            merged.fold(columns)
        return {
            category: {
                key: orjson.loads(bytes(value)) if isinstance(value, JsonText) else value
                for key, (_, value) in slot.items()
            }
            for category, slot in merged._values.items()
        }
