"""The engine simulator's network: Raft messages and RPC calls between simulated hosts.

Theory of operation
-------------------
One ``EngineNet`` carries everything hosts say to each other inside one trio
run under ``MockClock``: Raft messages (``SimTransport``, the driver's
``Transport`` seam) and RPC calls (``call``: what ``Forwarder`` and the
engine's peer calls do over TCP in a real cluster). Nothing is sent through a
socket; a message becomes an entry of one delivery heap ordered by
``(arrival time, sender, receiver, per-link number)``, and a single
delivery task hands each one over at its instant. So the order of deliveries
depends only on the seed, never on trio's task order or on the order in
which a core iterates a set of peers: each directed link draws its delays
from its own generator seeded by ``(seed, sender, receiver)``.

The nemesis changes the links: ``cut(a, b)`` (one way), ``heal``,
``quality`` (delay, loss, spikes and -- for Raft messages only --
duplication), and ``stall(host, until)``: everything to and from the host
is held, not lost, and arrives in a burst when the stall ends.

RPC is modelled on TCP: a request or answer is never duplicated; one lost
to random loss ends the call at once with ``Unavailable`` (a reset
connection); one swallowed by a partition leaves the caller waiting until
its timeout; a call to a host whose daemon is down is refused
(``Unavailable``) after one round trip. Errors raised by the handler come
back as the same ``DcronError`` class.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, final

import trio

from dcrond.errors import DcronError, NotLeader, Unavailable
from dcrond.raft._types import Message, NodeId

#: an RPC handler of one host: method name -> async function of the params
Handlers = Mapping[str, Callable[[dict[str, Any]], Awaitable[Any]]]


@final
@dataclass(frozen=True, slots=True)
class LinkQuality:
    """How the links behave now (delays in seconds, probabilities per message)."""

    min_delay: float = 0.0002
    max_delay: float = 0.003
    drop: float = 0.0
    duplicate: float = 0.0  #: Raft messages only (RPC runs over "TCP")
    spike: float = 0.0  #: chance that a message is held back up to ``spike_max``
    spike_max: float = 0.2

    def describe(self) -> str:
        """One line for reports."""
        return (
            f"delay {self.min_delay * 1000:g}-{self.max_delay * 1000:g} ms, drop {self.drop:.0%}, "
            f"dup {self.duplicate:.0%}, spike {self.spike:.0%} up to {self.spike_max:g} s"
        )


CALM = LinkQuality()


@dataclass(slots=True)
class _Endpoint:
    """Where a host's daemon receives, while it is up."""

    raft: trio.MemorySendChannel[Message] | None = None
    handlers: Handlers | None = None
    nursery: trio.Nursery | None = None


@dataclass(slots=True)
class _Call:
    done: trio.Event
    result: Any = None
    error: BaseException | None = None


@final
class EngineNet:
    """The simulated network of one engine simulation (see the module doc)."""

    def __init__(self, seed: int, hosts: list[str]) -> None:
        self.hosts = list(hosts)
        self.quality = CALM
        self._seed = seed
        self._link_rng: dict[tuple[str, str], random.Random] = {}
        self._link_seq: dict[tuple[str, str], itertools.count[int]] = {}
        self._cut: Counter[tuple[str, str]] = Counter()
        self._stalled: dict[str, float] = {}
        self._heap: list[tuple[float, str, str, int, str, Any]] = []
        self._wake = trio.Event()
        self._endpoints: dict[str, _Endpoint] = {h: _Endpoint() for h in hosts}
        self._calls: dict[int, _Call] = {}
        self._call_ids = itertools.count(1)
        self.sent = 0
        self.delivered = 0
        self.dropped = 0

    # --- the nemesis's handles ------------------------------------------------------------

    def cut(self, frm: str, to: str) -> None:
        """Messages from ``frm`` to ``to`` are lost until ``uncut`` (cuts nest) or ``heal``."""
        self._cut[(frm, to)] += 1

    def uncut(self, frm: str, to: str) -> None:
        """Undo one ``cut`` of that link (nothing if ``heal`` came first)."""
        if self._cut[(frm, to)] > 1:
            self._cut[(frm, to)] -= 1
        else:
            self._cut.pop((frm, to), None)

    def heal(self) -> None:
        """Every link up again, calm quality, no stall."""
        self._cut.clear()
        self.quality = CALM
        self._stalled.clear()

    def stall(self, host: str, until: float) -> None:
        """Hold everything to and from ``host`` until trio time ``until``."""
        self._stalled[host] = max(until, self._stalled.get(host, 0.0))

    def link_up(self, frm: str, to: str) -> bool:
        """Whether a message from ``frm`` reaches ``to`` now."""
        return self._cut[(frm, to)] <= 0

    def describe(self) -> str:
        """The current cuts and quality, for reports."""
        cuts = ",".join(f"{a}->{b}" for a, b in sorted(k for k, n in self._cut.items() if n > 0))
        cuts = cuts or "none"
        return f"cuts {cuts}; {self.quality.describe()}"

    # --- endpoints (a daemon's life) ---------------------------------------------------------

    def attach(
        self,
        host: str,
        raft: trio.MemorySendChannel[Message],
        handlers: Handlers,
        nursery: trio.Nursery,
    ) -> None:
        """The daemon of ``host`` is up: deliver to it."""
        self._endpoints[host] = _Endpoint(raft, handlers, nursery)

    def detach(self, host: str) -> None:
        """The daemon of ``host`` is down: Raft messages to it are lost, calls refused."""
        self._endpoints[host] = _Endpoint()

    # --- sending ----------------------------------------------------------------------------

    def _delays(self, frm: str, to: str, *, dup_ok: bool) -> list[float] | None:
        """Delays of the copies of one message (None: lost to random loss)."""
        key = (frm, to)
        rng = self._link_rng.get(key)
        if rng is None:
            rng = self._link_rng[key] = random.Random(f"{self._seed}/{frm}/{to}")
            self._link_seq[key] = itertools.count()
        q = self.quality
        if q.drop and rng.random() < q.drop:
            return None
        copies = 2 if dup_ok and q.duplicate and rng.random() < q.duplicate else 1
        out = []
        for _ in range(copies):
            d = rng.uniform(q.min_delay, q.max_delay)
            if q.spike and rng.random() < q.spike:
                d += rng.uniform(0, q.spike_max)
            out.append(d)
        return out

    def _push(self, frm: str, to: str, delay: float, kind: str, payload: Any) -> None:
        now = trio.current_time()
        at = now + delay
        for h in (frm, to):
            held = self._stalled.get(h)
            if held is not None and held > at:
                at = held + delay
        seq = next(self._link_seq[(frm, to)])
        heapq.heappush(self._heap, (at, frm, to, seq, kind, payload))
        self.sent += 1
        self._wake.set()

    def send_raft(self, msg: Message) -> None:
        """Put one Raft message on the wire (lost, delayed or duplicated per the links)."""
        frm, to = str(msg.frm), str(msg.to)
        if to not in self._endpoints:
            self.dropped += 1
            return
        delays = self._delays(frm, to, dup_ok=True)
        if delays is None:
            self.dropped += 1
            return
        for d in delays:
            self._push(frm, to, d, "raft", msg)

    async def call(
        self, frm: str, to: str, method: str, params: dict[str, Any], *, timeout: float
    ) -> Any:
        """Call ``method`` on ``to``'s daemon; its answer, or the error it raised.

        Unavailable when the connection fails, the daemon is down, or no
        answer came within ``timeout`` seconds.
        """
        if to not in self._endpoints:
            raise Unavailable(f"no host named {to}")
        cid = next(self._call_ids)
        pending = self._calls[cid] = _Call(trio.Event())
        try:
            delays = self._delays(frm, to, dup_ok=False)
            if delays is None:
                self._reset(cid, f"connection to {to} reset")
            else:
                self._push(frm, to, delays[0], "request", (cid, method, params))
            with trio.move_on_after(timeout):
                await pending.done.wait()
            if not pending.done.is_set():
                raise Unavailable(f"{to} did not answer {method} within {timeout:g}s")
            if pending.error is not None:
                raise pending.error
            return pending.result
        finally:
            self._calls.pop(cid, None)

    def _reset(self, cid: int, why: str) -> None:
        pending = self._calls.get(cid)
        if pending is not None and not pending.done.is_set():
            pending.error = Unavailable(why)
            pending.done.set()

    # --- delivering -------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver every message at its instant, forever (start it in the run's nursery)."""
        while True:
            if not self._heap:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            at = self._heap[0][0]
            if at > trio.current_time():
                self._wake = trio.Event()
                with trio.move_on_at(at):
                    await self._wake.wait()
                continue
            _at, frm, to, _seq, kind, payload = heapq.heappop(self._heap)
            self._deliver(frm, to, kind, payload)

    def _deliver(self, frm: str, to: str, kind: str, payload: Any) -> None:
        if not self.link_up(frm, to):
            self.dropped += 1
            return
        self.delivered += 1
        ep = self._endpoints[to]
        if kind == "raft":
            if ep.raft is not None:
                try:
                    ep.raft.send_nowait(payload)
                except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
                    self.dropped += 1
            return
        if kind == "request":
            cid, method, params = payload
            if ep.handlers is None or ep.nursery is None:
                self._answer(to, frm, cid, None, Unavailable(f"connection to {to} refused"))
                return
            handler = ep.handlers.get(method)
            if handler is None:
                self._answer(to, frm, cid, None, Unavailable(f"{to} has no method {method}"))
                return
            ep.nursery.start_soon(self._serve, to, frm, cid, handler, params)
            return
        cid, result, error = payload  # an answer
        pending = self._calls.get(cid)
        if pending is not None and not pending.done.is_set():
            pending.result, pending.error = result, error
            pending.done.set()

    async def _serve(
        self,
        host: str,
        caller: str,
        cid: int,
        handler: Callable[[dict[str, Any]], Awaitable[Any]],
        params: dict[str, Any],
    ) -> None:
        try:
            result = await handler(dict(params))
        except DcronError as exc:
            self._answer(host, caller, cid, None, _copy_error(exc))
            return
        self._answer(host, caller, cid, result, None)

    def _answer(
        self, frm: str, to: str, cid: int, result: Any, error: BaseException | None
    ) -> None:
        delays = self._delays(frm, to, dup_ok=False)
        if delays is None:
            self._push(frm, to, 0.0, "answer", (cid, None, Unavailable("connection reset")))
            return
        self._push(frm, to, delays[0], "answer", (cid, result, error))


def _copy_error(exc: DcronError) -> DcronError:
    """The error as the caller's RPC client would raise it (same class and message)."""
    if isinstance(exc, NotLeader):
        return NotLeader(str(exc), exc.leader)
    try:
        return type(exc)(str(exc))
    except TypeError:
        return Unavailable(str(exc))


@final
class SimTransport:
    """The Raft driver's ``Transport`` over an ``EngineNet`` (one per daemon life)."""

    def __init__(self, net: EngineNet, host: str) -> None:
        self._net = net
        self._host = host
        self._send, self._receive = trio.open_memory_channel[Message](math.inf)

    @property
    def receive_channel(self) -> trio.MemoryReceiveChannel[Message]:
        """Where delivered messages arrive."""
        return self._receive

    @property
    def inbox(self) -> trio.MemorySendChannel[Message]:
        """What the network delivers into."""
        return self._send

    async def serve(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing to listen on: ready at once, until cancelled."""
        task_status.started()
        await trio.sleep_forever()

    def send_nowait(self, msg: Message) -> None:
        """Hand ``msg`` to the simulated network."""
        self._net.send_raft(msg)

    def update_peers(self, peers: Mapping[NodeId, tuple[str, int]]) -> None:
        """Peers are fixed in the simulation: nothing to do."""
