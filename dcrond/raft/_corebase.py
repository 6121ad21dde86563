"""The state every part of ``RaftCore`` shares, and the transitions they all use.

``RaftCore`` (``_core``) is assembled from this base plus two mixins:
``LeaderMixin`` (``_leader``: heartbeats, replication, snapshots sent) and
``FollowerMixin`` (``_follower``: entries and snapshots received). The fields
live here, in one ``__slots__``; ``RaftCore.__init__`` sets them. What more
than one part needs lives here too: role changes, commit counting, membership
updates and ReadIndex answers.
"""

from __future__ import annotations

from typing import Protocol

from dcrond.raft._confchange import ConfHistory
from dcrond.raft._progress import Progress
from dcrond.raft._raftlog import RaftLog
from dcrond.raft._readonly import ReadTracker
from dcrond.raft._types import (
    AppendEntries,
    Config,
    HardState,
    Message,
    NodeId,
    ReadIndexResponse,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
)

CANDIDATES = (Role.PRE_CANDIDATE, Role.CANDIDATE)


class Rng(Protocol):
    """Injected randomness; ``random.Random`` satisfies it."""

    def randrange(self, start: int, stop: int) -> int:
        """A random integer in ``[start, stop)``."""
        ...


class CoreBase:
    """Shared fields and transitions of ``RaftCore`` (not used on its own)."""

    __slots__ = (
        "_applied",
        "_applying",
        "_cfg",
        "_commit",
        "_confs",
        "_early",
        "_elapsed",
        "_hb_elapsed",
        "_hs_sent",
        "_id",
        "_leader",
        "_log",
        "_msgs",
        "_need_bcast",
        "_need_commit_bcast",
        "_pending_snapshot",
        "_prs",
        "_read_states",
        "_reads",
        "_rng",
        "_role",
        "_snap_recv",
        "_snapshot",
        "_term",
        "_term_start",
        "_timeout",
        "_transfer_elapsed",
        "_transferee",
        "_vote",
        "_votes",
    )

    _id: NodeId
    _cfg: Config
    _rng: Rng
    _log: RaftLog
    _snapshot: Snapshot | None  #: latest snapshot held, sent to lagging followers
    _confs: ConfHistory
    _term: int
    _vote: NodeId | None
    _commit: int
    _applied: int  #: highest index the driver confirmed applied
    _applying: int  #: highest index handed out in Ready.committed
    _hs_sent: HardState  #: the hard state last handed out (what the driver holds)
    _role: Role
    _leader: NodeId | None
    _elapsed: int  #: ticks since the leader was heard from (or, on a leader, since CheckQuorum)
    _hb_elapsed: int
    _timeout: int  #: this round's randomized election timeout
    _votes: dict[NodeId, bool]
    _prs: dict[NodeId, Progress]  #: leader only: every other member's progress
    _msgs: list[Message]
    _early: list[Message]  #: leader traffic that may be sent before persisting
    _read_states: list[ReadState]
    _reads: ReadTracker
    _pending_snapshot: Snapshot | None  #: received and installed, to hand to the driver
    _snap_recv: tuple[SnapshotMeta, bytearray] | None  #: chunks received so far
    _term_start: int  #: index of this leader's NOOP
    _transferee: NodeId | None
    _transfer_elapsed: int
    _need_bcast: bool  #: new entries to send at the next flush
    _need_commit_bcast: bool  #: the commit index moved: tell followers at the next flush

    def _draw_timeout(self) -> int:
        e = self._cfg.election_ticks
        return self._rng.randrange(e, 2 * e)

    def _promotable(self) -> bool:
        return self._id in self._confs.current.voters

    def _follower_role(self) -> Role:
        return Role.LEARNER if self._id in self._confs.current.learners else Role.FOLLOWER

    def _in_lease(self) -> bool:
        """True while this node heard from a live leader within the election timeout."""
        return self._leader is not None and self._elapsed < self._cfg.election_ticks

    def _reset(self) -> None:
        self._elapsed = 0
        self._hb_elapsed = 0
        self._timeout = self._draw_timeout()
        self._votes.clear()

    def _set_leader(self, leader: NodeId | None) -> None:
        if leader != self._leader:
            for rid in self._reads.take_forwarded():
                self._read_states.append(ReadState(rid, 0))
            self._leader = leader

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        if self._role is Role.LEADER:
            self._stop_leading()
        if term != self._term:
            self._term = term
            self._vote = None
        self._role = self._follower_role()
        self._set_leader(leader)
        self._reset()

    def _stop_leading(self) -> None:
        for r in self._reads.take_all():
            self._answer_read(r.request_id, r.frm, 0)
        self._prs.clear()
        self._transferee = None
        self._need_bcast = False
        self._need_commit_bcast = False

    def _send(self, msg: Message) -> None:
        self._msgs.append(msg)

    def _send_early(self, msg: Message) -> None:
        """Leader replication traffic: may leave before this node's own fsync."""
        if self._cfg.send_appends_early:
            self._early.append(msg)
        else:
            self._msgs.append(msg)

    def _on_conf_changed(self) -> None:
        """The membership in force changed (appended, cut off, or from a snapshot)."""
        conf = self._confs.current
        if self._role is Role.LEADER:
            members = conf.members()
            for node in [n for n in self._prs if n not in members]:
                del self._prs[node]
            for node in sorted(members):
                if node != self._id and node not in self._prs:
                    self._prs[node] = Progress(self._log.last_index + 1)
            if self._transferee is not None and self._transferee not in conf.voters:
                self._transferee = None
            self._maybe_commit()
            self._confirm_reads()
        elif self._role in CANDIDATES:
            if not self._promotable():
                self._become_follower(self._term, None)
        else:
            self._role = self._follower_role()

    def _maybe_commit(self) -> None:
        if self._role is not Role.LEADER:
            return
        voters = self._confs.current.voters
        if not voters:
            return
        # Sending before persisting, a leader may count itself only up to what it
        # holds durably; otherwise every follower's ack comes after that anyway.
        log = self._log
        mine = log.persisted if self._cfg.send_appends_early else log.last_index
        prs = self._prs
        matches = sorted(
            (mine if v == self._id else (prs[v].match if v in prs else 0) for v in voters),
            reverse=True,
        )
        n = matches[len(voters) // 2]
        if n <= self._commit or self._log.term_at(n) != self._term:
            return
        self._commit = n
        self._need_commit_bcast = True
        if self._reads.deferred and n >= self._term_start:
            deferred = self._reads.deferred
            self._reads.deferred = []
            for rid, frm in deferred:
                self._leader_read(rid, frm)
        if self._id not in voters and n >= self._confs.last_index:
            # This leader was removed and the change is committed: tell the
            # followers the commit index, then step down.
            for node, pr in self._prs.items():
                self._send_heartbeat(node, pr, 0)
            self._become_follower(self._term, None)

    def _send_heartbeat(self, node: NodeId, pr: Progress, ctx: int) -> None:
        """An empty AppendEntries: carries commit (capped at the follower's match) and ctx.

        It is anchored at ``match``, which the follower holds, so it is never
        rejected (when that entry is compacted here, at 0: the follower then
        answers with its commit index).
        """
        log = self._log
        prev = pr.match
        prev_term = log.term_at(prev)
        if prev_term is None:
            prev, prev_term = 0, 0
        commit = min(self._commit, pr.match)
        pr.sent_commit = max(pr.sent_commit, commit)
        self._send_early(
            AppendEntries(self._id, node, self._term, prev, prev_term, (), commit, ctx)
        )

    def _leader_read(self, request_id: bytes, frm: NodeId | None) -> None:
        if self._commit < self._term_start:
            self._reads.deferred.append((request_id, frm))
            return
        self._reads.register(request_id, frm, self._commit)
        self._confirm_reads()

    def _confirm_reads(self) -> None:
        reads = self._reads
        if not reads.pending:
            return
        voters = self._confs.current.voters
        if not voters:
            return
        prs = self._prs
        acks = sorted(
            (
                reads.round + 1 if v == self._id else (prs[v].read_ack if v in prs else 0)
                for v in voters
            ),
            reverse=True,
        )
        confirmed = acks[len(voters) // 2]
        for r in reads.confirm(confirmed):
            self._answer_read(r.request_id, r.frm, r.index)

    def _answer_read(self, request_id: bytes, frm: NodeId | None, index: int) -> None:
        if frm is None:
            self._read_states.append(ReadState(request_id, index))
        else:
            self._send(ReadIndexResponse(self._id, frm, self._term, request_id, index))
