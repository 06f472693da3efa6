"""Packs: runs carried whole, checked on the way in; hostile and damaged packs refused."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstore import PackError, Store, open_run, pack, unpack
from runstore.packing import PACK_MANIFEST, _member_parts, select_runs

from .conftest import REPO, SAMPLE_RUNS

FIXTURE = Path(__file__).parent / "data" / "pack-v1.runs.tar.gz"


def _digests(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and ".runstore" not in path.parts
    }


def _counts(root: Path) -> list[tuple[object, ...]]:
    with Store(root) as store:
        query = (
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM metrics), "
            "(SELECT count(*) FROM events), (SELECT string_agg(status, ',' ORDER BY run_id) "
            "FROM runs)"
        )
        return store.sql(query).fetchall()


def _sample_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(SAMPLE_RUNS, root, ignore=shutil.ignore_patterns(".runstore"))
    return root


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runstore", *args], capture_output=True, text=True, timeout=120
    )


def test_a_root_packed_and_unpacked_elsewhere_is_the_same_file_for_file(tmp_path: Path) -> None:
    root = _sample_root(tmp_path)
    packed = _cli("pack", str(root), "-o", str(tmp_path / "all.runs.tar.gz"), "--json")
    assert packed.returncode == 0, packed.stderr
    summary = json.loads(packed.stdout)
    assert sorted(summary["runs"]) == sorted(p.name for p in SAMPLE_RUNS.iterdir())
    done = _cli("unpack", str(tmp_path / "all.runs.tar.gz"), str(tmp_path / "there"))
    assert done.returncode == 0, done.stderr
    assert "added 4 runs" in done.stdout
    assert _digests(tmp_path / "there") == _digests(root)
    assert _counts(tmp_path / "there") == _counts(root)
    # Again: nothing to do, nothing changed, and said so.
    again = _cli("unpack", str(tmp_path / "all.runs.tar.gz"), str(tmp_path / "there"), "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["added"] == [] and len(report["present"]) == 4 and report["refused"] == []
    assert not list((tmp_path / "there" / ".runstore").glob("unpack-*"))


def test_a_run_of_the_same_name_with_other_content_is_never_overwritten(tmp_path: Path) -> None:
    root = _sample_root(tmp_path)
    pack([root / "demo-train", root / "demo-export"], tmp_path / "p.runs.tar.gz")
    target = tmp_path / "there"
    shutil.copytree(root / "demo-train", target / "demo-train")
    changed = target / "demo-train" / "run.json"
    changed.write_text(changed.read_text().replace('"demo-train"', '"demo-train" '))
    before = _digests(target)
    done = _cli("unpack", str(tmp_path / "p.runs.tar.gz"), str(target))
    assert done.returncode == 1
    assert "refused demo-train" in done.stderr and "different run" in done.stderr
    assert "added 1 runs" in done.stdout
    assert _digests(target / "demo-train") == {
        k.split("/", 1)[1]: v for k, v in before.items() if k.startswith("demo-train/")
    }
    assert (target / "demo-export" / "run.json").exists()


def test_running_runs_are_left_out_unless_asked_for_and_then_packed_whole(
    tmp_path: Path,
) -> None:
    root = tmp_path / "runs"
    ctx = open_run(root, run_id="live", env={})
    for step in range(50):
        ctx.set_metrics({"loss": 1 / (step + 1)}, "train")
    ctx.flush()
    segment = next((root / "live" / "streams" / "metrics").glob("*.jsonl"))
    with open(segment, "ab") as handle:
        handle.write(b'{"ts_ns": [1')  # a line still being written
    with pytest.raises(PackError, match="no run to pack; live: running"):
        pack([root / "live"], tmp_path / "p.runs.tar.gz")
    report = pack([root / "live"], tmp_path / "p.runs.tar.gz", include_running=True)
    assert report.runs == ["live"]
    unpacked = unpack(tmp_path / "p.runs.tar.gz", tmp_path / "there")
    assert unpacked.added == ["live"]
    copy = next((tmp_path / "there" / "live" / "streams" / "metrics").glob("*.jsonl"))
    assert copy.read_bytes().endswith(b"\n")  # the torn line was cut off
    with Store(tmp_path / "there") as store:
        assert store.sql("SELECT count(*) FROM metrics").fetchall() == [(50,)]
        assert store.problems == []
    ctx.end_log()
    ctx.close()


def _crafted(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _good_run_members(root: Path, name: str) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    out: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for path in sorted((root / name).rglob("*")):
        if path.is_file():
            out.append((tarfile.TarInfo(f"{name}/{path.relative_to(root / name).as_posix()}"),
                        path.read_bytes()))  # fmt: skip
    return out


def _manifest_for(root: Path, names: list[str]) -> tuple[tarfile.TarInfo, bytes]:
    """A pack.json for the runs `names` of `root`, as `pack` writes it."""
    scratch = root.parent / "scratch.runs.tar.gz"
    pack([root / name for name in names], scratch)
    with tarfile.open(scratch) as tar:
        handle = tar.extractfile(PACK_MANIFEST)
        assert handle is not None
        data = handle.read()
    scratch.unlink()
    return tarfile.TarInfo(PACK_MANIFEST), data


@pytest.mark.parametrize(
    "hostile",
    ["absolute", "dotdot", "symlink", "hardlink", "fifo", "device", "dot-run", "backslash"],
)
def test_a_crafted_pack_writes_nothing_outside_the_root_and_the_good_run_still_lands(
    tmp_path: Path, hostile: str
) -> None:
    root = _sample_root(tmp_path)
    outside = tmp_path / "outside"
    entry = tarfile.TarInfo()
    data: bytes | None = b"owned\n"
    if hostile == "absolute":
        entry.name = str(outside / "x")
    elif hostile == "dotdot":
        entry.name = "demo-export/../../outside/x"
    elif hostile == "symlink":
        entry.name, entry.type, entry.linkname = "demo-export/link", tarfile.SYMTYPE, "/etc"
        data = None
    elif hostile == "hardlink":
        entry.name, entry.type, entry.linkname = "demo-export/h", tarfile.LNKTYPE, "/etc/passwd"
        data = None
    elif hostile == "fifo":
        entry.name, entry.type, data = "demo-export/fifo", tarfile.FIFOTYPE, None
    elif hostile == "device":
        entry.name, entry.type, data = "demo-export/dev", tarfile.CHRTYPE, None
    elif hostile == "dot-run":
        entry.name = ".runstore/archive/catalog.json"
    else:
        entry.name = "demo-export\\..\\..\\outside\\x"
    members = _good_run_members(root, "demo-train") + _good_run_members(root, "demo-export")
    members.insert(3, (entry, data))
    members.append(_manifest_for(root, ["demo-train", "demo-export"]))
    crafted = tmp_path / "crafted.runs.tar.gz"
    _crafted(crafted, members)
    target = tmp_path / "there"
    report = unpack(crafted, target)
    if hostile in ("absolute", "dot-run"):  # an entry in no run: the runs are whole
        assert report.added == ["demo-export", "demo-train"]
        assert [name for name, _ in report.refused] == ["(outside any run)"]
    else:  # an entry of demo-export that is not a file in it: that run is refused
        assert report.added == ["demo-train"]
        assert [name for name, _ in report.refused] == ["demo-export"]
    assert not outside.exists()
    assert not (target / ".runstore" / "archive").exists()
    assert sorted(p.name for p in target.iterdir()) == [".runstore", *report.added]
    assert _digests(target / "demo-train") == _digests(root / "demo-train")


def test_a_damaged_run_is_refused_and_the_others_land(tmp_path: Path) -> None:
    root = _sample_root(tmp_path)
    members = _good_run_members(root, "demo-train") + _good_run_members(root, "demo-upload")
    manifest = _manifest_for(root, ["demo-train", "demo-upload"])
    info, data = next((i, d) for i, d in members if i.name == "demo-upload/run.json")
    members[members.index((info, data))] = (info, (data or b"").replace(b"upload", b"uplaod"))
    crafted = tmp_path / "damaged.runs.tar.gz"
    _crafted(crafted, [*members, manifest])
    report = unpack(crafted, tmp_path / "there")
    assert report.added == ["demo-train"]
    assert report.refused == [
        ("demo-upload", "run.json: its checksum or size differs from the manifest (a damaged pack)")
    ]
    assert not (tmp_path / "there" / "demo-upload").exists()


@pytest.mark.parametrize("damage", ["cut", "garbage", "no-manifest", "newer"])
def test_a_pack_that_cannot_be_trusted_as_a_whole_unpacks_nothing(
    tmp_path: Path, damage: str
) -> None:
    root = _sample_root(tmp_path)
    good = tmp_path / "good.runs.tar.gz"
    pack([root / "demo-train", root / "demo-export"], good)
    bad = tmp_path / "bad.runs.tar.gz"
    if damage == "cut":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    elif damage == "garbage":
        bad.write_bytes(b"\x1f\x8b definitely not a pack" * 40)
    elif damage == "no-manifest":
        _crafted(bad, _good_run_members(root, "demo-train"))
    else:
        info, data = _manifest_for(root, ["demo-train"])
        newer = json.loads(data)
        newer["pack_version"] = 99
        _crafted(bad, [*_good_run_members(root, "demo-train"), (info, json.dumps(newer).encode())])
    message = {"cut": "damaged or cut short", "garbage": "not a runstore pack",
               "no-manifest": "no pack.json", "newer": "pack version 99"}[damage]  # fmt: skip
    with pytest.raises(PackError, match=message):
        unpack(bad, tmp_path / "there")
    assert sorted(p.name for p in (tmp_path / "there").iterdir()) == [".runstore"]
    assert list((tmp_path / "there" / ".runstore").iterdir()) == []
    done = _cli("unpack", str(bad), str(tmp_path / "there"))
    assert done.returncode == 1 and done.stderr.startswith("error: ") and message in done.stderr


def test_a_killed_unpack_leaves_no_half_run_and_the_next_one_finishes(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    with open_run(root, run_id="big", env={}) as ctx:
        blob = tmp_path / "blob.bin"
        blob.write_bytes(os.urandom(64 << 20))  # incompressible: the unpack takes a while
        ctx.log("artifact", {"name": "blob"}, file=str(blob))
    packed = tmp_path / "big.runs.tar.gz"
    pack([root / "big"], packed)
    target = tmp_path / "there"
    child = subprocess.Popen(
        [sys.executable, "-m", "runstore", "unpack", str(packed), str(target)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        p.stat().st_size > (8 << 20)
        for p in (target / ".runstore").glob("unpack-*/big/**/*")
        if p.is_file()
    ):
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (target / "big").exists()
    assert list((target / ".runstore").glob("unpack-*")), "killed while staging"
    with Store(target) as store:
        assert store.sql("SELECT count(*) FROM runs").fetchall() == [(0,)]
    assert unpack(packed, target).added == ["big"]
    assert not list((target / ".runstore").glob("unpack-*"))
    assert _digests(target / "big") == _digests(root / "big")


def test_a_version_1_pack_made_by_runstore_0_1_still_unpacks(tmp_path: Path) -> None:
    report = unpack(FIXTURE, tmp_path / "there")
    assert report.added == ["demo-crashed", "demo-export", "demo-train", "demo-upload"]
    with Store(tmp_path / "there") as store:
        rows = store.sql("SELECT run_id, status FROM runs ORDER BY run_id").fetchall()
        assert rows == [
            ("demo-crashed", "crashed"),
            ("demo-export", "completed"),
            ("demo-train", "completed"),
            ("demo-upload", "failed"),
        ]
        assert store.problems == []


def test_select_runs_filters_a_root_by_status_plugin_and_start(tmp_path: Path) -> None:
    root = _sample_root(tmp_path)
    failed = select_runs(root, status=["failed", "crashed"])
    assert [r.run_id for r in failed] == ["demo-crashed", "demo-upload"]
    plugins = {r.manifest.plugin for r in select_runs(root)}
    some = sorted(plugins, key=str)[0]
    assert {r.manifest.plugin for r in select_runs(root, plugin=some)} == {some}
    newest = max(r.manifest.started_at for r in select_runs(root))
    assert [r.manifest.started_at for r in select_runs(root, since=newest)] == [newest]
    output = str(tmp_path / "c.runs.tar.gz")
    done = _cli("pack", str(root), "--status", "completed", "-o", output, "--json")
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)["runs"]) == ["demo-export", "demo-train"]


@given(st.text(alphabet="ab./\\\x00-", max_size=12))
@settings(max_examples=500, deadline=None)
def test_any_member_name_accepted_stays_inside_its_run(name: str) -> None:
    parts = _member_parts(name)
    if parts is None:
        return
    base = Path("/staging")
    inside = Path(os.path.normpath(base.joinpath(*parts)))
    assert inside.is_relative_to(base / parts[0]) and not parts[0].startswith(".")
    assert ".." not in parts and "." not in parts


def test_the_committed_fixture_is_a_pack_of_the_sample_runs() -> None:
    # The fixture was made once by `runstore pack sample-runs` (format version 1); made
    # again, a pack of today's sample runs has the same runs and the same files.
    with tarfile.open(FIXTURE) as tar:
        names = sorted(m.name for m in tar if m.isfile())
    assert PACK_MANIFEST in names
    assert {n.split("/")[0] for n in names if n != PACK_MANIFEST} == {
        p.name for p in (REPO / "sample-runs").iterdir() if p.is_dir()
    }
