"""Writes sent to any node reach the leader: a follower forwards the encoded command.

Theory of operation
-------------------
Only the leader may append to the log. A follower's ``Replica.propose``
gets ``NotLeader`` from its Raft node at once; with a ``Forwarder`` it then
sends the *already encoded* command (its client session and request number
inside) to the leader's RPC port as ``raft.propose`` and returns the
leader's answer. Because the session and number travel with the command, a
forward that times out and is retried — even through a different leader after
an election — is applied once at most.

With mutual TLS (``ssl_context``: the node's client context) the leader's
certificate must carry the leader's name, so a moved address cannot divert
a write to another node.

The forwarder keeps one pipelined RPC connection per peer it has talked to
(the leader, and the hosts the engine asks to kill a run or serve a running
log: ``call``) and opens a new one when that peer's address, from gossip,
changes or the connection breaks. Who may call ``raft.propose`` and the
engine's node-to-node methods is the RPC layer's business (with mutual TLS:
node certificates only).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any

import trio

from dcrond.errors import NotLeader, Unavailable
from dcrond.rpc import RpcClient

log = logging.getLogger("dcrond.forward")

#: a node's RPC address by name, or None when it is not known (yet)
AddressOf = Callable[[str], tuple[str, int] | None]


class Forwarder:
    """Send encoded commands to the leader, and calls to any peer (start ``run`` first)."""

    def __init__(
        self,
        address_of: AddressOf,
        *,
        timeout: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._address_of = address_of
        self._ssl_context = ssl_context
        self._timeout = timeout
        self._clients: dict[str, tuple[tuple[str, int], RpcClient]] = {}
        self._nursery: trio.Nursery | None = None
        self._lock = trio.Lock()
        self.forwarded = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the connections' reader tasks until cancelled (``await nursery.start(f.run)``)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for name in list(self._clients):
                await self._close(name)

    async def _close(self, name: str) -> None:
        entry = self._clients.pop(name, None)
        if entry is not None:
            with trio.CancelScope(shield=True):
                await entry[1].aclose()

    async def _connect(self, peer: str) -> RpcClient:
        address = self._address_of(peer)
        if address is None:
            raise Unavailable(f"host {peer} has no known address yet")
        async with self._lock:
            entry = self._clients.get(peer)
            if entry is not None and entry[0] == address:
                return entry[1]
            await self._close(peer)
            client = await RpcClient.connect(*address, ssl_context=self._ssl_context)
            if client.peer is not None and client.peer.name != peer:
                await client.aclose()
                raise Unavailable(f"{address[0]}:{address[1]} is {client.peer}, not {peer}")
            if self._nursery is None:
                await client.aclose()
                raise Unavailable("the forwarder is not running")
            await self._nursery.start(client.run)
            self._clients[peer] = (address, client)
            return client

    async def call(
        self, peer: str, method: str, params: dict[str, Any], *, timeout: float | None = None
    ) -> Any:
        """Call ``method`` on host ``peer``; its answer, or the error it raised.

        Unavailable when the host has no known address, cannot be reached or
        did not answer within ``timeout`` (default: the forwarder's).
        """
        limit = self._timeout if timeout is None else timeout
        client = await self._connect(peer)
        try:
            with trio.fail_after(limit):
                return await client.call(method, params)
        except trio.TooSlowError:
            raise Unavailable(f"host {peer} did not answer within {limit:g}s") from None
        except Unavailable:
            await self._close(peer)
            raise

    async def __call__(self, leader: str, data: bytes) -> bytes:
        """Propose ``data`` through ``leader``; its encoded result.

        NotLeader when that node no longer leads (ask again once a leader is
        known); Unavailable when it cannot be reached or did not answer.
        """
        if self._address_of(leader) is None:
            raise NotLeader(f"the leader {leader} has no known address yet", leader)
        answer = await self.call(leader, "raft.propose", {"data": data})
        if not isinstance(answer, bytes):
            raise Unavailable(f"the leader {leader} answered {type(answer).__name__}")
        self.forwarded += 1
        return answer
