"""Discovery probes in lab hosts, and real daemons with mutual TLS in lab hosts."""

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


#: the ports every daemon of a ``DaemonLab`` listens on (each host has its own address)
API, RAFT, GOSSIP = 7300, 7301, 7302


class DaemonLab:
    """One real ``dcrond`` per namespace of a ``NetnsLab``, with node and client
    certificates from one ``dcronctl ca``; each test adds its own config sections."""

    def __init__(self, lab: NetnsLab, tmp: Path) -> None:
        self.lab = lab
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.hosts = {f"h{h.index}": h for h in lab.hosts}
        ca = str(tmp / "ca")
        self._ca("init", "--dir", ca)
        for name, host in self.hosts.items():
            self._ca("issue", "node", name, "--ip", host.address, "--dir", ca)
        self._ca("issue", "client", "tester", "--dir", ca)
        client = tmp / "ca" / "clients" / "tester"
        self.tls_args = [
            "--ca",
            str(client / "ca.crt"),
            "--cert",
            str(client / "client.crt"),
            "--key",
            str(client / "client.key"),
        ]

    @staticmethod
    def _ca(*args: str) -> None:
        argv = [sys.executable, "-m", "dcrond.ctl", "ca", *args]
        subprocess.run(argv, check=True, capture_output=True, timeout=60, cwd=ROOT)

    def sections(self, name: str) -> str:
        """TOML for ``name`` beyond [node], [api], [raft] and [tls] (a test's own)."""
        return ""

    def config(self, name: str) -> Path:
        """Write ``name``'s config file and return its path."""
        host = self.hosts[name]
        certs = self.tmp / "ca" / "nodes" / name
        path = self.tmp / f"{name}.toml"
        path.write_text(
            f"""
[node]
name = "{name}"
data_dir = "{self.tmp / name}"

[api]
listen = "{host.address}:{API}"

[raft]
listen = "{host.address}:{RAFT}"
fsync = false
{self.sections(name)}
[tls]
ca = "{certs / "ca.crt"}"
cert = "{certs / "node.crt"}"
key = "{certs / "node.key"}"
""",
            encoding="utf-8",
        )
        return path

    def start(self, name: str) -> None:
        """Start ``name``'s daemon in its namespace (its log: ``<tmp>/<name>.log``)."""
        with (self.tmp / f"{name}.log").open("ab") as log:
            self.procs[name] = self.lab.popen(
                self.hosts[name],
                [sys.executable, "-m", "dcrond", "--config", str(self.config(name))],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def logs(self) -> str:
        """The tail of every daemon's log."""
        parts = []
        for name in self.hosts:
            path = self.tmp / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {name} ---\n{text[-4000:]}")
        return "\n".join(parts)
