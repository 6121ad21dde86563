"""Discovery probes in lab hosts, and waiting on what they print."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dcrond.testing._netns import Host, NetnsLab

ROOT = Path(__file__).resolve().parent.parent.parent


class Probe:
    """One ``tests.cluster._probe`` process in a lab host and the JSON lines it printed."""

    def __init__(self, lab: NetnsLab, host: Host, name: str, *args: str) -> None:
        self.name = name
        self.host = host
        argv = [sys.executable, "-m", "tests.cluster._probe", "--name", name, *args]
        if "--gossip" not in args:
            argv += ["--gossip", f"{host.address}:7302"]
        self.proc: subprocess.Popen[bytes] = lab.popen(
            host, argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lines: list[dict[str, Any]] = []
        self._buffer = b""

    @property
    def fd(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def read(self) -> None:
        """Take what the probe printed (call when its stdout is readable)."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            assert self.proc.stderr is not None
            self.proc.wait(timeout=10)
            err = self.proc.stderr.read().decode(errors="replace")
            raise AssertionError(f"probe {self.name} exited {self.proc.returncode}: {err[-3000:]}")
        *complete, self._buffer = (self._buffer + chunk).split(b"\n")
        self.lines.extend(json.loads(line) for line in complete)

    @property
    def last(self) -> dict[str, Any]:
        return self.lines[-1] if self.lines else {"t": 0, "peers": [], "stats": {}, "members": []}

    def peer_names(self) -> set[str]:
        return {p[0] for p in self.last["peers"]}

    def ever_seen(self) -> set[str]:
        """Every peer name this probe ever reported."""
        return {p[0] for line in self.lines for p in line["peers"]}

    def stop(self) -> None:
        """SIGTERM, and wait for the probe to withdraw its announcement and exit."""
        self.proc.terminate()
        self.proc.wait(timeout=15)


def wait_for(probes: list[Probe], done: Callable[[], bool], timeout: float) -> float:
    """Read the probes' lines until ``done()``; seconds it took. AssertionError on timeout."""
    start = time.monotonic()
    by_fd = {p.fd: p for p in probes if p.proc.returncode is None}
    while not done():
        left = start + timeout - time.monotonic()
        if left <= 0:
            states = {p.name: p.last for p in probes}
            raise AssertionError(f"not done after {timeout} s: {json.dumps(states, indent=1)}")
        ready, _, _ = select.select(list(by_fd), [], [], min(left, 0.2))
        for fd in ready:
            by_fd[fd].read()
    return time.monotonic() - start


def drain(probes: list[Probe], seconds: float) -> None:
    """Keep reading the probes' lines for ``seconds``."""
    end = time.monotonic() + seconds
    wait_for(probes, lambda: time.monotonic() >= end, seconds + 1)
