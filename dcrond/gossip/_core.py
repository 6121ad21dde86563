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

The code is split like the Raft core: ``_corebase`` (shared fields, member
records, sending, random picks), ``_updates`` (precedence and refutation),
``_probing`` (probes and relays) and this module (inputs, timers, outputs,
anti-entropy).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final

from dcrond.gossip._broadcast import BroadcastQueue
from dcrond.gossip._codec import (
    MAX_MESSAGE_BYTES,
    PACKET_OVERHEAD,
    check_identity,
)
from dcrond.gossip._corebase import MemberRecord, Probe, Relay, Rng, next_phase
from dcrond.gossip._health import Awareness, Suspicion
from dcrond.gossip._probing import ProbingMixin
from dcrond.gossip._types import (
    Ack,
    Address,
    Alive,
    Dead,
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
)

__all__ = ["GossipCore", "Rng"]

_ALIVE: Final = MemberState.ALIVE
_SUSPECT: Final = MemberState.SUSPECT
_DEAD: Final = MemberState.DEAD
_LEFT: Final = MemberState.LEFT
_INF: Final = math.inf
_PUSH_PULL_SCALE_THRESHOLD: Final = 32
_MIN_UPDATE_BYTES: Final = 12  #: no update encodes smaller; stop filling a packet below this


class GossipCore(ProbingMixin):
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
        self._members: dict[str, MemberRecord] = {}
        self._names: list[str] = []  #: every other member, for random picks
        self._order: list[str] = []  #: probe order
        self._order_pos = 0
        self._counts = dict.fromkeys(MemberState, 0)
        self._counts[_ALIVE] = 1  # ourselves
        self._probe: Probe | None = None
        self._relays: dict[int, Relay] = {}
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
            self._next_gossip = next_phase(self._next_gossip, cfg.gossip_interval, now)
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

    def _gossip(self, now: float) -> None:
        dead_horizon = now - self._cfg.gossip_to_dead

        def eligible(m: MemberRecord) -> bool:
            return m.state in (_ALIVE, _SUSPECT) or (m.state == _DEAD and m.since > dead_horizon)

        for m in self._pick(self._cfg.gossip_nodes, eligible):
            if not len(self._bcast):
                break
            self._send(m.address, [])

    def _push_pull_period(self) -> float:
        n = self.estimated_size()
        interval = self._cfg.push_pull_interval
        if n <= _PUSH_PULL_SCALE_THRESHOLD:
            return interval
        return interval * (math.ceil(math.log2(n) - math.log2(_PUSH_PULL_SCALE_THRESHOLD)) + 1)
