"""A real `runstore ui` process on a free port, and plain HTTP to it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import SAMPLE_RUNS


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Server:
    base: str
    root: Path
    process: subprocess.Popen[str]

    def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return request(self.base + path, headers=headers)


def request(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> Answer:
    ask = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(ask, timeout=30) as answer:
            return Answer(
                answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
            )
    except urllib.error.HTTPError as error:
        return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


@contextmanager
def serving(root: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """`runstore ui ROOT --port 0` until the block ends (then Ctrl-C, as a user would)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "runstore", "ui", str(root), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"at (http://\S+?)/ ", line)
    if found is None:
        process.kill()
        raise AssertionError(f"runstore ui did not start: {line!r} {process.stderr.read()!r}")
    try:
        yield Server(found.group(1), root, process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("viewer") / "runs"
    shutil.copytree(SAMPLE_RUNS, root)
    return root


@pytest.fixture(scope="session")
def sample_server(sample_root: Path) -> Iterator[Server]:
    with serving(sample_root) as server:
        yield server
