"""The SQL behind the viewer's pages, over the same views as `runstore sql`.

Every query is parameterized; the only SQL text built from a request is a sort column
picked from a fixed table. Sorting, filtering and paging of the runs list happen here,
in DuckDB, so a root of 10,000 runs costs the page its 50 rows, not 10,000.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from runstore.errors import QueryError
from runstore.format import DEV_EVENTS, MESSAGE_EVENT
from runstore.query import Store

#: The runs list's sort keys and the column each sorts by.
RUN_SORTS: Final = {
    "started": "r.started_at",
    "duration": "r.duration",
    "status": "r.status",
    "plugin": "r.plugin",
    "action": "r.action",
    "job": "r.job_id",
    "run": "r.run_id",
}
STATUSES: Final = ("running", "completed", "failed", "crashed")
#: The message levels of the SDK's contexts, and the viewer's order of them.
LEVELS: Final = ("debug", "info", "success", "warning", "danger", "error", "critical")
#: Metric keys one request may ask for as runs-list columns, or runs it may compare.
MAX_COLUMNS: Final = 12
MAX_COMPARED: Final = 20
MAX_PAGE: Final = 500
#: Events the messages list shows, left out of the events list.
_OTHER_EVENTS: Final = ", ".join(f"'{name}'" for name in (MESSAGE_EVENT, *DEV_EVENTS))


class BadRequest(ValueError):
    """A request's parameters do not make a query; the message says which and why."""


def json_value(value: Any) -> Any:
    """A DuckDB value as JSON can hold it: times as ISO text, NaN and infinities as
    text (a table shows them as they are), bytes as hex, nested values element-wise."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        # DuckDB's MAP arrives as a list of {key, value} pairs.
        return [json_value(item) for item in value]
    return str(value)


def _rows(
    store: Store, sql: str, params: Mapping[str, Any] | None = None, max_rows: int | None = None
) -> list[dict[str, Any]]:
    table = store.query(sql, dict(params or {}), max_rows=max_rows).table
    return [{name: json_value(value) for name, value in row.items()} for row in table.to_pylist()]


def _parse_json(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _problems_by_dir(store: Store) -> dict[str, list[str]]:
    """The store's problems, under the run folder each names (others under '')."""
    found: dict[str, list[str]] = {}
    prefix = str(store.root) + "/"
    for problem in store.problems:
        name = ""
        if problem.startswith(prefix):
            name = problem[len(prefix) :].split("/", 1)[0].split(":", 1)[0]
        found.setdefault(name, []).append(problem)
    return found


def _check_page(offset: int, limit: int) -> None:
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"offset must be >= 0 and limit 1 to {MAX_PAGE}, not {offset}, {limit}")


# -- the runs list ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunsQuery:
    """What the runs page asks for: a filter, a sort, a page, metric columns."""

    text: str = ""
    status: str = ""
    sort: str = "started"
    descending: bool = True
    offset: int = 0
    limit: int = 50
    metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status and self.status not in STATUSES:
            raise BadRequest(f"status {self.status!r} is not one of {', '.join(STATUSES)}")
        if self.sort not in RUN_SORTS and not self.sort.startswith("metric:"):
            raise BadRequest(
                f"sort {self.sort!r} is not one of {', '.join(RUN_SORTS)}, or metric:KEY"
            )
        _check_page(self.offset, self.limit)
        if len(self.metrics) > MAX_COLUMNS:
            raise BadRequest(f"at most {MAX_COLUMNS} metric columns")


def runs_page(store: Store, ask: RunsQuery) -> dict[str, Any]:
    """One page of the runs list, with each run's progress and chosen latest metrics."""
    params: dict[str, Any] = {}
    where = []
    if ask.text:
        params["text"] = ask.text.lower()
        where.append(
            "("
            + " OR ".join(
                f"contains(lower(coalesce(r.{column}, '')), $text)"
                for column in ("run_id", "plugin", "action", "job_id", "error")
            )
            + ")"
        )
    if ask.status:
        params["status"] = ask.status
        where.append("r.status = $status")
    condition = ("WHERE " + " AND ".join(where)) if where else ""
    join = ""
    page_params = {**params, "limit": ask.limit, "offset": ask.offset}
    if ask.sort.startswith("metric:"):
        page_params["sort_key"] = ask.sort[len("metric:") :]
        join = (
            "LEFT JOIN (SELECT run_id, arg_max(value, ts) AS sort_value FROM latest_metrics "
            "WHERE key = $sort_key GROUP BY run_id) s ON s.run_id = r.run_id"
        )
        order = "s.sort_value"
    else:
        order = RUN_SORTS[ask.sort]
    direction = "DESC" if ask.descending else "ASC"
    total = _rows(store, f"SELECT count(*) AS n FROM runs r {condition}", params)[0]["n"]
    runs = _rows(
        store,
        f"""SELECT r.run_id, r.dir, r.status, r.plugin, r.action, r.job_id, r.started_at,
                   r.ended_at, r.duration, r.error, r.records, r.lost_records
            FROM runs r {join} {condition}
            ORDER BY {order} {direction} NULLS LAST, r.run_id
            LIMIT $limit OFFSET $offset""",
        page_params,
    )
    ids = [run["run_id"] for run in runs]
    notice = None
    progress: dict[str, Any] = {}
    values: dict[str, dict[str, Any]] = {}
    if ids:
        for row in _rows(
            store,
            """SELECT run_id, arg_max(coalesce(overall, percent), ts) AS percent
               FROM latest_progress WHERE list_contains($ids, run_id) GROUP BY run_id""",
            {"ids": ids},
        ):
            progress[row["run_id"]] = row["percent"]
        if ask.metrics:
            try:
                found = _rows(
                    store,
                    """SELECT run_id, key, arg_max(value, ts) AS value,
                              arg_max(text, ts) AS text
                       FROM latest_metrics
                       WHERE list_contains($ids, run_id) AND list_contains($keys, key)
                       GROUP BY ALL""",
                    {"ids": ids, "keys": list(ask.metrics)},
                )
            except QueryError as exc:
                # The runs are shown all the same; only their metric columns are missing
                # (a root of many runs not archived yet can exceed the store's limits).
                notice = f"metric columns left empty: {exc}"
                found = []
            for row in found:
                shown = row["text"] if row["text"] is not None else row["value"]
                values.setdefault(row["run_id"], {})[row["key"]] = shown
    problems = _problems_by_dir(store)
    for run in runs:
        run["progress"] = progress.get(run["run_id"])
        run["metrics"] = values.get(run["run_id"], {})
        run["problems"] = problems.get(run["dir"], [])
    return {
        "total": total,
        "offset": ask.offset,
        "limit": ask.limit,
        "runs": runs,
        "problems": _left_out(store, problems),
        "notice": notice,
    }


def _left_out(store: Store, problems: dict[str, list[str]]) -> list[str]:
    """Problems of folders that are no run of the list (a run.json damaged or missing)."""
    named = [name for name in problems if name]
    listed = set()
    if named:
        listed = {
            row["dir"]
            for row in _rows(
                store, "SELECT dir FROM runs WHERE list_contains($dirs, dir)", {"dirs": named}
            )
        }
    return [text for name, found in problems.items() if name not in listed for text in found]


def metric_keys(store: Store) -> list[dict[str, Any]]:
    """Metric keys across the root, the most common first (the runs list's columns)."""
    return _rows(
        store,
        """SELECT key, count(DISTINCT run_id) AS runs FROM latest_metrics
           GROUP BY key ORDER BY runs DESC, key LIMIT 500""",
    )


# -- one run ---------------------------------------------------------------------------


def _one_run(store: Store, run_id: str) -> dict[str, Any]:
    found = _rows(store, "SELECT * FROM runs WHERE run_id = $run", {"run": run_id})
    if not found:
        raise LookupError(f"no run {run_id!r} under {store.root}")
    run = found[0]
    for name in ("params", "env", "checkpoint"):
        run[name] = _parse_json(run.get(name))
    return run


def run_detail(store: Store, run_id: str) -> dict[str, Any]:
    """Everything the run page shows but its series and its message pages."""
    run = _one_run(store, run_id)
    key = {"run": run_id}
    steps = _rows(
        store,
        """WITH first AS (SELECT category, min(ts) AS first FROM progress
                          WHERE run_id = $run GROUP BY category)
           SELECT p.category, p.current, p.total, p.percent, p.elapsed, p.time_remaining,
                  p.status, p.overall, p.ts
           FROM latest_progress p JOIN first f ON f.category IS NOT DISTINCT FROM p.category
           WHERE p.run_id = $run ORDER BY f.first""",
        key,
    )
    newest = max(steps, key=lambda step: step["ts"], default=None)
    overall = None
    if newest is not None:
        overall = newest["overall"] if newest["overall"] is not None else newest["percent"]
    if run["status"] == "completed":
        overall = 100.0
    metrics = _rows(
        store,
        """SELECT category, key, count(*) AS points, arg_max(value, ts) AS last,
                  min(value) AS min, max(value) AS max, arg_max(kind, ts) AS kind,
                  arg_max(text, ts) AS text
           FROM metrics WHERE run_id = $run GROUP BY ALL
           ORDER BY category NULLS FIRST, key""",
        key,
    )
    attachments = _rows(
        store,
        """SELECT ts, event, category, data, file, attachment FROM events
           WHERE run_id = $run AND attachment IS NOT NULL ORDER BY ts, seq LIMIT 1000""",
        key,
    )
    for attachment in attachments:
        attachment["data"] = _parse_json(attachment["data"])
    writers = _rows(
        store,
        """SELECT writer, host, pid, status, started_at, heartbeat_at, ended_at, records,
                  lost_records, last_fault, labels
           FROM writers WHERE run_id = $run ORDER BY started_at""",
        key,
    )
    counts = _rows(
        store,
        f"""SELECT (SELECT count(*) FROM messages WHERE run_id = $run) AS messages,
                  (SELECT count(*) FROM dev_events WHERE run_id = $run) AS dev_events,
                  (SELECT count(*) FROM events WHERE run_id = $run
                   AND event NOT IN ({_OTHER_EVENTS})) AS events""",
        key,
    )[0]
    return {
        "run": run,
        "overall": overall,
        "steps": steps,
        "metrics": metrics,
        "attachments": attachments,
        "writers": writers,
        "counts": counts,
        "problems": _problems_by_dir(store).get(run["dir"], []),
    }


def messages_page(
    store: Store,
    run_id: str,
    *,
    levels: Sequence[str] = (),
    messages: bool = True,
    dev: bool = False,
    offset: int = 0,
    limit: int = 100,
) -> dict[str, Any]:
    """A page of a run's messages (of `levels`, or all) and dev events, newest first."""
    unknown = [level for level in levels if level not in LEVELS]
    if unknown:
        raise BadRequest(f"level {unknown[0]!r} is not one of {', '.join(LEVELS)}")
    _check_page(offset, limit)
    params: dict[str, Any] = {"run": run_id}
    chosen = ""
    if levels and messages:
        params["levels"] = list(levels)
        chosen = "AND list_contains($levels, level)"
    parts = []
    if messages:
        parts.append(
            f"""SELECT ts, seq, writer, level, category, 'message' AS kind, text,
                       NULL::JSON AS data
                FROM messages WHERE run_id = $run {chosen}"""
        )
    if dev:
        parts.append(
            """SELECT ts, seq, writer, level, category, 'dev_event' AS kind, message AS text,
                      data
               FROM dev_events WHERE run_id = $run"""
        )
    if not parts:
        return {"total": 0, "offset": offset, "limit": limit, "messages": []}
    union = " UNION ALL ".join(parts)
    total = _rows(store, f"SELECT count(*) AS n FROM ({union})", params)[0]["n"]
    rows = _rows(
        store,
        f"""{union} ORDER BY ts DESC, writer DESC, seq DESC
            LIMIT $limit OFFSET $offset""",
        {**params, "limit": limit, "offset": offset},
    )
    for row in rows:
        row["data"] = _parse_json(row["data"])
    return {"total": total, "offset": offset, "limit": limit, "messages": rows}


def events_page(store: Store, run_id: str, *, offset: int = 0, limit: int = 100) -> dict[str, Any]:
    """A page of a run's events other than messages and dev events, newest first."""
    _check_page(offset, limit)
    condition = f"run_id = $run AND event NOT IN ({_OTHER_EVENTS})"
    total = _rows(store, f"SELECT count(*) AS n FROM events WHERE {condition}", {"run": run_id})
    rows = _rows(
        store,
        f"""SELECT ts, seq, writer, event, level, category, data, file, attachment
            FROM events WHERE {condition}
            ORDER BY ts DESC, writer DESC, seq DESC LIMIT $limit OFFSET $offset""",
        {"run": run_id, "limit": limit, "offset": offset},
    )
    for row in rows:
        row["data"] = _parse_json(row["data"])
    return {"total": total[0]["n"], "offset": offset, "limit": limit, "events": rows}


# -- comparing runs --------------------------------------------------------------------


def compare(store: Store, run_ids: Sequence[str]) -> dict[str, Any]:
    """The runs' params side by side and last/min/max of every metric of each."""
    if not 1 <= len(run_ids) <= MAX_COMPARED:
        raise BadRequest(f"compare 1 to {MAX_COMPARED} runs, not {len(run_ids)}")
    ids = list(dict.fromkeys(run_ids))
    runs = _rows(
        store,
        """SELECT run_id, dir, status, plugin, action, job_id, started_at, duration, params
           FROM runs WHERE list_contains($ids, run_id)""",
        {"ids": ids},
    )
    found = {run["run_id"]: run for run in runs}
    missing = [run_id for run_id in ids if run_id not in found]
    if missing:
        raise LookupError(f"no run {missing[0]!r} under {store.root}")
    for run in runs:
        run["params"] = _parse_json(run["params"])
    stats = _rows(
        store,
        """SELECT run_id, category, key, arg_max(value, ts) AS last, min(value) AS min,
                  max(value) AS max, count(*) AS points
           FROM metrics WHERE list_contains($ids, run_id)
             AND kind IN ('float', 'int', 'bool')
           GROUP BY ALL ORDER BY category NULLS FIRST, key, run_id""",
        {"ids": ids},
    )
    return {"runs": [found[run_id] for run_id in ids], "metrics": stats}


# -- the SQL page ----------------------------------------------------------------------


def run_sql(store: Store, sql: str, max_rows: int) -> dict[str, Any]:
    """A user's SQL under the store's confinement: its first `max_rows` rows."""
    if not sql.strip():
        raise BadRequest("write a query, for example: SELECT run_id, status FROM runs")
    result = store.query(sql, max_rows=max_rows)
    table = result.table
    columns = [{"name": field.name, "type": str(field.type)} for field in table.schema]
    # Column by column: a result may name two columns alike (SELECT 1, 1).
    columns_values = [table.column(index).to_pylist() for index in range(table.num_columns)]
    rows = [[json_value(value) for value in row] for row in zip(*columns_values, strict=True)]
    return {"columns": columns, "rows": rows, "truncated": result.truncated}


__all__ = [
    "LEVELS",
    "RUN_SORTS",
    "STATUSES",
    "BadRequest",
    "QueryError",
    "RunsQuery",
    "compare",
    "events_page",
    "json_value",
    "messages_page",
    "metric_keys",
    "run_detail",
    "run_sql",
    "runs_page",
]
