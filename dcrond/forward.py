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

The forwarder keeps one pipelined RPC connection to the current leader and
opens a new one when the leader (or its address, from gossip) changes. Who
may call ``raft.propose`` is the RPC layer's business (with mutual TLS: node
certificates only).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

import trio

from dcrond.errors import NotLeader, Unavailable
from dcrond.rpc import RpcClient

log = logging.getLogger("dcrond.forward")

#: a node's RPC address by name, or None when it is not known (yet)
AddressOf = Callable[[str], tuple[str, int] | None]


class Forwarder:
    """Send encoded commands to the leader (start ``run`` in a nursery first)."""

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
        self._client: RpcClient | None = None
        self._target: tuple[str, tuple[str, int]] | None = None
        self._nursery: trio.Nursery | None = None
        self._lock = trio.Lock()
        self.forwarded = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the connection's reader task until cancelled (``await nursery.start(f.run)``)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            await self._close()

    async def _close(self) -> None:
        client, self._client, self._target = self._client, None, None
        if client is not None:
            with trio.CancelScope(shield=True):
                await client.aclose()

    async def _connect(self, leader: str) -> RpcClient:
        address = self._address_of(leader)
        if address is None:
            raise NotLeader(f"the leader {leader} has no known address yet", leader)
        async with self._lock:
            if self._client is not None and self._target == (leader, address):
                return self._client
            await self._close()
            client = await RpcClient.connect(*address, ssl_context=self._ssl_context)
            if client.peer is not None and client.peer.name != leader:
                await client.aclose()
                raise Unavailable(f"{address[0]}:{address[1]} is {client.peer}, not {leader}")
            if self._nursery is None:
                await client.aclose()
                raise Unavailable("the forwarder is not running")
            await self._nursery.start(client.run)
            self._client, self._target = client, (leader, address)
            return client

    async def __call__(self, leader: str, data: bytes) -> bytes:
        """Propose ``data`` through ``leader``; its encoded result.

        NotLeader when that node no longer leads (ask again once a leader is
        known); Unavailable when it cannot be reached or did not answer.
        """
        client = await self._connect(leader)
        try:
            with trio.fail_after(self._timeout):
                answer = await client.call("raft.propose", {"data": data})
        except trio.TooSlowError:
            raise Unavailable(
                f"the leader {leader} did not answer within {self._timeout:g}s"
            ) from None
        except Unavailable:
            await self._close()
            raise
        if not isinstance(answer, bytes):
            raise Unavailable(f"the leader {leader} answered {type(answer).__name__}")
        self.forwarded += 1
        return answer
