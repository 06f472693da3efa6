"""Carrying runs to another machine: a pack file of runs, checked on the way in
(docs/offline.md).

A pack is a gzip-compressed tar file, which any machine can open: each run's folder
as it is on disk, then `pack.json`, the pack's manifest, listing every file of every
run with its size and SHA-256. `unpack` treats the file as hostile: it writes only
regular files, under names it checked, into a staging folder inside the root
(`ROOT/.runstore/unpack-*`, invisible to every reader), verifies each run against the
manifest there, and only then moves the run into place with one rename. A run is
there whole or not at all, after a failure or a kill too; a damaged run is refused
and the others go on.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Final

from pydantic import BaseModel, ValidationError

from ._durable import fsync_dir
from ._version import __version__
from .errors import PackError, RunDirectoryError, RunstoreError
from .format import (
    LIVE_SUFFIX,
    REPLAYS_DIR,
    STORE_DIR,
    TEMP_SUFFIX,
    is_run_dir,
    load_run_manifest,
    utc_now,
)
from .reader import RunInfo, list_runs, read_run_info

__all__ = [
    "PACK_MANIFEST",
    "PACK_SUFFIX",
    "PACK_VERSION",
    "PackManifest",
    "PackReport",
    "PackedFile",
    "PackedRun",
    "UnpackReport",
    "pack",
    "select_runs",
    "unpack",
]

PACK_VERSION: Final = 1
#: The pack's manifest: its last member, written once every file is in.
PACK_MANIFEST: Final = "pack.json"
PACK_SUFFIX: Final = ".runs.tar.gz"
_CHUNK: Final = 1 << 20
#: A manifest larger than this is not one runstore wrote (it is read into memory).
_MAX_MANIFEST_BYTES: Final = 256 << 20
_SNAPSHOT_TRIES: Final = 5

#: Called with (bytes done, bytes in all) as a pack or an unpack goes on.
Progress = Callable[[int, int], None]


class PackedFile(BaseModel):
    size: int
    sha256: str


class PackedRun(BaseModel):
    run_id: str
    status: str
    files: dict[str, PackedFile]  # by path inside the run folder, '/'-separated


class PackManifest(BaseModel):
    """`pack.json`: what the pack holds, file by file."""

    pack_version: int = PACK_VERSION
    runstore_version: str = __version__
    created_at: datetime
    runs: dict[str, PackedRun]  # by run folder name


@dataclass
class PackReport:
    path: Path
    runs: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    #: Runs left out, with why (a running run without `include_running`).
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class UnpackReport:
    added: list[str] = field(default_factory=list)
    #: Already in the root with the same content: nothing to do.
    present: list[str] = field(default_factory=list)
    #: Not added, with why: damaged in the pack, or a different run of that name is
    #: already in the root. The pack's other runs are not affected.
    refused: list[tuple[str, str]] = field(default_factory=list)


# -- choosing runs ------------------------------------------------------------------


def select_runs(
    root: str | os.PathLike[str],
    *,
    status: Iterable[str] = (),
    since: datetime | None = None,
    plugin: str | None = None,
) -> list[RunInfo]:
    """The runs under `root` that match every filter given: status (any of), started at
    or after `since`, plugin. Unreadable runs are left out (`runstore ls` tells why)."""
    wanted = set(status)
    chosen = [
        info
        for info in list_runs(root)
        if (not wanted or info.status in wanted)
        and (since is None or info.manifest.started_at >= since)
        and (plugin is None or info.manifest.plugin == plugin)
    ]
    return sorted(chosen, key=lambda info: info.path.name)


# -- pack ---------------------------------------------------------------------------


def _run_files(run_dir: Path) -> Iterator[tuple[str, Path]]:
    """(name inside the run, path) of every regular file of a run, sorted. Links are
    not followed, and neither are the temp files a killed writer may have left."""
    for folder, dirs, files in os.walk(run_dir):
        dirs.sort()
        base = Path(folder)
        for name in sorted(files):
            path = base / name
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                continue
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            yield path.relative_to(run_dir).as_posix(), path


class _Hashing:
    """A file read for tarfile, exactly `size` bytes, hashed on the way."""

    def __init__(self, handle: IO[bytes], size: int, progress: Callable[[int], None]) -> None:
        self._handle, self._left, self._progress = handle, size, progress
        self.digest = hashlib.sha256()

    def read(self, count: int = -1) -> bytes:
        want = self._left if count < 0 else min(count, self._left)
        data = self._handle.read(want)
        if len(data) < want:
            raise PackError(f"{self._handle.name}: changed while being packed; pack it again")
        self._left -= len(data)
        self.digest.update(data)
        self._progress(len(data))
        return data


def _snapshot(run_dir: Path, into: Path) -> Path:
    """A copy of a running run in which every record is whole: live segments cut at
    their last complete line; taken again if a segment was sealed meanwhile."""
    for _ in range(_SNAPSHOT_TRIES):
        copy = into / run_dir.name
        shutil.rmtree(copy, ignore_errors=True)
        try:
            for name, path in _run_files(run_dir):
                target = copy / name
                target.parent.mkdir(parents=True, exist_ok=True)
                data = path.read_bytes()
                if name.endswith(LIVE_SUFFIX):
                    data = data[: data.rfind(b"\n") + 1]
                target.write_bytes(data)
        except FileNotFoundError:  # a live segment sealed between listing and reading
            continue
        return copy
    raise PackError(f"{run_dir}: kept changing while being copied; pack it again")


def pack(
    runs: Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    include_running: bool = False,
    progress: Progress | None = None,
) -> PackReport:
    """Write the run folders `runs` into the pack file `output`.

    A running run is left out (in `skipped`) unless `include_running`, and then packed
    as a snapshot of its whole records. `output` appears only once complete. Raises
    `RunDirectoryError` for a path that is not a run, `PackError` if no run is left.
    """
    target = Path(output)
    report = PackReport(target)
    chosen: list[tuple[Path, RunInfo]] = []
    for given in runs:
        path = Path(given)
        if not is_run_dir(path):
            raise RunDirectoryError(f"{path}: not a run folder (no run.json); nothing packed")
        info = read_run_info(path)
        if info.status == "running" and not include_running:
            report.skipped.append((path.name, "running (--include-running packs a snapshot)"))
            continue
        if any(path.name == other.name for other, _ in chosen):
            raise PackError(f"{path}: two runs named {path.name}; pack them apart")
        chosen.append((path, info))
    if not chosen:
        raise PackError("no run to pack" + "".join(f"; {n}: {why}" for n, why in report.skipped))
    with tempfile.TemporaryDirectory(prefix="runstore-pack-") as scratch:
        sources = []
        for path, info in chosen:
            source = _snapshot(path, Path(scratch)) if info.status == "running" else path
            sources.append((path.name, info, list(_run_files(source))))
        total = sum(p.stat().st_size for _, _, files in sources for _, p in files)
        done = 0

        def advance(count: int) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress(done, total)

        manifest = PackManifest(created_at=utc_now(), runs={})
        partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
        try:
            with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
                for name, info, files in sources:
                    packed: dict[str, PackedFile] = {}
                    for relative, path in files:
                        packed[relative] = _add(tar, f"{name}/{relative}", path, advance)
                    manifest.runs[name] = PackedRun(
                        run_id=info.run_id, status=info.status, files=packed
                    )
                    report.runs.append(name)
                    report.files += len(packed)
                data = manifest.model_dump_json(indent=1).encode()
                member = tarfile.TarInfo(PACK_MANIFEST)
                member.size, member.mode = len(data), 0o644
                member.mtime = int(manifest.created_at.timestamp())
                tar.addfile(member, io.BytesIO(data))
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
    fsync_dir(target.parent)
    report.bytes = target.stat().st_size
    return report


def _add(tar: tarfile.TarFile, name: str, path: Path, advance: Callable[[int], None]) -> PackedFile:
    with open(path, "rb") as handle:
        status = os.fstat(handle.fileno())
        member = tarfile.TarInfo(name)
        member.size, member.mtime, member.mode = status.st_size, int(status.st_mtime), 0o644
        reader = _Hashing(handle, status.st_size, advance)
        tar.addfile(member, reader)
    return PackedFile(size=status.st_size, sha256=reader.digest.hexdigest())


# -- unpack -------------------------------------------------------------------------


def _member_parts(name: str) -> tuple[str, ...] | None:
    """The parts of a member's name, or None if it is not one a pack may hold: no
    absolute name, no `..` or `.`, no empty part, no backslash or NUL, and a run
    folder name that readers would see (not starting with a dot)."""
    trimmed = name[:-1] if name.endswith("/") else name
    if not trimmed or "\\" in trimmed or "\x00" in trimmed:
        return None
    parts = tuple(trimmed.split("/"))
    if any(part in ("", ".", "..") for part in parts) or parts[0].startswith("."):
        return None
    return parts


def _hash_file(path: Path) -> PackedFile:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return PackedFile(size=size, sha256=digest.hexdigest())


def _same_content(run_dir: Path, packed: PackedRun) -> bool:
    """Whether the run in ROOT holds what the pack holds. Replay ledgers are left out:
    a run replayed since it was unpacked is still the same run."""
    try:
        have = {name: _hash_file(path) for name, path in _run_files(run_dir)}
    except OSError:
        return False

    def records(files: dict[str, PackedFile]) -> dict[str, PackedFile]:
        return {k: v for k, v in files.items() if not k.startswith(f"{REPLAYS_DIR}/")}

    return records(have) == records(packed.files)


def _clear_stale_staging(store: Path) -> None:
    """Staging folders of unpacks that were killed: their process is gone."""
    with contextlib.suppress(OSError):
        for entry in store.iterdir():
            if not entry.name.startswith("unpack-"):
                continue
            try:
                pid = int(entry.name.split("-")[1])
                os.kill(pid, 0)
            except (ValueError, IndexError, ProcessLookupError):
                shutil.rmtree(entry, ignore_errors=True)
            except PermissionError:
                pass


def unpack(
    pack_file: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
) -> UnpackReport:
    """Add the runs of `pack_file` to the folder of runs `root` (made if missing).

    Every file is checked against the pack's manifest before its run appears; a run
    already in `root` with the same content is left as it is (`present`), one with
    other content is never overwritten (`refused`). Raises `PackError` if the file is
    not a runstore pack (or one of a newer version); nothing is written then.
    """
    source = Path(pack_file)
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    store = base / STORE_DIR
    store.mkdir(exist_ok=True)
    _clear_stale_staging(store)
    staging = store / f"unpack-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    report = UnpackReport()
    try:
        damaged, written, manifest = _extract(source, staging, progress)
        _place(base, staging, damaged, written, manifest, report)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _extract(
    source: Path, staging: Path, progress: Progress | None
) -> tuple[dict[str, str], dict[str, dict[str, PackedFile]], PackManifest]:
    """Every regular file of the pack into `staging`, hashed: (why each damaged run is
    refused, the files written per run, the manifest)."""
    damaged: dict[str, str] = {}
    written: dict[str, dict[str, PackedFile]] = {}
    manifest_data: bytes | None = None
    try:
        raw = open(source, "rb")  # noqa: SIM115 - closed below, with the tar file
    except OSError as exc:
        raise PackError(f"{source}: cannot be read ({exc.strerror or exc})") from None
    total = os.fstat(raw.fileno()).st_size
    try:
        tar = tarfile.open(fileobj=raw, mode="r:*")  # noqa: SIM115 - a with below
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raw.close()
        raise PackError(f"{source}: not a runstore pack ({exc}); nothing unpacked") from None
    with raw, tar:
        try:
            for member in tar:
                if member.name == PACK_MANIFEST:
                    if not member.isfile() or member.size > _MAX_MANIFEST_BYTES:
                        raise PackError(f"{source}: its {PACK_MANIFEST} is not a manifest")
                    handle = tar.extractfile(member)
                    manifest_data = handle.read() if handle is not None else b""
                    continue
                parts = _member_parts(member.name)
                if parts is None:
                    damaged.setdefault(
                        _run_of(member.name),
                        f"the pack holds an entry named {member.name!r}, outside any run",
                    )
                    continue
                run = parts[0]
                if member.isdir():
                    continue
                if not member.isfile():
                    damaged.setdefault(run, f"{member.name}: a link or device entry, refused")
                    continue
                if run in damaged or len(parts) < 2:
                    continue
                try:
                    written.setdefault(run, {})["/".join(parts[1:])] = _write_member(
                        tar, member, staging, parts
                    )
                except (OSError, PackError) as exc:
                    damaged.setdefault(run, f"{member.name}: {exc}")
                if progress is not None:
                    progress(raw.tell(), total)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise PackError(f"{source}: damaged or cut short ({exc}); nothing unpacked") from None
    if manifest_data is None:
        raise PackError(f"{source}: no {PACK_MANIFEST}, not a runstore pack; nothing unpacked")
    try:
        manifest = PackManifest.model_validate_json(manifest_data)
    except ValidationError as exc:
        detail = str(exc).splitlines()[0]
        raise PackError(f"{source}: damaged {PACK_MANIFEST} ({detail}); nothing unpacked") from None
    if manifest.pack_version > PACK_VERSION:
        raise PackError(
            f"{source}: pack version {manifest.pack_version}, this runstore reads up to "
            f"version {PACK_VERSION}; upgrade runstore to unpack it"
        )
    return damaged, written, manifest


def _run_of(name: str) -> str:
    """The run a refused entry claims to be in: its damage refuses that run."""
    first = name.replace("\\", "/").split("/")[0]
    return first if first and not first.startswith(".") else "(outside any run)"


def _write_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path, parts: tuple[str, ...]
) -> PackedFile:
    """One file of the pack into staging, never through a link, never over a file."""
    target = staging.joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.parent.resolve() != staging.resolve().joinpath(*parts[:-1]):
        raise PackError("its folder is not where its name says")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except FileExistsError:
        raise PackError("the pack holds this file twice") from None
    digest, size = hashlib.sha256(), 0
    handle = tar.extractfile(member)
    with os.fdopen(fd, "wb") as out:
        while handle is not None and (chunk := handle.read(_CHUNK)):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return PackedFile(size=size, sha256=digest.hexdigest())


def _place(
    base: Path,
    staging: Path,
    damaged: dict[str, str],
    written: dict[str, dict[str, PackedFile]],
    manifest: PackManifest,
    report: UnpackReport,
) -> None:
    for run, reason in sorted(damaged.items()):
        if run not in manifest.runs:
            report.refused.append((run, reason))
    for run in sorted(set(written) - set(manifest.runs) - set(damaged)):
        report.refused.append((run, "files in the pack that its manifest does not list"))
    for run, packed in sorted(manifest.runs.items()):
        why = damaged.get(run) or _verify(run, packed, written.get(run, {}), staging)
        if why:
            report.refused.append((run, why))
            continue
        target = base / run
        if target.exists() or target.is_symlink():
            if _same_content(target, packed):
                report.present.append(run)
            else:
                report.refused.append(
                    (run, f"{target} already holds a different run of that name; left as it is")
                )
            continue
        try:
            os.rename(staging / run, target)
        except OSError as exc:
            report.refused.append((run, f"cannot move it into {base} ({exc.strerror or exc})"))
            continue
        report.added.append(run)
    fsync_dir(base)


def _verify(run: str, packed: PackedRun, got: dict[str, PackedFile], staging: Path) -> str | None:
    """Why the staged run differs from the manifest, or None if it is whole."""
    if _member_parts(run) is None or len(_member_parts(run) or ()) != 1:
        return "not a run folder name"
    for name, want in sorted(packed.files.items()):
        have = got.get(name)
        if have is None:
            return f"{name}: listed in the pack's manifest, missing from the pack"
        if have != want:
            return f"{name}: its checksum or size differs from the manifest (a damaged pack)"
    extra = sorted(set(got) - set(packed.files))
    if extra:
        return f"{extra[0]}: in the pack but not in its manifest"
    try:
        manifest = load_run_manifest(staging / run)
    except RunstoreError as exc:
        return f"not a readable run ({exc})"
    if manifest.run_id != packed.run_id:
        return f"its run.json names run {manifest.run_id}, the pack says {packed.run_id}"
    return None
