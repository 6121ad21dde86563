"""Raft messages between nodes over TCP, under trio.

Theory of operation
-------------------
Each node dials every peer and keeps **one outbound connection per peer**; the
peer's messages to us arrive on the connection *it* dialed. So every
connection carries traffic one way, and nobody has to break ties between two
nodes dialing each other at once.

A connection opens with a handshake of two frames. The dialer sends a hello
``{"cluster", "node_id", "version", "to"}``; the acceptor checks the cluster
name, the wire version, that the sender is one of its peers and that it is the
node the dialer meant to reach (an address may have moved to another node),
then answers with its own hello (which the dialer checks too) or with
``{"refused": reason}`` and closes. Refusals are logged on both sides
(``raft_connection_refused``, ``raft_peer_disconnected``). A peer has one
inbound connection: a new one from the same node replaces the old one (left
half-open by a crash, say). Until the hello is in, the acceptor accepts only
a small frame and waits ``handshake_timeout`` at most.

Sending never blocks: :meth:`RaftTransport.send_nowait` encodes the message
into a frame at once (so a bug shows at the caller) and appends it to the
peer's bounded queue. A full queue drops its *oldest* frame, since Raft
retries and newer messages carry fresher terms and commit indexes. The peer's
writer task takes everything queued (up to ``batch_bytes``) and writes it
with one ``send_all``. While writing, a watcher task reads the connection so
that a peer closing it (a restart) is noticed at once. A lost connection is
redialed after an exponential backoff with jitter (``backoff_base`` doubling
up to ``backoff_cap``); queued frames wait for it, and a batch that was being
written when the connection broke is counted as dropped.

Inbound, every frame is decoded by :mod:`dcrond.raft._codec` and must come
from the node named in the hello and be addressed to us; the message then goes
to the ``trio.MemorySendChannel`` (waiting there pushes back on the peer
through TCP). Any bad frame -- oversized, not msgpack, malformed, misaddressed
-- closes *that* connection, is counted in ``rejected_frames`` and logged as
``raft_frame_rejected``; the node itself carries on.

With ``tls`` (a :class:`dcrond.tls.NodeTls`) every connection is mutual TLS
1.3 before the first frame: the acceptor admits only a *node* certificate
from the cluster's CA and then requires the hello's ``node_id`` to be the
certificate's name; the dialer requires the certificate it is shown to name
the peer it meant to reach. So a node can only speak as itself, a client
certificate cannot join, and an address that moved to another host is
noticed. A failed TLS handshake or identity check is counted as a refused
connection and logged as ``tls_refused addr=… reason=…`` (acceptor) or
``raft_connection_refused peer=… reason='refused: tls: …'`` (dialer).

Everything runs in the nursery of :meth:`RaftTransport.serve`; cancelling it
closes every socket.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeAlias, final

import trio

from dcrond import tls as _tls
from dcrond._wire import DEFAULT_MAX_FRAME, FrameStream, encode_frame
from dcrond.errors import ProtocolError, TlsError
from dcrond.raft._codec import decode, encode
from dcrond.raft._types import Message, NodeId

__all__ = ["WIRE_VERSION", "Address", "RaftTransport", "TransportStatistics"]

log = logging.getLogger("dcrond.raft.transport")

Address: TypeAlias = tuple[str, int]

WIRE_VERSION: Final = 1
"""Version of the Raft wire format, exchanged in the hello."""

_HELLO_MAX_FRAME: Final = 4096
_REFUSAL_LOG_INTERVAL: Final = 60.0
_YIELD_EVERY: Final = 64  # messages delivered between two yields to the scheduler
_CONN_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@final
@dataclass(frozen=True, slots=True)
class TransportStatistics:
    """Counters of one transport since it was made (what /metrics shows).

    ``dropped`` counts messages not handed to the network: queue overflow,
    unknown destination, too large to frame, lost in a write that failed, and
    inbound messages whose receiver had closed. ``reconnects`` counts outbound
    connections established after a previous one to the same peer.
    """

    sent: int
    received: int
    dropped: int
    reconnects: int
    rejected_frames: int
    rejected_connections: int
    connected_peers: frozenset[NodeId]
    queued: int


@final
class _Peer:
    """One peer: where it is, what waits for it, and its outbound task."""

    __slots__ = (
        "address",
        "connected",
        "ever_connected",
        "last_error",
        "lot",
        "node_id",
        "queue",
        "scope",
    )

    def __init__(self, node_id: NodeId, address: Address, max_queue: int) -> None:
        self.node_id = node_id
        self.address = address
        self.queue: deque[bytes] = deque(maxlen=max_queue)
        self.lot = trio.lowlevel.ParkingLot()
        self.scope: trio.CancelScope | None = None
        self.connected: object | None = None  # token of the live connection, if any
        self.ever_connected = False
        self.last_error = ""


class _Refused(Exception):
    """The handshake failed; the message says why."""


@final
class RaftTransport:
    """Carries Raft messages between this node and its peers over TCP.

    ``peers`` maps node ids to ``(host, port)``; an entry for ``node_id``
    itself is ignored. Received messages go to ``send_channel`` if one is
    given, else to :attr:`receive_channel` (buffer ``receive_buffer``).
    ``rng`` drives the backoff jitter. ``tls`` turns on mutual TLS (see the
    module docstring). Errors raised by the constructor (ValueError) are the
    caller's fault.
    """

    def __init__(
        self,
        node_id: NodeId,
        cluster: str,
        listen: Address,
        peers: Mapping[NodeId, Address],
        *,
        send_channel: trio.MemorySendChannel[Message] | None = None,
        receive_buffer: int = 1024,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_queue: int = 1024,
        batch_bytes: int = 1 << 20,
        rng: random.Random | None = None,
        backoff_base: float = 0.05,
        backoff_cap: float = 1.0,
        connect_timeout: float = 5.0,
        handshake_timeout: float = 5.0,
        tls: _tls.NodeTls | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, not {max_queue}")
        if not 0 < backoff_base <= backoff_cap:
            raise ValueError("need 0 < backoff_base <= backoff_cap")
        self.node_id = node_id
        self.cluster = cluster
        self._listen = listen
        self._max_frame = max_frame
        self._max_queue = max_queue
        self._batch_bytes = batch_bytes
        self._rng = rng if rng is not None else random.Random()
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._tls = tls
        self._receive_channel: trio.MemoryReceiveChannel[Message] | None = None
        if send_channel is None:
            send_channel, self._receive_channel = trio.open_memory_channel[Message](receive_buffer)
        self._send_channel = send_channel
        self._peers: dict[NodeId, _Peer] = {}
        self._inbound: dict[NodeId, trio.CancelScope] = {}
        self._refusals: dict[tuple[str, str], float] = {}  # when each refusal was last logged
        self._nursery: trio.Nursery | None = None
        self._sent = 0
        self._received = 0
        self._dropped = 0
        self._reconnects = 0
        self._rejected_frames = 0
        self._rejected_connections = 0
        self.update_peers(peers)

    # --- public API -----------------------------------------------------------

    @property
    def receive_channel(self) -> trio.MemoryReceiveChannel[Message]:
        """Where received messages arrive (when no ``send_channel`` was given)."""
        if self._receive_channel is None:
            raise RuntimeError("this transport delivers to the send_channel it was given")
        return self._receive_channel

    async def serve(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, accept peers and dial them until cancelled.

        Calls ``task_status.started((host, port))`` with the bound address once
        listening (so port 0 works). Raises OSError if it cannot listen.
        """
        if self._nursery is not None:
            raise RuntimeError("this transport is already serving")
        host, port = self._listen
        listeners = await trio.open_tcp_listeners(port, host=host)
        try:
            bound = listeners[0].socket.getsockname()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(
                    partial(trio.serve_listeners, handler_nursery=nursery),
                    self._handle_inbound,
                    listeners,
                )
                for peer in self._peers.values():
                    self._start_peer(peer)
                log.info("raft_transport_listening node=%s addr=%s:%d", self.node_id, *bound[:2])
                task_status.started((bound[0], bound[1]))
        finally:
            self._nursery = None
            for peer in self._peers.values():
                peer.scope = None
                peer.connected = None
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    def send_nowait(self, msg: Message) -> None:
        """Queue ``msg`` for ``msg.to``; never blocks, never raises for a network reason.

        A message to an unknown peer, or too large for one frame, is dropped
        and counted. TypeError if ``msg`` is not a Raft message (a bug).
        """
        peer = self._peers.get(msg.to)
        if peer is None:
            self._dropped += 1
            log.debug("raft_send_dropped peer=%s reason=unknown_peer", msg.to)
            return
        try:
            frame = encode_frame(encode(msg), max_frame=self._max_frame)
        except ProtocolError as exc:
            self._dropped += 1
            log.error("raft_send_dropped peer=%s reason=%r", msg.to, str(exc))
            return
        queue = peer.queue
        if not queue:
            peer.lot.unpark()  # the writer parks only on an empty queue
        elif len(queue) == queue.maxlen:
            self._dropped += 1  # the deque drops the oldest frame
        queue.append(frame)

    def update_peers(self, peers: Mapping[NodeId, Address]) -> None:
        """Make ``peers`` the set of peers, at any time.

        A new peer is dialed; a removed one is hung up on (both directions)
        and its queue dropped; a peer whose address changed is redialed and
        keeps its queue.
        """
        wanted = {node: (host, port) for node, (host, port) in peers.items()}
        wanted.pop(self.node_id, None)
        for node in list(self._peers):
            if node not in wanted:
                gone = self._peers.pop(node)
                self._dropped += len(gone.queue)
                gone.queue.clear()
                if gone.scope is not None:
                    gone.scope.cancel()
                inbound = self._inbound.pop(node, None)
                if inbound is not None:
                    inbound.cancel()
                log.info("raft_peer_removed peer=%s", node)
        for node, address in wanted.items():
            peer = self._peers.get(node)
            if peer is None:
                peer = _Peer(node, address, self._max_queue)
                self._peers[node] = peer
                self._start_peer(peer)
            elif peer.address != address:
                log.info("raft_peer_moved peer=%s addr=%s:%d", node, *address)
                peer.address = address
                if peer.scope is not None:
                    peer.scope.cancel()
                self._start_peer(peer)

    def statistics(self) -> TransportStatistics:
        """Return the counters as they are now."""
        return TransportStatistics(
            sent=self._sent,
            received=self._received,
            dropped=self._dropped,
            reconnects=self._reconnects,
            rejected_frames=self._rejected_frames,
            rejected_connections=self._rejected_connections,
            connected_peers=frozenset(p.node_id for p in self._peers.values() if p.connected),
            queued=sum(len(p.queue) for p in self._peers.values()),
        )

    # --- hello ------------------------------------------------------------------

    def _hello(self, to: NodeId) -> dict[str, Any]:
        return {"cluster": self.cluster, "node_id": self.node_id, "version": WIRE_VERSION, "to": to}

    def _check_hello(self, hello: object, expect: NodeId | None) -> str:
        """Return why ``hello`` is refused, or "" if it is fine."""
        if type(hello) is not dict:
            return f"malformed hello: expected a map, got {type(hello).__name__}"
        if "refused" in hello:
            said = hello["refused"]
            return f"peer refused us: {said[:200] if type(said) is str else '(no reason given)'}"
        version = hello.get("version")
        cluster = hello.get("cluster")
        node = hello.get("node_id")
        if type(version) is not int or type(cluster) is not str or type(node) is not str:
            return "malformed hello: needs int version, str cluster, str node_id"
        if version != WIRE_VERSION:
            return f"version mismatch: peer speaks {version}, we speak {WIRE_VERSION}"
        if cluster != self.cluster:
            return f"wrong cluster: peer is in {cluster[:100]!r}, we are in {self.cluster!r}"
        if expect is None and node not in self._peers:
            return f"unknown sender {node[:100]!r}"
        to = hello.get("to", self.node_id)
        if type(to) is not str:
            return "malformed hello: needs str to"
        if to != self.node_id:
            return f"wrong node: peer meant to reach {to[:100]!r}, this is {self.node_id!r}"
        if expect is not None and node != expect:
            return f"wrong node: expected {expect!r}, reached {node[:100]!r}"
        return ""

    # --- outbound ---------------------------------------------------------------

    def _start_peer(self, peer: _Peer) -> None:
        if self._nursery is None:
            return
        peer.scope = scope = trio.CancelScope()
        self._nursery.start_soon(self._run_peer, peer, scope)

    def _backoff(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures in a row (with jitter)."""
        delay = min(self._backoff_cap, self._backoff_base * (1 << min(failures - 1, 30)))
        return delay * (0.5 + 0.5 * self._rng.random())

    async def _run_peer(self, peer: _Peer, scope: trio.CancelScope) -> None:
        with scope:
            failures = 0
            while True:
                reason, established = await self._connect_once(peer)
                if established:
                    log.info("raft_peer_disconnected peer=%s reason=%r", peer.node_id, reason)
                elif reason != peer.last_error:  # say it once, not on every retry
                    if reason.startswith("refused"):
                        log.warning(
                            "raft_connection_refused peer=%s reason=%r", peer.node_id, reason
                        )
                    else:
                        log.info("raft_peer_unreachable peer=%s reason=%r", peer.node_id, reason)
                peer.last_error = "" if established else reason
                failures = 1 if established else failures + 1
                await trio.sleep(self._backoff(failures))

    async def _connect_once(self, peer: _Peer) -> tuple[str, bool]:
        """Dial ``peer`` and run the connection until it breaks.

        Returns why it ended and whether the handshake had succeeded.
        """
        host, port = peer.address
        try:
            with trio.fail_after(self._connect_timeout):
                stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as exc:
            return f"connect failed: {exc or type(exc).__name__}", False
        if self._tls is not None:
            try:
                stream, identity = await _tls.connect(
                    stream, self._tls.client, timeout=self._handshake_timeout
                )
            except TlsError as exc:
                return f"refused: tls: {exc}", False
            if identity.kind != "node" or identity.name != peer.node_id:
                await trio.aclose_forcefully(stream)
                return f"refused: tls: reached {identity}, not node {peer.node_id!r}", False
        conn = FrameStream(stream, max_frame=_HELLO_MAX_FRAME)
        token = object()
        async with conn:
            try:
                with trio.fail_after(self._handshake_timeout):
                    await conn.send(self._hello(peer.node_id))
                    answer = await conn.receive()
                reason = self._check_hello(answer, expect=peer.node_id)
                if reason:
                    return f"refused: {reason}", False
            except (*_CONN_ERRORS, ProtocolError, trio.EndOfChannel, trio.TooSlowError) as exc:
                if self._tls is not None and _tls.ssl_failure(exc) is not None:
                    # TLS 1.3: the acceptor judged our certificate after our handshake
                    return f"refused: tls: the peer hung up: {_tls.describe(exc)}", False
                return f"handshake failed: {exc or type(exc).__name__}", False
            conn.max_frame = self._max_frame
            if peer.ever_connected:
                self._reconnects += 1
            peer.ever_connected = True
            peer.connected = token
            peer.last_error = ""
            log.info("raft_peer_connected peer=%s addr=%s:%d", peer.node_id, host, port)
            try:
                async with trio.open_nursery() as nursery:
                    ended: list[str] = []
                    nursery.start_soon(self._watch, conn, nursery.cancel_scope, ended)
                    ended.append(await self._write_loop(peer, conn))
                    nursery.cancel_scope.cancel()
            finally:
                if peer.connected is token:
                    peer.connected = None
        return ended[0], True

    async def _write_loop(self, peer: _Peer, conn: FrameStream) -> str:
        """Write queued frames, batched, until a write fails; return why."""
        queue = peer.queue
        stream = conn.stream
        limit = self._batch_bytes
        while True:
            if not queue:
                await peer.lot.park()
                continue
            batch = [queue.popleft()]
            size = len(batch[0])
            while queue and size < limit:
                frame = queue.popleft()
                batch.append(frame)
                size += len(frame)
            written = False
            try:
                await stream.send_all(b"".join(batch) if len(batch) > 1 else batch[0])
                written = True
            except _CONN_ERRORS as exc:
                return f"write failed: {exc or type(exc).__name__}"
            finally:  # also when cancelled mid-write: the batch is gone either way
                if written:
                    self._sent += len(batch)
                else:
                    self._dropped += len(batch)

    async def _watch(self, conn: FrameStream, scope: trio.CancelScope, ended: list[str]) -> None:
        """Notice the acceptor closing the connection; it never sends after its hello."""
        try:
            await conn.receive()
            reason = "peer sent an unexpected frame"
        except trio.EndOfChannel:
            reason = "closed by peer"
        except (*_CONN_ERRORS, ProtocolError) as exc:
            reason = f"read failed: {exc or type(exc).__name__}"
        ended.append(reason)
        scope.cancel()

    # --- inbound ----------------------------------------------------------------

    async def _handle_inbound(self, stream: trio.SocketStream) -> None:
        """Serve one accepted connection: handshake, then read messages until it ends."""
        try:
            name = stream.socket.getpeername()
            addr = f"{name[0]}:{name[1]}"
        except OSError:
            addr = "?"
        secured = await self._accept_tls(stream, addr)
        if secured is None:
            return
        conn, identity = secured
        peer_id = "?"
        try:
            with trio.move_on_after(self._handshake_timeout) as timer:
                hello = await conn.receive()
            if timer.cancelled_caught:
                self._refuse_log(addr, "no hello in time")
                return
            reason = self._check_hello(hello, expect=None)
            if not reason and identity is not None and hello["node_id"] != identity.name:
                reason = (
                    f"node_id {hello['node_id'][:100]!r} is not the name in its certificate"
                    f" ({identity.name!r})"
                )
            if reason:
                self._refuse_log(addr, reason)
                with trio.move_on_after(self._handshake_timeout):
                    await conn.send({"refused": reason})
                return
            peer_id = hello["node_id"]
            await conn.send(self._hello(peer_id))
            conn.max_frame = self._max_frame
            with trio.CancelScope() as scope:
                old = self._inbound.get(peer_id)
                if old is not None:
                    old.cancel()  # a peer has one inbound connection: the newest
                self._inbound[peer_id] = scope
                try:
                    log.info("raft_peer_accepted peer=%s addr=%s", peer_id, addr)
                    await self._read_loop(peer_id, conn)
                finally:
                    if self._inbound.get(peer_id) is scope:
                        del self._inbound[peer_id]
        except ProtocolError as exc:
            self._rejected_frames += 1
            log.warning("raft_frame_rejected peer=%s addr=%s reason=%r", peer_id, addr, str(exc))
        except trio.EndOfChannel:
            log.debug("raft_connection_closed peer=%s addr=%s", peer_id, addr)
        except _CONN_ERRORS as exc:
            log.debug("raft_connection_lost peer=%s addr=%s error=%r", peer_id, addr, str(exc))
        finally:
            await trio.aclose_forcefully(conn)

    async def _accept_tls(
        self, stream: trio.SocketStream, addr: str
    ) -> tuple[FrameStream, _tls.PeerIdentity | None] | None:
        """The connection to read hellos from and the peer's identity (None without TLS);
        None if TLS refused it."""
        if self._tls is None:
            return FrameStream(stream, max_frame=_HELLO_MAX_FRAME), None
        try:
            secure, identity = await _tls.accept(
                stream, self._tls.server, timeout=self._handshake_timeout
            )
        except TlsError as exc:
            self._refuse_log(addr, str(exc), event="tls_refused")
            return None
        if identity.kind != "node":
            self._refuse_log(addr, f"{identity} is not a node certificate", event="tls_refused")
            await trio.aclose_forcefully(secure)
            return None
        return FrameStream(secure, max_frame=_HELLO_MAX_FRAME), identity

    def _refuse_log(
        self, addr: str, reason: str, *, event: str = "raft_connection_refused"
    ) -> None:
        """Count a refused connection; warn once a minute per (host, reason), else debug."""
        self._rejected_connections += 1
        key = (addr.rpartition(":")[0], reason)
        now = trio.current_time()
        last = self._refusals.get(key)
        if last is not None and now - last < _REFUSAL_LOG_INTERVAL:
            log.debug("%s addr=%s reason=%r", event, addr, reason)
            return
        if len(self._refusals) >= 1024:
            self._refusals.clear()
        self._refusals[key] = now
        log.warning("%s addr=%s reason=%r", event, addr, reason)

    async def _read_loop(self, peer_id: NodeId, conn: FrameStream) -> None:
        """Decode and deliver messages; ProtocolError on the first bad one."""
        me = self.node_id
        channel = self._send_channel
        unyielded = 0
        while True:
            # receive() yields to the scheduler only when it must read the
            # socket; a chunk can hold thousands of small frames, so deliver
            # without waiting while the channel has room and yield every so often.
            msg = decode(await conn.receive())
            if msg.frm != peer_id or msg.to != me:
                raise ProtocolError(
                    f"misaddressed: {type(msg).__name__} from {msg.frm!r} to {msg.to!r}"
                    f" on the connection of {peer_id!r} to {me!r}"
                )
            try:
                try:
                    channel.send_nowait(msg)
                    unyielded += 1
                except trio.WouldBlock:
                    await channel.send(msg)  # the receiver is behind: push back on the peer
                    unyielded = 0
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._dropped += 1  # nobody is listening any more
                unyielded += 1
            else:
                self._received += 1
            if unyielded >= _YIELD_EVERY:
                unyielded = 0
                await trio.lowlevel.checkpoint()
