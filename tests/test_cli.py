"""The command line, run as a real process on the sample runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from runstore.cli import COMMAND_MODULES, all_commands, main
from runstore.cli._base import LEAN_COMMANDS

from .conftest import SAMPLE_RUNS, run_python


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runstore.cli", *args], capture_output=True, text=True, check=False
    )


def test_ls_table_and_json() -> None:
    table = _cli("ls", str(SAMPLE_RUNS))
    assert table.returncode == 0, table.stderr
    for name in ("demo-train", "demo-export", "demo-upload", "demo-crashed", "crashed", "failed"):
        assert name in table.stdout
    runs = json.loads(_cli("ls", str(SAMPLE_RUNS), "--json").stdout)
    assert {r["run_id"]: r["status"] for r in runs}["demo-crashed"] == "crashed"
    assert {"path", "plugin", "action", "job_id", "started_at", "duration_s"} <= set(runs[0])


def test_show_table_and_json() -> None:
    shown = _cli("show", str(SAMPLE_RUNS / "demo-train"))
    assert shown.returncode == 0, shown.stderr
    for text in ("completed", "overall 100.0%", "validation", "accuracy", "Training finished"):
        assert text in shown.stdout
    assert "epoch finished" not in shown.stdout
    assert "epoch finished" in _cli("show", str(SAMPLE_RUNS / "demo-train"), "--dev").stdout
    data = json.loads(_cli("show", str(SAMPLE_RUNS / "demo-upload"), "--json").stdout)
    assert data["status"] == "failed"
    assert data["error"].startswith("StepFailedError: Step 'upload' failed")
    assert data["metrics"]["upload"] == {"uploaded": 26, "failed": 4}
    assert [m["level"] for m in data["messages"]].count("warning") == 5


def test_show_lists_the_writers_of_a_run_of_several_processes(tmp_path: Path) -> None:
    from runstore import attach_run, open_run

    ctx = open_run(tmp_path, run_id="multi", env={})
    with ctx, attach_run(ctx.run_dir, labels={"shard": "7"}) as worker:
        worker.set_metrics({"n": 1.0}, "work")
    shown = _cli("show", str(ctx.run_dir))
    assert shown.returncode == 0, shown.stderr
    assert "writers" in shown.stdout and "shard=7" in shown.stdout
    assert worker.writer_id in shown.stdout and ctx.writer_id in shown.stdout
    single = _cli("show", str(SAMPLE_RUNS / "demo-train")).stdout
    assert "shard=" not in single and "labels" not in single  # one writer: no table
    data = json.loads(_cli("show", str(ctx.run_dir), "--json").stdout)
    assert {w["writer_id"]: w["labels"] for w in data["writers"]}[worker.writer_id] == {
        "shard": "7"
    }


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    missing = _cli("show", str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope'}: no such run directory"
    not_run = _cli("show", str(tmp_path))
    assert not_run.returncode == 1 and "run.json: missing" in not_run.stderr
    assert "Traceback" not in not_run.stderr


def test_demo_writes_four_runs_and_refuses_to_overwrite(tmp_path: Path) -> None:
    made = _cli("demo", str(tmp_path / "runs"))
    assert made.returncode == 0, made.stderr
    assert len(made.stdout.split()) == 4
    again = _cli("demo", str(tmp_path / "runs"))
    assert again.returncode == 1 and "already exist" in again.stderr


def test_each_command_is_found_in_the_module_listed_for_it() -> None:
    import importlib

    for module in set(COMMAND_MODULES.values()):
        importlib.import_module(f"runstore.cli.{module}")
    assert sorted(main.commands) == sorted(COMMAND_MODULES)  # none unlisted
    for name, command in main.commands.items():
        assert command.callback is not None
        assert command.callback.__module__ == f"runstore.cli.{COMMAND_MODULES[name]}", name


def test_sql_for_a_script_loads_no_other_command_nor_the_terminal_ui() -> None:
    done = run_python(
        """
        import sys
        from runstore.cli import main
        try:
            main([
                "sql", sys.argv[1], "SELECT count(*) AS n FROM runs", "--format", "csv",
                "--no-archive",
            ])
        except SystemExit:
            pass
        loaded = ("rich", "pydantic", "runstore.cli.carry", "runstore.cli.live")
        print(",".join(m for m in loaded if m in sys.modules))
        """,
        str(SAMPLE_RUNS),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["n", "4"]
    assert done.stdout.splitlines()[2:] == [""], f"loaded: {done.stdout.splitlines()[2:]}"


def test_every_command_has_help_and_a_documented_example() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    runner = CliRunner()
    for name, command in all_commands().items():
        assert command.help and "Example: runstore " + name in command.help, name
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0
        assert f"runstore {name}" in readme, f"README does not show `runstore {name}`"


def test_sql_prints_a_table_by_default_and_formats_for_scripts(tmp_path: Path) -> None:
    query = "SELECT run_id, status FROM runs ORDER BY run_id"
    table = _cli("sql", str(SAMPLE_RUNS), query)
    assert table.returncode == 0, table.stderr
    assert "demo-crashed" in table.stdout and "crashed" in table.stdout and "4 rows" in table.stdout
    csv = _cli("sql", str(SAMPLE_RUNS), query, "--format", "csv")
    assert csv.stdout.splitlines()[:2] == ["run_id,status", "demo-crashed,crashed"]
    as_json = json.loads(_cli("sql", str(SAMPLE_RUNS), query, "--format", "json").stdout)
    assert as_json[0] == {"run_id": "demo-crashed", "status": "crashed"}
    lines = _cli("sql", str(SAMPLE_RUNS), "SELECT ts, value FROM metrics", "--format", "jsonl")
    first = json.loads(lines.stdout.splitlines()[0])
    assert first["ts"].endswith("+00:00") and isinstance(first["value"], float)
    out = tmp_path / "latest.parquet"
    written = _cli(
        "sql",
        str(SAMPLE_RUNS),
        "SELECT * FROM latest_metrics",
        "--format",
        "parquet",
        "-o",
        str(out),
    )
    assert written.returncode == 0, written.stderr
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 10


def test_sql_reads_queries_from_stdin_and_prompts_interactively() -> None:
    script = "SELECT 1 AS one;\nSELECT count(*) AS runs FROM runs;"
    piped = subprocess.run(
        [sys.executable, "-m", "runstore.cli", "sql", str(SAMPLE_RUNS), "--format", "csv"],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    assert piped.stdout.splitlines() == ["one", "1", "runs", "4"]
    session = "SELECT 2\n  AS two;\n.tables\n.format csv\nSELECT 3 AS three;\nSELEC;\n.quit\n"
    result = CliRunner().invoke(main, ["sql", str(SAMPLE_RUNS), "-i"], input=session)
    assert result.exit_code == 0, result.output
    assert "over 4 runs" in result.output and "latest_progress" in result.output
    assert "three\r\n3" in result.output or "three\n3" in result.output
    assert "error: SQL error: Parser Error" in result.output  # and the prompt went on


def test_sql_errors_exit_non_zero_with_one_clear_line(tmp_path: Path) -> None:
    bad = _cli("sql", str(SAMPLE_RUNS), "SELECT nope FROM runs")
    assert bad.returncode == 1 and bad.stderr.startswith("error: SQL error: Binder Error")
    refused = _cli("sql", str(SAMPLE_RUNS), "--confined", "SELECT * FROM read_csv('/etc/passwd')")
    assert refused.returncode == 1 and "refused" in refused.stderr
    missing = _cli("sql", str(tmp_path / "nowhere"), "SELECT 1")
    assert missing.returncode == 1 and "no such folder" in missing.stderr


def test_compact_and_export_commands(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(SAMPLE_RUNS, root)
    made = _cli("compact", str(root))
    assert made.returncode == 0, made.stderr
    assert "archived 4 runs" in made.stdout
    again = json.loads(_cli("compact", str(root), "--json").stdout)
    assert again["added"] == 0 and again["archived"] == 4
    exported = _cli("export", str(root), "--to", str(tmp_path / "parquet"))
    assert exported.returncode == 0 and "metrics 519" in exported.stdout
    refused = _cli("export", str(root), "--to", str(tmp_path / "parquet"))
    assert refused.returncode == 1 and "--overwrite" in refused.stderr


def test_sql_table_output_fetches_only_the_rows_it_shows() -> None:
    # Ten billion rows: fetching them all would never end (nor fit in memory).
    shown = _cli("sql", str(SAMPLE_RUNS), "SELECT * FROM range(10000000000)", "--max-rows", "5")
    assert shown.returncode == 0, shown.stderr
    assert "the first 5 rows; more were not fetched" in shown.stdout


def test_confined_sql_refuses_a_wrapped_write_with_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    shutil.copytree(SAMPLE_RUNS, root)
    manifest = (root / "demo-train" / "run.json").read_bytes()
    query = (
        "EXPLAIN ANALYZE COPY (SELECT 'forged' AS run_id) "
        f"TO '{root}/demo-train/run.json' (FORMAT json)"
    )
    refused = _cli("sql", str(root), "--confined", query)
    assert refused.returncode == 1
    assert "error: refused: confined SQL runs only SELECT queries" in refused.stderr
    assert (root / "demo-train" / "run.json").read_bytes() == manifest
    capped = _cli("sql", str(root), "--confined", "--format", "csv", "SELECT * FROM range(200000)")
    assert capped.returncode == 0, capped.stderr
    assert len(capped.stdout.splitlines()) == 100_001  # the header and the row cap
    assert "only the first 100,000 rows were written" in capped.stderr


def test_python_dash_m_runstore_is_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runstore", "ls", str(SAMPLE_RUNS), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert {run["run_id"] for run in json.loads(done.stdout)} >= {"demo-train", "demo-crashed"}


def _run_command(*args: str) -> subprocess.CompletedProcess[str]:
    """`runstore ARGS` through `runstore.cli.run`, with an atexit handler that says when
    the interpreter's teardown ran."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('torn down', file=sys.stderr))\n"
        "from runstore.cli import run\n"
        f"sys.argv = ['runstore', *{list(args)!r}]\n"
        "run()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_a_command_that_only_reads_leaves_without_teardown_and_loses_no_output(
    tmp_path: Path,
) -> None:
    rows = "SELECT range AS n FROM range(200000)"
    done = _run_command("sql", str(SAMPLE_RUNS), rows, "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert "torn down" not in done.stderr
    assert done.stdout.splitlines() == ["n", *map(str, range(200_000))]
    out = tmp_path / "out.jsonl"
    done = _run_command("sql", str(SAMPLE_RUNS), rows, "--format", "jsonl", "-o", str(out))
    assert done.returncode == 0 and "torn down" not in done.stderr
    assert len(out.read_text().splitlines()) == 200_000
    for args in (["ls", str(SAMPLE_RUNS)], ["show", str(SAMPLE_RUNS / "demo-train")]):
        done = _run_command(*args)
        assert done.returncode == 0 and "torn down" not in done.stderr, args
        assert "demo-train" in done.stdout
    # Exit codes stay click's: an error, a usage error.
    done = _run_command("sql", str(SAMPLE_RUNS), "SELECT nothing FROM runs")
    assert done.returncode == 1 and "error:" in done.stderr and "torn down" not in done.stderr
    done = _run_command("sql", str(SAMPLE_RUNS), "SELECT 1", "--format", "nope")
    assert done.returncode == 2 and "torn down" in done.stderr  # refused before it ran
    # A reader that stops early (`| head -1`): no traceback, click's exit code.
    code = (
        "import sys\nfrom runstore.cli import run\n"
        f"sys.argv = ['runstore', 'sql', {str(SAMPLE_RUNS)!r}, {rows!r}, '--format', 'csv']\n"
        "run()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().strip() == b"n"  # csv lines end in CRLF
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 1 and "Traceback" not in stderr, stderr
    # A command that writes (here, the archive) ends as any Python program does.
    root = tmp_path / "runs"
    shutil.copytree(SAMPLE_RUNS, root)
    done = _run_command("compact", str(root))
    assert done.returncode == 0, done.stderr
    assert "torn down" in done.stderr


def test_the_commands_without_numpy_are_those_marked_reads_only() -> None:
    # `run` decides before any command module is imported, so the set is written out.
    marked = {
        name
        for name, command in all_commands().items()
        if getattr(command.callback, "reads_only", False)
    }
    assert marked == LEAN_COMMANDS


def test_commands_that_only_print_what_they_read_load_no_numpy(tmp_path: Path) -> None:
    # Installed here (the dev extras), as in many a training environment: pyarrow would
    # load it, and nothing these commands print needs it.
    pytest.importorskip("numpy")
    query = (
        "SELECT r.run_id, r.started_at, m.key, m.value, e.data, 1.5::DECIMAL(10, 2) AS d, "
        "[1, 2] AS l, {'a': 1} AS s, 'x'::BLOB AS b "
        "FROM runs r JOIN latest_metrics m USING (run_id) LEFT JOIN events e USING (run_id)"
    )
    commands = [
        ["sql", str(SAMPLE_RUNS), query, "--format", fmt, "-o", str(tmp_path / f"out.{fmt}")]
        for fmt in ("table", "csv", "json", "jsonl", "parquet")
    ]
    commands += [["ls", str(SAMPLE_RUNS)], ["show", str(SAMPLE_RUNS / "demo-train")]]
    for args in commands:
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "runstore", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, (args, done.stderr[-2000:])
        loaded = re.findall(r"\|\s*(numpy\.\S+)$", done.stderr, re.MULTILINE)
        assert not loaded, (args, loaded[:5])
    assert len(json.loads((tmp_path / "out.json").read_text())) > 10
    assert pq.read_table(tmp_path / "out.parquet").num_rows > 10


def _collections_in(
    args: list[str], stdin: str = "", *, lean: bool = True
) -> tuple[int, bool, int]:
    """`runstore ARGS` through `run`: the cycle collector's rounds once `run` started,
    whether it was on at the end, and how many objects it had frozen out. `lean=False`:
    as if the command were not one of `LEAN_COMMANDS`."""
    code = (
        "import gc, os, sys\n"
        "rounds = []\n"
        "gc.callbacks.append(lambda phase, info: phase == 'start' and rounds.append(1))\n"
        "from runstore.cli import _base, run\n"
        f"_base.LEAN_COMMANDS = frozenset() if {not lean} else _base.LEAN_COMMANDS\n"
        "exit = os._exit\n"
        "def report(code):\n"
        "    print(len(rounds), gc.isenabled(), gc.get_freeze_count(), file=sys.stderr)\n"
        "    exit(code)\n"
        "os._exit = report\n"
        "rounds.clear()\n"
        f"sys.argv = ['runstore', *{args!r}]\n"
        "run()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=stdin, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    rounds, enabled, frozen = done.stderr.split()[-3:]
    return int(rounds), enabled == "True", int(frozen)


def test_a_lean_command_runs_with_the_cycle_collector_paused_until_it_settles(
    tmp_path: Path,
) -> None:
    root = tmp_path / "runs"
    for number in range(3):
        shutil.copytree(SAMPLE_RUNS / "demo-train", root / f"run-{number}")
    query = "SELECT run_id, value FROM latest_metrics WHERE key = 'loss' ORDER BY value"
    # One query: importing DuckDB and pyarrow and reading the runs take dozens of rounds
    # unless the collector is paused.
    one_query = ["sql", str(root), query, "--format", "csv"]
    assert _collections_in(one_query) == (0, False, 0)
    assert _collections_in(one_query, lean=False)[0] > 10
    assert _collections_in(["ls", str(root)])[:2] == (0, False)
    # A script goes on after its start: the collector is on again, what was made at
    # the start frozen out of its rounds.
    script = f"{query};\nSELECT count(*) FROM runs;\n"
    _, enabled, frozen = _collections_in(["sql", str(root), "--format", "csv"], stdin=script)
    assert enabled and frozen > 10_000


def test_output_file_is_replaced_only_by_a_whole_result(tmp_path: Path) -> None:
    out = tmp_path / "result.parquet"
    out.write_bytes(b"an earlier result")
    interval = _cli(
        "sql", str(SAMPLE_RUNS), "SELECT INTERVAL 3 DAY AS i", "--format", "parquet", "-o", str(out)
    )
    assert interval.returncode == 1
    assert "error: the result cannot be written as Parquet" in interval.stderr
    assert "Traceback" not in interval.stderr
    wrong = _cli("sql", str(SAMPLE_RUNS), "SELECT nothing FROM runs", "-o", str(out))
    assert wrong.returncode == 1 and "error: SQL error" in wrong.stderr
    assert out.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.parquet"]  # no temp file
    done = _cli("sql", str(SAMPLE_RUNS), "SELECT 7 AS n", "--format", "parquet", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert pq.read_table(out).to_pylist() == [{"n": 7}]
    # A link is written through, as `open` would, never replaced by a file.
    target = tmp_path / "target.csv"
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    done = _cli("sql", str(SAMPLE_RUNS), "SELECT 8 AS n", "--format", "csv", "-o", str(link))
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and target.read_text().splitlines() == ["n", "8"]
