"""The package's surface: every public name, and what a job that only logs imports."""

from __future__ import annotations

from pathlib import Path

import pytest

import runstore
from runstore import _native

from .conftest import run_python

#: What only the readers of runs need, never a job that logs.
_HEAVY = ("duckdb", "watchdog", "rich", "click", "starlette", "uvicorn", "jinja2", "sse_starlette")
#: And what a job that logs little never needs: Arrow seals segments past `jsonl_bytes`,
#: pydantic checks manifests where they are read.
_SMALL_JOB_NEVER = (*_HEAVY, "pyarrow", "numpy", "pydantic")


@pytest.mark.parametrize(
    "statement",
    [
        "from runstore import open_run",
        "from runstore import attach_run, RuntimeContext, WriterOptions",
        "from runstore.steps import Orchestrator, TrainContext",
    ],
)
def test_a_job_that_only_logs_imports_no_query_engine(statement: str, tmp_path: Path) -> None:
    done = run_python(
        f"""
        import sys
        {statement}
        from runstore import open_run
        with open_run(sys.argv[1], env={{}}) as ctx:
            ctx.set_metrics({{"loss": 0.5}}, "train")
        print(",".join(m for m in {_SMALL_JOB_NEVER!r} if m in sys.modules))
        """,
        str(tmp_path / "runs"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"loaded by a logging job: {done.stdout.strip()}"


def test_a_job_that_logs_much_seals_without_pyarrow_compute(tmp_path: Path) -> None:
    # pyarrow.compute is ~30 ms of a job's import (a tenth of 100,000 steps as a whole
    # process): the C speedups' tables of float metrics are sealed without it.
    if _native.speedups is None:
        pytest.skip("the pure-Python tables are built with pyarrow.compute")
    done = run_python(
        f"""
        import sys
        from runstore import WriterOptions, open_run
        options = WriterOptions(jsonl_bytes=1 << 16, seal_bytes=1 << 18)
        with open_run(sys.argv[1], run_id="much", env={{}}, options=options) as ctx:
            ctx.log_message("started")
            for step in range(20_000):
                ctx.set_metrics({{"loss": 1.0 / (step + 1), "accuracy": step / 20_000}}, "train")
                ctx.set_metrics({{"step": step, "best": step % 7 == 0}}, "epoch")
        print(",".join(m for m in ("pyarrow.parquet", "pyarrow.compute", *{_HEAVY!r})
                       if m in sys.modules))
        """,
        str(tmp_path / "runs"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pyarrow.parquet", f"loaded: {done.stdout.strip()}"
    segments = {
        path.suffix for path in (tmp_path / "runs" / "much" / "streams" / "metrics").iterdir()
    }
    assert segments == {".parquet"}  # every one sealed
    rows = runstore.read_run(tmp_path / "runs" / "much").metrics
    assert rows.num_rows == 80_000


def test_a_stores_first_look_at_short_runs_loads_no_pyarrow_compute(tmp_path: Path) -> None:
    # pyarrow.compute is 30-50 ms of a fresh `runstore sql` (of ~0.5 s over 1,000 runs as
    # jobs left them): short runs' live segments are made into Arrow without it.
    if _native.speedups is None:
        pytest.skip("the pure-Python tables are built with pyarrow.compute")
    for number in range(3):
        with runstore.open_run(tmp_path / "runs", run_id=f"run-{number}", env={}) as ctx:
            for step in range(5):
                ctx.set_metrics({"loss": 1.0 / (step + 1), "accuracy": step / 5}, "train")
            ctx.log_message("done")
    done = run_python(
        """
        import sys
        from runstore import Store
        with Store(sys.argv[1], archive=False) as store:
            print(store.sql("SELECT count(*) FROM metrics").fetchall()[0][0])
            print(store.sql("SELECT count(*) FROM messages").fetchall()[0][0])
        print("pyarrow.compute" in sys.modules)
        """,
        str(tmp_path / "runs"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["30", "6", "False"]


def test_every_public_name_is_there_lazy_or_not() -> None:
    for name in runstore.__all__:
        assert getattr(runstore, name) is not None, name
    assert callable(runstore.compact) and runstore.compact.__module__ == "runstore.compaction"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        runstore.nothing  # noqa: B018


def test_the_command_line_loads_an_engine_only_for_the_command_that_needs_it() -> None:
    done = run_python(
        """
        import sys
        import runstore.cli
        from click.testing import CliRunner
        assert CliRunner().invoke(runstore.cli.main, ["--help"]).exit_code == 0
        print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in
              ("duckdb", "watchdog", "starlette", "uvicorn", "jinja2", "sse_starlette"))))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"loaded by `runstore --help`: {done.stdout.strip()}"


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    # setuptools ships only the packages pyproject lists: a new subpackage left out of
    # the list works in the editable checkout and is missing from the wheel.
    import tomllib

    root = Path(__file__).resolve().parent.parent
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(("runstore", *init.parent.relative_to(root / "runstore").parts))
        for init in (root / "runstore").rglob("__init__.py")
    }
    assert found <= listed, sorted(found - listed)
