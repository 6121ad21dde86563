"""The deterministic gossip simulator: whole clusters of ``GossipCore`` driven from one seed.

Theory of operation
-------------------
Nothing here runs concurrently. One ``random.Random(seed)`` feeds derived
generators (the network, each member's core, the nemesis), and one heap of
``(time_us, sequence, kind, name, payload)`` decides what happens next; the
sequence number breaks ties, so a seed replays event for event, and no
unordered set is iterated, so ``PYTHONHASHSEED`` does not matter either.

Each member runs a ``GossipCore`` exactly as the trio driver does: after
every input the simulator takes ``ready()``, ``advance``-s it, routes the
packets, runs the push-pull exchanges and hands the events to the checker
and to any watchers; then it schedules the member's next wake-up at
``next_deadline()``. Every member reads its own clock: a random origin and a
rate off by up to 100 ppm, so nothing may compare times across members.

The network (:class:`GossipNet`) loses each UDP packet with probability
``loss`` and delays it uniformly within ``[min_delay, max_delay]``, so
packets overtake each other. Partitions are groups: a packet or a push-pull
crosses only within one group, checked when it is sent and when it arrives.
A push-pull is a TCP exchange: it is not lost, but each direction may pay a
retransmission timeout (200 ms) with probability ``loss``, and it fails when
the link or the partner is down.

Members can be crashed (their core is dropped; a restart builds a fresh core
at incarnation 0 that joins through a live seed, as a rebooted host does),
paused (a stop-the-world pause: what arrives and what falls due waits until
the pause ends, then runs in order) or degraded (a slow receive path: every
inbound packet is handled up to ``lag`` seconds late, in order, while its
timers fire on time -- the CPU-starved member Lifeguard is designed for).

``GossipChecker`` (``_gossipcheck``) checks every event as it happens; the
scenarios in ``_gossipscenarios`` script runs and measure them.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, final

from dcrond.gossip._core import GossipCore
from dcrond.gossip._types import (
    Address,
    GossipConfig,
    MemberEvent,
    MemberState,
    NodeMeta,
    Ready,
    StateEntry,
)
from dcrond.testing._gossipcheck import GossipChecker, GossipViolation

__all__ = ["GossipNet", "GossipSim", "GossipSimFailure", "SimMember", "Watcher"]

_WAKE: Final = 0
_PACKET: Final = 1
_PP_REQUEST: Final = 2
_PP_REPLY: Final = 3
_CALL: Final = 4

_RTO_US: Final = 200_000
_PORT: Final = 7946

Watcher = Callable[[str, MemberEvent, int], None]
"""Called with (observer, event, simulated µs) for every membership event."""


class GossipSimFailure(AssertionError):
    """A checked property broke, or the cluster did not converge; the message replays it."""


@final
class GossipNet:
    """Loss, delay and partitions for UDP packets and TCP push-pulls."""

    __slots__ = ("_group", "_rng", "loss", "max_delay_us", "min_delay_us")

    def __init__(
        self, rng: random.Random, *, loss: float = 0.0, min_delay_us: int = 200,
        max_delay_us: int = 5_000,
    ) -> None:  # fmt: skip
        self._rng = rng
        self.loss = loss
        self.min_delay_us = min_delay_us
        self.max_delay_us = max_delay_us
        self._group: dict[str, int] = {}

    def delay(self) -> int:
        """One packet's delay in µs."""
        return self.min_delay_us + int(self._rng.random() * (self.max_delay_us - self.min_delay_us))

    def udp(self, frm: str, to: str) -> int | None:
        """Delay of one datagram from ``frm`` to ``to``, or None if it is lost."""
        if not self.link_up(frm, to) or (self.loss and self._rng.random() < self.loss):
            return None
        return self.delay()

    def tcp(self, frm: str, to: str) -> int | None:
        """Delay of one direction of a TCP exchange, or None if the link is cut."""
        if not self.link_up(frm, to):
            return None
        d = self.delay()
        while self.loss and self._rng.random() < self.loss:
            d += _RTO_US
        return d

    def link_up(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` are on the same side of every partition."""
        return self._group.get(a, 0) == self._group.get(b, 0)

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Split the members into groups that only reach their own group (others: group 0)."""
        self._group = {name: i + 1 for i, g in enumerate(groups) for name in g}

    def heal(self) -> None:
        """Join every partition again."""
        self._group = {}

    def partitioned(self) -> bool:
        """True while some partition is in force."""
        return bool(self._group)


@final
@dataclass(slots=True)
class SimMember:
    """One simulated host: its core (while up) and what the faults did to it."""

    name: str
    address: Address
    rng: random.Random
    clock_origin: float
    clock_rate: float
    core: GossipCore | None = None
    life: int = 0  #: bumped by every (re)start; events of an older life are dropped
    wake_at: int = -1
    paused_until: int = 0
    lag_us: int = 0  #: degraded: inbound packets handled up to this late
    last_inbound_us: int = 0
    left: bool = False  #: stopped after a graceful leave
    crashed: bool = False
    meta_version: int = 0
    deferred: list[tuple[int, Any]] = field(default_factory=list)

    @property
    def up(self) -> bool:
        """Running (possibly paused or degraded)."""
        return self.core is not None

    def local(self, t_us: int) -> float:
        """This member's clock reading at simulated time ``t_us``."""
        return self.clock_origin + t_us * self.clock_rate / 1e6


@final
class GossipSim:
    """A simulated cluster stepped from one event queue (see the module docstring)."""

    def __init__(
        self,
        seed: int,
        config: GossipConfig,
        *,
        loss: float = 0.0,
        min_delay_us: int = 200,
        max_delay_us: int = 5_000,
        replay: str = "",
        trace_events: int = 60,
        record_trace: bool = False,
    ) -> None:
        self.seed = seed
        self.config = config
        self.rng = random.Random(seed)
        self.net = GossipNet(
            random.Random(self.rng.getrandbits(64)),
            loss=loss,
            min_delay_us=min_delay_us,
            max_delay_us=max_delay_us,
        )
        self._member_rng = random.Random(self.rng.getrandbits(64))
        self.now = 0
        self.events = 0
        self._queue: list[tuple[int, int, int, str, Any]] = []
        self._seq = 0
        self.members: dict[str, SimMember] = {}
        self._by_addr: dict[Address, str] = {}
        self.checker = GossipChecker()
        self.watchers: list[Watcher] = []
        self.replay = replay
        self.trace: deque[tuple[int, str, object]] = deque(maxlen=trace_events)
        self._digest = hashlib.sha256() if record_trace else None
        self.packets = 0
        self.packet_bytes = 0

    # --- members ------------------------------------------------------------------

    def meta_of(self, m: SimMember) -> NodeMeta:
        """The metadata a member announces (changes with ``update_meta``)."""
        return NodeMeta(
            api_port=8080,
            raft_port=7947,
            tags=(("zone", f"z{len(m.name) % 3}"),),
            free_slots=4 + m.meta_version % 3,
            version="0.1.0",
            raft_role="",
        )

    def _new_member(self, name: str) -> SimMember:
        i = len(self.members) + 1
        addr = (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", _PORT)
        r = self._member_rng
        m = SimMember(
            name,
            addr,
            random.Random(r.getrandbits(64)),
            clock_origin=r.random() * 1e5,
            clock_rate=1.0 + (r.random() - 0.5) * 2e-4,
        )
        self.members[name] = m
        self._by_addr[addr] = name
        return m

    def start_converged(self, names: Sequence[str]) -> None:
        """Start ``names`` as a cluster that has converged: each knows all as alive."""
        new = [self.members.get(n) or self._new_member(n) for n in names]
        entries = [
            StateEntry(m.name, m.address, self.meta_of(m), 0, MemberState.ALIVE) for m in new
        ]
        for m in new:
            self.start(m.name, known=entries)

    def start(
        self, name: str, *, seeds: Sequence[str] = (), known: Sequence[StateEntry] = ()
    ) -> SimMember:
        """Start (or restart) ``name``; it joins through ``seeds`` and starts knowing ``known``."""
        m = self.members.get(name) or self._new_member(name)
        if m.up:
            raise ValueError(f"{name} is already running")
        entries = [e for e in known if e.name != name]
        m.life += 1
        m.wake_at = -1  # the last life's wake-up is void
        m.left = m.crashed = False
        m.paused_until = 0
        m.lag_us = 0
        m.deferred.clear()
        core = GossipCore(
            name,
            m.address,
            self.meta_of(m),
            self.config,
            random.Random(m.rng.getrandbits(64)),
            now=m.local(self.now),
            known=entries,
        )
        m.core = core
        self.checker.started(name, m.life, entries)
        self._trace(f"{name} start life={m.life} seeds={list(seeds)}")
        if seeds:
            core.join([self.members[s].address for s in seeds])
        self._after(m)
        return m

    def crash(self, name: str) -> None:
        """Stop ``name`` at once, without a word to anyone."""
        m = self.members[name]
        m.core = None
        m.crashed = True
        m.deferred.clear()
        self._trace(f"{name} crash")

    def leave(self, name: str, linger_s: float = 3.0) -> None:
        """Start a graceful leave; the member stops once it is sent (at most ``linger_s``)."""
        m = self.members[name]
        assert m.core is not None
        m.core.leave(m.local(self.now))
        self.checker.leaving(name)
        self._trace(f"{name} leave")
        self._after(m)
        deadline = self.now + int(linger_s * 1e6)
        self.call_at(self.now + 50_000, lambda: self._finish_leave(name, m.life, deadline))

    def _finish_leave(self, name: str, life: int, deadline: int) -> None:
        m = self.members[name]
        if m.core is None or m.life != life:
            return
        if m.core.leave_sent() or self.now >= deadline:
            m.core = None
            m.left = True
            self._trace(f"{name} stopped after leaving")
        else:
            self.call_at(self.now + 50_000, lambda: self._finish_leave(name, life, deadline))

    def update_meta(self, name: str) -> None:
        """Change one member's metadata (free slots), which must reach everyone."""
        m = self.members[name]
        assert m.core is not None
        m.meta_version += 1
        m.core.update_meta(m.local(self.now), self.meta_of(m))
        self._after(m)

    def pause(self, name: str, seconds: float) -> None:
        """Freeze ``name`` for ``seconds``: input and timers wait, then run in order."""
        m = self.members[name]
        m.paused_until = max(m.paused_until, self.now + int(seconds * 1e6))
        self._trace(f"{name} pause {seconds:.2f}s")

    def degrade(self, name: str, lag_s: float) -> None:
        """Make ``name``'s receive path slow: inbound packets up to ``lag_s`` late (0 heals)."""
        self.members[name].lag_us = int(lag_s * 1e6)
        self._trace(f"{name} degrade lag={lag_s:.2f}s")

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Cut the network into ``groups`` (everyone else forms one more group)."""
        self.net.partition(groups)
        self._trace(f"partition {[list(g) for g in groups]}")

    def heal(self) -> None:
        """Join every partition again."""
        if self.net.partitioned():
            self._trace("heal")
        self.net.heal()

    def running(self) -> list[SimMember]:
        """Members that are up, in start order."""
        return [m for m in self.members.values() if m.core is not None]

    def healthy(self, name: str) -> bool:
        """Up, not paused and not degraded: nobody should declare it failed."""
        m = self.members[name]
        return m.core is not None and m.lag_us == 0 and m.paused_until <= self.now

    # --- the event loop --------------------------------------------------------------

    def call_at(self, t_us: int, fn: Callable[[], object]) -> None:
        """Run ``fn`` at simulated time ``t_us`` (scripted actions, the nemesis)."""
        self._push(t_us, _CALL, "", fn)

    def _push(self, t: int, kind: int, name: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, kind, name, payload))

    def run_until(self, t_us: int, stop: Callable[[], bool] | None = None) -> bool:
        """Process events up to ``t_us`` (or until ``stop()`` holds); True if stopped early."""
        q = self._queue
        while q and q[0][0] <= t_us:
            t, _, kind, name, payload = heapq.heappop(q)
            self.now = t
            self.events += 1
            try:
                if kind == _CALL:
                    payload()
                else:
                    self._dispatch(kind, name, payload)
            except GossipViolation as exc:
                raise self.fail(str(exc)) from exc
            if stop is not None and stop():
                return True
        self.now = max(self.now, t_us)
        return False

    def _dispatch(self, kind: int, name: str, payload: Any) -> None:
        m = self.members[name]
        if m.core is None:
            return
        if kind == _WAKE:
            if payload != (m.life, self.now) or m.wake_at != self.now:
                return  # superseded by an earlier wake-up, or from an earlier life
        elif payload[0] != m.life:
            return
        if m.paused_until > self.now:
            m.deferred.append((kind, payload))
            if len(m.deferred) == 1:
                life = m.life
                self.call_at(m.paused_until, lambda: self._resume(m, life))
            return
        self._handle(m, kind, payload)

    def _resume(self, m: SimMember, life: int) -> None:
        if m.life != life or m.core is None:
            return
        if m.paused_until > self.now:
            self.call_at(m.paused_until, lambda: self._resume(m, life))
            return
        work, m.deferred = m.deferred, []
        self._trace(f"{m.name} resumes with {len(work)} waiting")
        for kind, payload in work:
            if m.core is None or m.life != life:
                return
            if kind == _WAKE:
                m.wake_at = self.now
            self._handle(m, kind, payload)

    def _handle(self, m: SimMember, kind: int, payload: Any) -> None:
        core = m.core
        assert core is not None
        local = m.local(self.now)
        if kind == _WAKE:
            m.wake_at = -1
            core.tick(local)
        elif kind == _PACKET:
            _, frm, msgs = payload
            core.receive(local, frm, msgs)
        elif kind == _PP_REQUEST:
            _, frm_name, frm_life, entries, join = payload
            # Merge first: the reply then carries any refutation this exchange caused.
            core.merge_state(local, entries, join=join)
            reply = core.push_pull_state()
            d = self.net.tcp(m.name, frm_name)
            if d is not None:
                self._push(self.now + d, _PP_REPLY, frm_name, (frm_life, reply, join))
        elif kind == _PP_REPLY:
            _, entries, join = payload
            core.merge_state(local, entries, join=join)
        self._after(m)

    def _after(self, m: SimMember) -> None:
        """Carry out the member's Ready and schedule its next wake-up."""
        core = m.core
        assert core is not None
        rd: Ready = core.ready()
        core.advance(rd)
        name = m.name
        for p in rd.packets:
            self.packets += 1
            to = self._by_addr.get(p.to)
            if to is None:
                continue
            d = self.net.udp(name, to)
            if d is None:
                continue
            target = self.members[to]
            at = self.now + d
            if target.lag_us:
                at = max(at + int(target.rng.random() * target.lag_us), target.last_inbound_us)
                target.last_inbound_us = at
            self._push(at, _PACKET, to, (target.life, m.address, p.messages))
        for pp in rd.push_pulls:
            to = self._by_addr.get(pp.to)
            d = None if to is None else self.net.tcp(name, to)
            if to is not None and d is not None:
                state = core.push_pull_state()
                self._push(self.now + d, _PP_REQUEST, to,
                           (self.members[to].life, name, m.life, state, pp.join))  # fmt: skip
        digest = self._digest
        for ev in rd.events:
            self.trace.append((self.now, name, ev))
            if digest is not None:
                mem = ev.member
                digest.update(
                    f"{self.now} {name} {ev.kind} {mem.name} {mem.incarnation}\n".encode()
                )
            self.checker.event(name, m.life, ev, self.now)
            for w in self.watchers:
                w(name, ev, self.now)
        self.checker.own_incarnation(name, m.life, core.incarnation)
        deadline = core.next_deadline()
        if deadline == math.inf:
            return
        # The first µs at which this member's clock reads at least ``deadline``.
        t = math.ceil((deadline - m.clock_origin) * 1e6 / m.clock_rate) + 1
        t = max(t, self.now + 1)
        if m.wake_at == -1 or t < m.wake_at or m.wake_at < self.now:
            m.wake_at = t
            self._push(t, _WAKE, name, (m.life, t))

    # --- views and reports ----------------------------------------------------------

    def view(self, observer: str, subject: str) -> MemberState | None:
        """What ``observer`` believes about ``subject`` (None: unknown or observer down)."""
        core = self.members[observer].core
        if core is None:
            return None
        rec = core.member(subject)
        return None if rec is None else rec.state

    def _trace(self, line: str) -> None:
        self.trace.append((self.now, "", line))
        if self._digest is not None:
            self._digest.update(f"{self.now} {line}\n".encode())

    def trace_hash(self) -> str | None:
        """Digest of every fault and membership event so far (with ``record_trace``)."""
        return None if self._digest is None else self._digest.hexdigest()

    def trace_lines(self) -> list[str]:
        """The recent history, one line per fault or membership event."""
        out = []
        for t, observer, what in self.trace:
            line = str(what)
            if isinstance(what, MemberEvent):
                m = what.member
                line = f"{observer} sees {what.kind.name} {m.name}@{m.incarnation}"
            out.append(f"{t / 1e6:12.6f}s  {line}")
        return out

    def disagreement(self, *, strict_left: bool = False) -> str | None:
        """The first way in which the running members' views differ from the truth, or None.

        The truth: every running member is alive at its own incarnation and
        metadata; a crashed one is dead, left or unknown; one that left is
        left (or, unless ``strict_left``, dead or unknown).
        """
        running = self.running()
        for o in running:
            core = o.core
            assert core is not None
            for s in self.members.values():
                if s is o:
                    continue
                rec = core.member(s.name)
                seen = "unknown" if rec is None else f"{rec.state.name}@{rec.incarnation}"
                if s.core is not None:
                    me = s.core.myself()
                    if me.state == MemberState.LEFT:
                        continue  # still sending its leave
                    if (
                        rec is None
                        or rec.state != MemberState.ALIVE
                        or (rec.incarnation != me.incarnation or rec.meta != me.meta)
                    ):
                        return f"{o.name} sees {s.name} as {seen}, but it is alive@{me.incarnation}"
                elif s.left and strict_left:
                    if rec is None or rec.state != MemberState.LEFT:
                        return f"{o.name} sees {s.name} as {seen}, but it left"
                elif rec is not None and rec.state in (MemberState.ALIVE, MemberState.SUSPECT):
                    why = "left" if s.left else "crashed"
                    return f"{o.name} sees {s.name} as {seen}, but it {why}"
        return None

    def fail(self, what: str) -> GossipSimFailure:
        """The failure to raise: what broke, the seed, the replay command, recent history."""
        lines = [
            f"gossip simulation failed: {what}",
            f"  seed {self.seed}, {len(self.members)} members, at t={self.now / 1e6:.3f}s "
            f"after {self.events} events",
        ]
        if self.replay:
            lines.append(f"  replay: {self.replay.format(seed=self.seed)}")
        lines.append(
            f"  network: loss={self.net.loss} partitioned={self.net.partitioned()}; "
            f"config: {self.config}"
        )
        lines.append("  last events:")
        lines.extend(f"    {line}" for line in self.trace_lines())
        return GossipSimFailure("\n".join(lines))
