"""M4 thinning in DuckDB: what a chart gets of a series, against the series itself."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runstore import Store, open_run
from runstore.viewer.series import SeriesQuery, series

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(min_value=-(2**40), max_value=2**40),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ys=st.lists(values, min_size=1, max_size=300), buckets=st.integers(1, 25))
def test_m4_keeps_first_last_and_extremes_of_every_series(ys: list[float], buckets: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        with open_run(scratch, run_id="r") as ctx:
            for y in ys:
                ctx.set_metrics({"v": y}, "c")
            ctx.end_log()
        with Store(scratch, confined=True) as store:
            seqs = [row[0] for row in store.sql("SELECT seq FROM metrics ORDER BY seq").fetchall()]
            got = series(store, SeriesQuery(run="r", key="v", category="c", buckets=buckets))
    by_x = {
        float(seq): (float(y) if math.isfinite(y) else None)
        for seq, y in zip(seqs, ys, strict=True)
    }
    assert got["total"] == len(ys)
    assert got["x"] == sorted(set(got["x"])) and set(got["x"]) <= set(by_x)
    assert got["y"] == [by_x[x] for x in got["x"]]  # every point drawn is a point logged
    assert got["x"][0] == min(by_x) and got["x"][-1] == max(by_x)
    if len(ys) <= 4 * buckets:
        assert got["exact"] and got["x"] == sorted(by_x)
    else:
        assert not got["exact"] and len(got["x"]) <= 4 * buckets
    finite = [y for y in by_x.values() if y is not None]
    if finite:
        drawn = [y for y in got["y"] if y is not None]
        assert max(finite) in drawn and min(finite) in drawn  # a spike is never hidden


def test_other_categories_keys_and_text_values_stay_out(tmp_path: Path) -> None:
    with open_run(tmp_path, run_id="r") as ctx:
        ctx.set_metrics({"v": 1.0, "name": "resnet"}, "a")
        ctx.set_metrics({"v": 2.0}, "b")
        ctx.set_metrics({"v": 3.0}, "a")
        ctx.end_log()
    with Store(tmp_path, confined=True) as store:
        a = series(store, SeriesQuery(run="r", key="v", category="a"))
        text = series(store, SeriesQuery(run="r", key="name", category="a"))
        none = series(store, SeriesQuery(run="r", key="v", category=None))
    assert a["y"] == [1.0, 3.0] and a["exact"]
    assert text["x"] == [] and text["total"] == 0
    assert none["total"] == 0
