from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_RUNS = REPO / "sample-runs"


def load_benchmark(name: str) -> ModuleType:
    """A script of benchmarks/ as a module, for tests that run its checks briefly."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def replay_command(run_dir: Path, url: str, job_id: str, *extra: str) -> list[str]:
    """`runstore replay RUN --synapse-url URL --job-id ID ...` in this interpreter."""
    command = [sys.executable, "-m", "runstore", "replay", str(run_dir)]
    return [*command, "--synapse-url", url, "--job-id", job_id, *extra]


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (a real job process), capturing its output."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


#: The two ways runstore runs: with its C speedups, and as pure Python.
IMPLEMENTATIONS = ["c", "python"]


@contextmanager
def implementation(kind: str) -> Iterator[None]:
    """Run the block with the C speedups ("c"; skipped where they are not built) or as
    pure Python ("python"), whichever this process loaded."""
    import runstore._native

    built = runstore._native.speedups or _BUILT
    if kind == "c" and built is None:
        pytest.skip("runstore._speedups is not built (no C compiler at install)")
    chosen = built if kind == "c" else None
    saved = runstore._native.speedups
    runstore._native.speedups = chosen
    try:
        yield
    finally:
        runstore._native.speedups = saved


def _built() -> ModuleType | None:
    try:
        from runstore import _speedups  # type: ignore[attr-defined]
    except ImportError:
        return None
    module: ModuleType = _speedups
    return module


_BUILT = _built()


@pytest.fixture
def pure_python() -> Iterator[None]:
    """Run the test as pure Python (the paths a machine without a C compiler takes)."""
    with implementation("python"):
        yield


@contextmanager
def tmpfs(where: Path, size_mb: int = 16) -> Iterator[Path]:
    """A tmpfs of our own mounted at `where` (made), for disk faults (the torture
    benchmark's); the test is skipped where mounting is not allowed."""
    torture = load_benchmark("torture")
    try:
        with torture.tmpfs(where, size_mb) as mounted:
            yield mounted
    except torture.CannotMount as exc:
        pytest.skip(str(exc))
