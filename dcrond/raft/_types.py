"""Values shared by the Raft core, its storage, its transport and the simulator.

Everything here is a frozen, slotted dataclass of plain values (ints, strings,
bytes, tuples, frozensets), so it can be encoded with msgpack
(``dcrond.raft._codec``), stored in SQLite (``dcrond.raft._storage``) and
compared in tests. Nothing here does I/O.

Node ids are short strings (a host's name, or "n1".."n5" in the simulator).
Log indexes start at 1; index 0 with term 0 is the empty log's sentinel.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias, final

NodeId: TypeAlias = str


class EntryKind(enum.IntEnum):
    """What an entry carries."""

    NORMAL = 0  #: an application command (opaque bytes for the core)
    NOOP = 1  #: appended by a new leader so entries of its term can commit
    CONFIG = 2  #: a membership change; ``data`` is an encoded ``ConfChange``


@final
@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@final
@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent.

    ``term`` and ``vote`` are always written together in one transaction.
    """

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


class ConfChangeType(enum.IntEnum):
    """One single-server membership change."""

    ADD_VOTER = 0
    REMOVE_NODE = 1
    ADD_LEARNER = 2
    PROMOTE_LEARNER = 3


@final
@dataclass(frozen=True, slots=True)
class ConfChange:
    """A requested membership change, carried in a CONFIG entry."""

    type: ConfChangeType
    node: NodeId


@final
@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership: who votes and who only follows."""

    voters: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()

    def members(self) -> frozenset[NodeId]:
        """Every node that receives the log."""
        return self.voters | self.learners


@final
@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot sits in the log and the membership at that point."""

    index: int
    term: int
    conf: ConfState


@final
@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image up to ``meta.index`` (the application's bytes)."""

    meta: SnapshotMeta
    data: bytes


# --- messages ---------------------------------------------------------------
#
# Every message names its sender (``frm``), its receiver (``to``) and the
# sender's ``term``. A message whose term is stale is answered or dropped by
# the receiver as the Raft paper says; one with a newer term updates it
# (except PreVote traffic, which never changes anyone's term).


@final
@dataclass(frozen=True, slots=True)
class VoteRequest:
    """RequestVote, or a PreVote probe when ``prevote`` is set.

    For a PreVote ``term`` is the term the candidate *would* campaign in.
    ``transfer`` marks a campaign started by leadership transfer: it may
    disturb a live leader (CheckQuorum's lease is ignored).
    """

    frm: NodeId
    to: NodeId
    term: int
    last_index: int
    last_term: int
    prevote: bool = False
    transfer: bool = False


@final
@dataclass(frozen=True, slots=True)
class VoteResponse:
    """Answer to a VoteRequest (or to a PreVote probe when ``prevote``)."""

    frm: NodeId
    to: NodeId
    term: int
    granted: bool
    prevote: bool = False


@final
@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Replicate ``entries`` after (prev_index, prev_term); also the heartbeat.

    ``read_ctx`` is non-zero on heartbeats sent for a ReadIndex round; the
    follower echoes it so the leader can count a quorum for that round.
    """

    frm: NodeId
    to: NodeId
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    read_ctx: int = 0


@final
@dataclass(frozen=True, slots=True)
class AppendResponse:
    """Answer to AppendEntries.

    On success ``index`` is the last index the follower now matches. On
    rejection, ``index`` is the prev_index that was rejected and
    (``hint_index``, ``hint_term``) let the leader skip back a whole term at
    once instead of one entry per round trip.
    """

    frm: NodeId
    to: NodeId
    term: int
    success: bool
    index: int
    hint_index: int = 0
    hint_term: int = 0
    read_ctx: int = 0


@final
@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """One chunk of a snapshot; ``done`` on the last one."""

    frm: NodeId
    to: NodeId
    term: int
    meta: SnapshotMeta
    offset: int
    chunk: bytes
    done: bool


@final
@dataclass(frozen=True, slots=True)
class SnapshotResponse:
    """Answer to one InstallSnapshot chunk.

    ``offset`` is the next byte the follower expects; when ``done`` the
    follower has installed the snapshot and matches ``meta.index``.
    ``success`` is false when the chunk did not fit (the leader restarts at 0).
    """

    frm: NodeId
    to: NodeId
    term: int
    index: int
    offset: int
    done: bool
    success: bool = True


@final
@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: campaign now, without waiting for a timeout."""

    frm: NodeId
    to: NodeId
    term: int


@final
@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A follower forwards a linearizable read to the leader."""

    frm: NodeId
    to: NodeId
    term: int
    request_id: bytes


@final
@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    """The leader's answer: wait until applied >= ``index``; 0 means refused."""

    frm: NodeId
    to: NodeId
    term: int
    request_id: bytes
    index: int


Message: TypeAlias = (
    VoteRequest
    | VoteResponse
    | AppendEntries
    | AppendResponse
    | InstallSnapshot
    | SnapshotResponse
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
)

MESSAGE_TYPES: tuple[type, ...] = (
    VoteRequest,
    VoteResponse,
    AppendEntries,
    AppendResponse,
    InstallSnapshot,
    SnapshotResponse,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
)


class Role(enum.IntEnum):
    """A node's role."""

    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3
    LEARNER = 4  #: a non-voting member (never campaigns)


@final
@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: once ``applied >= index`` the read is linearizable.

    ``index`` 0 means the read was refused (no leader, or leadership lost);
    the caller retries with a *new* request id.
    """

    request_id: bytes
    index: int


@final
@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the driver must do after the core changed, in this order.

    0. **Send** ``early_messages`` (they may go before step 1; empty unless
       ``Config.send_appends_early`` is set: a leader's AppendEntries,
       heartbeats and snapshot chunks, which stay safe if this node crashes
       before persisting, because a leader counts itself towards commit only
       up to what it has persisted).
    1. **Persist**, durably (fsync) and in one transaction:
       ``snapshot`` if set (it replaces every entry up to its index),
       then ``entries`` (an entry at an index already stored replaces it and
       every later one), then ``hard_state`` if set.
    2. **Send** ``messages`` (only after step 1 is durable: a vote or an
       acknowledgement must never be sent for state that could be lost).
    3. **Apply** ``committed`` to the state machine in order, and hand
       ``read_states`` to waiting readers once applied has reached their index.
       ``snapshot`` (if set) is restored into the state machine before
       ``committed``.
    4. Call ``core.advance(ready)``.

    ``must_sync`` False means the persist step holds nothing but a new commit
    index: it may be written without an fsync (a commit index lost in a power
    failure is learnt again from the leader, and an applied state machine
    proves its own entries committed), as etcd's ``MustSync`` does.

    A driver may send messages before persisting only where the core says
    so: ``early_messages``.
    """

    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    messages: tuple[Message, ...] = ()
    committed: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    role: Role = Role.FOLLOWER
    leader: NodeId | None = None
    early_messages: tuple[Message, ...] = ()
    must_sync: bool = False  #: the persist step needs an fsync (see above)

    def is_empty(self) -> bool:
        """True when there is nothing to persist, send or apply."""
        return not (
            self.early_messages
            or self.hard_state
            or self.entries
            or self.snapshot
            or self.messages
            or self.committed
            or self.read_states
        )


@final
@dataclass(frozen=True, slots=True)
class Config:
    """Tunables of the core, in ticks (the driver decides how long a tick is).

    ``election_ticks`` is the *minimum* election timeout; each node draws its
    timeout uniformly from [election_ticks, 2 * election_ticks) with the
    injected random generator.
    """

    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_inflight: int = 4  #: AppendEntries in flight per follower (shallow pipeline)
    max_entries_bytes: int = 1 << 20  #: bytes of entry data per AppendEntries
    snapshot_chunk_bytes: int = 1 << 20
    prevote: bool = True
    check_quorum: bool = True
    #: put a leader's replication traffic in ``Ready.early_messages`` so the driver
    #: can send it before its own fsync (the two fsyncs then overlap)
    send_appends_early: bool = False
