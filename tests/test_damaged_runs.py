"""A damaged or hostile run breaks nothing but itself, in every reader.

Each case damages one run of a root in one way; then `read_run`, `Store` (SQL over the
whole root), `runstore show`, `runstore tail --from-start` and `compact` must each go on:
the other runs answer, the damage is reported naming the file, nothing hangs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runstore import (
    FormatVersionError,
    ManifestError,
    RunstoreWarning,
    Store,
    compact,
    open_run,
    read_run,
)
from runstore.format import RECORD_FIELDS
from runstore.tail import Follower


def _make(root: Path, name: str) -> Path:
    with open_run(root, run_id=name, plugin="p", env={}) as ctx:
        ctx.set_metrics({"loss": 1.0}, "train")
        ctx.log_message("hello", "info")
    return ctx.run_dir


def _live_line(stream: str, path: Path, columns: dict[str, list[object]]) -> None:
    header = {
        "runstore": 1,
        "stream": stream,
        "writer": "wbad",
        "segment": 1,
        "fields": RECORD_FIELDS[stream],
    }
    path.write_bytes(orjson.dumps(header) + b"\n" + orjson.dumps(columns) + b"\n")


def _huge_ts(run: Path) -> str:
    path = run / "streams" / "metrics" / "wbad-000001.jsonl"
    top = 2**64 - 1
    _live_line("metrics", path, {"ts_ns": [top], "seq": [top], "category": ["t"], "values": [{}]})
    return str(path)


def _huge_seq_event(run: Path) -> str:
    path = run / "streams" / "events" / "wbad-000001.jsonl"
    columns: dict[str, list[object]] = {name: [None] for name in RECORD_FIELDS["events"]}
    columns.update(ts_ns=[1], seq=[2**64 - 1], event=["x"], level=["info"], data=[{}])
    _live_line("events", path, columns)
    return str(path)


def _foreign_parquet(run: Path) -> str:
    path = run / "streams" / "metrics" / "wbad-000001.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), path)
    return str(path)


def _nulls_in_required_columns(run: Path) -> str:
    path = run / "streams" / "progress" / "wbad-000001.parquet"
    table = read_run(run).progress
    columns = {
        name: pa.nulls(1, field.type)
        for name, field in zip(table.schema.names, table.schema, strict=True)
    }
    pq.write_table(pa.table(columns), path)
    return str(path)


def _folder_as_live_segment(run: Path) -> str:
    path = run / "streams" / "events" / "wbad-000001.jsonl"
    path.mkdir()
    return ""  # skipped: a folder is no segment


def _folder_as_sealed_segment(run: Path) -> str:
    path = run / "streams" / "metrics" / "wbad-000001.parquet"
    path.mkdir()
    (path / "part.parquet").write_bytes(b"PAR1")
    return ""


def _link_out_of_the_run(run: Path) -> str:
    outside = run.parent.parent / "outside.jsonl"
    _live_line(
        "metrics",
        outside,
        {"ts_ns": [1], "seq": [1], "category": ["x"], "values": [{"stolen": 1.0}]},
    )
    (run / "streams" / "metrics" / "wbad-000001.jsonl").symlink_to(outside)
    return ""


def _garbage_parquet(run: Path) -> str:
    path = run / "streams" / "events" / "wbad-000001.parquet"
    path.write_bytes(b"PAR1 this is not parquet PAR1")
    return str(path)


def _garbage_jsonl(run: Path) -> str:
    path = run / "streams" / "progress" / "wbad-000001.jsonl"
    path.write_bytes(b'{"not": "a header"}\n\x00\xff garbage\n[1, 2]\n')
    return str(path)


DAMAGE: dict[str, Callable[[Path], str]] = {
    "ts_ns of 2**64-1": _huge_ts,
    "seq of 2**64-1": _huge_seq_event,
    "Parquet of a foreign schema": _foreign_parquet,
    "Parquet with nulls in required columns": _nulls_in_required_columns,
    "a folder in place of a live segment": _folder_as_live_segment,
    "a folder in place of a sealed segment": _folder_as_sealed_segment,
    "a link out of the run": _link_out_of_the_run,
    "garbage Parquet": _garbage_parquet,
    "garbage JSONL": _garbage_jsonl,
}


def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runstore.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_segment_breaks_nothing_but_itself(root: Path, damage: str) -> None:
    _make(root, "good")
    bad = _make(root, "bad")
    where = DAMAGE[damage](bad)

    run = read_run(bad)
    assert [r["key"] for r in run.metrics.to_pylist()] == ["loss"]
    assert next(m["text"] for m in run.messages()) == "hello"
    assert run.progress.num_rows == 0 or None not in run.progress.column("writer").to_pylist()
    if where:
        assert any(where in problem for problem in run.problems), run.problems

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunstoreWarning)
        with Store(root) as store:
            counts = store.sql("SELECT run_id, count(*) FROM metrics GROUP BY 1 ORDER BY 1")
            assert counts is not None and counts.fetchall() == [("bad", 1), ("good", 1)]
            nulls = store.sql("SELECT count(*) FROM metrics WHERE key IS NULL OR writer IS NULL")
            assert nulls is not None and nulls.fetchall() == [(0,)]
            store.refresh()  # every stream: a query's look reads those it needs only
            if where:
                assert any(where in problem for problem in store.problems)

    shown = _cli("show", str(bad))
    assert shown.returncode == 0, shown.stderr
    assert "loss" in shown.stdout

    tailed = _cli("tail", str(bad), "--from-start", "--json")
    assert tailed.returncode == 0, tailed.stderr
    lines = [orjson.loads(line) for line in tailed.stdout.splitlines()]
    assert lines[-1]["stream"] == "status" and lines[-1]["status"] == "completed"
    assert sum(1 for line in lines if line["stream"] == "metrics") == 1
    if where:
        assert where in tailed.stderr

    report = compact(root)
    assert report is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunstoreWarning)
        with Store(root) as store:
            assert store.sql("SELECT count(*) FROM metrics").fetchall() == [(2,)]  # type: ignore[union-attr]


def _folder_for(path: Path) -> None:
    path.unlink()
    path.mkdir()


_MANIFESTS: dict[str, Callable[[Path], None]] = {
    "missing": lambda m: m.unlink(),
    "a folder": lambda m: _folder_for(m),
    "empty": lambda m: m.write_bytes(b""),
    "not JSON": lambda m: m.write_bytes(b"{nope"),
    "malformed": lambda m: m.write_bytes(b'{"format_version": 1, "run_id": 5}'),
    "of a future format": lambda m: m.write_bytes(b'{"format_version": 99, "run_id": "x"}'),
    "a FIFO": lambda m: (m.unlink(), os.mkfifo(m)),  # opened for reading, it would block
}


@pytest.mark.parametrize("damage", _MANIFESTS, ids=list(_MANIFESTS))
def test_a_damaged_run_json_is_an_error_for_tail_and_a_warning_for_sql(
    root: Path, damage: str
) -> None:
    _make(root, "good")
    bad = _make(root, "bad")
    _MANIFESTS[damage](bad / "run.json")

    with pytest.raises((ManifestError, FormatVersionError), match="run.json"):
        Follower(bad, from_start=True)
    tailed = _cli("tail", str(bad), "--from-start", timeout=20)  # once hung forever
    assert tailed.returncode == 1
    assert tailed.stderr.startswith("error: ") and "run.json" in tailed.stderr
    assert tailed.stdout == ""  # nothing of a run that no reader accepts

    with pytest.warns(RunstoreWarning, match=r"bad/run\.json"), Store(root) as store:
        assert store.sql("SELECT run_id FROM runs").fetchall() == [("good",)]  # type: ignore[union-attr]
        assert any("run.json" in problem for problem in store.problems)
    listed = _cli("ls", str(root))
    assert listed.returncode == 0 and "good" in listed.stdout
    assert "run.json" in listed.stderr


def test_a_fifo_in_a_writer_manifests_place_blocks_no_reader(root: Path) -> None:
    # `open()` of a FIFO for reading waits for a writer: once, `runstore sql` hung here.
    _make(root, "good")
    bad = _make(root, "bad")
    os.mkfifo(bad / "writers" / "wfifo.json")
    refused = r"wfifo\.json: cannot be read \(not a regular file\)"
    with pytest.warns(RunstoreWarning, match=refused), Store(root) as store:
        runs = store.sql("SELECT run_id, status FROM runs ORDER BY 1")
        assert runs is not None
        assert runs.fetchall() == [("bad", "completed"), ("good", "completed")]
    run = read_run(bad)
    assert run.status == "completed" and any("wfifo.json" in p for p in run.problems)
    listed = _cli("ls", str(root), timeout=20)  # `ls` lists runs, not their problems
    assert listed.returncode == 0 and "bad" in listed.stdout, listed.stderr
    shown = _cli("show", str(bad), timeout=20)  # its problems, with the run
    assert shown.returncode == 0 and "wfifo.json: cannot be read" in shown.stdout, shown.stderr
    done = _cli("sql", str(root), "SELECT 1", timeout=20)
    assert done.returncode == 0 and "wfifo.json: cannot be read" in done.stderr, done.stderr
    tailed = _cli("tail", str(bad), "--from-start", "--json", timeout=20)
    assert tailed.returncode == 0, tailed.stderr
    assert compact(root) is not None


def test_leftover_temp_files_of_a_dead_writer_are_removed_by_compaction(root: Path) -> None:
    run = _make(root, "a")
    leftovers = [
        run / ".run.json.4242.tmp",
        run / "writers" / ".w1-000001.json.4242.tmp",
        run / "streams" / "metrics" / ".w1-000001.parquet.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"half")
    keep = run / "streams" / "metrics" / "notes.tmp"  # not ours: not a dot file
    keep.write_bytes(b"mine")
    compact(root)
    assert not any(path.exists() for path in leftovers)
    assert keep.exists()
    assert read_run(run).metrics.num_rows == 1


def test_a_running_runs_temp_files_are_left_alone(root: Path) -> None:
    ctx = open_run(root, run_id="live", env={})
    ctx.set_metrics({"loss": 1.0}, "train")
    ctx.flush()
    tmp = ctx.run_dir / "streams" / "metrics" / ".x-000001.parquet.tmp"
    tmp.write_bytes(b"being written")
    compact(root)
    assert tmp.exists()
    ctx.end_log()
    ctx.close()
    os.unlink(tmp)
