"""Files written so that a crash or a power loss leaves them whole or as they were:
replaced atomically (temp file, fsync, rename), their folder fsynced."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write_bytes", "fsync_dir", "replacing"]


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically (temp file, fsync, rename, fsync dir)."""
    with replacing(path, durable=durable) as handle:
        handle.write(data)


@contextlib.contextmanager
def replacing(path: Path, *, durable: bool = True) -> Iterator[BinaryIO]:
    """A file that takes `path`'s place when the block ends, and is removed if the block
    raises: `path` is then as it was (a full disk, a result that cannot be written).
    A `path` that is a link or no regular file (/dev/stdout, a pipe) is written through
    itself, as `open` would: a rename would put a file in the link's place."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        with open(path, "wb") as handle:
            yield handle
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # no temp file left behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
