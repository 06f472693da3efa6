"""`runstore compact` and `export`: the archive of finished runs, and Parquet for
other engines."""

from __future__ import annotations

from pathlib import Path

import click

from ._base import _json_option, _json_out, main


@main.command("compact")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--rebuild", is_flag=True, help="Start a new archive from the run folders alone.")
@_json_option()
def compact_command(root: Path, rebuild: bool, as_json: bool) -> None:
    """Merge the finished runs under ROOT into the archive that makes queries fast.

    The archive (ROOT/.runstore/archive) is derived from the run folders: safe to
    delete, rebuilt by this command. Running runs are left to be read live.

    Example: runstore compact sample-runs
    """
    from ..compaction import compact

    report = compact(root, rebuild=rebuild)
    for problem in report.problems:
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        _json_out(report.__dict__)
        return
    click.echo(
        f"archived {report.added} runs, dropped {report.dropped} changed or deleted; "
        f"the archive holds {report.archived} runs in {report.parts} parts; "
        f"{report.live} running runs left live ({report.seconds:.2f} s)"
    )


@main.command("export")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder to write (must not exist, or be empty).",
)
@click.option(
    "--partition-by",
    default="date",
    show_default=True,
    help="Comma-separated hive partition keys: date, plugin, action; '' for none.",
)
@click.option("--overwrite", is_flag=True, help="Replace the folder if it exists.")
def export_command(root: Path, target: Path, partition_by: str, overwrite: bool) -> None:
    """Write the store under ROOT as hive-partitioned Parquet for Spark, Trino, Ray
    Data, pandas or DuckDB: one folder per table (runs, writers, events, progress, metrics).

    Example: runstore export sample-runs --to /tmp/runs-parquet
    """
    from ..export import export_store

    keys = tuple(key.strip() for key in partition_by.split(",") if key.strip())
    rows = export_store(root, target, partition_by=keys, overwrite=overwrite)
    summary = ", ".join(f"{table} {count}" for table, count in rows.items())
    click.echo(f"wrote {target}: {summary} rows")
