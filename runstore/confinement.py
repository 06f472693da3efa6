"""What confined SQL may run, decided from what a statement does, and its limits.

A confined `Store` (the viewer's SQL box, `runstore sql --confined`) takes SQL from
someone it does not trust. Its guarantees rest on two layers:

- the statement: exactly one, and it must be a read. DuckDB's own parser decides:
  the statement must serialize as a SELECT tree (`json_serialize_sql`, which refuses
  every other statement), and `EXPLAIN [ANALYZE]` is allowed only around such a
  SELECT. The tree is walked, at every nesting, for table functions that run SQL from a
  string (`query`, `query_table`, `json_execute_serialized_sql`): what is checked is
  what runs. So no query can write a file, change a view, a table, a macro or a
  setting, or wrap a statement that would. Nor may it read a file itself: table
  functions are those that read none (`range`, `unnest`, DuckDB's catalog), and a
  table named like a file (`FROM 'x.csv'`) is refused; only the store's views read
  the runs' files;
- the engine: the connection may read no file outside the store's archive and write
  none, has no temp directory (nothing spills to disk), has a memory limit, loads no
  extension, sees no Python variable, and its settings are locked.

Each confined query also runs under a time limit (interrupted, then `QueryError`) and
returns at most `QueryLimits.max_rows` rows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import duckdb
import orjson

from .errors import QueryError

__all__ = ["Deadline", "QueryLimits", "check_read_only", "tables_named"]

#: Table functions that run SQL given as a string or a serialized plan: the string is
#: not part of the checked tree, so they are refused, whatever it holds.
_REFUSED_FUNCTIONS: Final = frozenset({"query", "query_table", "json_execute_serialized_sql"})
#: The table functions a confined query may call: none reads a file. (DuckDB's
#: catalog functions, `duckdb_*` and `pragma_*`, are allowed too.)
_TABLE_FUNCTIONS: Final = frozenset(
    {"range", "generate_series", "unnest", "json_each", "json_tree", "repeat", "repeat_row"}
)


@dataclass(frozen=True)
class QueryLimits:
    """What one confined query may use. Defaults suit an interactive SQL box."""

    #: Seconds a query may run, its rows fetched included; then it is cancelled.
    timeout: float = 30.0
    #: DuckDB's memory limit for the store's connection (DuckDB syntax: "1GB", "500MB").
    #: A query that needs more fails with a `QueryError`; nothing spills to disk.
    memory: str = "1GB"
    #: Rows a query returns at most; `Store.query` says when there were more.
    max_rows: int = 100_000

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"QueryLimits.timeout must be > 0 seconds, not {self.timeout!r}")
        if self.max_rows < 1:
            raise ValueError(f"QueryLimits.max_rows must be >= 1, not {self.max_rows!r}")


def check_read_only(query: str, parser: duckdb.DuckDBPyConnection) -> str:
    """The text of `query`'s one statement if it only reads, else `QueryError`.

    `parser` is a connection used only to parse (never one holding the store's views).
    """
    statements = _statements(query, parser)
    if not statements:
        raise QueryError("refused: empty query")
    if len(statements) > 1:
        raise QueryError(
            f"refused: confined SQL runs one statement at a time, not {len(statements)}"
        )
    statement = statements[0]
    text: str = statement.query
    if statement.type == duckdb.StatementType.EXPLAIN:
        _check_select(_explained(text, parser), parser)
    elif statement.type == duckdb.StatementType.SELECT:
        _check_select(text, parser)
    else:
        raise _refused(statement.type.name.replace("_STATEMENT", ""), text)
    return text


def _statements(query: str, parser: duckdb.DuckDBPyConnection) -> list[Any]:
    try:
        return list(parser.extract_statements(query))
    except duckdb.Error as exc:
        raise QueryError(f"SQL error: {str(exc).strip()}") from None


def _refused(kind: str, text: str) -> QueryError:
    return QueryError(
        f"refused: confined SQL runs only SELECT queries (and EXPLAIN of them), not {kind} "
        f"({text.strip()[:60]!r})"
    )


def _explained(text: str, parser: duckdb.DuckDBPyConnection) -> str:
    """The statement an `EXPLAIN [ANALYZE]` wraps, as text."""
    words = [
        (position, kind)
        for position, kind in duckdb.tokenize(text)
        if kind != duckdb.token_type.comment
    ]
    index = 1  # words[0] is EXPLAIN
    if len(words) > 1 and text[words[1][0] :].upper().startswith("ANALYZE"):
        index = 2
    if len(words) <= index:
        raise _refused("EXPLAIN", text)
    inner = text[words[index][0] :]
    statements = _statements(inner, parser)
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        kind = statements[0].type.name.replace("_STATEMENT", "") if statements else "EXPLAIN"
        raise _refused(f"EXPLAIN of {kind}", text)
    return inner


def _serialized(text: str, parser: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """DuckDB's parse tree of `text` (`json_serialize_sql`; "error" set for anything but
    SELECTs), fetched to the end: the connection may be a store's, with work to do
    next. Raises `duckdb.Error`."""
    (row,) = parser.execute("SELECT json_serialize_sql(?)", [text]).fetchall()
    tree: dict[str, Any] = orjson.loads(row[0])
    return tree


def _table_function(node: dict[str, Any]) -> object:
    """The name a TABLE_FUNCTION node calls (None if the tree holds none)."""
    function = node.get("function")
    return function.get("function_name") if isinstance(function, dict) else None


def _check_select(text: str, parser: duckdb.DuckDBPyConnection) -> None:
    try:
        tree = _serialized(text, parser)
    except duckdb.Error as exc:
        raise QueryError(f"SQL error: {str(exc).strip()}") from None
    if tree.get("error"):
        raise QueryError(
            "refused: confined SQL runs only plain SELECT queries, and this one cannot be "
            f"checked ({tree.get('error_message', 'not a SELECT')}); write it as a plain "
            "SELECT (PIVOT as GROUP BY, for instance)"
        )
    for node in _nodes(tree):
        name = node.get("function_name")
        if isinstance(name, str) and name.lower() in _REFUSED_FUNCTIONS:
            raise QueryError(
                f"refused: {name}() runs SQL given as text, which confined SQL cannot "
                "check; write the query itself"
            )
        if node.get("type") == "TABLE_FUNCTION":
            called = _table_function(node)
            if not _table_function_allowed(called):
                raise QueryError(
                    f"refused: confined SQL calls no table function that could read files "
                    f"({called}()); query the views (runs, metrics, ...) instead"
                )
        if node.get("type") == "BASE_TABLE":
            table = str(node.get("table_name", ""))
            if any(mark in table for mark in "./\\:"):
                raise QueryError(
                    f"refused: {table!r} names a file, which confined SQL does not read; "
                    "query the views (runs, metrics, ...) instead"
                )


def tables_named(
    query: str, parser: duckdb.DuckDBPyConnection, *, tables: Collection[str] = ()
) -> frozenset[str] | None:
    """The tables and views the SELECT `query` reads by name (lower case), or None when
    that cannot be told from its text: not one plain SELECT, a table of another schema,
    or a table function that is not one of those that read no table (a macro,
    `query()`, a file reader). Its common table expressions are left out, unless named
    like one of `tables` (`WITH events AS (SELECT ... FROM events)` reads the table).
    Parsed only, never bound: the names need not exist."""
    try:
        tree = _serialized(query, parser)
    except duckdb.Error:
        return None
    statements = tree.get("statements")
    if tree.get("error") or not isinstance(statements, list) or len(statements) != 1:
        return None
    names: set[str] = set()
    ctes: set[str] = set()
    for node in _nodes(tree):
        kind = node.get("type")
        if kind == "BASE_TABLE":
            if node.get("schema_name") not in ("", "main") or node.get("catalog_name"):
                return None
            names.add(str(node.get("table_name")).lower())
        elif kind == "TABLE_FUNCTION" and not _table_function_allowed(_table_function(node)):
            return None
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            ctes.update(str(entry.get("key")).lower() for entry in cte_map.get("map", ()))
    return frozenset(names - (ctes - set(tables)))


def _table_function_allowed(name: object) -> bool:
    if not isinstance(name, str):
        return False
    name = name.lower()
    return name in _TABLE_FUNCTIONS or name.startswith(("duckdb_", "pragma_"))


def _nodes(tree: object) -> Iterator[dict[str, Any]]:
    """Every object (a node of any kind) in a serialized statement tree."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class Deadline:
    """Interrupts a query that runs past its time: one thread per store, started at its
    first query (a thread per query would cost more than many queries)."""

    def __init__(self, interrupt: Callable[[], None]) -> None:
        self._interrupt = interrupt
        self._condition = threading.Condition()
        self._due: float | None = None
        self._query = 0
        self._expired = -1
        self._closed = False
        self._thread: threading.Thread | None = None

    @contextmanager
    def running(self, seconds: float) -> Iterator[Callable[[], bool]]:
        """Around one query: yields whether it was interrupted for its time."""
        with self._condition:
            self._query += 1
            query = self._query
            self._due = time.monotonic() + seconds
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="runstore-query-deadline", daemon=True
                )
                self._thread.start()
            self._condition.notify()
        try:
            yield lambda: self._expired == query
        finally:
            with self._condition:
                self._due = None
                self._condition.notify()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()

    def _watch(self) -> None:
        with self._condition:
            while not self._closed:
                if self._due is None:
                    self._condition.wait()
                    continue
                left = self._due - time.monotonic()
                if left > 0:
                    self._condition.wait(left)
                    continue
                # An interrupt that lands after the query ended is harmless: DuckDB keeps
                # none for the next one.
                self._expired, self._due = self._query, None
                self._interrupt()
