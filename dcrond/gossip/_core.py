"""The pure SWIM + Lifeguard membership state machine.

Theory of operation
-------------------
``GossipCore`` is synchronous and does no I/O. The driver passes the time
into every call (``now``, seconds on any monotonic clock), an injected
``Rng`` makes every random choice, and everything the core wants done comes
out of ``ready()`` as one ``Ready``: UDP packets to send, TCP push-pull
exchanges to start, membership events. The driver calls ``tick(now)`` when
``next_deadline()`` is reached and ``receive(now, frm, messages)`` for every
packet; nothing else drives it.

**Failure detection** (SWIM). Every probe period the core pings the next
member of a shuffled round-robin order (reshuffled after each pass; new
members are inserted at a random place). No ack within ``probe_timeout``:
it asks ``indirect_checks`` random members to ping the target for it
(IndirectPing) and forwards their acks. No ack by the end of the period: the
target becomes *suspect*. A suspicion is gossiped; the suspected member, on
hearing it, *refutes* by gossiping Alive with a higher incarnation. A
suspicion that nobody refuted before its timeout makes the member *dead*.

**Lifeguard** (see ``_health``): the probe period and the wait are scaled by
the local health multiplier; helpers answer with a Nack when the target
stays silent, which tells a prober its own network is fine; the suspicion
timeout shrinks as independent members confirm it; and a ping to a suspected
member carries the suspicion, so it can refute at once (the buddy system).

**Dissemination.** Every Alive, Suspect and Dead the core accepts goes into
the ``BroadcastQueue`` and is piggybacked on every packet the core sends, up
to ``retransmit_mult * ceil(log10(n + 1))`` times. Every ``gossip_interval``
the core sends the queued updates to ``gossip_nodes`` random members (live
ones, and members dead for less than ``gossip_to_dead``, so a member wrongly
declared dead hears it and refutes).

**Anti-entropy.** Every ``push_pull_interval`` (scaled up beyond 32 members,
as memberlist does) the core asks for a full state exchange with one random
live member, and every ``reconnect_interval`` with one random *dead* member
(Serf's reconnect): that is what re-merges the two sides of a healed
partition, who by then believe each other dead. A join is a push-pull with
a seed. A member that believes a pinger dead tells it so in the ack.

**Precedence.** For a member other than ourselves, an update is accepted
when it is newer: Alive needs a higher incarnation than we hold (or an
unknown member); Suspect needs at least our incarnation and an alive
member; Dead at least our incarnation and a member not already dead or left
(a leave may still upgrade a dead member to left). A member that moved
address is accepted only once it is dead or gone and comes back with a
higher incarnation. Incarnations a core holds therefore never decrease.
About ourselves: a Suspect or Dead at our incarnation or above is refuted
with ``incarnation + 1`` (and lowers our health); an older one is answered by
re-gossiping our current Alive. Push-pull entries merge through the same
rules, with a remote "dead" or "suspect" taken as a suspicion (memberlist's
choice: the member gets its chance to refute).

**Leaving.** ``leave`` gossips Dead about ourselves, sent straight to a few
members as well; from then on the core neither probes nor refutes.

Nothing a peer sends can make the core raise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final, Protocol, final

from dcrond.gossip._broadcast import BroadcastQueue
from dcrond.gossip._codec import (
    MAX_MESSAGE_BYTES,
    PACKET_OVERHEAD,
    check_identity,
    message_size,
)
from dcrond.gossip._health import Awareness, Suspicion, suspicion_bounds
from dcrond.gossip._types import (
    Ack,
    Address,
    Alive,
    Dead,
    EventKind,
    GossipConfig,
    GossipStatistics,
    IndirectPing,
    Member,
    MemberEvent,
    MemberState,
    Message,
    Nack,
    NodeMeta,
    Packet,
    Ping,
    PushPull,
    Ready,
    StateEntry,
    Suspect,
    Update,
)

__all__ = ["GossipCore", "Rng"]

_ALIVE: Final = MemberState.ALIVE
_SUSPECT: Final = MemberState.SUSPECT
_DEAD: Final = MemberState.DEAD
_LEFT: Final = MemberState.LEFT
_INF: Final = math.inf
_PUSH_PULL_SCALE_THRESHOLD: Final = 32
_MIN_UPDATE_BYTES: Final = 12  #: no update encodes smaller; stop filling a packet below this


class Rng(Protocol):
    """Injected randomness; ``random.Random`` satisfies it."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...

    def randrange(self, start: int, stop: int) -> int:
        """An integer in [start, stop)."""
        ...


@final
class _Member:
    __slots__ = ("address", "incarnation", "last_seen", "meta", "name", "since", "state")

    def __init__(
        self, name: str, address: Address, meta: NodeMeta, incarnation: int, now: float
    ) -> None:
        self.name = name
        self.address = address
        self.meta = meta
        self.incarnation = incarnation
        self.state = _ALIVE
        self.since = now
        self.last_seen: float | None = None

    def snapshot(self) -> Member:
        return Member(
            self.name,
            self.address,
            self.meta,
            self.incarnation,
            self.state,
            self.since,
            self.last_seen,
        )


@final
class _Probe:
    __slots__ = (
        "acked",
        "end",
        "expected_nacks",
        "indirect_at",
        "indirect_sent",
        "nacks",
        "seq",
        "target",
    )

    def __init__(self, target: str, seq: int, indirect_at: float, end: float) -> None:
        self.target = target
        self.seq = seq
        self.indirect_at = indirect_at
        self.end = end
        self.acked = False
        self.indirect_sent = False
        self.expected_nacks = 0
        self.nacks = 0


@final
class _Relay:
    __slots__ = ("expires", "nack", "requester", "seq")

    def __init__(self, requester: Address, seq: int, nack: bool, expires: float) -> None:
        self.requester = requester
        self.seq = seq
        self.nack = nack
        self.expires = expires


@final
class GossipCore:
    """One member's view of the cluster (see the module docstring)."""

    def __init__(
        self,
        name: str,
        address: Address,
        meta: NodeMeta,
        config: GossipConfig,
        rng: Rng,
        *,
        now: float,
        known: Iterable[StateEntry] = (),
    ) -> None:
        """Start as a lone alive member at incarnation 0.

        ``known`` seeds the view without gossiping it (a member list saved
        before a restart, or a simulation's already-converged cluster).
        Raises InvalidRequest if the name, address or meta cannot be gossiped.
        """
        check_identity(name, address, meta)
        if config.packet_bytes < PACKET_OVERHEAD + MAX_MESSAGE_BYTES:
            raise ValueError(f"packet_bytes must be at least {PACKET_OVERHEAD + MAX_MESSAGE_BYTES}")
        if config.probe_interval <= 0 or config.probe_timeout <= 0 or config.gossip_interval <= 0:
            raise ValueError("intervals and timeouts must be positive")
        if config.probe_timeout >= config.probe_interval:
            raise ValueError("probe_timeout must be shorter than probe_interval")
        self._name = name
        self._address = address
        self._meta = meta
        self._cfg = config
        self._rng = rng
        self._now = now
        self._incarnation = 0
        self._leaving = False
        self._members: dict[str, _Member] = {}
        self._names: list[str] = []  #: every other member, for random picks
        self._order: list[str] = []  #: probe order
        self._order_pos = 0
        self._counts = dict.fromkeys(MemberState, 0)
        self._counts[_ALIVE] = 1  # ourselves
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._bcast = BroadcastQueue()
        self._health = Awareness(config.awareness_max)
        self._seq = 0
        self._packets: list[Packet] = []
        self._push_pulls: list[PushPull] = []
        self._seeds: list[Address] = []
        self._events: list[MemberEvent] = []
        # Stagger the periodic work so that members started together do not beat in step.
        self._next_probe = now + rng.random() * config.probe_interval
        self._next_gossip = now + rng.random() * config.gossip_interval
        self._next_push_pull = now + rng.random() * config.push_pull_interval
        self._next_reconnect = now + rng.random() * config.reconnect_interval
        self._stats = dict.fromkeys(
            (
                "probes",
                "probes_failed",
                "suspicions",
                "refutations",
                "nacks_missed",
                "packets_out",
                "push_pulls",
            ),
            0,
        )
        for e in known:
            if e.name != name and e.name not in self._members:
                m = self._add(e.name, e.address, e.meta, e.incarnation)
                if e.state != _ALIVE:
                    self._set_state(m, e.state)

    # --- read-only views ----------------------------------------------------

    @property
    def name(self) -> str:
        """This member's name."""
        return self._name

    @property
    def incarnation(self) -> int:
        """This member's own incarnation."""
        return self._incarnation

    @property
    def health(self) -> int:
        """Lifeguard's local health score (0 is healthy)."""
        return self._health.score

    @property
    def leaving(self) -> bool:
        """True once ``leave`` was called."""
        return self._leaving

    def leave_sent(self) -> bool:
        """True once our leave has been sent as many times as any update is."""
        return self._leaving and self._bcast.queued(self._name) is None

    def myself(self) -> Member:
        """This member as the others should see it."""
        state = _LEFT if self._leaving else _ALIVE
        return Member(
            self._name, self._address, self._meta, self._incarnation, state, self._now, self._now
        )

    def member(self, name: str) -> Member | None:
        """One member's record (ourselves included), or None if unknown."""
        if name == self._name:
            return self.myself()
        m = self._members.get(name)
        return None if m is None else m.snapshot()

    def members(self) -> tuple[Member, ...]:
        """Every member known, ourselves first, then by name."""
        others = sorted(self._members)
        return (self.myself(), *(self._members[n].snapshot() for n in others))

    def suspicion_deadline(self, name: str) -> float | None:
        """When a suspect member will be declared dead unless it refutes (None: not suspect)."""
        s = self._suspicions.get(name)
        return None if s is None else s.deadline

    def estimated_size(self) -> int:
        """Members believed alive or suspect, ourselves included."""
        return self._counts[_ALIVE] + self._counts[_SUSPECT]

    def statistics(self) -> GossipStatistics:
        """Counters since start (what /metrics shows)."""
        c = self._counts
        s = self._stats
        return GossipStatistics(
            alive=c[_ALIVE],
            suspect=c[_SUSPECT],
            dead=c[_DEAD],
            left=c[_LEFT],
            incarnation=self._incarnation,
            health=self._health.score,
            probes=s["probes"],
            probes_failed=s["probes_failed"],
            suspicions=s["suspicions"],
            refutations=s["refutations"],
            nacks_missed=s["nacks_missed"],
            packets_out=s["packets_out"],
            updates_sent=self._bcast.sent,
            push_pulls=s["push_pulls"],
        )

    # --- output -----------------------------------------------------------------

    def ready(self) -> Ready:
        """What to send, start and report now (see ``Ready``); empty when nothing."""
        return Ready(tuple(self._packets), tuple(self._push_pulls), tuple(self._events))

    def advance(self, ready: Ready) -> None:
        """Forget what ``ready`` handed out."""
        del self._packets[: len(ready.packets)]
        del self._push_pulls[: len(ready.push_pulls)]
        del self._events[: len(ready.events)]

    def next_deadline(self) -> float:
        """When ``tick`` next has work to do (on the clock the caller passes as ``now``)."""
        t = min(self._next_push_pull, self._next_reconnect)
        p = self._probe
        if p is None:
            if not self._leaving:
                t = min(t, self._next_probe)
        elif p.acked:
            t = min(t, p.end)
        else:
            t = min(t, p.end if p.indirect_sent else p.indirect_at)
        if len(self._bcast):
            t = min(t, self._next_gossip)
        for r in self._relays.values():
            t = min(t, r.expires)
        for s in self._suspicions.values():
            t = min(t, s.deadline)
        return t

    # --- inputs -------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Do whatever is due at ``now``: probes, timeouts, gossip, anti-entropy."""
        now = self._advance_clock(now)
        cfg = self._cfg
        if self._relays:
            for seq in [s for s, r in self._relays.items() if r.expires <= now]:
                r = self._relays.pop(seq)
                if r.nack:
                    self._send(r.requester, [Nack(r.seq)])
        p = self._probe
        if p is not None:
            if not p.acked and not p.indirect_sent and now >= p.indirect_at:
                self._probe_indirect(p)
            if now >= p.end:
                self._probe = None
                if not p.acked:
                    self._probe_failed(now, p)
        if self._suspicions:
            due = [n for n, s in self._suspicions.items() if s.deadline <= now]
            for name in due:
                s = self._suspicions.pop(name)
                self._on_dead(now, Dead(name, s.incarnation, self._name))
        if self._probe is None and not self._leaving and now >= self._next_probe:
            self._start_probe(now)
        if now >= self._next_gossip:
            if len(self._bcast):
                self._gossip(now)
            self._next_gossip = _next_phase(self._next_gossip, cfg.gossip_interval, now)
        if now >= self._next_push_pull:
            self._next_push_pull = now + self._push_pull_period()
            if not self._leaving:
                target = self._random_member(lambda m: m.state in (_ALIVE, _SUSPECT))
                if target is not None:
                    self._stats["push_pulls"] += 1
                    self._push_pulls.append(PushPull(target.address))
        if now >= self._next_reconnect:
            self._next_reconnect = now + cfg.reconnect_interval
            self._reap(now)
            if not self._leaving:
                target = self._random_member(lambda m: m.state == _DEAD)
                if target is not None:
                    self._stats["push_pulls"] += 1
                    self._push_pulls.append(PushPull(target.address))
                self._retry_seeds()

    def receive(self, now: float, frm: Address, messages: Sequence[Message]) -> None:
        """Handle one packet's messages, from the address the packet came from."""
        now = self._advance_clock(now)
        for msg in messages:
            match msg:
                case Ping():
                    self._on_ping(frm, msg)
                case Ack():
                    self._on_ack(now, msg.seq)
                case Alive():
                    self._on_alive(now, msg)
                case Suspect():
                    self._on_suspect(now, msg)
                case Dead():
                    self._on_dead(now, msg)
                case IndirectPing():
                    self._on_indirect(now, frm, msg)
                case Nack():
                    p = self._probe
                    if p is not None and p.seq == msg.seq and not p.acked:
                        p.nacks += 1

    def join(self, seeds: Iterable[Address]) -> None:
        """Ask for a push-pull with every seed (the driver reports back via ``merge_state``).

        Every ``reconnect_interval`` the core retries one seed that is not a
        live member it knows: a host that booted before the others joins
        once they are up, and two groups that formed while a seed was cut
        off merge once it is back.
        """
        for addr in seeds:
            if addr != self._address:
                if addr not in self._seeds:
                    self._seeds.append(addr)
                self._push_pulls.append(PushPull(addr, join=True))

    def _retry_seeds(self) -> None:
        if not self._seeds:
            return
        live = {m.address for m in self._members.values() if m.state in (_ALIVE, _SUSPECT)}
        unheard = [a for a in self._seeds if a not in live]
        if unheard:
            self._stats["push_pulls"] += 1
            seed = unheard[self._rng.randrange(0, len(unheard))]
            self._push_pulls.append(PushPull(seed, join=True))

    def push_pull_state(self) -> tuple[StateEntry, ...]:
        """What this core sends in a push-pull exchange: every member it knows."""
        return tuple(m.entry() for m in self.members())

    def merge_state(self, now: float, entries: Iterable[StateEntry], *, join: bool = False) -> None:
        """Merge a push-pull partner's full state (``join``: it is our first contact)."""
        now = self._advance_clock(now)
        del join  # both kinds merge alike; the flag is for the driver's logs
        for e in entries:
            if e.state == _ALIVE:
                self._on_alive(now, Alive(e.name, e.incarnation, e.address, e.meta))
            elif e.state == _LEFT:
                if e.name not in self._members and e.name != self._name:
                    continue
                self._on_dead(now, Dead(e.name, e.incarnation, e.name))
            else:
                self._on_suspect(now, Suspect(e.name, e.incarnation, self._name))

    def update_meta(self, now: float, meta: NodeMeta) -> None:
        """Announce new metadata (a new incarnation). InvalidRequest if it is too large."""
        now = self._advance_clock(now)
        check_identity(self._name, self._address, meta)
        if meta == self._meta or self._leaving:
            return
        self._meta = meta
        self._incarnation += 1
        self._queue(self._alive_self())

    def leave(self, now: float) -> None:
        """Announce a graceful leave; afterwards the core stops probing and refuting."""
        now = self._advance_clock(now)
        if self._leaving:
            return
        self._leaving = True
        self._probe = None
        self._suspicions.clear()
        msg = Dead(self._name, self._incarnation, self._name)
        self._queue(msg)
        for m in self._pick(self._cfg.gossip_nodes, lambda m: m.state in (_ALIVE, _SUSPECT)):
            self._send(m.address, [])

    # --- probing --------------------------------------------------------------------

    def _start_probe(self, now: float) -> None:
        period = self._health.scale(self._cfg.probe_interval)
        self._next_probe = now + period
        target = self._next_target()
        if target is None:
            return
        self._seq += 1
        self._stats["probes"] += 1
        p = _Probe(target.name, self._seq, now + self._cfg.probe_timeout, now + period)
        self._probe = p
        msgs: list[Message] = [Ping(p.seq, target.name, self._name)]
        if target.state == _SUSPECT and self._cfg.lifeguard:
            msgs.append(Suspect(target.name, target.incarnation, self._name))
        self._send(target.address, msgs)

    def _next_target(self) -> _Member | None:
        order = self._order
        for _ in range(2):
            while self._order_pos < len(order):
                m = self._members.get(order[self._order_pos])
                self._order_pos += 1
                if m is not None and m.state in (_ALIVE, _SUSPECT):
                    return m
            # One pass done: reshuffle the live members for the next one.
            order[:] = [n for n in self._names if self._members[n].state in (_ALIVE, _SUSPECT)]
            self._shuffle(order)
            self._order_pos = 0
        return None

    def _probe_indirect(self, p: _Probe) -> None:
        p.indirect_sent = True
        target = self._members.get(p.target)
        if target is None:
            return
        nack = self._cfg.lifeguard
        helpers = self._pick(
            self._cfg.indirect_checks, lambda m: m.state == _ALIVE and m.name != p.target
        )
        for h in helpers:
            self._send(h.address, [IndirectPing(p.seq, target.name, target.address, nack)])
        p.expected_nacks = len(helpers) if nack else 0

    def _probe_failed(self, now: float, p: _Probe) -> None:
        self._stats["probes_failed"] += 1
        if self._cfg.lifeguard:
            if p.expected_nacks:
                missed = max(0, p.expected_nacks - p.nacks)
                self._stats["nacks_missed"] += missed
                self._health.apply(missed)
            else:
                self._health.apply(1)
        m = self._members.get(p.target)
        if m is not None and m.state in (_ALIVE, _SUSPECT):
            self._on_suspect(now, Suspect(m.name, m.incarnation, self._name))

    def _on_ping(self, frm: Address, ping: Ping) -> None:
        if ping.target and ping.target != self._name:
            return  # meant for whoever lived at this address before us
        reply: list[Message] = [Ack(ping.seq)]
        sender = self._members.get(ping.source)
        if sender is not None and sender.state in (_DEAD, _LEFT):
            # It thinks it is alive and we think it is dead: tell it, so it refutes.
            reply.append(Suspect(sender.name, sender.incarnation, self._name))
        self._send(frm, reply)

    def _on_ack(self, now: float, seq: int) -> None:
        p = self._probe
        if p is not None and p.seq == seq:
            if not p.acked:
                p.acked = True
                if self._cfg.lifeguard:
                    self._health.apply(-1)
                m = self._members.get(p.target)
                if m is not None:
                    m.last_seen = now
            return
        r = self._relays.pop(seq, None)
        if r is not None:
            self._send(r.requester, [Ack(r.seq)])

    def _on_indirect(self, now: float, frm: Address, req: IndirectPing) -> None:
        if req.target == self._name:
            self._send(frm, [Ack(req.seq)])
            return
        if len(self._relays) >= 1024:
            return  # a flood: let the requester's probe fail rather than grow without bound
        self._seq += 1
        self._relays[self._seq] = _Relay(frm, req.seq, req.nack, now + self._cfg.probe_timeout)
        self._send(req.address, [Ping(self._seq, req.target, self._name)])

    # --- state updates ------------------------------------------------------------

    def _on_alive(self, now: float, a: Alive) -> None:
        if a.name == self._name:
            if self._leaving or a.incarnation < self._incarnation:
                return
            if (
                a.incarnation == self._incarnation
                and a.address == self._address
                and a.meta == self._meta
            ):
                return
            self._refute(a.incarnation)  # someone else, or an earlier life of ours
            return
        m = self._members.get(a.name)
        if m is None:
            m = self._add(a.name, a.address, a.meta, a.incarnation)
            m.last_seen = now
            self._event(EventKind.JOIN, m)
            self._queue(a)
            return
        if a.incarnation <= m.incarnation:
            return
        if a.address != m.address and m.state in (_ALIVE, _SUSPECT):
            return  # a second member claims a live member's name: keep the one we know
        old = m.state
        changed = a.meta != m.meta or a.address != m.address
        m.incarnation = a.incarnation
        m.meta = a.meta
        m.address = a.address
        m.last_seen = now
        self._suspicions.pop(a.name, None)
        if old != _ALIVE:
            self._set_state(m, _ALIVE)
            m.since = now
            self._event(EventKind.ALIVE if old == _SUSPECT else EventKind.JOIN, m)
            if old in (_DEAD, _LEFT):
                self._insert_into_order(m.name)
        elif changed:
            self._event(EventKind.UPDATE, m)
        self._queue(a)

    def _on_suspect(self, now: float, s: Suspect) -> None:
        if s.name == self._name:
            self._accused(s.incarnation)
            return
        m = self._members.get(s.name)
        if m is None or s.incarnation < m.incarnation:
            return
        running = self._suspicions.get(s.name)
        if running is not None:
            if running.confirm(s.frm):
                self._queue(s)  # a new confirmation: pass it on so others can count it too
            return
        if m.state != _ALIVE:
            return
        m.incarnation = s.incarnation
        self._set_state(m, _SUSPECT)
        m.since = now
        if s.frm == self._name:
            self._stats["suspicions"] += 1
        self._event(EventKind.SUSPECT, m)
        self._queue(s)
        cfg = self._cfg
        n = self.estimated_size()
        lo, hi = suspicion_bounds(cfg.suspicion_mult, cfg.suspicion_max_mult, n, cfg.probe_interval)
        k = cfg.suspicion_mult - 2 if cfg.lifeguard else 0
        if n - 2 < k:
            k = 0  # not enough other members to confirm it
        self._suspicions[s.name] = Suspicion(s.incarnation, s.frm, start=now, k=k, lo=lo, hi=hi)

    def _on_dead(self, now: float, d: Dead) -> None:
        if d.name == self._name:
            if not self._leaving:
                self._accused(d.incarnation)
            return
        m = self._members.get(d.name)
        if m is None or d.incarnation < m.incarnation:
            return
        if m.state == _LEFT or (m.state == _DEAD and not d.is_leave):
            return
        self._suspicions.pop(d.name, None)
        m.incarnation = d.incarnation
        new = _LEFT if d.is_leave else _DEAD
        self._set_state(m, new)
        m.since = now
        self._event(EventKind.LEFT if new == _LEFT else EventKind.DEAD, m)
        self._queue(d)

    def _accused(self, incarnation: int) -> None:
        if self._leaving:
            return
        if incarnation < self._incarnation:
            # Old news about us; make sure our current incarnation is going around.
            if self._bcast.queued(self._name) is None:
                self._queue(self._alive_self())
            return
        self._refute(incarnation)

    def _refute(self, incarnation: int) -> None:
        self._incarnation = max(self._incarnation, incarnation) + 1
        self._stats["refutations"] += 1
        if self._cfg.lifeguard:
            self._health.apply(1)
        self._queue(self._alive_self())

    def _alive_self(self) -> Alive:
        return Alive(self._name, self._incarnation, self._address, self._meta)

    # --- membership bookkeeping -----------------------------------------------

    def _add(self, name: str, address: Address, meta: NodeMeta, incarnation: int) -> _Member:
        m = _Member(name, address, meta, incarnation, self._now)
        self._members[name] = m
        self._names.append(name)
        self._counts[_ALIVE] += 1
        self._insert_into_order(name)
        return m

    def _insert_into_order(self, name: str) -> None:
        # At a random place in the rest of this pass, so a newcomer is probed soon.
        pos = self._rng.randrange(self._order_pos, len(self._order) + 1)
        self._order.insert(pos, name)

    def _set_state(self, m: _Member, state: MemberState) -> None:
        self._counts[m.state] -= 1
        self._counts[state] += 1
        m.state = state

    def _event(self, kind: EventKind, m: _Member) -> None:
        self._events.append(MemberEvent(kind, m.snapshot()))

    def _reap(self, now: float) -> None:
        old = [
            n
            for n in self._names
            if self._members[n].state in (_DEAD, _LEFT)
            and now - self._members[n].since >= self._cfg.reap_after
        ]
        for name in old:
            m = self._members.pop(name)
            self._counts[m.state] -= 1
            self._names.remove(name)
            if name in self._order:
                i = self._order.index(name)
                del self._order[i]
                if i < self._order_pos:
                    self._order_pos -= 1

    # --- sending ----------------------------------------------------------------

    def _queue(self, msg: Update) -> None:
        if not len(self._bcast):
            # Keep the gossip rhythm's phase when the queue wakes up again.
            self._next_gossip = _next_phase(self._next_gossip, self._cfg.gossip_interval, self._now)
        self._bcast.put(msg, message_size(msg))

    def _send(self, to: Address, msgs: list[Message]) -> None:
        """Send ``msgs`` to ``to``, filling the rest of the packet with queued updates."""
        budget = self._cfg.packet_bytes - PACKET_OVERHEAD
        for m in msgs:
            budget -= message_size(m)
        if budget >= _MIN_UPDATE_BYTES:
            extra, _ = self._bcast.take(budget, self._retransmit_limit())
            msgs.extend(extra)
        if msgs:
            self._stats["packets_out"] += 1
            self._packets.append(Packet(to, tuple(msgs)))

    def _gossip(self, now: float) -> None:
        dead_horizon = now - self._cfg.gossip_to_dead

        def eligible(m: _Member) -> bool:
            return m.state in (_ALIVE, _SUSPECT) or (m.state == _DEAD and m.since > dead_horizon)

        for m in self._pick(self._cfg.gossip_nodes, eligible):
            if not len(self._bcast):
                break
            self._send(m.address, [])

    def _retransmit_limit(self) -> int:
        return self._cfg.retransmit_mult * math.ceil(math.log10(self.estimated_size() + 1))

    def _push_pull_period(self) -> float:
        n = self.estimated_size()
        interval = self._cfg.push_pull_interval
        if n <= _PUSH_PULL_SCALE_THRESHOLD:
            return interval
        return interval * (math.ceil(math.log2(n) - math.log2(_PUSH_PULL_SCALE_THRESHOLD)) + 1)

    # --- randomness ---------------------------------------------------------------

    def _shuffle(self, items: list[str]) -> None:
        rng = self._rng
        for i in range(len(items) - 1, 0, -1):
            j = rng.randrange(0, i + 1)
            items[i], items[j] = items[j], items[i]

    def _random_member(self, want: _Predicate) -> _Member | None:
        picked = self._pick(1, want)
        return picked[0] if picked else None

    def _pick(self, k: int, want: _Predicate) -> list[_Member]:
        """Up to ``k`` distinct random members that satisfy ``want``."""
        names = self._names
        n = len(names)
        chosen: list[_Member] = []
        if n == 0 or k <= 0:
            return chosen
        seen: set[str] = set()
        # Random probing as memberlist does, then a scan so a rare kind is still found.
        for _ in range(3 * n if n < 4 * k else 3 * k):
            name = names[self._rng.randrange(0, n)]
            if name in seen:
                continue
            seen.add(name)
            m = self._members[name]
            if want(m):
                chosen.append(m)
                if len(chosen) == k:
                    return chosen
        rest = [self._members[x] for x in names if x not in seen and want(self._members[x])]
        while rest and len(chosen) < k:
            chosen.append(rest.pop(self._rng.randrange(0, len(rest))))
        return chosen

    def _advance_clock(self, now: float) -> float:
        self._now = max(self._now, now)
        return self._now


class _Predicate(Protocol):
    def __call__(self, m: _Member, /) -> bool: ...


def _next_phase(t: float, interval: float, now: float) -> float:
    """The first instant ``t + i * interval`` (i >= 0) that is after ``now``."""
    if t > now:
        return t
    return t + interval * (math.floor((now - t) / interval) + 1)
