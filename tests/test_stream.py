"""A writer's stream: its live segment written a whole line at a time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runstore._stream import PendingDrain, Stream, line_records, write_all


def test_lines_written_in_parts_land_whole_and_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # writev may write less than asked (a signal, a full pipe): the rest must follow.
    real_writev = os.writev
    calls: list[int] = []

    def short_writev(fd: int, buffers: list[bytes]) -> int:
        calls.append(len(buffers))
        head = b"".join(bytes(b) for b in buffers)[:7]
        return real_writev(fd, [head])

    monkeypatch.setattr(os, "writev", short_writev)
    chunks = [b"first line\n", b"", b"second\n", b"3\n" * 20]
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        write_all(fd, chunks)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(chunks)
    assert len(calls) > 3


def test_lines_are_counted_as_encode_lines_splits_them() -> None:
    assert line_records(0, 0) == []
    assert line_records(5, 1) == [5]
    assert line_records(8192 * 2 + 3, 3) == [8192, 8192, 3]
    assert line_records(8192 * 2, 2) == [8192, 8192]
    assert line_records(10, 2) == [0, 10]  # split otherwise: the lines go as one


def test_a_drain_that_does_not_fit_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = Stream("metrics", tmp_path)
    path = tmp_path / "segment.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        stream.start_segment(fd, b"header\n")
        lines = [b"one\n", b"two\n", b"three\n"]
        stream.pending.append(PendingDrain(lines, [1, 1, 1], None, 14))
        stream.pending_bytes = 14
        written: list[bytes] = []

        def two_then_full(fd: int, chunks: list[bytes]) -> None:
            if len(written) == 1:
                os.write(fd, chunks[0][:2])  # part of a line, then the disk is full
                raise OSError(28, "No space left on device")
            written.extend(chunks)
            os.write(fd, b"".join(chunks))

        monkeypatch.setattr("runstore._stream.write_all", two_then_full)
        monkeypatch.setattr("runstore._stream._lines_that_fit", lambda fd, entry: 1)
        with pytest.raises(OSError):
            stream.write_pending(fd, careful=True)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"header\none\n"  # the cut line is gone again
    assert stream.written_bytes == len(b"header\none\n") and stream.written_records == 1
    assert [entry.lines for entry in stream.pending] == [[b"two\n", b"three\n"]]
    assert stream.pending_bytes == 10 and stream.tables is None
