"""One simulated Raft node: a core, its disk, its key-value state machine, and volatile bits.

Theory of operation: a node's *durable* part is its ``SimDisk``; everything
else (the core, the state machine in memory, proposals and reads waiting for
an answer) is lost in a crash. ``rebuild`` is the restart path: it rebuilds
the state machine from the disk's snapshot plus the durable entries up to the
state machine's durable applied index (recorded in the same "transaction" as
each apply), and a fresh core from the disk's hard state, snapshot and log.

The membership the state machine has reached (``applied_conf``) is tracked
here too, by applying CONFIG entries in order, and compared with the core's
``snapshot_meta`` when the node compacts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import final

from dcrond.raft._confchange import conf_after
from dcrond.raft._core import RaftCore
from dcrond.raft._types import ConfState, Entry, EntryKind, Message, NodeId, Role
from dcrond.testing._kv import KVStateMachine
from dcrond.testing._simclient import Request
from dcrond.testing._simdisk import SimDisk

#: Where an armed crash lands inside the handling of one Ready.
CRASH_AFTER_WRITE = 1  #: written but not synced: the Ready is lost, nothing was sent
CRASH_AFTER_SEND = 2  #: durable and sent, nothing applied
CRASH_MID_APPLY = 3  #: after the first committed entry was applied
CRASH_BEFORE_ADVANCE = 4  #: everything done but ``advance``
#: right after granting a vote (durable and sent), then back within milliseconds: a
#: node that forgot its vote would grant a second one in the same term
CRASH_AFTER_VOTE = 5


@final
@dataclass(frozen=True, slots=True)
class Rebuilt:
    """What a restart recovered from disk."""

    kv: KVStateMachine
    conf: ConfState  #: membership at the state machine's applied index
    applied: int


@final
class SimNode:
    """A node of the simulated cluster; ``core`` is None while it is down."""

    __slots__ = (
        "applied_conf",
        "backlog",
        "base_tick_us",
        "core",
        "crash_at",
        "crash_digest",
        "decommissioned",
        "disk",
        "id",
        "incarnation",
        "kv",
        "last_role",
        "paused",
        "pending_props",
        "pending_reads",
        "restarts",
        "tick_epoch",
        "tick_us",
        "waiting_reads",
    )

    def __init__(self, node_id: NodeId, bootstrap: ConfState, tick_us: int) -> None:
        self.id = node_id
        self.disk = SimDisk(bootstrap)
        self.kv = KVStateMachine()
        self.applied_conf = bootstrap
        self.core: RaftCore | None = None
        self.incarnation = 0
        self.paused = False
        self.decommissioned = False
        self.crash_at = 0
        #: (applied, digest) of the state machine when it last crashed
        self.crash_digest: tuple[int, bytes] | None = None
        self.tick_us = tick_us
        self.base_tick_us = tick_us  #: its clock's normal rate (``tick_us`` may be skewed)
        self.tick_epoch = 0  #: bumped to stop a node's clock (crash, pause)
        self.restarts = 0
        self.last_role = Role.FOLLOWER
        #: log index -> (attempt, entry data) of client proposals made here
        self.pending_props: dict[int, tuple[Request, bytes]] = {}
        #: ReadIndex request id -> attempt
        self.pending_reads: dict[bytes, Request] = {}
        #: (read index, attempt) waiting for the state machine to catch up
        self.waiting_reads: list[tuple[int, Request]] = []
        #: events that arrived while paused, replayed on resume
        self.backlog: list[Message | Request] = []

    @property
    def up(self) -> bool:
        """True while the node runs (even if paused)."""
        return self.core is not None

    def lose_volatile_state(self) -> None:
        """A crash: forget everything that lives only in memory."""
        self.crash_digest = (self.kv.applied, self.kv.digest)
        self.core = None
        self.disk.crash()
        self.incarnation += 1
        self.tick_epoch += 1
        self.paused = False
        self.crash_at = 0
        self.pending_props.clear()
        self.pending_reads.clear()
        self.waiting_reads.clear()
        self.backlog.clear()

    def rebuild(self) -> Rebuilt:
        """Rebuild the state machine from the durable snapshot and log (restart path).

        Raises AssertionError when the durable log lacks an entry the state
        machine durably applied (it must keep every committed entry).
        """
        disk = self.disk
        snap = disk.snapshot
        if snap is not None:
            kv = KVStateMachine.restore(snap.data)
            conf = snap.meta.conf
        else:
            kv = KVStateMachine()
            conf = disk.bootstrap_conf
        applied = max(disk.applied, disk.snap_index)
        replay = disk.entries(disk.snap_index + 1, applied)
        if len(replay) != applied - disk.snap_index:
            raise AssertionError(
                f"{self.id}: the state machine applied up to {applied} but the durable log "
                f"holds only up to {disk.last_index}"
            )
        for e in replay:
            kv.apply(e)
            if e.kind == EntryKind.CONFIG:
                conf = conf_after(conf, e.data)
        return Rebuilt(kv, conf, applied)

    def apply_conf(self, entry: Entry) -> None:
        """Track the membership through an applied CONFIG entry (as the core computes it)."""
        self.applied_conf = conf_after(self.applied_conf, entry.data)


def node_rng(parent: random.Random) -> random.Random:
    """A generator for one core incarnation, drawn from the simulation's."""
    return random.Random(parent.getrandbits(64))
