"""Files of a run served to the browser: only attachments its events name, only from
inside its folder, never through a link.

A run folder is untrusted: an attachment name could hold `..`, an absolute path, or a
link planted in the folder could point anywhere. Each part of the path is looked at with
`lstat` and the file is opened with `O_NOFOLLOW`, so nothing outside the run is read.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Final

#: Types a browser may show inline (images); everything else is a download.
INLINE_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_CHUNK: Final = 1 << 16


class FileRefused(LookupError):
    """The path names no regular file inside the run; the message says why."""


def open_attachment(root: Path, run_dir: str, name: str) -> tuple[int, int, str]:
    """An open descriptor of `name` inside `root/run_dir`, its size and media type."""
    folder = PurePosixPath(run_dir)
    relative = PurePosixPath(name)
    for path, what in ((folder, "run folder"), (relative, "attachment")):
        if path.is_absolute() or not path.parts or any(p in ("..", ".") for p in path.parts):
            raise FileRefused(f"{what} {str(path)!r} is not a plain relative path")
    if len(folder.parts) != 1 or "\\" in name or "\x00" in name:
        raise FileRefused(f"attachment {name!r} is not a plain relative path")
    current = root / folder.parts[0]
    for part in relative.parts:
        try:
            status = os.lstat(current)
        except OSError as exc:
            raise FileRefused(f"{current}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(status.st_mode):
            raise FileRefused(f"{current} is not a folder")
        current = current / part
    try:
        fd = os.open(current, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise FileRefused(f"{current}: {exc.strerror or exc}") from None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise FileRefused(f"{current} is not a regular file")
    media = mimetypes.guess_type(str(relative))[0] or "application/octet-stream"
    return fd, status.st_size, media


def read_chunks(fd: int) -> Iterator[bytes]:
    """The file's bytes a chunk at a time; closes the descriptor at the end."""
    try:
        while chunk := os.read(fd, _CHUNK):
            yield chunk
    finally:
        os.close(fd)
