"""SQL over every run of a root, with DuckDB (docs/sql.md).

A `Store` keeps one in-process DuckDB connection whose views (`runs`, `events`,
`messages`, `dev_events`, `progress`, `metrics`, `latest_metrics`, `latest_progress`)
join two sources: the root's archive of finished runs and every other run, read from
its own directory: its sealed segments (Parquet) by DuckDB from disk, its live ones
(JSONL) into Arrow tables kept between queries, the only records a store holds in
memory. Before each query the store looks at the root again (two `stat` calls per
run): a running run's new records appear, a run archived meanwhile moves from one
source to the other, and no record is counted twice.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import duckdb
import pyarrow as pa

from ._live import LiveRun, add_streams, joined, read_live
from .archive import (
    LATEST_METRICS,
    LATEST_PROGRESS,
    PART_TABLES,
    RUNS,
    WRITERS,
    Catalog,
    archive_dir,
    catalog_path,
    latest_select,
    load_catalog,
    runs_table,
    scan_root,
    sql_path,
    store_schema,
    writers_table,
)
from .compaction import BACKGROUND_RUNS, CompactReport, compact, compact_in_background
from .confinement import Deadline, QueryLimits, check_read_only, tables_named
from .errors import ManifestError, QueryError, RunDirectoryError, RunstoreWarning
from .format import DEV_EVENTS, EVENTS, METRICS, PROGRESS, SCHEMAS, STREAMS

__all__ = ["VIEWS", "QueryResult", "Store"]

#: The views every store offers, in the order docs/sql.md describes them.
VIEWS: Final = (
    "runs",
    "writers",
    "events",
    "messages",
    "dev_events",
    "progress",
    "metrics",
    "latest_metrics",
    "latest_progress",
)

# Views over `events`, for the two kinds of event people ask for most.
_DERIVED_VIEWS: Final = {
    "messages": (
        "SELECT run_id, ts, writer, seq, level, category, data->>'content' AS text, "
        "data->'i18n' AS i18n, data->>'language' AS language "
        "FROM events WHERE event = 'message'"
    ),
    "dev_events": (
        "SELECT run_id, ts, writer, seq, level, category, "
        "coalesce(data->>'message', data->>'content') AS message, data->'data' AS data "
        f"FROM events WHERE event IN ({', '.join(repr(name) for name in DEV_EVENTS)})"
    ),
}

#: The streams each view reads: a look for a query reads those of the views it names.
_VIEW_STREAMS: Final[dict[str, frozenset[str]]] = {
    "runs": frozenset(),
    "writers": frozenset(),
    "events": frozenset({EVENTS}),
    "messages": frozenset({EVENTS}),
    "dev_events": frozenset({EVENTS}),
    "progress": frozenset({PROGRESS}),
    "latest_progress": frozenset({PROGRESS}),
    "metrics": frozenset({METRICS}),
    "latest_metrics": frozenset({METRICS}),
}
_ALL_STREAMS: Final = frozenset(STREAMS)

#: Confined queries whose check is remembered, at most (and queries' streams).
_CHECKED_QUERIES: Final = 256
#: Rows fetched at a time by `Store.query`, so a row cap stops the fetch early.
_BATCH_ROWS: Final = 8192

_T = TypeVar("_T")


@dataclass(frozen=True)
class QueryResult:
    """What `Store.query` fetched: the rows as Arrow, and whether some were left out."""

    table: pa.Table
    #: More rows than the cap existed; `table` holds the first ones.
    truncated: bool = False


#: Finished runs outside the archive beyond which `runstore sql` suggests compacting.
COMPACT_HINT_RUNS: Final = 200
#: Seconds between two background compactions a store starts.
ARCHIVE_EVERY: Final = 60.0


_K = TypeVar("_K")


def _remember(cache: dict[_K, _T], key: _K, value: _T) -> _T:
    """`value` kept under `key` in a cache of at most `_CHECKED_QUERIES` entries."""
    if len(cache) >= _CHECKED_QUERIES:
        cache.clear()
    cache[key] = value
    return value


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Store:
    """SQL over all runs under `root`.

    `sql()` returns a DuckDB relation (`.arrow()`, `.fetchall()`, `.df()` with pandas
    installed); `query()` fetches a result as Arrow, up to a number of rows. A confined
    store (`confined=True`, for SQL from the viewer or any other untrusted source) runs
    only read-only queries, under `limits` (time, memory, rows; `QueryLimits()` unless
    given), and DuckDB may read no file outside the root's archive and write none (see
    `runstore.confinement`). `limits` given to a store that is not confined apply too.
    Not thread-safe: give each thread its own store.

    Raises `RunDirectoryError` if `root` is not a folder. Opening reads nothing else:
    the first query (or `problems`, `pending_compaction`, `connection`) looks at the
    root, so opening and asking once look once. A query's look reads the manifests of
    the runs outside the archive and, of their streams, only those of the views the
    query names (`SELECT ... FROM runs` reads no stream; a query it cannot tell, such
    as one of a view of your own, reads all). Damaged runs and segments are left out
    and described in `problems` (and warned of once), never fatal.

    `archive` (default: unless confined): when a look finds `BACKGROUND_RUNS` or more
    finished runs outside the archive, start a compaction in a process of its own, as
    `runstore sql` does, so later queries read them from the archive. It writes only
    the archive, and nothing where the root is read-only.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        confined: bool = False,
        threads: int | None = None,
        limits: QueryLimits | None = None,
        archive: bool | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise RunDirectoryError(f"{root}: no such folder of runs")
        self.confined = confined
        self.limits = limits if limits is not None or not confined else QueryLimits()
        #: Parses confined queries; never holds the store's views.
        self._parser = duckdb.connect() if confined else None
        self._checked: dict[str, str] = {}
        self._streams_of: dict[str, frozenset[str]] = {}
        self._con = duckdb.connect()
        # The connection's own method, not one of the store's: a store in a cycle with
        # its deadline would be freed (and its runs' tables with it) only by the
        # collector, not when the last reference goes.
        self._deadline = Deadline(self._con.interrupt)
        self._problems: list[str] = []
        self._warned: set[str] = set()
        if threads is not None:
            self._con.execute(f"SET threads = {int(threads)}")
        if self.limits is not None:
            memory = "'" + self.limits.memory.replace("'", "''") + "'"
            try:
                self._con.execute(f"SET memory_limit = {memory}")
            except duckdb.Error as exc:
                raise ValueError(
                    f"QueryLimits.memory {self.limits.memory!r} is not a size DuckDB "
                    f"knows ({exc}); write it as '1GB' or '500MB'"
                ) from None
        if confined:
            self._confine()
        self._catalog: Catalog | None = None
        self._catalog_key: tuple[int, ...] | None = None
        self._catalog_problem: str | None = None
        self._live: dict[str, LiveRun] = {}
        #: The streams the last look read (and those added since, in a snapshot).
        self._streams: frozenset[str] = frozenset()
        #: The archive parts and the archived runs left out of them, at the last look.
        self._view_args: tuple[list[str], list[str]] = ([], [])
        self._views_key: object = None
        self._live_key: object = None
        #: Sealed segments of the runs outside the archive, by stream, and a counter
        #: that tells one list from the next (the views name every file).
        self._sealed_files: dict[str, list[str]] = {}
        self._sealed_key = 0
        self._pending_compaction = 0
        #: Archive finished runs in the background (see `ARCHIVE_EVERY`).
        self._archive = not confined if archive is None else archive
        self._next_archive = 0.0
        #: Whether the last look started a background compaction (`runstore sql` says so).
        self.started_archiving = False
        self._pinned = 0
        self._looked_at: float | None = None  # never looked yet

    def _confine(self) -> None:
        # The order matters: allowed_directories cannot change once external access is
        # off, and lock_configuration stops a query from turning either back. Files
        # under the root only, and those through the views alone: a query may name no
        # file itself (confinement.check_read_only), and the views name only regular
        # files (a link in a run folder could point anywhere). No temp directory:
        # DuckDB's default (./.tmp) is outside the root, and its files would be readable.
        for statement in (
            f"SET allowed_directories = [{sql_path(self.root)} || '/']",
            "SET temp_directory = ''",
            "SET python_enable_replacements = false",
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            "SET enable_external_access = false",
            "SET lock_configuration = true",
        ):
            self._con.execute(statement)

    # -- the public surface -----------------------------------------------------------

    def sql(self, query: str, params: Any = None) -> duckdb.DuckDBPyRelation | None:
        """Run `query` over the store as it is now; a relation for a query, else None.

        Raises `QueryError` with DuckDB's message if the SQL is wrong. In a confined
        store the query runs to its end here, under the store's `limits` (the relation
        holds its result), so every refusal, a time-out or a memory limit raises
        `QueryError` now, as does a result of more than `limits.max_rows` rows (use
        `query()` to take the first rows of a larger one). In a store that is not
        confined the relation is DuckDB's, run when fetched, and errors that DuckDB
        finds only then (a value that does not cast) raise `duckdb.Error` then.
        """
        if self.limits is None:
            self._look_for(query)
            try:
                return self._with_retry(lambda: self._con.sql(query, params=params))
            except duckdb.Error as exc:
                raise self._error(exc) from None
        result = self.query(query, params)
        if result.truncated:
            raise QueryError(
                f"the query returned more than {self.limits.max_rows:,} rows, the row cap "
                "of this store; add a LIMIT or a WHERE, or use Store.query() for the "
                "first rows"
            )
        return self._con.from_arrow(result.table)

    def query(self, query: str, params: Any = None, *, max_rows: int | None = None) -> QueryResult:
        """Run `query` and fetch its result (its first `max_rows` rows) as Arrow.

        Every failure raises `QueryError`: wrong SQL, a refusal, and in a store with
        `limits`, a query past its time or memory limit. The rows are capped at
        `max_rows` and at `limits.max_rows`; `QueryResult.truncated` says whether rows
        were left out. A statement that returns nothing gives an empty table.
        """
        cap = max_rows
        if self.limits is not None:
            cap = self.limits.max_rows if cap is None else min(cap, self.limits.max_rows)
        if cap is not None and cap < 0:
            raise ValueError(f"max_rows must be >= 0, not {max_rows!r}")
        text = self._check(query)
        self._look_for(text)
        if self.limits is None:
            return self._fetch_or_raise(text, params, cap, lambda: False)
        with self._deadline.running(self.limits.timeout) as expired:
            return self._fetch_or_raise(text, params, cap, expired)

    def _fetch_or_raise(
        self, text: str, params: Any, cap: int | None, expired: Callable[[], bool]
    ) -> QueryResult:
        try:
            return self._with_retry(lambda: self._fetch(text, params, cap))
        except (duckdb.Error, OSError, pa.ArrowException) as exc:
            # Rows are read through Arrow, whose errors carry DuckDB's message.
            if expired():
                raise self._timed_out() from None
            raise self._error(exc) from None

    def refresh(self) -> None:
        """Look at the root again, every stream of every run outside the archive read;
        `sql()` looks before every query, reading only the streams it needs."""
        self._look(_ALL_STREAMS)

    def _look_for(self, query: str) -> None:
        """Before `query`: outside a snapshot, a look that reads the streams it needs
        (`latest_metrics` over 1,000 short runs: a third less than all three); inside
        one, those streams added to the snapshot's look if it lacks them."""
        if not self._pinned:
            self._look(self._needs(query))
        elif self._streams != _ALL_STREAMS:
            self._add(self._needs(query))

    def _needs(self, query: str) -> frozenset[str]:
        """The streams `query` reads: those of the views it names, or all of them if
        it names anything else (a view of its own, a file) or is not one SELECT."""
        needs = self._streams_of.get(query)
        if needs is None:
            names = tables_named(query, self._parser or self._con, tables=VIEWS)
            if names is None or not names <= _VIEW_STREAMS.keys():
                needs = _ALL_STREAMS
            else:
                needs = frozenset().union(*(_VIEW_STREAMS[name] for name in names))
            _remember(self._streams_of, query, needs)
        return needs

    def _add(self, streams: frozenset[str]) -> None:
        """The streams of `streams` the last look did not read, read now for its runs."""
        missing = streams - self._streams
        if not missing:
            return
        runs = list(self._live.values())
        known = [len(run.run.problems) for run in runs]
        add_streams(runs, sorted(missing))
        self._streams |= missing
        self._register_live()
        self._define_views()
        found = [p for run, n in zip(runs, known, strict=True) for p in run.run.problems[n:]]
        self._report(self._problems + found)

    def _look(self, streams: frozenset[str]) -> None:
        self._looked_at = time.monotonic()
        problems: list[str] = []
        run_dirs = scan_root(self.root, problems)
        catalog = self._load_catalog(problems)
        archived = catalog.runs() if catalog is not None else {}
        valid: set[str] = set()
        for run_dir in run_dirs:
            entry = archived.get(run_dir.name)
            if entry is not None and entry[1].signature == run_dir.signature:
                valid.add(run_dir.name)
        taken = {archived[name][1].run_id for name in valid}
        for name in sorted(valid):
            problems.extend(archived[name][1].problems)
        excluded = sorted(run.run_id for name, (_, run) in archived.items() if name not in valid)
        live: dict[str, LiveRun] = {}
        unarchived = [run_dir for run_dir in run_dirs if run_dir.name not in valid]
        for name, entry_live in read_live(unarchived, self._live, problems, streams).items():
            problems.extend(entry_live.run.problems)
            run_id = entry_live.run.run_id
            if run_id in taken:
                problems.append(
                    f"{entry_live.run.path}: run id {run_id} is already held by another "
                    "directory (a copy?); left out"
                )
                continue
            taken.add(run_id)
            live[name] = entry_live
        self._live = live
        self._pending_compaction = sum(1 for run in live.values() if run.final)
        self._archive_pending()
        parts = [] if catalog is None else [p.name for p in catalog.parts if p.runs]
        self._streams = streams
        self._register_live()
        self._view_args = (parts, excluded)
        self._define_views()
        self._report(problems)

    @contextlib.contextmanager
    def snapshot(self, *, max_age: float = 0.0) -> Iterator[Store]:
        """Several queries over one look at the root: inside the block, `sql()` and
        `query()` answer from the root as it was when the block began, so the queries
        of one page agree with each other and the root is scanned once, not per query.
        `max_age`: seconds a look may be old and still serve (a server answering many
        requests a second need not scan 10,000 run folders for each)."""
        if self._looked_at is None or time.monotonic() - self._looked_at > max_age:
            self.refresh()
        else:
            self._add(_ALL_STREAMS)  # the last look was one query's
        self._pinned += 1
        try:
            yield self
        finally:
            self._pinned -= 1

    def compact(self, *, rebuild: bool = False) -> CompactReport:
        """Archive the root's finished runs (see `runstore.compaction.compact`)."""
        report = compact(self.root, rebuild=rebuild)
        self.refresh()
        return report

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection behind the views, as of the last refresh."""
        self._look_once()
        return self._con

    @property
    def problems(self) -> list[str]:
        """What was wrong with what the last look read: each damaged run, segment or
        archive left out, with its path. A query's look reads only the streams it
        needs, and finds only their damage; `refresh()` reads them all."""
        self._look_once()
        return self._problems

    @property
    def pending_compaction(self) -> int:
        """Finished runs outside the archive at the last look (read from their
        folders; `compact()` would archive them)."""
        self._look_once()
        return self._pending_compaction

    def _archive_pending(self) -> None:
        """Finished runs read from their folders make every query slower: at
        `BACKGROUND_RUNS` of them, a compaction starts in a process of its own (at most
        once per `ARCHIVE_EVERY`; it leaves at once if another holds the root)."""
        self.started_archiving = False
        if not self._archive or self._pending_compaction < BACKGROUND_RUNS:
            return
        now = time.monotonic()
        if now >= self._next_archive:
            self._next_archive = now + ARCHIVE_EVERY
            self.started_archiving = compact_in_background(self.root)

    def _look_once(self) -> None:
        if self._looked_at is None:
            self.refresh()

    def close(self) -> None:
        self._deadline.close()
        self._con.close()
        if self._parser is not None:
            self._parser.close()
        self._live = {}  # the runs' tables go now, even while the store is referenced

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checking and errors ----------------------------------------------------------

    def _check(self, query: str) -> str:
        """The query to run: in a confined store, its one statement once checked (a
        page asks the same queries again and again: the answers are kept)."""
        if self._parser is None:
            return query
        checked = self._checked.get(query)
        if checked is None:
            checked = _remember(self._checked, query, check_read_only(query, self._parser))
        return checked

    def _with_retry(self, run: Callable[[], _T]) -> _T:
        """Run once more if a compaction replaced the archive between our refresh and
        the query (the files the views named are gone)."""
        try:
            return run()
        except (duckdb.IOException, OSError) as exc:
            if str(archive_dir(self.root)) not in str(exc):
                raise
        self._catalog_key = None
        self._look(self._streams)
        return run()

    def _fetch(self, text: str, params: Any, cap: int | None) -> QueryResult:
        # None for a statement without a result (DuckDB before 2.0).
        relation: duckdb.DuckDBPyRelation | None = self._con.sql(text, params=params)
        if relation is None:
            return QueryResult(pa.table({}))
        # to_arrow_reader is DuckDB's newer name of fetch_record_batch.
        open_reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch
        reader = open_reader(_BATCH_ROWS)
        batches: list[pa.RecordBatch] = []
        rows, truncated = 0, False
        try:
            for batch in reader:
                if cap is not None and rows + batch.num_rows > cap:
                    batches.append(batch.slice(0, cap - rows))
                    truncated = True
                    break
                batches.append(batch)
                rows += batch.num_rows
        finally:
            reader.close()
        return QueryResult(pa.Table.from_batches(batches, schema=reader.schema), truncated)

    def _timed_out(self) -> QueryError:
        assert self.limits is not None
        return QueryError(
            f"cancelled: the query ran past the time limit of {self.limits.timeout:g} s; "
            "narrow it (a WHERE on run_id or key, a LIMIT) or give the store a longer "
            "QueryLimits(timeout=...)"
        )

    def _error(self, exc: Exception) -> QueryError:
        message = str(exc).strip()
        if isinstance(exc, duckdb.PermissionException) or message.startswith("Permission"):
            return QueryError(
                f"refused: {message}; confined SQL may read only the store under {self.root}"
            )
        if self.limits is not None and (
            isinstance(exc, duckdb.OutOfMemoryException) or message.startswith("Out of Memory")
        ):
            return QueryError(
                f"refused: the query needs more memory than this store allows "
                f"({self.limits.memory}); narrow it (a WHERE, fewer columns) or give the "
                "store a larger QueryLimits(memory=...)"
            )
        return QueryError(f"SQL error: {message} (views: {', '.join(VIEWS)}; see docs/sql.md)")

    def _report(self, problems: list[str]) -> None:
        self._problems = problems
        for problem in problems:
            if problem not in self._warned:
                self._warned.add(problem)
                warnings.warn(problem, RunstoreWarning, stacklevel=3)

    # -- the two sources --------------------------------------------------------------

    def _load_catalog(self, problems: list[str]) -> Catalog | None:
        path = catalog_path(self.root)
        try:
            status = os.stat(path)
            key: tuple[int, ...] | None = (status.st_ino, status.st_mtime_ns, status.st_size)
        except OSError:
            key = None
        if key != self._catalog_key:
            self._catalog_key = key
            try:
                self._catalog = None if key is None else load_catalog(self.root)
                self._catalog_problem = None
            except ManifestError as exc:
                self._catalog, self._catalog_problem = None, str(exc)
        if self._catalog_problem:
            problems.append(self._catalog_problem)
        return self._catalog

    def _define_views(self) -> None:
        """The views over the archive parts and runs outside it of the last look."""
        parts, excluded = self._view_args
        key = (tuple(parts), tuple(excluded), self._sealed_key)
        if key == self._views_key:
            return
        self._con.register("_excluded", pa.table({"run_id": pa.array(excluded, pa.string())}))
        base = archive_dir(self.root)
        for stream in STREAMS:
            columns = ", ".join(_quote(f.name) for f in store_schema(stream))
            sources = [f"SELECT {columns} FROM _live_{stream}"]
            files = self._sealed_files.get(stream, [])
            if files:
                # Sealed segments of runs outside the archive, read from disk when a
                # query needs them; a row must have what the schema requires.
                required = " AND ".join(
                    f"p.{_quote(f.name)} IS NOT NULL" for f in SCHEMAS[stream] if not f.nullable
                )
                listed = ", ".join(sql_path(Path(path)) for path in files)
                sources.append(
                    f"SELECT f.run_id, p.* EXCLUDE (filename) FROM read_parquet([{listed}], "
                    f"filename = true) p JOIN _sealed_{stream} f USING (filename) "
                    f"WHERE {required}"
                )
            self._con.execute(
                f"CREATE OR REPLACE VIEW _run_{stream} AS {' UNION ALL '.join(sources)}"
            )
        for table in PART_TABLES:
            columns = ", ".join(_quote(f.name) for f in store_schema(table))
            if table in (LATEST_METRICS, LATEST_PROGRESS):
                stream = METRICS if table == LATEST_METRICS else PROGRESS
                live = f"SELECT {columns} FROM ({latest_select(table, f'_run_{stream}')})"
            elif table in STREAMS:
                live = f"SELECT {columns} FROM _run_{table}"
            else:
                live = f"SELECT {columns} FROM _live_{table}"
            sources = [live]
            if parts:
                part_files = ", ".join(sql_path(base / part / f"{table}.parquet") for part in parts)
                archived = f"SELECT {columns} FROM read_parquet([{part_files}])"
                if excluded:
                    archived += " WHERE run_id NOT IN (SELECT run_id FROM _excluded)"
                sources.insert(0, archived)
            self._con.execute(f"CREATE OR REPLACE VIEW {table} AS {' UNION ALL '.join(sources)}")
        for name, select in _DERIVED_VIEWS.items():
            self._con.execute(f"CREATE OR REPLACE VIEW {name} AS {select}")
        self._views_key = key

    def _register_live(self) -> None:
        key = tuple((name, run.version) for name, run in self._live.items())
        if key == self._live_key:
            return
        runs = list(self._live.values())
        self._con.register(
            f"_live_{RUNS}", runs_table((name, run.run) for name, run in self._live.items())
        )
        self._con.register(f"_live_{WRITERS}", writers_table(run.run for run in runs))
        sealed: dict[str, list[str]] = {}
        for stream in (EVENTS, PROGRESS, METRICS):
            # A stream no look read is empty or partial here: a query that reads it
            # adds it first (`_look_for`).
            pieces = (piece for run in runs for piece in run.tables.get(stream, ()))
            self._con.register(f"_live_{stream}", joined(pieces, store_schema(stream)))
            files = [(path, run.run.run_id) for run in runs for path in run.sealed.get(stream, ())]
            sealed[stream] = [path for path, _ in files]
            self._con.register(
                f"_sealed_{stream}",
                pa.table(
                    {
                        "filename": pa.array([path for path, _ in files], pa.string()),
                        "run_id": pa.array([run_id for _, run_id in files], pa.string()),
                    }
                ),
            )
        self._live_key = key
        if sealed != self._sealed_files:
            self._sealed_files = sealed
            self._sealed_key += 1
