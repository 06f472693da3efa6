"""Metric series for charts, thinned in DuckDB by M4 buckets that never hide a spike.

A series longer than `4 * buckets` points is cut into `buckets` equal spans of x, and
each span keeps its first, last, lowest and highest point (M4; lowest and highest among
its finite values: NaN and infinities are gaps in a chart, never its extremes). That is
deterministic (the same query gives the same points on every refresh), keeps every
extreme that would be drawn at this width, and always keeps the series' first and last
point. A zoom asks again for its range, so it shows the points that were left out before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from runstore.query import Store

from .queries import BadRequest

#: What the x axis counts: the writer's sequence (the step), wall time, or seconds
#: since the run started.
X_AXES: Final = {
    "seq": "seq::DOUBLE",
    "ts": "epoch(ts)",
    "elapsed": "epoch(ts) - (SELECT epoch(started_at) FROM runs WHERE run_id = $run)",
}
MAX_BUCKETS: Final = 5000


@dataclass(frozen=True)
class SeriesQuery:
    run: str
    key: str
    category: str | None = None
    x: str = "seq"
    lo: float | None = None
    hi: float | None = None
    buckets: int = 1000

    def __post_init__(self) -> None:
        if self.x not in X_AXES:
            raise BadRequest(f"x {self.x!r} is not one of {', '.join(X_AXES)}")
        if not 1 <= self.buckets <= MAX_BUCKETS:
            raise BadRequest(f"buckets must be 1 to {MAX_BUCKETS}, not {self.buckets}")
        for bound in (self.lo, self.hi):
            if bound is not None and not math.isfinite(bound):
                raise BadRequest("lo and hi must be finite numbers")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def series(store: Store, ask: SeriesQuery) -> dict[str, Any]:
    """Columns `x` and `y` of one metric of one run (y null where not finite), sorted by
    x; `total` points in the range, `exact` when none was left out."""
    params: dict[str, Any] = {"run": ask.run, "key": ask.key, "category": ask.category}
    bounds = ""
    if ask.lo is not None:
        params["lo"] = ask.lo
        bounds += " AND x >= $lo"
    if ask.hi is not None:
        params["hi"] = ask.hi
        bounds += " AND x <= $hi"
    source = f"""s AS (SELECT * FROM (
            SELECT {X_AXES[ask.x]} AS x, value AS y FROM metrics
            WHERE run_id = $run AND key = $key AND category IS NOT DISTINCT FROM $category
              AND kind IN ('float', 'int', 'bool')) WHERE x IS NOT NULL {bounds})"""
    params["n"] = ask.buckets
    # One pass decides: a short series comes back whole, a long one as M4 buckets.
    sql = f"""WITH {source},
        b AS (SELECT min(x) AS lo, max(x) AS hi, count(*) AS total FROM s),
        k AS (SELECT s.x, s.y, b.total,
                     least(floor((s.x - b.lo) / greatest(b.hi - b.lo, 1e-300) * $n),
                           $n - 1)::BIGINT AS bucket
              FROM s, b WHERE b.total > 4 * $n)
        SELECT total, x AS x1, y AS y1, NULL::DOUBLE AS x2, NULL::DOUBLE AS y2,
               NULL::DOUBLE AS x3, NULL::DOUBLE AS y3, NULL::DOUBLE AS x4, NULL::DOUBLE AS y4
        FROM s, b WHERE b.total <= 4 * $n
        UNION ALL
        SELECT any_value(total), min(x), arg_min(y, x),
               arg_min(x, y) FILTER (WHERE isfinite(y)), min(y) FILTER (WHERE isfinite(y)),
               arg_max(x, y) FILTER (WHERE isfinite(y)), max(y) FILTER (WHERE isfinite(y)),
               max(x), arg_max(y, x)
        FROM k GROUP BY bucket"""
    table = store.query(sql, params).table
    total = 0
    points: dict[float, float | None] = {}
    columns = [
        table.column(name).to_pylist()
        for name in ("total", "x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")
    ]
    for row in zip(*columns, strict=True):
        total = row[0]
        for index in range(1, 9, 2):
            x = row[index]
            if x is not None and math.isfinite(x):
                points[x] = _finite(row[index + 1])
    xs = sorted(points)
    return {
        "run": ask.run,
        "key": ask.key,
        "category": ask.category,
        "x_axis": ask.x,
        "x": xs,
        "y": [points[x] for x in xs],
        "total": total or 0,
        "exact": (total or 0) <= 4 * ask.buckets,
    }
