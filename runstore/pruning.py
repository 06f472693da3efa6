"""Deleting runs: chosen by name (`runstore rm`) or by age (`runstore gc`), never a
running one, with the archive kept in step.

A run leaves at once: its folder is first renamed into `ROOT/.runstore/` (one rename,
which every reader sees as the run gone, never as a half-deleted run), then removed.
Queries stop showing it at that moment (a store leaves out archived runs whose folder
is gone); the archive's copy of its rows is then dropped by a compaction.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from .archive import archive_dir
from .errors import RunDirectoryError, RunstoreError
from .format import (
    MANIFEST_SUFFIX,
    STORE_DIR,
    WRITERS_DIR,
    is_run_dir,
    load_writer_manifest,
    utc_now,
)
from .reader import RunInfo, list_runs, read_run_info, writer_alive

__all__ = ["PruneReport", "folder_bytes", "older_runs", "remove_runs"]

_REMOVING = "removing-"  # a run folder on its way out, under ROOT/.runstore


@dataclass
class PruneReport:
    removed: list[str] = field(default_factory=list)  # run folder paths
    #: Bytes the run folders held (the archive's copy is dropped by compaction).
    bytes_freed: int = 0
    #: Runs not removed, with why (running, or the folder could not be removed).
    kept: list[tuple[str, str]] = field(default_factory=list)
    #: Whether the archive was brought in step (False: another compaction held it;
    #: queries leave the runs out anyway, the next compaction drops their rows).
    archive_updated: bool = False


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under `path`, links not followed."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                status = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            total += status.st_size
    return total


def older_runs(
    root: str | os.PathLike[str],
    older_than: timedelta,
    *,
    status: Iterable[str] = (),
    keep: int = 0,
    now: datetime | None = None,
) -> list[RunInfo]:
    """The finished runs under `root` that ended more than `older_than` ago (a crashed
    run by its last heartbeat), of `status` if given, less the `keep` newest of them:
    what `runstore gc` deletes. Running runs are never among them."""
    cutoff = (now or utc_now()) - older_than
    wanted = set(status)
    found = [
        info
        for info in list_runs(root)  # a damaged run is `runstore rm`'s to delete, by name
        if info.status != "running"
        and (not wanted or info.status in wanted)
        and _ended(info) < cutoff
    ]
    found.sort(key=_ended)
    return found[: max(len(found) - keep, 0)] if keep else found


def _ended(info: RunInfo) -> datetime:
    return info.last_seen or info.manifest.started_at


def remove_runs(
    runs: Iterable[str | os.PathLike[str]], *, update_archive: bool = True
) -> PruneReport:
    """Delete the run folders `runs`; a running run (a live writer) is kept and said.

    Raises `RunDirectoryError` for a path that is not a run folder (nothing is deleted
    then). With `update_archive`, each root's archive then drops the deleted runs'
    rows (a compaction; skipped if another holds the root, `archive_updated` False).
    """
    chosen = []
    for given in runs:
        path = Path(given)
        if not is_run_dir(path) or path.is_symlink():
            raise RunDirectoryError(f"{path}: not a run folder (no run.json); nothing deleted")
        chosen.append(path)
    report = PruneReport()
    roots: set[Path] = set()
    for root in {path.parent for path in chosen}:
        _clear_leftovers(root)
    for path in chosen:
        if _has_live_writer(path):
            report.kept.append((str(path), "running: a writer is still alive"))
            continue
        size = folder_bytes(path)
        trash = path.parent / STORE_DIR / f"{_REMOVING}{secrets.token_hex(4)}-{path.name}"
        try:
            trash.parent.mkdir(exist_ok=True)
            os.rename(path, trash)
        except OSError as exc:
            report.kept.append((str(path), f"cannot be removed ({exc.strerror or exc})"))
            continue
        shutil.rmtree(trash, ignore_errors=True)
        report.removed.append(str(path))
        report.bytes_freed += size
        roots.add(path.parent)
    if update_archive and roots:
        from .compaction import compact

        report.archive_updated = all(
            not compact(root, wait=False).busy for root in sorted(roots) if _archived(root)
        )
    return report


def _has_live_writer(path: Path) -> bool:
    """Whether a writer may still write into the run (its run.json may be damaged:
    the writers' own manifests say)."""
    try:
        return read_run_info(path).status == "running"
    except RunstoreError:
        pass
    for manifest in sorted((path / WRITERS_DIR).glob(f"*{MANIFEST_SUFFIX}")):
        try:
            if writer_alive(load_writer_manifest(manifest)):
                return True
        except RunstoreError:
            continue
    return False


def _archived(root: Path) -> bool:
    return archive_dir(root).is_dir()


def _clear_leftovers(root: Path) -> None:
    """Folders a killed removal had renamed but not yet deleted."""
    for leftover in (root / STORE_DIR).glob(f"{_REMOVING}*"):
        shutil.rmtree(leftover, ignore_errors=True)
