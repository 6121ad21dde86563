"""Three etcd members on 127.0.0.1, driven through etcd's HTTP/JSON gateway (shared by bench/).

``bench/raft.py`` and ``bench/failover.py`` compare dcrond's Raft with etcd
3.4 (Debian's ``etcd-server``, installed by ``make bench``) in the same run.
This module starts the members (``EtcdCluster``), kills and restarts one
(``kill -9``, then the same command line on the same data folder: etcd finds
its WAL there and rejoins), and talks to them with ``Http``, a minimal
keep-alive HTTP/1.1 client for the gateway's ``/v3/...`` JSON endpoints.

Every process the cluster starts, ``aclose`` kills and reaps.
"""

from __future__ import annotations

import json
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

import trio

from dcrond.testing._cluster import free_ports


@final
class Http:
    """A minimal keep-alive HTTP/1.1 client for etcd's JSON gateway (one request at a time)."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.buf = b""

    @classmethod
    async def connect(cls, port: int) -> Http:
        """Open a connection to 127.0.0.1:``port`` (OSError when nothing listens)."""
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        return cls(stream, f"127.0.0.1:{port}")

    async def post(self, path: str, body: dict[str, object]) -> dict[str, Any]:
        """POST ``body`` as JSON; the decoded answer, or RuntimeError on a non-2xx status."""
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        await self.stream.send_all(head + data)
        while b"\r\n\r\n" not in self.buf:
            await self._fill()
        header, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = header.decode().split("\r\n")
        fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if "content-length" in fields:
            n = int(fields["content-length"])
            while len(self.buf) < n:
                await self._fill()
            payload, self.buf = self.buf[:n], self.buf[n:]
        else:  # chunked
            payload = b""
            while True:
                while b"\r\n" not in self.buf:
                    await self._fill()
                size_line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(size_line, 16)
                while len(self.buf) < size + 2:
                    await self._fill()
                payload += self.buf[:size]
                self.buf = self.buf[size + 2 :]
                if size == 0:
                    break
        if not lines[0].split()[1].startswith("2"):
            raise RuntimeError(f"etcd answered {lines[0]}: {payload[:200]!r}")
        out: dict[str, Any] = json.loads(payload)
        return out

    async def _fill(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise trio.BrokenResourceError("etcd closed the connection")
        self.buf += chunk

    async def aclose(self) -> None:
        """Close the connection."""
        await self.stream.aclose()


@dataclass
class EtcdMember:
    """One member: its name, ports, data folder and (when running) its process."""

    name: str
    peer_port: int
    client_port: int
    data: Path
    proc: trio.Process | None = None
    member_id: str = ""  #: etcd's id for it (decimal, as the gateway prints it)


@final
class EtcdCluster:
    """``n`` etcd members on loopback; ``extra`` flags go to every member."""

    def __init__(self, root: Path, n: int = 3, *, extra: list[str] | None = None) -> None:
        ports = free_ports(2 * n)
        self.members = [
            EtcdMember(f"e{i + 1}", ports[2 * i], ports[2 * i + 1], root / f"e{i + 1}")
            for i in range(n)
        ]
        self.extra = extra or []
        self._procs: list[trio.Process] = []

    def member(self, name: str) -> EtcdMember:
        """The member called ``name``."""
        return next(m for m in self.members if m.name == name)

    def _argv(self, m: EtcdMember) -> list[str]:
        initial = ",".join(f"{o.name}=http://127.0.0.1:{o.peer_port}" for o in self.members)
        return [
            "etcd",
            "--name", m.name,
            "--data-dir", str(m.data),
            "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--listen-client-urls", f"http://127.0.0.1:{m.client_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{m.client_port}",
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--log-level", "error",
            *self.extra,
        ]  # fmt: skip

    async def start(self) -> None:
        """Start every member and wait until they have elected a leader."""
        for m in self.members:
            await self.start_member(m)
        await self.leader()
        for m in self.members:
            m.member_id = str((await self.status(m))["header"]["member_id"])

    async def start_member(self, m: EtcdMember) -> None:
        """Start (or restart, on its existing data folder) one member."""
        proc = await trio.lowlevel.open_process(
            self._argv(m), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        m.proc = proc
        self._procs.append(proc)

    def kill(self, m: EtcdMember) -> None:
        """``kill -9`` one member."""
        if m.proc is not None and m.proc.returncode is None:
            m.proc.send_signal(signal.SIGKILL)
        m.proc = None

    async def status(self, m: EtcdMember) -> dict[str, Any]:
        """``/v3/maintenance/status`` of one member (OSError or RuntimeError when down)."""
        http = await Http.connect(m.client_port)
        try:
            return await http.post("/v3/maintenance/status", {})
        finally:
            await http.aclose()

    async def leader(self, timeout: float = 30.0) -> EtcdMember:
        """The member that says it leads (waits for an election)."""
        with trio.fail_after(timeout):
            while True:
                for m in self.members:
                    if m.proc is None:
                        continue
                    try:
                        st = await self.status(m)
                    except (RuntimeError, OSError, trio.BrokenResourceError):
                        continue
                    header = st.get("header")
                    if isinstance(header, dict) and st.get("leader") == header.get("member_id"):
                        return m
                await trio.sleep(0.2)

    async def aclose(self) -> None:
        """Kill and reap every process started."""
        with trio.CancelScope(shield=True):
            for proc in self._procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGKILL)
                await proc.wait()
