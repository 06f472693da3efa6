"""The latest metric values the writer keeps: folded in batches, equal to the naive answer."""

from __future__ import annotations

import threading
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from runstore import WriterOptions, open_run, read_run
from runstore._latest import LatestMetrics
from runstore.format import METRICS
from runstore.jsonl import JsonText, columns_of_records, uniform_keys

_records = st.lists(
    st.tuples(
        st.sampled_from([None, "train", "val"]),
        st.lists(st.sampled_from(["loss", "acc", "lr"]), min_size=1, max_size=3, unique=True),
    ),
    max_size=40,
)


def _naive(records: list[tuple[Any, ...]]) -> dict[Any, dict[str, Any]]:
    latest: dict[Any, dict[str, tuple[int, Any]]] = {}
    for _, seq, category, values in records:
        for key, value in values.items():
            kept = latest.setdefault(category, {}).get(key)
            if kept is None or kept[0] < seq:
                latest[category][key] = (seq, value)
    return {c: {k: v for k, (_, v) in slot.items()} for c, slot in latest.items()}


@given(_records, st.lists(st.integers(0, 40), max_size=6), st.randoms(), st.booleans())
def test_folding_in_any_batches_and_order_equals_the_naive_answer(
    shape: list[tuple[Any, list[str]]], cuts: list[int], random: Any, hinted: bool
) -> None:
    records = [
        (0, seq, category, {key: float(seq * 10 + i) for i, key in enumerate(keys)})
        for seq, (category, keys) in enumerate(shape, start=1)
    ]
    arrival = list(records)
    random.shuffle(arrival)  # threads may append out of seq order
    bounds = sorted({0, len(arrival), *(c for c in cuts if c <= len(arrival))})
    batches = [arrival[a:b] for a, b in pairwise(bounds)]
    latest = LatestMetrics()
    for batch in batches[:-1]:
        columns = columns_of_records(METRICS, batch)
        # The writer hands over the keys it found uniform, as it does for Arrow.
        latest.fold(columns, uniform_keys(columns["values"]) if hinted else None)
    pending = [columns_of_records(METRICS, batches[-1])] if batches else []
    assert latest.snapshot(pending) == _naive(records)


def test_json_values_come_back_decoded() -> None:
    latest = LatestMetrics()
    latest.fold(
        columns_of_records(METRICS, [(0, 1, "c", {"cfg": JsonText(b'{"lr":[1,2]}'), "n": 3})])
    )
    assert latest.snapshot() == {"c": {"cfg": {"lr": [1, 2]}, "n": 3}}


def test_get_metrics_sees_every_call_before_and_after_the_writer_drains(root: Path) -> None:
    options = WriterOptions(flush_interval=0.01)
    with open_run(root, env={}, options=options) as ctx:
        ctx.set_metrics({"loss": 1.0, "acc": 0.5}, "train")
        assert ctx.logger.get_metrics("train") == {"loss": 1.0, "acc": 0.5}  # not drained
        ctx.flush()
        ctx.set_metrics({"loss": 0.5, "note": "ok", "epoch": np.int64(2)}, "train")
        assert ctx.logger.get_metrics() == {
            "train": {"loss": 0.5, "acc": 0.5, "note": "ok", "epoch": 2}
        }

        def log(category: str) -> None:
            for i in range(2000):
                ctx.set_metrics({"i": float(i)}, category)

        threads = [threading.Thread(target=log, args=(c,)) for c in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert ctx.logger.get_metrics("a") == {"i": 1999.0}
        assert ctx.logger.get_metrics("b") == {"i": 1999.0}
    run = read_run(ctx.run_dir)
    assert run.latest_metrics()["train"]["epoch"] == 2
    for category in ("a", "b"):  # records from two threads at once stay whole
        values = [r["value"] for r in run.metrics.to_pylist() if r["category"] == category]
        assert sorted(values) == [float(i) for i in range(2000)]
    assert ctx.logger.get_metrics("train")["loss"] == 0.5  # still there after close
