"""Reading a file of a run folder, which may be anything: only a regular file is read.

A run folder is untrusted input. `open(path).read()` on a FIFO that has taken a
manifest's name blocks until some writer opens it (a store, the viewer, hung for
good), and on a device reads what the device gives. `read_regular` opens without
blocking, checks the open file (not the name, which may change meanwhile), and reads
it whole. With fewer system calls and objects than `open` and a buffered reader: a
store's first look reads four small files a run, thousands of runs (issue 14).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Final

__all__ = ["NotRegularFileError", "read_regular"]

#: Without O_NONBLOCK, opening a FIFO for reading waits for a writer.
_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)  # Windows
)
#: Bytes asked of each read past the size `fstat` gave (a file that grew meanwhile).
_MORE: Final = 1 << 16


class NotRegularFileError(OSError):
    """The path names a FIFO, a device, a socket or a folder, not a file of data."""


def read_regular(path: str | os.PathLike[str]) -> tuple[bytes, os.stat_result]:
    """The bytes of the regular file at `path` as they are now, and its status when
    opened (a live file may have grown by then: the bytes hold more, never less).

    Raises `OSError` as `open` would (`FileNotFoundError`, ...), and
    `NotRegularFileError` for anything but a regular file."""
    fd = os.open(path, _FLAGS)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise NotRegularFileError(errno.EINVAL, "not a regular file", os.fsdecode(path))
        # Read to the end, whatever the size said: a short read need not be the end.
        parts: list[bytes] = []
        got = 0
        while chunk := os.read(fd, max(status.st_size + 1 - got, _MORE)):
            parts.append(chunk)
            got += len(chunk)
    finally:
        os.close(fd)
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    return data, status
