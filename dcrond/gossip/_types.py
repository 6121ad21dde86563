"""Values shared by the gossip core, its codec, its driver and the simulator.

Everything here is a frozen, slotted dataclass of plain values (ints, floats,
strings, tuples), so it can be encoded with msgpack (``dcrond.gossip._codec``)
and compared in tests. Nothing here does I/O.

A member is named by a short string (a host name); its gossip address is a
``(host, port)`` pair where the same port number serves UDP (probes and
gossip) and TCP (push-pull state sync). Times (``since``, ``last_seen``) are
read from the clock of the core that holds the record: they are only
comparable with that core's ``now``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any, TypeAlias, final

Address: TypeAlias = tuple[str, int]


class MemberState(enum.IntEnum):
    """What a member believes about another (or itself).

    The order matters on the wire and in push-pull merges; never renumber.
    """

    ALIVE = 0
    SUSPECT = 1  #: a probe failed; dead unless it refutes before the suspicion times out
    DEAD = 2  #: the suspicion timed out (or another member said so)
    LEFT = 3  #: it announced a graceful leave


@final
@dataclass(frozen=True, slots=True)
class NodeMeta:
    """What a member tells the others about itself; every change bumps its incarnation.

    ``tags`` are ``(key, value)`` pairs, kept sorted (``tuple(d.items())``
    builds them from a dict). ``raft_role`` is free text kept short by the codec;
    dcrond uses ``""`` (none yet), ``"learner"``, ``"voter"`` and ``"leader"``.
    The encoded size is limited (``_codec.MAX_META_BYTES``) so that an update
    always fits one UDP packet.
    """

    api_port: int = 0
    raft_port: int = 0
    tags: tuple[tuple[str, str], ...] = ()
    free_slots: int = 0
    version: str = ""
    raft_role: str = ""
    #: the Raft cluster this host's log belongs to ("" before it has one); hosts
    #: with different ids never share a log even when they share a LAN and secret
    cluster_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(sorted(self.tags)))

    def tag_map(self) -> dict[str, str]:
        """The tags as a dict."""
        return dict(self.tags)


# --- messages ---------------------------------------------------------------
#
# Probe traffic (Ping, IndirectPing, Ack, Nack) is matched by a sequence
# number that only its sender interprets. State updates (Alive, Suspect,
# Dead) are what gets piggybacked on every packet and gossiped; each names
# the member it is about and that member's incarnation.


@final
@dataclass(frozen=True, slots=True)
class Ping:
    """Are you there? Answered by an ``Ack`` with the same ``seq``.

    ``target`` is the name the sender believes lives at the address (a member
    that is someone else ignores the ping); ``source`` names the sender, so a
    member that believes the sender dead can tell it so.
    """

    seq: int
    target: str
    source: str


@final
@dataclass(frozen=True, slots=True)
class IndirectPing:
    """Please ping ``target`` at ``address`` for me and forward its ack.

    With ``nack`` set (Lifeguard), the helper also answers with a ``Nack`` if
    the target stays silent for a probe timeout, which tells the requester
    that the helper itself is alive and responsive.
    """

    seq: int
    target: str
    address: Address
    nack: bool


@final
@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to a Ping (or a forwarded one, for an IndirectPing)."""

    seq: int


@final
@dataclass(frozen=True, slots=True)
class Nack:
    """A helper got no answer from the target of an IndirectPing in time."""

    seq: int


@final
@dataclass(frozen=True, slots=True)
class Alive:
    """``name`` is alive at ``incarnation``, at ``address``, with ``meta``."""

    name: str
    incarnation: int
    address: Address
    meta: NodeMeta


@final
@dataclass(frozen=True, slots=True)
class Suspect:
    """``frm`` suspects ``name`` at ``incarnation`` (each suspecter is a confirmation)."""

    name: str
    incarnation: int
    frm: str


@final
@dataclass(frozen=True, slots=True)
class Dead:
    """``frm`` declares ``name`` dead at ``incarnation``; from the member itself: it left."""

    name: str
    incarnation: int
    frm: str

    @property
    def is_leave(self) -> bool:
        """A member announcing its own departure."""
        return self.frm == self.name


Message: TypeAlias = Ping | IndirectPing | Ack | Nack | Alive | Suspect | Dead
Update: TypeAlias = Alive | Suspect | Dead

MESSAGE_TYPES: tuple[type, ...] = (Ping, IndirectPing, Ack, Nack, Alive, Suspect, Dead)


# --- what the core hands the driver -------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class Packet:
    """One UDP datagram to send: its messages encode within the packet budget."""

    to: Address
    messages: tuple[Message, ...]


@final
@dataclass(frozen=True, slots=True)
class PushPull:
    """Exchange full state with the member at ``to`` over TCP.

    The driver sends ``core.push_pull_state()`` and hands what comes back to
    ``core.merge_state(now, entries, join=join)``. ``join`` is set for the
    first contact with a seed.
    """

    to: Address
    join: bool = False


@final
@dataclass(frozen=True, slots=True)
class StateEntry:
    """One member as carried by a push-pull exchange."""

    name: str
    address: Address
    meta: NodeMeta
    incarnation: int
    state: MemberState


@final
@dataclass(frozen=True, slots=True)
class Member:
    """One member as this core sees it.

    ``since`` is when its state last changed and ``last_seen`` when it last
    answered a probe of ours or announced a newer incarnation (``None``:
    never), both on this core's clock.
    """

    name: str
    address: Address
    meta: NodeMeta
    incarnation: int
    state: MemberState
    since: float
    last_seen: float | None = None

    def entry(self) -> StateEntry:
        """What a push-pull exchange carries about this member."""
        return StateEntry(self.name, self.address, self.meta, self.incarnation, self.state)


class EventKind(enum.IntEnum):
    """What changed about a member."""

    JOIN = 0  #: first heard of, or back after being dead or gone
    UPDATE = 1  #: new incarnation while alive (new metadata, a refutation)
    SUSPECT = 2
    ALIVE = 3  #: refuted a suspicion
    DEAD = 4
    LEFT = 5


@final
@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A change in this core's view of one member, with the member as it is now."""

    kind: EventKind
    member: Member


@final
@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the driver must do after the core changed. Nothing is persisted.

    1. **Send** every packet in ``packets`` (UDP; loss is expected and fine).
    2. **Start** every exchange in ``push_pulls`` (TCP; each ends with
       ``merge_state`` on success or nothing on failure).
    3. **Hand** ``events`` to whoever watches membership, in order.
    4. Call ``core.advance(ready)``, then sleep until ``core.next_deadline()``
       (or until a packet arrives) and call ``tick``.

    Steps 1-3 may run in any order or concurrently: gossip needs no
    durability, so a driver may call ``advance`` right away, before sending.
    """

    packets: tuple[Packet, ...] = ()
    push_pulls: tuple[PushPull, ...] = ()
    events: tuple[MemberEvent, ...] = ()

    def is_empty(self) -> bool:
        """True when there is nothing to send, start or report."""
        return not (self.packets or self.push_pulls or self.events)


@final
@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Tunables of the core, in seconds.

    The defaults are dcrond's (see docs/gossip.md for why); :meth:`memberlist`
    gives hashicorp/memberlist's LAN defaults for comparison. With
    ``lifeguard`` off the core is plain SWIM with suspicion: no local health
    multiplier, no nacks, no buddy system and a fixed suspicion timeout.
    """

    probe_interval: float = 0.5
    probe_timeout: float = 0.25  #: wait for a direct ack before asking others
    indirect_checks: int = 3  #: members asked to probe for us (k)
    suspicion_mult: int = 4  #: suspicion min timeout = mult * log10(n) * probe_interval
    suspicion_max_mult: int = 6  #: max timeout = this * min (Lifeguard)
    retransmit_mult: int = 4  #: each update is sent mult * ceil(log10(n + 1)) times
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_dead: float = 30.0  #: keep gossiping to a dead member this long
    push_pull_interval: float = 30.0  #: scaled up above 32 members, as memberlist does
    reconnect_interval: float = 30.0  #: push-pull with a random dead member (heals partitions)
    reap_after: float = 24 * 3600.0  #: forget a dead or left member after this long
    awareness_max: int = 8  #: Lifeguard's local health multiplier ranges over 1..max
    lifeguard: bool = True
    packet_bytes: int = 1400  #: budget of one encoded packet (before sealing)

    @staticmethod
    def memberlist(**changes: Any) -> GossipConfig:
        """memberlist's ``DefaultLANConfig`` timings (probe 1 s, suspicion multiplier 4)."""
        base = GossipConfig(
            probe_interval=1.0, probe_timeout=0.5, suspicion_mult=4, gossip_interval=0.2
        )
        return replace(base, **changes)


@final
@dataclass(frozen=True, slots=True)
class GossipStatistics:
    """Counters of one core since it started (what /metrics shows)."""

    alive: int
    suspect: int
    dead: int
    left: int
    incarnation: int
    health: int  #: Lifeguard's local health score; 0 is healthy
    probes: int
    probes_failed: int
    suspicions: int  #: members this core itself started suspecting
    refutations: int
    nacks_missed: int
    packets_out: int
    updates_sent: int
    push_pulls: int
