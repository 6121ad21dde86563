"""Fixtures for the runner tests: a real runner in a temp work dir, and cleanup of every process."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from dcrond.runner import LocalProcessRunner

#: what a daemon started by systemd has in its environment; none of it may reach a job
DAEMON_ONLY = {
    "NOTIFY_SOCKET": "/run/systemd/notify",
    "WATCHDOG_USEC": "30000000",
    "WATCHDOG_PID": "1",
    "LISTEN_FDS": "2",
    "LISTEN_PID": "1",
    "INVOCATION_ID": "0123456789abcdef",
    "JOURNAL_STREAM": "8:12345",
    "DCROND_CONFIG": "/etc/dcrond/dcrond.toml",
}

#: the injected wall clock runs this far ahead of the real one, so results prove they use it
WALL_OFFSET = 1_000_000.0


def wall() -> float:
    """The runner's injected wall clock."""
    return time.time() + WALL_OFFSET


def kill_group(pgid: int) -> None:
    """SIGKILL a process group, if it still exists."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def reap(pid: int) -> None:
    """Reap a child of the test process, if it is one and has exited."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@pytest.fixture
def daemon_env() -> dict[str, str]:
    """The environment the runner is told the daemon has."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **DAEMON_ONLY}


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    """The runner's work dir."""
    return tmp_path / "work"


@pytest.fixture
def runner(work_dir: Path, daemon_env: dict[str, str]) -> Iterator[LocalProcessRunner]:
    """A real runner; every process group it left running is killed afterwards; then closed."""
    r = LocalProcessRunner(work_dir, wall_clock=wall, daemon_env=daemon_env)
    yield r
    for h in r.running():
        kill_group(h.pid)
    r.close()


@pytest.fixture
def new_daemon(
    work_dir: Path, daemon_env: dict[str, str]
) -> Iterator[Callable[[], LocalProcessRunner]]:
    """Make another runner on the same work dir (a restarted daemon); all are closed afterwards."""
    made: list[LocalProcessRunner] = []

    def make() -> LocalProcessRunner:
        made.append(LocalProcessRunner(work_dir, wall_clock=wall, daemon_env=daemon_env))
        return made[-1]

    yield make
    for r in made:
        for h in r.running():
            kill_group(h.pid)
        r.close()


async def poll_until(predicate: Callable[[], bool], interval: float = 0.01) -> None:
    """Wait until ``predicate()`` holds (for facts outside trio: files, /proc)."""
    while True:
        if predicate():
            return
        await trio.sleep(interval)


def read_int(path: Path) -> int | None:
    """The number written in a file, or None if it is not there (yet)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None
