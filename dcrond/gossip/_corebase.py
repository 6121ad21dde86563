"""The state every part of ``GossipCore`` shares, and the helpers they all use.

``GossipCore`` (``_core``) is assembled like the Raft core: this base declares
the fields (``GossipCore.__init__`` sets them) and holds what more than one
part needs -- the member records, sending (every packet is filled up with
queued updates), the broadcast queue, random picks; ``UpdatesMixin``
(``_updates``) applies Alive, Suspect and Dead with their precedence rules and
refutes; ``ProbingMixin`` (``_probing``) runs probes, indirect probes and
relays. See ``_core`` for the theory of operation.
"""

from __future__ import annotations

import math
from typing import Final, Protocol, final

from dcrond.gossip._broadcast import BroadcastQueue
from dcrond.gossip._codec import PACKET_OVERHEAD, message_size
from dcrond.gossip._health import Awareness, Suspicion
from dcrond.gossip._types import (
    Address,
    Alive,
    EventKind,
    GossipConfig,
    Member,
    MemberEvent,
    MemberState,
    Message,
    NodeMeta,
    Packet,
    PushPull,
    Update,
)

__all__ = ["CoreBase", "MemberRecord", "Predicate", "Probe", "Relay", "Rng", "next_phase"]

_ALIVE: Final = MemberState.ALIVE
_SUSPECT: Final = MemberState.SUSPECT
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
class MemberRecord:
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
class Probe:
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
class Relay:
    __slots__ = ("expires", "nack", "requester", "seq")

    def __init__(self, requester: Address, seq: int, nack: bool, expires: float) -> None:
        self.requester = requester
        self.seq = seq
        self.nack = nack
        self.expires = expires


class Predicate(Protocol):
    def __call__(self, m: MemberRecord, /) -> bool: ...


def next_phase(t: float, interval: float, now: float) -> float:
    """The first instant ``t + i * interval`` (i >= 0) that is after ``now``."""
    if t > now:
        return t
    return t + interval * (math.floor((now - t) / interval) + 1)


class CoreBase:
    """Shared fields and helpers of ``GossipCore`` (not used on its own)."""

    _name: str
    _address: Address
    _meta: NodeMeta
    _cfg: GossipConfig
    _rng: Rng
    _now: float
    _incarnation: int
    _leaving: bool
    _members: dict[str, MemberRecord]
    _names: list[str]  #: every other member, for random picks
    _order: list[str]  #: probe order
    _order_pos: int
    _counts: dict[MemberState, int]
    _probe: Probe | None
    _relays: dict[int, Relay]
    _suspicions: dict[str, Suspicion]
    _bcast: BroadcastQueue
    _health: Awareness
    _seq: int
    _packets: list[Packet]
    _push_pulls: list[PushPull]
    _seeds: list[Address]
    _events: list[MemberEvent]
    _next_probe: float
    _next_gossip: float
    _next_push_pull: float
    _next_reconnect: float
    _stats: dict[str, int]

    def estimated_size(self) -> int:
        """Members believed alive or suspect, ourselves included."""
        return self._counts[_ALIVE] + self._counts[_SUSPECT]

    def _alive_self(self) -> Alive:
        return Alive(self._name, self._incarnation, self._address, self._meta)

    # --- membership bookkeeping -----------------------------------------------

    def _add(self, name: str, address: Address, meta: NodeMeta, incarnation: int) -> MemberRecord:
        m = MemberRecord(name, address, meta, incarnation, self._now)
        self._members[name] = m
        self._names.append(name)
        self._counts[_ALIVE] += 1
        self._insert_into_order(name)
        return m

    def _insert_into_order(self, name: str) -> None:
        # At a random place in the rest of this pass, so a newcomer is probed soon.
        pos = self._rng.randrange(self._order_pos, len(self._order) + 1)
        self._order.insert(pos, name)

    def _set_state(self, m: MemberRecord, state: MemberState) -> None:
        self._counts[m.state] -= 1
        self._counts[state] += 1
        m.state = state

    def _event(self, kind: EventKind, m: MemberRecord) -> None:
        self._events.append(MemberEvent(kind, m.snapshot()))

    # --- sending ----------------------------------------------------------------

    def _queue(self, msg: Update) -> None:
        if not len(self._bcast):
            # Keep the gossip rhythm's phase when the queue wakes up again.
            self._next_gossip = next_phase(self._next_gossip, self._cfg.gossip_interval, self._now)
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

    def _retransmit_limit(self) -> int:
        return self._cfg.retransmit_mult * math.ceil(math.log10(self.estimated_size() + 1))

    # --- randomness ---------------------------------------------------------------

    def _shuffle(self, items: list[str]) -> None:
        rng = self._rng
        for i in range(len(items) - 1, 0, -1):
            j = rng.randrange(0, i + 1)
            items[i], items[j] = items[j], items[i]

    def _random_member(self, want: Predicate) -> MemberRecord | None:
        picked = self._pick(1, want)
        return picked[0] if picked else None

    def _pick(self, k: int, want: Predicate) -> list[MemberRecord]:
        """Up to ``k`` distinct random members that satisfy ``want``."""
        names = self._names
        n = len(names)
        chosen: list[MemberRecord] = []
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
