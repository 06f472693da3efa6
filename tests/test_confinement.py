"""Confined SQL: what a hostile query can do (nothing but read) and its limits."""

from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstore import QueryError, QueryLimits, Store, open_run
from runstore.confinement import check_read_only, tables_named

from .test_query import make_run, rows

#: Statements that write, redefine or change something.
_WRITES = [
    "COPY (SELECT 'forged' AS run_id) TO '{root}/a/run.json' (FORMAT json)",
    "COPY runs TO '{root}/out.csv'",
    "CREATE OR REPLACE VIEW runs AS SELECT 'forged' AS run_id",
    "CREATE OR REPLACE TEMP VIEW runs AS SELECT 'forged' AS run_id",
    "DROP VIEW latest_metrics",
    "CREATE TABLE t AS SELECT 1",
    "INSERT INTO t VALUES (1)",
    "CREATE MACRO runs_count() AS 1",
    "CREATE SEQUENCE s",
    "ATTACH '{root}/x.db' AS x",
    "SET memory_limit = '20GB'",
    "SET VARIABLE v = 1",
    "PRAGMA enable_profiling",
    "CHECKPOINT",
    "PREPARE p AS SELECT 1",
    "INSTALL httpfs",
    "LOAD httpfs",
    "EXPORT DATABASE '{root}/dump'",
]

#: Every way of wrapping a statement we know of.
_WRAPPERS = [
    "{}",
    "EXPLAIN {}",
    "EXPLAIN ANALYZE {}",
    "explain analyze {}",
    "/* note */ EXPLAIN /* more */ ANALYZE -- a comment\n {}",
    "SELECT 1; {}",
    "{}; SELECT 1",
    "SELECT * FROM query('{quoted}')",
    "SELECT * FROM query_table('{quoted}')",
    "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('{quoted}'))",
    "SELECT (SELECT count(*) FROM query('{quoted}'))",
    "WITH x AS (SELECT * FROM query('{quoted}')) SELECT * FROM x",
]


def _attack(wrapper: str, statement: str, root: Path) -> str:
    inner = statement.format(root=root)
    return wrapper.format(inner, quoted=inner.replace("'", "''"))


@pytest.fixture
def confined_root(root: Path) -> Path:
    make_run(root, "a", sealed=True)  # a sealed file for queries to try to reach
    return root


def _store_is_intact(store: Store, root: Path, manifest: bytes) -> None:
    assert rows(store, "SELECT run_id FROM runs") == [("a",)]
    assert rows(store, "SELECT count(*) FROM latest_metrics") == [(2,)]
    assert (root / "a" / "run.json").read_bytes() == manifest
    assert sorted(p.name for p in root.iterdir()) == ["a"]


@pytest.mark.parametrize("wrapper", _WRAPPERS)
def test_no_wrapping_of_a_write_gets_through(confined_root: Path, wrapper: str) -> None:
    root = confined_root
    manifest = (root / "a" / "run.json").read_bytes()
    # One long-lived store: no attack may poison what later queries see.
    with Store(root, confined=True) as store:
        for statement in _WRITES:
            with pytest.raises(QueryError, match="refused|SQL error"):
                store.sql(_attack(wrapper, statement, root))
        _store_is_intact(store, root, manifest)
        store.refresh()
        _store_is_intact(store, root, manifest)


def test_explain_and_explain_analyze_of_a_select_still_run(confined_root: Path) -> None:
    with Store(confined_root, confined=True) as store:
        assert rows(store, "EXPLAIN SELECT count(*) FROM metrics")
        plan = rows(store, "/* why slow? */ EXPLAIN ANALYZE SELECT count(*) FROM metrics")
        assert plan[0][0] == "analyzed_plan"
        assert rows(store, "SUMMARIZE runs")
        assert rows(store, "SHOW TABLES")


def test_the_confined_parser_is_not_the_store_connection(confined_root: Path) -> None:
    parser = duckdb.connect()
    assert check_read_only("  SELECT 1 ;", parser).strip().startswith("SELECT 1")
    with pytest.raises(QueryError, match="one statement at a time"):
        check_read_only("SELECT 1; SELECT 2", parser)
    with pytest.raises(QueryError, match="empty query"):
        check_read_only("  -- nothing\n", parser)


@settings(max_examples=60, deadline=None)
@given(
    statement=st.sampled_from(_WRITES),
    before=st.sampled_from(["", " ", "\n", "/* c */ ", "-- c\n", "/* EXPLAIN SELECT */"]),
    explain=st.sampled_from(["", "EXPLAIN ", "EXPLAIN ANALYZE ", "EXPLAIN  ANALYZE\n"]),
    case=st.booleans(),
)
def test_a_write_is_refused_however_it_is_spelled(
    statement: str, before: str, explain: str, case: bool
) -> None:
    text = before + explain + statement.format(root="/tmp/none")
    with pytest.raises(QueryError):
        check_read_only(text.lower() if case else text, duckdb.connect())


def test_confined_sql_has_no_temp_directory_outside_the_root(
    confined_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (elsewhere / ".tmp").mkdir()
    (elsewhere / ".tmp" / "secret.txt").write_text("secret")
    with Store(confined_root, confined=True, limits=QueryLimits(memory="64MB")) as store:
        assert rows(store, "SELECT current_setting('temp_directory')") == [("",)]
        for path in (".tmp/secret.txt", str(elsewhere / ".tmp" / "secret.txt")):
            with pytest.raises(QueryError, match="refused"):
                store.sql(f"SELECT * FROM read_text('{path}')")
        # A query past the memory limit fails; it does not spill to disk.
        with pytest.raises(QueryError, match="more memory than this store allows"):
            store.sql("SELECT list(range ORDER BY random()) FROM range(30000000)")
        assert rows(store, "SELECT count(*) FROM runs") == [(1,)]
    assert sorted(os.listdir(elsewhere / ".tmp")) == ["secret.txt"]


def test_confined_sql_cannot_read_a_run_folder_directly(confined_root: Path) -> None:
    (confined_root / "a" / "link").symlink_to("/etc")
    with Store(confined_root, confined=True) as store:
        for path in (confined_root / "a" / "run.json", confined_root / "a" / "link" / "hostname"):
            with pytest.raises(QueryError, match="refused"):
                store.sql(f"SELECT * FROM read_text('{path}')")


def test_a_confined_query_is_cancelled_at_its_time_limit(confined_root: Path) -> None:
    cross = "SELECT count(*) FROM range(100000) a, range(100000) b, range(100000) c"
    with Store(confined_root, confined=True, limits=QueryLimits(timeout=0.5)) as store:
        started = time.monotonic()
        with pytest.raises(QueryError, match=r"cancelled: .* time limit of 0.5 s"):
            store.sql(cross)
        assert time.monotonic() - started < 30  # cancelled, not run to its end
        # The interrupt is not left pending for the next query.
        assert rows(store, "SELECT count(*) FROM runs") == [(1,)]
        with pytest.raises(QueryError, match="cancelled"):
            store.query("SELECT sum(a.range * b.range) FROM range(100000) a, range(100000) b")


def test_confined_results_are_capped_in_rows(confined_root: Path) -> None:
    with Store(confined_root, confined=True, limits=QueryLimits(max_rows=1000)) as store:
        result = store.query("SELECT * FROM range(100000)")
        assert result.table.num_rows == 1000 and result.truncated
        assert result.table.column(0).to_pylist() == list(range(1000))
        exact = store.query("SELECT * FROM range(1000)")
        assert exact.table.num_rows == 1000 and not exact.truncated
        assert store.query("SELECT * FROM range(5000)", max_rows=10).table.num_rows == 10
        with pytest.raises(QueryError, match="more than 1,000 rows"):
            store.sql("SELECT * FROM range(1001)")
        assert len(rows(store, "SELECT * FROM range(1000)")) == 1000


def test_errors_found_while_fetching_are_query_errors(confined_root: Path) -> None:
    with Store(confined_root, confined=True) as store:
        for query in (
            "SELECT 'x'::INTEGER FROM range(3)",
            "SELECT * FROM read_parquet('/etc/hostname')",
            "SELECT * FROM range(10) WHERE error('boom') IS NULL",
        ):
            with pytest.raises(QueryError):
                store.query(query)
            with pytest.raises(QueryError):
                store.sql(query)


def test_query_fetches_from_a_store_that_is_not_confined(root: Path) -> None:
    with open_run(root, run_id="b") as ctx:
        ctx.set_metrics({"loss": 0.5}, "train")
    with Store(root) as store:
        result = store.query("SELECT run_id FROM runs")
        assert result.table.to_pylist() == [{"run_id": "b"}] and not result.truncated
        store.query("CREATE TABLE t AS SELECT 1 AS one")  # your own shell: anything goes
        assert store.query("SELECT one FROM t").table.to_pylist() == [{"one": 1}]
        assert store.query("SELECT * FROM range(50)", max_rows=5).truncated
        with pytest.raises(QueryError, match="SQL error"):
            store.query("SELECT 'x'::INTEGER")


def test_query_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="timeout"):
        QueryLimits(timeout=0)
    with pytest.raises(ValueError, match="max_rows"):
        QueryLimits(max_rows=0)


def test_limits_apply_to_a_store_that_is_not_confined(root: Path) -> None:
    make_run(root, "a")
    with Store(root, limits=QueryLimits(timeout=0.5, memory="300MB", max_rows=10)) as store:
        assert rows(store, "SELECT current_setting('memory_limit')")[0][0].startswith("286")
        with pytest.raises(QueryError, match="cancelled"):
            store.query("SELECT sum(a.range * b.range) FROM range(100000) a, range(100000) b")
        assert store.query("SELECT * FROM range(50)").truncated
    with pytest.raises(ValueError, match="not a size DuckDB knows"):
        Store(root, limits=QueryLimits(memory="lots"))


def test_confined_sql_reads_files_only_through_the_views(confined_root: Path) -> None:
    run = confined_root / "a"
    sealed = next((run / "streams" / "metrics").glob("*.parquet"))
    with Store(confined_root, confined=True) as store:
        for query in (
            f"SELECT * FROM read_parquet('{sealed}')",
            f"SELECT * FROM parquet_metadata('{sealed}')",
            f"SELECT * FROM read_json_auto('{run}/run.json')",
            f"SELECT * FROM '{run}/run.json'",
            f"SELECT * FROM '{sealed}'",
            f"SELECT (SELECT count(*) FROM glob('{run}/*'))",
        ):
            with pytest.raises(QueryError, match="refused"):
                store.sql(query)
        assert rows(store, "SELECT count(*) FROM range(3), unnest([1, 2])") == [(6,)]
        assert rows(store, "SELECT count(*) > 0 FROM duckdb_views()") == [(True,)]
        assert rows(store, "WITH x AS (SELECT 1 AS one) SELECT one FROM x") == [(1,)]


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("SELECT 1", frozenset()),
        ("FROM Metrics m JOIN main.runs USING (run_id)", frozenset({"metrics", "runs"})),
        ("SELECT (SELECT max(value) FROM metrics) FROM range(3)", frozenset({"metrics"})),
        ("WITH t AS (SELECT * FROM events) SELECT * FROM t", frozenset({"events"})),
        ("WITH events AS (SELECT * FROM events) FROM events", frozenset({"events"})),
        ("SELECT * FROM duckdb_tables()", frozenset()),
        ("SELECT * FROM read_parquet('x.parquet')", None),  # a file, not a view
        ("SELECT * FROM query('SELECT * FROM events')", None),  # SQL as text
        ("SELECT * FROM my_macro()", None),
        ("SELECT * FROM other.metrics", None),
        ("SELECT 1; SELECT 2", None),
        ("CREATE VIEW v AS SELECT 1", None),
        ("SELEC nothing", None),
    ],
)
def test_tables_named_by_a_select_are_told_from_its_text_alone(
    query: str, names: frozenset[str] | None
) -> None:
    parser = duckdb.connect()  # holds none of these tables: parsed, never bound
    assert tables_named(query, parser, tables=("events",)) == names
    assert parser.execute("SELECT 42").fetchall() == [(42,)]  # nothing left unfinished
