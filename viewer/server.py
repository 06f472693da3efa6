"""`runstore ui`: serve the viewer on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import uvicorn

from runstore.confinement import QueryLimits
from runstore.errors import RunDirectoryError

from .app import LOCAL_HOSTS, ViewerOptions, create_app

#: The port `runstore ui` serves on unless given `--port` (0 picks a free one).
DEFAULT_PORT: Final = 8417
#: The root `runstore ui` serves when given none, if set; else `./runs`.
ROOT_VARIABLE: Final = "RUNSTORE_ROOT"


def default_root() -> Path:
    """The root to serve when none is given: $RUNSTORE_ROOT, else ./runs."""
    named = os.environ.get(ROOT_VARIABLE)
    root = Path(named) if named else Path("runs")
    if not root.is_dir():
        where = f"${ROOT_VARIABLE} ({named})" if named else "./runs"
        raise RunDirectoryError(
            f"no folder of runs given, and {where} is not a folder; give one "
            "(runstore ui sample-runs), or make sample runs first: runstore demo runs"
        )
    return root


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        hint = " (another runstore ui? try --port 0)" if port else ""
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.listen(128)
    return sock


def serve(
    root: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    allowed_hosts: Sequence[str] = (),
    limits: QueryLimits | None = None,
    archive: bool = True,
) -> None:
    """Serve the viewer of `root` until interrupted; prints the address first."""
    folder = Path(root)
    if not folder.is_dir():
        raise RunDirectoryError(f"{root}: no such folder of runs")
    hosts = list(allowed_hosts)
    if not _is_loopback(host):
        print(
            f"runstore ui: warning: serving on {host}, reachable from other machines; "
            "anyone who can reach it can read every run under the root",
            file=sys.stderr,
        )
        if host not in ("0.0.0.0", "::"):
            hosts.append(host)
        hosts += [socket.gethostname(), socket.getfqdn()]
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    options = ViewerOptions(
        root=folder, allowed_hosts=tuple(hosts), limits=limits or QueryLimits(), archive=archive
    )
    shown = "127.0.0.1" if host in LOCAL_HOSTS or host in ("0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    print(f"runstore ui: serving {folder} at http://{shown}:{actual}/ (Ctrl-C to stop)", flush=True)
    config = uvicorn.Config(
        create_app(options),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    quiet = _QuietShutdown(server)
    logger = logging.getLogger("uvicorn.error")
    logger.addFilter(quiet)
    try:
        server.run(sockets=[sock])
    finally:
        logger.removeFilter(quiet)


class _QuietShutdown(logging.Filter):
    """Ctrl-C cuts the open live streams short, and uvicorn calls each an error; it is
    the shutdown the user asked for."""

    def __init__(self, server: uvicorn.Server) -> None:
        super().__init__()
        self.server = server

    def filter(self, record: logging.LogRecord) -> bool:
        cut = record.getMessage().startswith("ASGI callable returned without completing")
        return not (cut and self.server.should_exit)
