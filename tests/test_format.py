"""The on-disk contract: segment names, format versions, manifests that say what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runstore import FormatVersionError, ManifestError, open_run
from runstore.format import (
    FORMAT_VERSION,
    SegmentName,
    check_format_version,
    event_text,
    is_run_dir,
    load_run_manifest,
    looks_like_run_dir,
)

writer_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=20)


@given(writer_ids, st.integers(0, 10**9), st.booleans())
def test_a_segment_name_reads_back_as_what_made_it(writer: str, number: int, sealed: bool) -> None:
    name = SegmentName(writer=writer, number=number, sealed=sealed)
    assert SegmentName.parse(name.filename) == name
    assert name.filename.endswith(".parquet" if sealed else ".jsonl")


@pytest.mark.parametrize(
    "filename",
    [".w1-000001.parquet.tmp", "w1-1.jsonl", "w1-000001.json", "w 1-000001.jsonl", "000001.jsonl"],
)
def test_other_files_in_a_stream_folder_are_not_segments(filename: str) -> None:
    assert SegmentName.parse(filename) is None


def test_format_versions_are_refused_with_what_to_do() -> None:
    check_format_version(FORMAT_VERSION, "here")
    with pytest.raises(FormatVersionError, match="upgrade runstore"):
        check_format_version(FORMAT_VERSION + 1, "here")
    for bad in (0, "1", None, 1.0):
        with pytest.raises(ManifestError, match="not a valid version"):
            check_format_version(bad, "here")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "missing; this is not a runstore run directory"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"format_version": 1}', "malformed manifest"),
        ('{"format_version": 7, "run_id": "x"}', "format version 7"),
    ],
)
def test_a_run_manifest_says_what_is_wrong_with_it(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "run.json").write_text(content)
    with pytest.raises(
        ManifestError if "version 7" not in message else FormatVersionError
    ) as caught:
        load_run_manifest(tmp_path)
    assert message in str(caught.value) and str(tmp_path / "run.json") in str(caught.value)


def test_unknown_manifest_fields_are_kept_for_newer_minor_writers(tmp_path: Path) -> None:
    with open_run(tmp_path, run_id="r", env={}):
        pass
    path = tmp_path / "r" / "run.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "added_later": [1, 2]}))
    manifest = load_run_manifest(tmp_path / "r")
    assert manifest.run_id == "r" and manifest.extra == {"added_later": [1, 2]}
    # ... and written back as they were by whoever rewrites the manifest.
    ended = manifest.replace(status="failed", error="late")
    path.write_bytes(ended.to_json())
    again = load_run_manifest(tmp_path / "r")
    assert again == ended and again.extra == {"added_later": [1, 2]}
    assert json.loads(path.read_text())["added_later"] == [1, 2]
    assert again.as_json()["started_at"] == data["started_at"]


def test_a_broken_run_is_told_from_a_folder_of_runs(tmp_path: Path) -> None:
    with open_run(tmp_path, run_id="r", env={}):
        pass
    run = tmp_path / "r"
    assert is_run_dir(run) and looks_like_run_dir(run) and not is_run_dir(tmp_path)
    (run / "run.json").unlink()
    assert not is_run_dir(run) and looks_like_run_dir(run)  # streams and writers remain
    assert not looks_like_run_dir(tmp_path)


def test_message_and_dev_event_text() -> None:
    assert event_text("message", {"content": "hi"}) == "hi"
    assert event_text("dev_event", {"message": "shapes", "data": {}}) == "shapes"
    assert event_text("debug", {"content": 3}) == "3"
    assert event_text("message", {}) == ""
