"""Start and drive a cluster of ``_kvserver`` OS processes on 127.0.0.1.

Used by the real-process tests and by ``bench/raft.py``. Every process it
starts it also stops (``aclose``), and the data folder is the caller's.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, final

import trio

from dcrond.errors import NotLeader, Unavailable
from dcrond.rpc import RpcClient


def free_ports(n: int) -> list[int]:
    """Ports that were free on 127.0.0.1 a moment ago."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class KVProcess:
    """One node: its id, ports, data folder and (when running) its process."""

    node_id: str
    raft_port: int
    client_port: int
    data: Path
    extra: list[str] = field(default_factory=list)
    proc: trio.Process | None = None
    client: RpcClient | None = None


@final
class KVCluster:
    """N ``_kvserver`` processes forming one Raft cluster."""

    def __init__(self, root: Path, n: int, *, extra: list[str] | None = None) -> None:
        ports = free_ports(2 * n)
        self.nodes = [
            KVProcess(f"n{i + 1}", ports[2 * i], ports[2 * i + 1], root / f"n{i + 1}", extra or [])
            for i in range(n)
        ]
        self._nursery: trio.Nursery | None = None
        self._dead: list[RpcClient] = []
        self._procs: list[trio.Process] = []

    def _argv(self, node: KVProcess) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "dcrond.testing._kvserver",
            "--id",
            node.node_id,
            "--data",
            str(node.data),
            "--raft",
            f"127.0.0.1:{node.raft_port}",
            "--client",
            f"127.0.0.1:{node.client_port}",
        ]
        for other in self.nodes:
            if other is not node:
                argv += ["--peer", f"{other.node_id}=127.0.0.1:{other.raft_port}"]
        return argv + node.extra

    async def start(self, nursery: trio.Nursery) -> None:
        """Start every node and connect a client to each."""
        self._nursery = nursery
        for node in self.nodes:
            await self.start_node(node)

    async def start_node(self, node: KVProcess) -> None:
        """Start (or restart) one node and wait for its ``ready`` line."""
        assert self._nursery is not None
        node.data.mkdir(parents=True, exist_ok=True)
        proc = await trio.lowlevel.open_process(
            self._argv(node), stdout=subprocess.PIPE, stderr=None, env={**os.environ}
        )
        node.proc = proc
        self._procs.append(proc)
        assert proc.stdout is not None
        buf = b""
        with trio.fail_after(30):
            while b"ready" not in buf:
                chunk = await proc.stdout.receive_some(1024)
                if not chunk:
                    raise RuntimeError(f"{node.node_id} exited before it was ready")
                buf += chunk
        node.client = await RpcClient.connect("127.0.0.1", node.client_port)
        self._nursery.start_soon(node.client.run)

    def kill(self, node: KVProcess) -> None:
        """``kill -9`` one node."""
        if node.proc is not None and node.proc.returncode is None:
            node.proc.send_signal(signal.SIGKILL)
        if node.client is not None:
            self._dead.append(node.client)
        node.client = None

    async def call(self, node: KVProcess, method: str, params: dict[str, Any]) -> Any:
        """Call one node (Unavailable when it is down)."""
        if node.client is None:
            raise Unavailable(f"{node.node_id} is down")
        return await node.client.call(method, params)

    async def find_leader(self, timeout: float = 15.0) -> KVProcess:
        """The node that says it leads (waits for an election)."""
        with trio.fail_after(timeout):
            while True:
                for node in self.nodes:
                    try:
                        st = await self.call(node, "status", {})
                    except Unavailable:
                        continue
                    if st["role"] == "leader":
                        return node
                await trio.sleep(0.05)

    async def put(self, session: str, seq: int, key: str, value: str) -> None:
        """A put that retries (same session and seq) until some leader applies it."""
        while True:
            leader = await self.find_leader()
            try:
                await self.call(
                    leader, "kv.put", {"session": session, "seq": seq, "key": key, "value": value}
                )
                return
            except (NotLeader, Unavailable):
                await trio.sleep(0.02)

    async def aclose(self) -> None:
        """Stop every process (SIGKILL) and reap it."""
        with trio.CancelScope(shield=True):
            for node in self.nodes:
                if node.client is not None:
                    self._dead.append(node.client)
                    node.client = None
            for client in self._dead:
                await client.aclose()
            for proc in self._procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGKILL)
                await proc.wait()
                if proc.stdout is not None:
                    await proc.stdout.aclose()
