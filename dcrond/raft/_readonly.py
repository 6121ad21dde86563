"""ReadIndex bookkeeping: reads waiting for a heartbeat quorum, and forwarded reads.

Theory of operation
-------------------
A linearizable read needs the leader to prove it is still the leader *after*
the read arrived. The leader notes its commit index for the read, then starts
a heartbeat *round*: heartbeats carry the round number in ``read_ctx`` and
followers echo it. A read registered before round ``r`` started is confirmed
once a quorum of voters (the leader included) has echoed a round ``>= r``:
each of them accepted this leader's term after the read was registered, so no
newer leader could have committed anything the read would miss. Rounds are
numbered by one counter for the life of the core, so reads confirm in order
and one heartbeat round confirms every read registered before it.

A leader that has not yet committed an entry of its own term does not know
the latest commit index; it *defers* reads until it has.

A follower forwards a read to the leader it knows and remembers the id; the
answer (or a refusal, index 0) is handed out once. Forwarded reads that get
no answer within a deadline, or whose leader changed, are refused so the
caller can retry with a new id.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import final

from dcrond.raft._types import NodeId


@final
@dataclass(slots=True)
class PendingRead:
    """A read waiting for its heartbeat round (``frm`` is None for a local read)."""

    request_id: bytes
    frm: NodeId | None
    index: int
    round: int
    age: int = 0


@final
class ReadTracker:
    """The reads a node is waiting on, as leader or as follower."""

    __slots__ = ("deferred", "forwarded", "pending", "round")

    def __init__(self) -> None:
        self.round = 0  #: number of the last heartbeat round started
        self.pending: deque[PendingRead] = deque()  #: leader: waiting for a quorum
        self.deferred: list[tuple[bytes, NodeId | None]] = []  #: leader: before its first commit
        self.forwarded: dict[bytes, int] = {}  #: follower: request id -> ticks waited

    def register(self, request_id: bytes, frm: NodeId | None, index: int) -> None:
        """A leader's read at commit ``index``, to be confirmed by the next round."""
        self.pending.append(PendingRead(request_id, frm, index, self.round + 1))

    def needs_round(self) -> bool:
        """True when some pending read waits for a round that has not started."""
        return bool(self.pending) and self.pending[-1].round > self.round

    def start_round(self) -> int:
        """Start a heartbeat round; returns its number (0 when no read waits)."""
        if not self.pending:
            return 0
        self.round += 1
        return self.round

    def confirm(self, confirmed_round: int) -> list[PendingRead]:
        """Reads whose round is ``<= confirmed_round``, removed from the queue."""
        out: list[PendingRead] = []
        pending = self.pending
        while pending and pending[0].round <= confirmed_round:
            out.append(pending.popleft())
        return out

    def take_all(self) -> list[PendingRead]:
        """Every pending and deferred read (leadership was lost: refuse them)."""
        out = list(self.pending)
        out.extend(PendingRead(rid, frm, 0, 0) for rid, frm in self.deferred)
        self.pending.clear()
        self.deferred.clear()
        return out

    def expire(self, max_age: int) -> list[PendingRead]:
        """Age pending reads by one tick; return (and drop) those older than ``max_age``."""
        out: list[PendingRead] = []
        for r in self.pending:
            r.age += 1
        pending = self.pending
        while pending and pending[0].age > max_age:
            out.append(pending.popleft())
        return out

    def expire_forwarded(self, max_age: int) -> list[bytes]:
        """Age forwarded reads by one tick; return (and drop) the ids that waited too long."""
        fwd = self.forwarded
        if not fwd:
            return []
        out: list[bytes] = []
        for rid in list(fwd):
            age = fwd[rid] + 1
            if age > max_age:
                del fwd[rid]
                out.append(rid)
            else:
                fwd[rid] = age
        return out

    def take_forwarded(self) -> list[bytes]:
        """Every forwarded read (the leader changed: refuse them)."""
        out = list(self.forwarded)
        self.forwarded.clear()
        return out
