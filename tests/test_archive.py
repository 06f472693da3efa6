"""The archive's pieces: run signatures, the catalog, and which record is the latest."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from runstore import ManifestError, RunstoreWarning, Store, attach_run, compact, open_run
from runstore.archive import catalog_path, latest_select, load_catalog, scan_root, store_schema


def _finished(root: Path, name: str) -> Path:
    with open_run(root, run_id=name, env={}) as ctx:
        ctx.set_metrics({"loss": 0.5}, "train")
    return root / name


def test_a_run_signature_changes_with_its_manifests_and_only_then(tmp_path: Path) -> None:
    run = _finished(tmp_path, "r")
    (before,) = scan_root(tmp_path)
    assert scan_root(tmp_path)[0].signature == before.signature  # nothing changed
    (run / "attachments").mkdir(exist_ok=True)
    assert scan_root(tmp_path)[0].signature == before.signature  # not what it watches
    with attach_run(run) as other:  # a second writer: a new file in writers/
        other.set_metrics({"loss": 0.25}, "train")
    assert scan_root(tmp_path)[0].signature != before.signature
    again = scan_root(tmp_path)[0].signature
    os.replace(run / "run.json", run / "run.json.old")
    (run / "run.json").write_bytes((run / "run.json.old").read_bytes())
    assert scan_root(tmp_path)[0].signature != again  # run.json replaced: a new inode


def test_scan_root_names_folders_that_look_like_runs_without_a_manifest(tmp_path: Path) -> None:
    _finished(tmp_path, "good")
    broken = _finished(tmp_path, "broken")
    (broken / "run.json").unlink()
    (tmp_path / "notes").mkdir()
    (tmp_path / ".hidden").mkdir()
    problems: list[str] = []
    assert [run.name for run in scan_root(tmp_path, problems)] == ["good"]
    assert len(problems) == 1 and "broken" in problems[0] and "run.json" in problems[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"{", "damaged archive catalog"), (b'{"archive_version": 1}', "archive version 1")],
)
def test_a_catalog_that_cannot_be_used_says_how_to_rebuild_it(
    tmp_path: Path, content: bytes, message: str
) -> None:
    _finished(tmp_path, "r")
    assert load_catalog(tmp_path) is None  # no archive yet
    compact(tmp_path)
    catalog = load_catalog(tmp_path)
    assert catalog is not None and list(catalog.runs()) == ["r"]
    catalog_path(tmp_path).write_bytes(content)
    with pytest.raises(ManifestError, match=message) as caught:
        load_catalog(tmp_path)
    assert "runstore compact" in str(caught.value)


def test_a_fifo_in_the_catalogs_place_is_a_damaged_catalog_not_a_hang(tmp_path: Path) -> None:
    _finished(tmp_path, "r")
    compact(tmp_path)
    catalog_path(tmp_path).unlink()
    os.mkfifo(catalog_path(tmp_path))  # opened for reading, it would wait for a writer
    with pytest.raises(ManifestError, match="cannot be read \\(not a regular file\\)"):
        load_catalog(tmp_path)
    with pytest.warns(RunstoreWarning, match="catalog"), Store(tmp_path) as store:
        assert store.sql("SELECT run_id FROM runs").fetchall() == [("r",)]  # type: ignore[union-attr]


def test_the_latest_record_is_the_newest_by_time_then_writer_then_seq() -> None:
    when = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=s) for s in (1, 2, 2, 2, 3)]
    rows = pa.table(
        {
            "run_id": ["r", "r", "r", "r", "r"],
            "ts": when,
            "writer": ["w1", "w1", "w2", "w2", "w1"],
            "seq": [9, 1, 1, 2, 5],
            "category": ["c", "c", "c", "c", None],
            "key": ["loss", "loss", "loss", "loss", "note"],
            "value": [0.1, 0.2, 0.3, 0.4, None],  # a text metric has no value
            "kind": ["float", "float", "float", "float", "str"],
            "text": [None, None, None, None, "done"],
        },
        schema=store_schema("latest_metrics"),
    )
    con = duckdb.connect()
    con.register("source", rows)
    latest = con.sql(
        "SELECT key, writer, seq, value, text FROM ("
        + latest_select("latest_metrics", "source")
        + ") ORDER BY key"
    ).fetchall()
    assert latest == [("loss", "w2", 2, 0.4, None), ("note", "w1", 5, None, "done")]
