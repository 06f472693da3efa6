"""Reading a file of a run folder: whole, and only if it is a regular file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstore._regular import NotRegularFileError, read_regular


@given(st.binary(max_size=300_000))
@settings(max_examples=40, deadline=None)
def test_a_regular_file_is_read_whole(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("files") / "file"
    path.write_bytes(data)
    got, status = read_regular(path)
    assert got == data and status.st_size == len(data)


def test_the_data_hold_what_was_appended_after_the_size_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "live.jsonl"
    path.write_bytes(b"a" * 1000)
    fstat = os.fstat

    def growing(fd: int) -> os.stat_result:  # a writer appends right after the fstat
        status = fstat(fd)
        with open(path, "ab") as handle:
            handle.write(b"b" * 200_000)
        return status

    monkeypatch.setattr(os, "fstat", growing)
    data, status = read_regular(path)
    assert status.st_size == 1000
    assert data == b"a" * 1000 + b"b" * 200_000


def test_anything_but_a_regular_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "run.json"
    os.mkfifo(fifo)  # no writer: `open(fifo, "rb")` would wait for one
    for path in (fifo, tmp_path, Path("/dev/null")):
        with pytest.raises(NotRegularFileError, match="not a regular file") as raised:
            read_regular(path)
        assert isinstance(raised.value, OSError) and raised.value.filename == str(path)
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "missing")
