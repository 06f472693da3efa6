"""Export: hive-partitioned Parquet that other engines read as they are."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pytest

from runstore import RunstoreError, Store, export_store

from .conftest import SAMPLE_RUNS


def test_export_reads_back_with_pyarrow_and_duckdb(tmp_path: Path) -> None:
    target = tmp_path / "out"
    written = export_store(SAMPLE_RUNS, target)
    with Store(SAMPLE_RUNS) as store:
        for table, count in written.items():
            assert store.connection.sql(f"SELECT count(*) FROM {table}").fetchall() == [(count,)]
    metrics = ds.dataset(target / "metrics", format="parquet", partitioning="hive").to_table()
    assert metrics.num_rows == written["metrics"] and "date" in metrics.schema.names
    assert {"run_id", "ts", "key", "value"} <= set(metrics.schema.names)
    glob = str(target / "runs" / "**" / "*.parquet")
    runs = duckdb.sql(
        f"SELECT run_id, status FROM read_parquet('{glob}', hive_partitioning = true)"
    ).fetchall()
    assert ("demo-crashed", "crashed") in runs
    assert all(p.name.startswith("date=") for p in (target / "events").iterdir())
    assert set(written) == {"runs", "writers", "events", "progress", "metrics"}
    writers = ds.dataset(target / "writers", format="parquet", partitioning="hive").to_table()
    assert writers.num_rows == written["writers"] >= 4  # one or more per sample run
    assert writers.schema.field("labels").type.key_type == "string"


def test_export_partitions_by_the_keys_asked_for(tmp_path: Path) -> None:
    export_store(SAMPLE_RUNS, tmp_path / "by-plugin", partition_by=("plugin", "date"))
    folders = {p.name for p in (tmp_path / "by-plugin" / "metrics").iterdir()}
    assert "plugin=yolo-train" in folders
    runs = tmp_path / "by-plugin" / "runs" / "plugin=s3-upload"
    assert [p.name.startswith("date=") for p in runs.iterdir()] == [True]
    glob = str(tmp_path / "by-plugin" / "runs" / "**" / "*.parquet")
    columns = duckdb.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
    assert columns.columns.count("plugin") == 1
    export_store(SAMPLE_RUNS, tmp_path / "flat", partition_by=())
    assert (tmp_path / "flat" / "metrics" / "data_0.parquet").is_file()


def test_export_never_overwrites_by_accident(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    with pytest.raises(RunstoreError, match="already exists"):
        export_store(SAMPLE_RUNS, target)
    assert (target / "precious.txt").read_text() == "keep me"
    with pytest.raises(RunstoreError, match="cannot partition by colour"):
        export_store(SAMPLE_RUNS, tmp_path / "other", partition_by=("colour",))
    export_store(SAMPLE_RUNS, target, overwrite=True)
    assert not (target / "precious.txt").exists() and (target / "metrics").is_dir()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
