"""The trio driver: one ``GossipCore`` on a real UDP socket and a TCP listener.

Theory of operation
-------------------
:meth:`GossipNode.serve` binds a UDP socket and a TCP listener on the same
port (port 0 picks one free for both), builds the core with the bound (or
advertised) address and runs three tasks until cancelled or until a graceful
leave has been sent:

- the **receive loop** reads datagrams, opens them with the ``Sealer``,
  decodes them with ``_codec`` and hands the messages to ``core.receive``.
  A datagram that fails either step is dropped and counted in
  ``rejected_packets`` (logged as ``gossip_packet_rejected``, at most once a
  minute per reason); nothing a peer sends can stop the loop;
- the **timer loop** sleeps until ``core.next_deadline()`` (or until an input
  may have moved it earlier) and calls ``core.tick``;
- the **push-pull server** accepts TCP connections: one frame in (the
  partner's sealed state), merge it, one frame out (our state, taken *after*
  the merge so it carries any refutation the merge caused), close.

After every input the driver takes ``core.ready()`` and ``advance``-s it at
once (gossip persists nothing), then sends the packets (``sendto`` never
blocks for long; a failure is counted), starts each push-pull exchange as its
own task with a timeout, and hands the events to ``on_event``. The core's
clock is ``trio.current_time()``, so tests can drive it with a MockClock.

:meth:`join` runs the push-pulls with the seeds itself and returns how many
answered; :meth:`leave` announces the leave, waits until it has been gossiped
(or ``timeout``) and then stops :meth:`serve`.
"""

from __future__ import annotations

import logging
import math
import random
import socket as _socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Final, final

import trio

from dcrond._wire import FrameStream
from dcrond.errors import DcronError, InvalidRequest, ProtocolError
from dcrond.gossip._codec import (
    MAX_MESSAGE_BYTES,
    PACKET_OVERHEAD,
    decode_packet,
    decode_state,
    encode_packet,
    encode_state,
)
from dcrond.gossip._core import GossipCore
from dcrond.gossip._seal import PLAINTEXT, Sealer
from dcrond.gossip._types import (
    Address,
    GossipConfig,
    GossipStatistics,
    Member,
    MemberEvent,
    NodeMeta,
    PushPull,
)

__all__ = ["GossipNode", "NodeStatistics"]

log = logging.getLogger("dcrond.gossip")

MAX_DATAGRAM: Final = 65_535
MAX_STATE_FRAME: Final = 8 * 1024 * 1024
_BIND_ATTEMPTS: Final = 20
_WARN_INTERVAL: Final = 60.0
_CONN_ERRORS: Final = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


@final
@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """The core's counters plus the driver's (what /metrics shows)."""

    core: GossipStatistics
    packets_in: int
    bytes_in: int
    bytes_out: int
    rejected_packets: int  #: not authentic or not valid; dropped
    send_errors: int
    push_pulls_ok: int  #: exchanges we started that completed
    push_pulls_failed: int
    push_pulls_served: int  #: exchanges others started with us


@final
class GossipNode:
    """A gossip member on the network (see the module docstring).

    ``host``/``port`` are where to bind; ``advertise`` is the address the
    others should use (required when binding a wildcard address). ``on_event``
    is called with every membership change, synchronously: keep it short.
    """

    def __init__(
        self,
        name: str,
        meta: NodeMeta,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise: Address | None = None,
        config: GossipConfig | None = None,
        sealer: Sealer = PLAINTEXT,
        rng: random.Random | None = None,
        push_pull_timeout: float = 5.0,
        on_event: Callable[[MemberEvent], None] | None = None,
    ) -> None:
        self.name = name
        self._meta = meta
        self._host = host
        self._port = port
        self._advertise = advertise
        base = config or GossipConfig()
        if base.packet_bytes - sealer.overhead < PACKET_OVERHEAD + MAX_MESSAGE_BYTES:
            raise ValueError("packet_bytes leaves too little room after sealing")
        self._config = replace(base, packet_bytes=base.packet_bytes - sealer.overhead)
        self._sealer = sealer
        self._rng = rng or random.Random()
        self._pp_timeout = push_pull_timeout
        self._on_event = on_event
        self._core: GossipCore | None = None
        self._sock: trio.socket.SocketType | None = None
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._stopped = trio.Event()
        self._leave_sent = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._warned: dict[str, float] = {}
        self._join_waiters: dict[Address, trio.Event] = {}
        self._join_ok: dict[Address, bool] = {}
        self._n = dict.fromkeys(
            (
                "packets_in",
                "bytes_in",
                "bytes_out",
                "rejected",
                "send_errors",
                "pp_ok",
                "pp_fail",
                "pp_served",
            ),
            0,
        )

    # --- running --------------------------------------------------------------

    @property
    def address(self) -> Address:
        """The address the others reach us at (once ``serve`` has started)."""
        return self._need_core().myself().address

    async def serve(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, report the advertised address to ``task_status``, and run until cancelled
        or until a graceful leave has gone out."""
        sock, listeners = await self._bind()
        bound = sock.getsockname()[:2]
        address = self._advertise or (bound[0], bound[1])
        if address[0] in ("0.0.0.0", "::"):
            raise InvalidRequest("binding a wildcard address needs an advertise address")
        self._core = GossipCore(
            self.name, address, self._meta, self._config, self._rng, now=trio.current_time()
        )
        self._sock = sock
        try:
            with sock, trio.CancelScope() as scope:
                self._scope = scope
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._receive_loop, sock)
                    nursery.start_soon(self._timer_loop)
                    nursery.start_soon(trio.serve_listeners, self._serve_push_pull, listeners)
                    task_status.started(address)
        finally:
            for lst in listeners:
                await trio.aclose_forcefully(lst)
            self._nursery = None
            self._stopped.set()

    async def _bind(self) -> tuple[trio.socket.SocketType, list[trio.SocketListener]]:
        """A UDP socket and TCP listeners on one port number (retrying if port 0 clashes)."""
        for _ in range(_BIND_ATTEMPTS):
            family = _socket.AF_INET6 if ":" in self._host else _socket.AF_INET
            sock = trio.socket.socket(family, _socket.SOCK_DGRAM)
            try:
                await sock.bind((self._host, self._port))
                port = sock.getsockname()[1]
                listeners = await trio.open_tcp_listeners(port, host=self._host)
            except OSError:
                sock.close()
                if self._port:
                    raise
                continue
            return sock, listeners
        raise OSError(f"no port free for both UDP and TCP on {self._host}")

    def _need_core(self) -> GossipCore:
        if self._core is None:
            raise DcronError("the gossip node is not serving yet")
        return self._core

    # --- the loops --------------------------------------------------------------

    async def _receive_loop(self, sock: trio.socket.SocketType) -> None:
        core = self._need_core()
        while True:
            try:
                data, frm = await sock.recvfrom(MAX_DATAGRAM)
            except OSError as exc:  # e.g. ICMP port unreachable reported on Linux
                log.debug("gossip_receive_error error=%s", exc)
                continue
            self._n["packets_in"] += 1
            self._n["bytes_in"] += len(data)
            try:
                msgs = decode_packet(self._sealer.open(data))
            except ProtocolError as exc:
                self._reject(str(exc), frm)
                continue
            core.receive(trio.current_time(), (frm[0], frm[1]), msgs)
            await self._flush()

    async def _timer_loop(self) -> None:
        core = self._need_core()
        while True:
            deadline = core.next_deadline()
            if deadline > trio.current_time():
                with trio.move_on_at(deadline if math.isfinite(deadline) else math.inf):
                    await self._wake.wait()
                self._wake = trio.Event()
            core.tick(trio.current_time())
            await self._flush()

    async def _flush(self) -> None:
        """Carry out the core's Ready: send, start push-pulls, report events."""
        core = self._need_core()
        rd = core.ready()
        if rd.is_empty():
            await trio.lowlevel.checkpoint()
            return
        core.advance(rd)
        self._wake.set()  # deadlines may have moved
        for ev in rd.events:
            if self._on_event is not None:
                self._on_event(ev)
        if rd.events:
            self._changed.set()
            self._changed = trio.Event()
        if rd.push_pulls and self._nursery is not None:
            for pp in rd.push_pulls:
                self._nursery.start_soon(self._push_pull, pp)
        sock = self._sock
        assert sock is not None
        for p in rd.packets:
            data = self._sealer.seal(encode_packet(p.messages, self._config.packet_bytes))
            try:
                await sock.sendto(data, p.to)
                self._n["bytes_out"] += len(data)
            except OSError as exc:
                self._n["send_errors"] += 1
                log.debug("gossip_send_error to=%s:%s error=%s", p.to[0], p.to[1], exc)
        if core.leave_sent():
            self._leave_sent.set()

    # --- push-pull over TCP ------------------------------------------------------

    async def _push_pull(self, pp: PushPull) -> bool:
        """One exchange as the initiator; True if the partner's state was merged."""
        core = self._need_core()
        with trio.move_on_after(self._pp_timeout):
            try:
                stream = await trio.open_tcp_stream(*pp.to)
                async with FrameStream(stream, max_frame=MAX_STATE_FRAME) as fs:
                    state = encode_state(core.push_pull_state(), join=pp.join)
                    await fs.send(self._sealer.seal(state))
                    reply = await fs.receive()
                    _, entries = decode_state(self._open_frame(reply))
            except (*_CONN_ERRORS, ProtocolError, trio.EndOfChannel) as exc:
                self._n["pp_fail"] += 1
                log.debug("gossip_push_pull_failed to=%s:%s error=%s", pp.to[0], pp.to[1], exc)
                self._join_done(pp, ok=False)
                return False
            core.merge_state(trio.current_time(), entries, join=pp.join)
            self._n["pp_ok"] += 1
            self._join_done(pp, ok=True)
            await self._flush()
            return True
        self._n["pp_fail"] += 1
        log.debug("gossip_push_pull_timeout to=%s:%s", pp.to[0], pp.to[1])
        self._join_done(pp, ok=False)
        return False

    def _join_done(self, pp: PushPull, *, ok: bool) -> None:
        waiter = self._join_waiters.pop(pp.to, None) if pp.join else None
        if waiter is not None:
            self._join_ok[pp.to] = ok
            waiter.set()

    async def _serve_push_pull(self, stream: trio.SocketStream) -> None:
        core = self._need_core()
        with trio.move_on_after(self._pp_timeout):
            try:
                async with FrameStream(stream, max_frame=MAX_STATE_FRAME) as fs:
                    join, entries = decode_state(self._open_frame(await fs.receive()))
                    core.merge_state(trio.current_time(), entries, join=join)
                    state = encode_state(core.push_pull_state(), join=join)
                    await fs.send(self._sealer.seal(state))
                    self._n["pp_served"] += 1
                    await self._flush()
            except (*_CONN_ERRORS, trio.EndOfChannel):
                pass
            except ProtocolError as exc:
                try:
                    peer = stream.socket.getpeername()
                except OSError:
                    peer = ("?", 0)
                self._reject(f"push-pull: {exc}", peer)

    def _open_frame(self, obj: object) -> bytes:
        if not isinstance(obj, bytes):
            raise ProtocolError("wrong type: a push-pull frame must carry bytes")
        return self._sealer.open(obj)

    def _reject(self, reason: str, frm: tuple[object, ...]) -> None:
        self._n["rejected"] += 1
        key = reason.split(":", 1)[0]
        now = trio.current_time()
        if now - self._warned.get(key, -math.inf) >= _WARN_INTERVAL:
            self._warned[key] = now
            log.warning("gossip_packet_rejected from=%s reason=%s", frm[0], reason[:200])

    # --- the API ------------------------------------------------------------------

    async def join(self, seeds: Iterable[Address]) -> int:
        """Push-pull with every seed now; how many answered. The core keeps retrying
        the seeds it has not heard from every ``reconnect_interval``."""
        core = self._need_core()
        me = core.myself().address
        todo = list(dict.fromkeys(a for a in seeds if a != me))
        waiters = {a: self._join_waiters.setdefault(a, trio.Event()) for a in todo}
        core.join(todo)
        await self._flush()
        for ev in waiters.values():
            await ev.wait()
        return sum(self._join_ok.pop(a, False) for a in todo)

    async def leave(self, timeout: float = 3.0) -> None:
        """Announce a graceful leave, wait until it is gossiped (or ``timeout``), then stop."""
        core = self._need_core()
        core.leave(trio.current_time())
        await self._flush()
        with trio.move_on_after(timeout):
            await self._leave_sent.wait()
        if self._scope is not None:
            self._scope.cancel()
        await self._stopped.wait()

    def update_meta(self, meta: NodeMeta) -> None:
        """Announce new metadata (InvalidRequest if it is too large to gossip)."""
        core = self._need_core()
        core.update_meta(trio.current_time(), meta)
        self._wake.set()

    def members(self) -> tuple[Member, ...]:
        """Every member we know, ourselves first."""
        return self._need_core().members()

    def member(self, name: str) -> Member | None:
        """One member, or None if unknown."""
        return self._need_core().member(name)

    async def wait_changed(self) -> None:
        """Return after the next membership event."""
        await self._changed.wait()

    def statistics(self) -> NodeStatistics:
        """Counters of the core and of the driver."""
        n = self._n
        return NodeStatistics(
            core=self._need_core().statistics(),
            packets_in=n["packets_in"],
            bytes_in=n["bytes_in"],
            bytes_out=n["bytes_out"],
            rejected_packets=n["rejected"],
            send_errors=n["send_errors"],
            push_pulls_ok=n["pp_ok"],
            push_pulls_failed=n["pp_fail"],
            push_pulls_served=n["pp_served"],
        )
