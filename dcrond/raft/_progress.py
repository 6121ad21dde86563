"""What a leader knows about one follower's log, and how much it may send it.

Theory of operation
-------------------
Each follower is in one of three states:

``probe``      the leader does not know where the follower's log matches
               its own. It sends one AppendEntries at ``next`` and waits
               (``paused``) for any answer before sending another; a rejection
               moves ``next`` back (a whole term at a time, using the hint).
``replicate``  the follower matched; the leader streams batches from ``next``
               optimistically, at most ``max_inflight`` un-acknowledged at
               once (each remembered by its last index in ``inflight``).
``snapshot``   ``next`` fell into the compacted part of the leader's log; the
               leader sends its stored snapshot in chunks, one chunk
               outstanding at a time, and resends it when no answer comes.

``match`` only grows (within one term of leadership); ``next`` is always at
least ``match + 1``.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import final


class ProgressState(enum.Enum):
    """How the leader is currently replicating to one follower."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@final
class Progress:
    """A leader's view of one follower (mutable, private to the leader)."""

    __slots__ = (
        "inflight",
        "match",
        "next",
        "paused",
        "progressed",
        "read_ack",
        "recent_active",
        "sent_commit",
        "snap_index",
        "snap_offset",
        "snap_wait",
        "stalls",
        "state",
    )

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.paused = False  #: probe: an AppendEntries is out, wait for an answer
        self.inflight: deque[int] = deque()  #: replicate: last index of each batch out
        self.recent_active = False  #: heard from it since the last CheckQuorum round
        self.progressed = False  #: match grew since the last heartbeat round
        self.stalls = 0  #: heartbeat rounds in a row with batches in flight and no progress
        self.read_ack = 0  #: highest ReadIndex round it confirmed
        self.sent_commit = 0  #: highest commit index it was told it may use
        self.snap_index = 0  #: snapshot being sent (index of its last entry)
        self.snap_offset = 0  #: next byte of it to send (acknowledged so far)
        self.snap_wait = 0  #: ticks since the last chunk went out

    def become_probe(self, next_index: int) -> None:
        """Stop streaming; probe at ``next_index`` (never below ``match + 1``)."""
        self.state = ProgressState.PROBE
        self.paused = False
        self.stalls = 0
        self.inflight.clear()
        self.next = max(next_index, self.match + 1)

    def become_replicate(self) -> None:
        """Start streaming right after ``match`` (again, if it was streaming)."""
        self.state = ProgressState.REPLICATE
        self.paused = False
        self.stalls = 0
        self.inflight.clear()
        self.next = self.match + 1

    def become_snapshot(self, snap_index: int) -> None:
        """Send the snapshot ending at ``snap_index`` from its first byte."""
        self.state = ProgressState.SNAPSHOT
        self.paused = False
        self.inflight.clear()
        self.snap_index = snap_index
        self.snap_offset = 0
        self.snap_wait = 0

    def update(self, index: int) -> bool:
        """The follower matches up to ``index``; True when that is news."""
        if index <= self.match:
            return False
        self.match = index
        self.progressed = True
        if self.next <= index:
            self.next = index + 1
        inflight = self.inflight
        while inflight and inflight[0] <= index:
            inflight.popleft()
        return True

    def blocked(self, max_inflight: int) -> bool:
        """True when no further AppendEntries may go out right now."""
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= max_inflight
        if self.state is ProgressState.PROBE:
            return self.paused
        return True
