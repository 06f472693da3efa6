"""Examples in the docs are run, not trusted."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent
PAGES = [DOCS / "README.md", *sorted((DOCS / "docs").glob("*.md"))]


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)


#: Extras some examples need: they run where the extra is installed (.venv-sdk, by
#: scripts/test-sdk); elsewhere such an example is left out, and a page whose first example
#: needs one is skipped.
_EXTRAS = {"synapse_sdk": r"runstore\.synapse|synapse_sdk", "ray": r"ray"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = [m for m in _EXTRAS if importlib.util.find_spec(m) is None]

    def needs(block: str) -> list[str]:
        return [
            m for m in missing if re.search(rf"^\s*(from|import) ({_EXTRAS[m]})\b", block, re.M)
        ]

    blocks = _python_blocks(page)
    if blocks and needs(blocks[0]):  # a page about the extra: its examples build on it
        pytest.skip(f"{page.name} needs {', '.join(needs(blocks[0]))} (runs in .venv-sdk)")
    blocks = [block for block in blocks if not needs(block)]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sample-runs").symlink_to(DOCS / "sample-runs")
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, f"{page.name} example", "exec"), namespace)


def test_format_doc_names_every_column() -> None:
    from runstore.format import RECORD_FIELDS, SCHEMAS

    text = (DOCS / "docs" / "format.md").read_text()
    for schema in SCHEMAS.values():
        for name in schema.names:
            assert f"`{name}`" in text, name
    for fields in RECORD_FIELDS.values():
        for name in fields:
            assert f"`{name}`" in text, name


def test_the_changelog_has_an_unreleased_section_of_user_visible_changes() -> None:
    text = (DOCS / "CHANGELOG.md").read_text()
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## ", 1)[0]
    blocks = unreleased.split("\n### ")[1:]
    kinds = [block.split("\n", 1)[0] for block in blocks]
    # Keep a Changelog's kinds of change, each once, in its order, none empty.
    order = ["Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"]
    assert kinds and all(kind in order for kind in kinds), kinds
    assert kinds == sorted(set(kinds), key=order.index), kinds
    for block in blocks:
        assert "\n- " in block, block.split("\n", 1)[0]


def test_format_doc_example_line_is_a_line_the_reader_takes() -> None:
    from runstore.format import METRICS
    from runstore.jsonl import decode_lines
    from runstore.tables import table_from_columns

    text = (DOCS / "docs" / "format.md").read_text()
    (line,) = re.findall(r"```\n(\{\"ts_ns\".*?)\n```", text, flags=re.DOTALL)
    decoded = decode_lines(METRICS, line.encode() + b"\n", where="format.md")
    assert decoded.problems == [] and decoded.columns["seq"] == [7, 8]
    table = table_from_columns(METRICS, "w", decoded.columns)
    assert table.column("key").to_pylist() == ["loss", "acc", "loss", "acc"]


def test_sql_doc_examples_answer_and_every_column_is_documented() -> None:
    from runstore import Store
    from runstore.archive import store_schema
    from runstore.query import VIEWS

    text = (DOCS / "docs" / "sql.md").read_text()
    queries = re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)
    assert len(queries) >= 5
    with Store(DOCS / "sample-runs") as store:
        for query in queries:
            relation = store.sql(query)
            assert relation is not None and relation.fetchall(), query
        for view in VIEWS:
            assert f"`{view}`" in text, view
            columns = store.sql(f"SELECT * FROM {view} LIMIT 0")
            assert columns is not None
            for column in columns.columns:
                assert f"`{column}`" in text, f"{view}.{column} is not in docs/sql.md"
        assert store_schema("metrics").names[0] == "run_id"


def test_architecture_map_names_every_module_and_every_floor_is_checked() -> None:
    import tomllib

    text = (DOCS / "docs" / "architecture.md").read_text()
    config = tomllib.loads((DOCS / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    layered = {name.strip() for layer in layers for name in layer.split(":")}
    modules = {path.stem for path in (DOCS / "runstore").glob("*.py")} - {"__init__"}
    for module in sorted(modules):
        assert f"`{module}`" in text, f"docs/architecture.md does not place {module}"
        if module != "__main__":
            assert module in layered, f"pyproject.toml's layers do not place {module}"


def test_cli_reference_is_what_the_commands_say() -> None:
    from runstore._clidoc import reference

    page = (DOCS / "docs" / "cli.md").read_text()
    assert page == reference(), "docs/cli.md is stale: run .venv/bin/python -m runstore._clidoc"


def test_the_offline_page_commands_run_as_written(tmp_path: Path) -> None:
    page = (DOCS / "docs" / "offline.md").read_text()
    block = re.findall(r"```sh\n(.*?)```", page, flags=re.DOTALL)[0]  # replay: test_upload
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    outputs = []
    for line in block.splitlines():
        command = line.split("#", 1)[0].strip()
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, env=environment, capture_output=True, text=True
        )
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout)
    assert "packed 2 runs" in outputs[1]  # the demo's completed runs
    assert "added 2 runs" in outputs[2] and "demo-train" in outputs[3]
    assert "2 already there" in outputs[4]
    assert "deleted 2 runs" in outputs[5]
    assert "demo-train" not in outputs[6] and "demo-upload" in outputs[6]
