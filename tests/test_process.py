"""Facts about processes: a dead or reused pid never passes for a live writer."""

from __future__ import annotations

import os
import subprocess
import sys

from runstore._process import pid_alive, process_start_time, ray_labels


def test_this_process_is_alive_with_its_own_start_time() -> None:
    start = process_start_time(os.getpid())
    assert isinstance(start, int) and start > 0
    assert pid_alive(os.getpid(), start)
    assert pid_alive(os.getpid(), None)
    assert not pid_alive(os.getpid(), start + 1), "another process under a reused pid"


def test_an_ended_process_and_a_zombie_are_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start_time(child.pid)
    while child.poll() is None:  # reaped: gone from /proc
        pass
    assert not pid_alive(child.pid, start)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
    assert not pid_alive(zombie.pid, None)
    zombie.wait()


def test_outside_ray_a_process_has_no_ray_labels() -> None:
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    assert ray_labels() == {}
