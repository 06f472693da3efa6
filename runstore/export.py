"""Export: a store as hive-partitioned Parquet for other engines (docs/sql.md).

Spark, Trino, Ray Data, pandas and DuckDB itself read the result directly:
`DIR/<table>/date=<YYYY-MM-DD>/data_0.parquet`, one folder per table (`runs`, `writers`,
`events`, `progress`, `metrics`), partitioned by the day each run started (UTC) unless asked
otherwise. The export is written under a temporary name and renamed into place, so
`DIR` appears complete or not at all.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Final

from .archive import RUNS, RUNS_SCHEMA, WRITERS, sql_path
from .errors import RunstoreError
from .format import EVENTS, METRICS, PROGRESS
from .query import Store

__all__ = ["EXPORT_TABLES", "PARTITION_KEYS", "export_store"]

EXPORT_TABLES: Final = (RUNS, WRITERS, EVENTS, PROGRESS, METRICS)

#: What an export may be partitioned by: a column computed from the run of each row.
PARTITION_KEYS: Final = {
    "date": "strftime(timezone('UTC', r.started_at), '%Y-%m-%d')",
    "plugin": "coalesce(r.plugin, 'unknown')",
    "action": "coalesce(r.action, 'unknown')",
}


def export_store(
    root: str | os.PathLike[str],
    to: str | os.PathLike[str],
    *,
    partition_by: tuple[str, ...] = ("date",),
    overwrite: bool = False,
) -> dict[str, int]:
    """Write every table of the store under `root` to `to`; returns rows per table.

    Raises `RunstoreError` if `to` exists and is not empty (unless `overwrite`), or a
    partition key is not one of PARTITION_KEYS.
    """
    unknown = [key for key in partition_by if key not in PARTITION_KEYS]
    if unknown:
        raise RunstoreError(
            f"cannot partition by {', '.join(unknown)}: choose from {', '.join(PARTITION_KEYS)}"
        )
    target = Path(to)
    empty = target.is_dir() and not any(target.iterdir())
    if target.exists() and not empty and not overwrite:
        raise RunstoreError(
            f"{target}: already exists and is not an empty folder; choose another "
            "path, or pass --overwrite to replace it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    rows: dict[str, int] = {}
    try:
        with Store(root) as store:
            for table in EXPORT_TABLES:
                rows[table] = _copy_table(store, table, tmp / table, partition_by)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows


def _copy_table(store: Store, table: str, directory: Path, partition_by: tuple[str, ...]) -> int:
    keys = "".join(f", {PARTITION_KEYS[key]} AS {key}" for key in partition_by)
    if table == RUNS:
        # plugin and action are columns of runs already: partition on them as they are.
        own = [key for key in partition_by if key in RUNS_SCHEMA.names]
        replace = ", ".join(f"{PARTITION_KEYS[key]} AS {key}" for key in own)
        keys = "".join(
            f", {PARTITION_KEYS[key]} AS {key}" for key in partition_by if key not in own
        )
        select = f"SELECT r.*{f' REPLACE ({replace})' if own else ''}{keys} FROM runs r"
    else:
        select = f"SELECT t.*{keys} FROM {table} t JOIN runs r USING (run_id)"
    options = "FORMAT parquet, COMPRESSION zstd"
    if partition_by:
        options += f", PARTITION_BY ({', '.join(partition_by)})"
    else:
        directory.mkdir()
        directory = directory / "data_0.parquet"
    result = store.connection.execute(f"COPY ({select}) TO {sql_path(directory)} ({options})")
    found = result.fetchone()
    return int(found[0]) if found else 0
