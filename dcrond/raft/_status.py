"""Frozen records describing a Raft core's state, for status pages, metrics and tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

from dcrond.raft._progress import ProgressState
from dcrond.raft._types import ConfState, NodeId, Role


@final
@dataclass(frozen=True, slots=True)
class PeerStatus:
    """What the leader knows about one follower's log."""

    node: NodeId
    match: int  #: highest index known to be on the follower
    next: int  #: next index the leader will send
    state: ProgressState
    inflight: int  #: AppendEntries sent and not yet acknowledged
    recent_active: bool  #: heard from it within the current CheckQuorum window


@final
@dataclass(frozen=True, slots=True)
class Status:
    """One node's Raft state; ``progress`` is filled in on the leader only."""

    id: NodeId
    term: int
    vote: NodeId | None
    role: Role
    leader: NodeId | None
    commit: int
    applied: int
    last_index: int
    snapshot_index: int
    conf: ConfState
    progress: tuple[PeerStatus, ...] = ()
    transferee: NodeId | None = None  #: leadership transfer in progress to this node
