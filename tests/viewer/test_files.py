"""Attachments are read only from inside their run, never through a link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runstore.viewer.files import FileRefused, open_attachment, read_chunks


@pytest.fixture
def root(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "attachments" / "w1").mkdir(parents=True)
    (run / "attachments" / "w1" / "img.png").write_bytes(b"\x89PNG data")
    (tmp_path / "secret.txt").write_text("secret")
    return tmp_path


def test_a_file_inside_the_run_is_read_whole(root: Path) -> None:
    fd, size, media = open_attachment(root, "run", "attachments/w1/img.png")
    assert (size, media) == (9, "image/png")
    assert b"".join(read_chunks(fd)) == b"\x89PNG data"
    with pytest.raises(OSError):
        os.fstat(fd)  # read_chunks closed it


@pytest.mark.parametrize(
    ("run_dir", "name"),
    [
        ("run", "../secret.txt"),
        ("run", "/etc/passwd"),
        ("run", "attachments/../../secret.txt"),
        ("..", "secret.txt"),
        ("run/attachments", "w1/img.png"),
        ("run", "attachments\\..\\..\\secret.txt"),
        ("run", "attachments/w1/img.png\x00.txt"),
        ("run", ""),
        ("run", "attachments/w1"),
        ("run", "attachments/w1/missing.png"),
        ("run", "attachments/nowhere/missing.png"),
        ("gone", "attachments/w1/img.png"),
    ],
)
def test_paths_that_leave_the_run_or_name_no_file_are_refused(
    root: Path, run_dir: str, name: str
) -> None:
    with pytest.raises(FileRefused):
        open_attachment(root, run_dir, name)


def test_links_are_never_followed(root: Path) -> None:
    attachments = root / "run" / "attachments"
    (attachments / "link.txt").symlink_to(root / "secret.txt")
    (attachments / "dir-link").symlink_to(root)
    (root / "run-link").symlink_to(root / "run")
    for run_dir, name in (
        ("run", "attachments/link.txt"),
        ("run", "attachments/dir-link/secret.txt"),
        ("run-link", "attachments/w1/img.png"),
    ):
        with pytest.raises(FileRefused):
            open_attachment(root, run_dir, name)


def test_a_fifo_is_not_a_file(root: Path) -> None:
    os.mkfifo(root / "run" / "attachments" / "pipe")
    with pytest.raises(FileRefused, match="not a regular file"):
        open_attachment(root, "run", "attachments/pipe")
