"""SQL over a root of runs: views, live runs, bad runs, and the confined mode."""

from __future__ import annotations

import shutil
import threading
import time
import warnings
from pathlib import Path

import pytest

from runstore import (
    QueryError,
    RunDirectoryError,
    RuntimeContext,
    Store,
    WriterOptions,
    open_run,
    read_run,
)
from runstore.archive import RunDir, store_schema
from runstore.query import VIEWS

from .conftest import SAMPLE_RUNS, run_python


def make_run(
    root: Path, name: str, steps: int = 5, *, finish: bool = True, sealed: bool = False
) -> RuntimeContext:
    """A small training run: progress, two metrics per step, a message, a dev event. Its
    segments stay JSONL at close, as a small job leaves them, unless `sealed`."""
    options = WriterOptions(jsonl_bytes=0) if sealed else None
    ctx = open_run(root, plugin="yolo-train", action="train", run_id=name, env={}, options=options)
    for step in range(1, steps + 1):
        ctx.set_progress(step, steps, "train")
        ctx.set_metrics({"loss": 1.0 / step, "accuracy": step / steps}, "train")
    ctx.log_message(f"{name} trained", "success")
    ctx.log_dev_event("shapes", {"batch": 16})
    if finish:
        ctx.end_log()
        ctx.close()
    else:
        ctx.flush()
    return ctx


def rows(store: Store, query: str) -> list[tuple[object, ...]]:
    relation = store.sql(query)
    assert relation is not None
    return relation.fetchall()


def test_every_view_over_the_sample_runs_has_its_documented_columns() -> None:
    with Store(SAMPLE_RUNS) as store:
        for view in VIEWS:
            relation = store.sql(f"SELECT * FROM {view}")
            assert relation is not None
            assert "run_id" in relation.columns, view
            assert len(relation.fetchall()) > 0, view
            if view not in ("messages", "dev_events"):
                assert relation.columns == store_schema(view).names, view
        statuses = dict(rows(store, "SELECT run_id, status FROM runs"))
        assert statuses == {
            "demo-train": "completed",
            "demo-export": "completed",
            "demo-upload": "failed",
            "demo-crashed": "crashed",
        }
        joined = rows(
            store,
            "SELECT r.plugin, count(*) FROM metrics m JOIN runs r USING (run_id) "
            "GROUP BY 1 ORDER BY 1",
        )
        assert ("yolo-train", 415) in joined


def test_latest_metrics_holds_the_last_value_per_run_category_and_key(root: Path) -> None:
    make_run(root, "a", steps=4)
    make_run(root, "b", steps=10)
    with Store(root) as store:
        latest = rows(
            store, "SELECT run_id, key, value FROM latest_metrics WHERE key = 'loss' ORDER BY 1"
        )
        assert latest == [("a", "loss", 0.25), ("b", "loss", 0.1)]
        progress = rows(store, "SELECT run_id, current, total, percent FROM latest_progress")
        assert sorted(progress) == [("a", 4.0, 4.0, 100.0), ("b", 10.0, 10.0, 100.0)]
        messages = rows(store, "SELECT run_id, level, text FROM messages WHERE run_id = 'a'")
        assert ("a", "success", "a trained") in messages
        dev = rows(store, "SELECT message, data->>'batch' FROM dev_events WHERE run_id = 'a'")
        assert dev == [("shapes", "16")]


def test_writers_view_attributes_records_to_their_worker(root: Path) -> None:
    from runstore import attach_run

    driver = open_run(root, run_id="ray", env={})
    for name in ("shard-0", "shard-1"):
        with attach_run(driver.run_dir, labels={"worker": name}) as worker:
            for i in range(3 if name == "shard-0" else 5):
                worker.set_metrics({"i": float(i)}, "work")
    driver.flush()
    query = (
        "SELECT w.labels['worker'] AS worker, w.status, count(m.seq) FROM writers w "
        "LEFT JOIN metrics m USING (run_id, writer) GROUP BY ALL ORDER BY worker"
    )
    with Store(root) as store:
        assert rows(store, query) == [
            ("shard-0", "closed", 3),
            ("shard-1", "closed", 5),
            (None, "open", 0),
        ]
        driver.close()
        assert rows(store, "SELECT status, records FROM writers WHERE labels = MAP {}") == [
            ("closed", 0)  # the driver logged nothing itself
        ]
        store.compact()
        assert rows(store, query)[2] == (None, "closed", 0)
        assert rows(store, "SELECT count(*) FROM writers")[0] == (3,)


def test_the_sdk_loggers_debug_events_are_dev_events(root: Path) -> None:
    """synapse-sdk's `logger.debug(text)` writes event "debug" with data {"content"}."""
    with open_run(root, run_id="sdk", env={}) as ctx:
        ctx.log("debug", {"content": "cache warmed"}, level="debug")
        ctx.log_dev_event("shapes", {"batch": 16})
        ctx.log("other", {"content": "not a dev event"})
    with Store(root) as store:
        assert rows(store, "SELECT message FROM dev_events ORDER BY seq") == [
            ("cache warmed",),
            ("shapes",),
        ]
    texts = [m["text"] for m in read_run(ctx.run_dir).messages(dev=True)]
    assert texts == ["cache warmed", "shapes", "Plugin run is complete."]


def test_metric_values_keep_their_kind_in_sql(root: Path) -> None:
    with open_run(root, run_id="kinds", env={}) as ctx:
        ctx.set_metrics(
            {"f": float("nan"), "i": 2**60 + 1, "b": True, "s": "best", "j": [1, 2]}, "c"
        )
    with Store(root) as store:
        found = dict(
            (key, (kind, value, text))
            for key, kind, value, text in rows(store, "SELECT key, kind, value, text FROM metrics")
        )
    assert found["i"] == ("int", float(2**60 + 1), str(2**60 + 1))
    assert found["b"] == ("bool", 1.0, None)
    assert found["s"] == ("str", None, "best")
    assert found["j"] == ("json", None, "[1,2]")
    kind, value, _ = found["f"]
    assert kind == "float" and value != value  # NaN survives into SQL


def test_a_running_runs_newest_records_appear_once(root: Path) -> None:
    ctx = make_run(root, "live", steps=3, finish=False)
    with Store(root) as store:
        assert rows(store, "SELECT count(*) FROM metrics") == [(6,)]
        assert rows(store, "SELECT status FROM runs") == [("running",)]
        ctx.set_metrics({"loss": 0.01}, "train")
        ctx.flush()
        assert rows(store, "SELECT count(*) FROM metrics") == [(7,)]
        ctx.end_log()
        ctx.close()  # seals the live segments into Parquet
        assert rows(store, "SELECT count(*), count(DISTINCT (seq, key)) FROM metrics") == [(7, 7)]
        assert rows(store, "SELECT status FROM runs") == [("completed",)]


def test_a_snapshot_answers_several_queries_from_one_look_at_the_root(root: Path) -> None:
    ctx = make_run(root, "live", steps=3, finish=False)
    with Store(root, confined=True) as store:
        with store.snapshot() as pinned:
            assert pinned is store
            make_run(root, "later")
            ctx.set_metrics({"loss": 0.01}, "train")
            ctx.flush()
            assert rows(store, "SELECT count(*) FROM runs") == [(1,)]
            assert store.query("SELECT count(*) AS n FROM metrics").table["n"][0].as_py() == 6
        # A look younger than max_age serves; outside a block, every query looks again.
        with store.snapshot(max_age=60):
            assert rows(store, "SELECT count(*) FROM runs") == [(1,)]
        assert rows(store, "SELECT count(*) FROM runs") == [(2,)]
        assert rows(store, "SELECT count(*) FROM metrics WHERE run_id = 'live'") == [(7,)]
    ctx.end_log()
    ctx.close()


def test_opening_a_store_reads_nothing_and_its_first_query_looks_once(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runstore.query

    looks: list[Path] = []
    scan = runstore.query.scan_root

    def counting(path: Path, problems: list[str] | None = None) -> list[RunDir]:
        looks.append(path)
        return scan(path, problems)

    monkeypatch.setattr(runstore.query, "scan_root", counting)
    make_run(root, "before")
    with Store(root) as store:
        assert looks == []
        make_run(root, "after-open")  # made after the store opened, before it looked
        assert rows(store, "SELECT run_id FROM runs ORDER BY 1") == [("after-open",), ("before",)]
        assert len(looks) == 1
        assert store.problems == [] and len(looks) == 1  # the look of that query
    with Store(root) as store:
        assert store.pending_compaction == 2 and len(looks) == 2  # asking looks first
        assert "runs" in {row[0] for row in store.connection.sql("SHOW TABLES").fetchall()}


def _segments_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The streams of the live segments a store reads from now on, one entry a read."""
    import runstore._live

    read: list[str] = []
    original = runstore._live.read_regular

    def spying(path: Path) -> tuple[bytes, object]:
        read.append(Path(path).parent.name)
        return original(path)

    monkeypatch.setattr(runstore._live, "read_regular", spying)
    return read


def test_a_query_looks_only_at_the_streams_of_the_views_it_names(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_run(root, "a")
    make_run(root, "b")
    read = _segments_read(monkeypatch)
    with Store(root) as store:
        assert rows(store, "SELECT count(*) FROM runs JOIN writers USING (run_id)") == [(2,)]
        assert read == []  # manifests only
        query = "WITH m AS (SELECT * FROM latest_metrics) SELECT count(*) FROM m"
        assert rows(store, query) == [(4,)]
        assert sorted(read) == ["metrics", "metrics"]
        assert rows(store, "SELECT count(*) FROM messages") == [(4,)]
        assert sorted(read) == ["events", "events", "metrics", "metrics"]
        # Finished runs keep what was read: a query of all views reads only progress.
        counts = (
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM progress), "
            "(SELECT count(*) FROM metrics)"
        )
        assert rows(store, counts) == [(6, 10, 20)]
        assert sorted(read).count("progress") == 2 and len(read) == 6


def test_a_query_the_store_cannot_tell_reads_every_stream(root: Path) -> None:
    # A running run: a look that does not read a stream of it leaves that stream out.
    ctx = make_run(root, "live", steps=3, finish=False)
    with Store(root) as store:
        store.sql("CREATE VIEW mine AS SELECT * FROM events")
        assert rows(store, "SELECT count(*) FROM runs") == [(1,)]  # reads no stream
        assert rows(store, "SELECT count(*) FROM mine") == [(2,)]
        assert rows(store, "SELECT count(*) FROM runs") == [(1,)]
        shadowing = "WITH events AS (SELECT * FROM events WHERE level = 'success') "
        assert rows(store, shadowing + "SELECT count(*) FROM events") == [(1,)]
        assert rows(store, "SELECT count(*) FROM runs") == [(1,)]
        two = "SELECT count(*) FROM metrics; SELECT count(*) FROM progress"
        assert rows(store, two) == [(3,)]  # the last statement's result
    ctx.end_log()
    ctx.close()


def test_a_snapshot_after_a_query_adds_the_streams_that_query_did_not_read(
    root: Path,
) -> None:
    ctx = make_run(root, "live", steps=3, finish=False)
    with Store(root) as store:
        assert rows(store, "SELECT count(*) FROM runs") == [(1,)]  # reads no stream
        with store.snapshot(max_age=60):  # that look serves, with every stream added
            ctx.set_metrics({"loss": 0.01}, "train")
            ctx.flush()
            assert rows(store, "SELECT count(*) FROM metrics") == [(6,)]
        assert rows(store, "SELECT count(*) FROM metrics") == [(7,)]
    ctx.end_log()
    ctx.close()


def test_a_torn_last_line_is_skipped_silently(root: Path) -> None:
    ctx = make_run(root, "torn", steps=2, finish=False)
    segment = next((ctx.run_dir / "streams" / "metrics").glob("*.jsonl"))
    with open(segment, "ab") as handle:
        handle.write(
            b'{"ts_ns":[1700000000000000000],"seq":[99],"category":["train"],"values":[{"lo'
        )
    with Store(root) as store:
        assert rows(store, "SELECT count(*) FROM metrics") == [(4,)]
        assert store.problems == []
    ctx.close()


def test_queries_never_fail_or_repeat_records_while_segments_are_sealed(root: Path) -> None:
    options = WriterOptions(flush_interval=0.005, seal_bytes=2_000)
    ctx = open_run(root, run_id="sealing", env={}, options=options)
    done = threading.Event()
    total = 3_000

    def log() -> None:
        for step in range(total):
            ctx.set_metrics({"loss": float(step)}, "train")
            if step % 50 == 0:
                time.sleep(0.002)  # let the writer flush, and seal, many times
        done.set()

    thread = threading.Thread(target=log)
    thread.start()
    seen = []
    with Store(root) as store:
        while not done.is_set() or len(seen) < 3:
            count, distinct = rows(store, "SELECT count(*), count(DISTINCT seq) FROM metrics")[0]
            assert count == distinct  # never a record twice
            seen.append(count)
        thread.join()
        ctx.close()
        assert rows(store, "SELECT count(*), count(DISTINCT seq) FROM metrics") == [(total, total)]
    assert seen == sorted(seen)  # never a record lost once seen
    assert len(list((ctx.run_dir / "streams" / "metrics").glob("*.parquet"))) > 1


def test_damaged_runs_are_reported_and_the_others_still_answer(root: Path) -> None:
    make_run(root, "good")
    bad = make_run(root, "bad-manifest").run_dir
    (bad / "run.json").write_text('{"format_version": 1, "run_id": ')
    garbage = make_run(root, "bad-segment", finish=False)
    segment = next((garbage.run_dir / "streams" / "metrics").glob("*.jsonl"))
    with open(segment, "ab") as handle:
        handle.write(b"this is not json\n")
    with pytest.warns(Warning), Store(root) as store:
        assert rows(store, "SELECT run_id FROM runs ORDER BY 1") == [("bad-segment",), ("good",)]
        assert rows(store, "SELECT count(*) FROM metrics") == [(20,)]
        problems = "\n".join(store.problems)
        assert f"{bad / 'run.json'}: not valid JSON" in problems
        assert f"{segment} byte" in problems
    garbage.close()


def test_a_run_of_a_newer_format_is_refused_by_its_version(root: Path) -> None:
    make_run(root, "old")
    path = make_run(root, "new").run_dir / "run.json"
    path.write_text(path.read_text().replace('"format_version": 1', '"format_version": 7'))
    with warnings.catch_warnings(record=True), Store(root) as store:
        assert rows(store, "SELECT run_id FROM runs") == [("old",)]
        assert any("format version 7" in problem for problem in store.problems)


def test_a_copied_run_directory_is_counted_once(root: Path) -> None:
    make_run(root, "original")
    shutil.copytree(root / "original", root / "original-copy")
    with warnings.catch_warnings(record=True), Store(root) as store:
        assert rows(store, "SELECT count(*) FROM runs") == [(1,)]
        assert rows(store, "SELECT count(*) FROM metrics") == [(10,)]
        assert any("already held by another directory" in p for p in store.problems)


def test_a_store_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(RunDirectoryError, match="no such folder"):
        Store(tmp_path / "missing")


def test_sql_errors_name_the_views(root: Path) -> None:
    make_run(root, "a")
    with Store(root) as store, pytest.raises(QueryError, match="views: runs, writers, events"):
        store.sql("SELECT * FROM metricz")


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_text('{root}/../../../../etc/passwd')",
        "SELECT * FROM glob('/etc/*')",
        "COPY (SELECT 1) TO '{root}/out.csv'",
        "COPY runs TO '/tmp/out.csv'",
        "ATTACH '{root}/x.db' AS x",
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "INSTALL httpfs",
        "LOAD httpfs",
        "PRAGMA enable_profiling",
        "CREATE TABLE t AS SELECT 1",
        "SELECT 1; DROP VIEW runs",
        "SELECT * FROM secret_frame",
    ],
)
def test_confined_sql_reads_only_the_store(root: Path, query: str) -> None:
    make_run(root, "a")
    secret_frame = {"a": [1]}  # noqa: F841 - a replacement scan could read this local
    with Store(root, confined=True) as store:
        with pytest.raises(QueryError) as caught:
            relation = store.sql(query.format(root=root))
            if relation is not None:
                relation.fetchall()
        assert "refused" in str(caught.value) or "does not exist" in str(caught.value)
        assert rows(store, "SELECT count(*) FROM runs") == [(1,)]
    assert not (root / "out.csv").exists() and not (root / "x.db").exists()


def test_confined_sql_still_answers_questions(root: Path) -> None:
    make_run(root, "a")
    with Store(root, confined=True) as store:
        assert rows(store, "SELECT json_extract_string(params, '$.x') FROM runs") == [(None,)]
        assert len(rows(store, "DESCRIBE metrics")) == len(store_schema("metrics"))
        plan = rows(store, "EXPLAIN SELECT run_id FROM runs")
        assert plan and "physical_plan" in {row[0] for row in plan}
        assert rows(store, "SELECT key, value FROM latest_metrics ORDER BY key") == [
            ("accuracy", 1.0),
            ("loss", 0.2),
        ]


def test_a_query_over_runs_as_runstore_wrote_them_never_imports_pydantic(root: Path) -> None:
    # pydantic judges only manifests and catalogs not as runstore writes them: its
    # import and first validator cost more than reading 2,000 manifests (issue 14).
    from runstore import compact

    for name in ("a", "b"):
        make_run(root, name)
    compact(root)
    make_run(root, "c")  # outside the archive
    done = run_python(
        """
        import sys
        from runstore import Store
        with Store(sys.argv[1], archive=False) as store:
            print(store.sql("SELECT count(*) FROM runs JOIN metrics USING (run_id)").fetchall())
        print("pydantic" in sys.modules)
        """,
        str(root),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[(30,)]", "False"]


def test_store_is_exported_from_the_package() -> None:
    import runstore

    for name in ("Store", "QueryError", "compact", "CompactReport", "export_store"):
        assert name in runstore.__all__ and hasattr(runstore, name)


def test_sealed_segments_are_read_from_disk_by_the_queries_that_need_them(root: Path) -> None:
    make_run(root, "a", steps=50, sealed=True)
    with Store(root) as store:
        assert rows(store, "SELECT count(*) FROM metrics") == [(100,)]
        # The store holds no sealed record: damage the file under it, and a query
        # that needs metrics reads the damage, while one that names only runs does not.
        (sealed,) = (root / "a" / "streams" / "metrics").glob("*.parquet")
        sealed.write_bytes(b"PAR1 not parquet any more PAR1")
        assert rows(store, "SELECT run_id, status FROM runs") == [("a", "completed")]
        assert rows(store, "SELECT count(*) FROM writers") == [(1,)]
        with pytest.raises(QueryError, match=str(sealed.name)):
            store.sql("SELECT count(*) FROM metrics").fetchall()  # type: ignore[union-attr]


def test_a_store_archives_finished_runs_in_the_background_unless_told_not_to(
    tmp_path: Path,
) -> None:
    from runstore.archive import load_catalog
    from runstore.compaction import BACKGROUND_RUNS

    root = tmp_path / "runs"
    for index in range(BACKGROUND_RUNS):
        make_run(root, f"r{index:02d}", steps=2)
    for kept in (Store(root, archive=False), Store(root, confined=True)):
        with kept as store:
            assert rows(store, "SELECT count(*) FROM runs") == [(BACKGROUND_RUNS,)]
    time.sleep(0.5)
    assert not (root / ".runstore").exists(), "a store told not to archive wrote nothing"
    with Store(root) as store:
        assert rows(store, "SELECT count(*) FROM runs") == [(BACKGROUND_RUNS,)]
        deadline = time.monotonic() + 60
        while (catalog := load_catalog(root)) is None or len(catalog.runs()) < BACKGROUND_RUNS:
            assert time.monotonic() < deadline, "the background compaction never finished"
            time.sleep(0.1)
        # The next look reads them from the archive, every record once.
        assert rows(store, "SELECT count(*) FROM metrics") == [(BACKGROUND_RUNS * 4,)]
        assert store.pending_compaction == 0


@pytest.mark.parametrize("confined", [False, True])
def test_a_store_is_freed_when_its_last_reference_goes(tmp_path: Path, confined: bool) -> None:
    # No reference cycle: a dropped store (and the tables of every run it read) goes at
    # once, not when the cycle collector next runs (a long-lived process, say the
    # viewer, held them until then).
    import gc
    import weakref

    make_run(tmp_path, "a")
    running = make_run(tmp_path, "b", finish=False)  # read live: tables in memory
    gc.collect()
    gc.disable()
    try:
        store = Store(tmp_path, confined=confined)
        assert store.sql("SELECT count(*) FROM metrics").fetchall() == [(20,)]
        store.close()
        dropped = weakref.ref(store)
        del store
        assert dropped() is None, "the store outlived its last reference"
    finally:
        gc.enable()
        running.close()
