"""The pure Raft state machine: input through ``step``/``tick``/``propose``, output via ``ready``.

Theory of operation
-------------------
``RaftCore`` is synchronous and does no I/O: no clock (the driver calls
``tick``), no randomness of its own (an injected ``Rng`` draws election
timeouts), no disk and no network. Everything it wants done comes out of
``ready()`` as one ``Ready`` record, which the driver carries out in the order
its docstring gives (persist, send, apply) before calling ``advance``.

Durability follows from that order. A vote, a term and an acknowledgement are
sent only after what they depend on is on disk, and a leader sends entries
only after persisting them, so a follower can only acknowledge entries the
leader already holds durably. A leader counts its own log as matching at once;
with two voters or more an index commits only once some follower acknowledged
it, hence only once it is durable on the leader too. A lone voter commits as
it appends, and the ``Ready`` that first carries an entry in ``committed``
also carries it (or carried it earlier) in ``entries``, which are persisted
before anything is applied.

Roles: a follower whose randomized election timer (drawn uniformly from
[election_ticks, 2*election_ticks)) runs out becomes a *pre-candidate* and
asks for pre-votes for ``term + 1`` without changing its term; only a quorum
of pre-votes lets it become a real *candidate*. A node that heard from a live
leader within the last ``election_ticks`` ignores (pre-)vote requests (the
*lease*), unless the request comes from a leadership transfer. A leader that
has not heard from a quorum within an election timeout steps down
(CheckQuorum). Learners and nodes outside the voters never campaign.

A new leader appends a NOOP entry; entries only commit by counting
acknowledgements when they belong to the leader's own term (Figure 8 of the
Raft paper), so the NOOP is what commits everything before it.

Membership changes take effect when appended (see ``_confchange``); the
leader refuses a new one until it has committed an entry of its term and
while another is uncommitted. Replication to each follower is driven by its
``Progress`` (see ``_progress``); reads by ``ReadTracker`` (see ``_readonly``).

Nothing a peer sends can make the core raise: malformed, stale, duplicated and
reordered messages are ignored or answered as the protocol says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, final

from dcrond.errors import InvalidRequest, NotLeader
from dcrond.raft._confchange import (
    ConfHistory,
    apply_conf_change,
    bootstrap_entries,
    decode_conf_change,
    encode_conf_change,
)
from dcrond.raft._corebase import Rng
from dcrond.raft._follower import FollowerMixin
from dcrond.raft._leader import LeaderMixin
from dcrond.raft._progress import Progress, ProgressState
from dcrond.raft._raftlog import RaftLog
from dcrond.raft._readonly import ReadTracker
from dcrond.raft._status import PeerStatus, Status
from dcrond.raft._types import (
    AppendEntries,
    AppendResponse,
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    Message,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

_NO_HARD_STATE: Final = HardState()
_NO_CONF: Final = ConfState()

__all__ = [
    "RaftCore",
    "Rng",
    "apply_conf_change",
    "decode_conf_change",
    "encode_conf_change",
]


@final
class RaftCore(LeaderMixin, FollowerMixin):
    """One node's Raft state machine (see the module docstring)."""

    __slots__ = ()

    def __init__(
        self,
        node_id: NodeId,
        config: Config,
        rng: Rng,
        *,
        hard_state: HardState = _NO_HARD_STATE,
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
        conf: ConfState = _NO_CONF,
        applied: int = 0,
    ) -> None:
        if config.election_ticks < 1 or config.heartbeat_ticks < 1:
            raise ValueError("election_ticks and heartbeat_ticks must be at least 1")
        if config.max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self._id = node_id
        self._cfg = config
        self._rng = rng
        snap_index = snapshot.meta.index if snapshot is not None else 0
        snap_term = snapshot.meta.term if snapshot is not None else 0
        hs_durable = hard_state
        fresh = snapshot is None and not entries and hard_state == _NO_HARD_STATE
        if fresh and conf.members():
            # A brand-new member of a new cluster writes the bootstrap membership
            # into its log, so that nodes joining later learn it from the log.
            entries = bootstrap_entries(conf)
            hard_state = HardState(1, None, len(entries))
        self._log = RaftLog(snap_index, snap_term, entries)
        if hard_state is not hs_durable:
            self._log.sent = self._log.persisted = 0  # the bootstrap entries are not on disk yet
        self._snapshot = snapshot  #: latest snapshot held, sent to lagging followers
        if snapshot is not None:
            base = snapshot.meta.conf
        elif any(e.kind == EntryKind.CONFIG for e in entries):
            base = ConfState()  # the log holds the whole membership history
        else:
            base = conf
        self._confs = ConfHistory(base, snap_index)
        for e in entries:
            if e.kind == EntryKind.CONFIG and e.index > snap_index:
                self._confs.append(e.index, e.data)
        self._term = hard_state.term
        self._vote = hard_state.vote
        # An applied entry was committed even if the commit index (written
        # without an fsync, Ready.must_sync) did not survive a power failure.
        self._commit = min(max(hard_state.commit, snap_index, applied), self._log.last_index)
        self._applied = min(max(applied, snap_index), self._commit)
        self._applying = self._applied  #: last index handed out in Ready.committed
        self._hs_sent = hs_durable
        self._role = Role.FOLLOWER
        self._leader: NodeId | None = None
        self._elapsed = 0
        self._hb_elapsed = 0
        self._timeout = self._draw_timeout()
        self._votes: dict[NodeId, bool] = {}
        self._prs: dict[NodeId, Progress] = {}
        self._msgs: list[Message] = []
        self._early: list[Message] = []
        self._read_states: list[ReadState] = []
        self._reads = ReadTracker()
        self._pending_snapshot: Snapshot | None = None  #: received, to hand to the driver
        self._snap_recv: tuple[SnapshotMeta, bytearray] | None = None
        self._term_start = 0  #: index of this leader's NOOP
        self._transferee: NodeId | None = None
        self._transfer_elapsed = 0
        self._need_bcast = False
        self._need_commit_bcast = False
        self._role = self._follower_role()

    # --- read-only properties -------------------------------------------------

    @property
    def id(self) -> NodeId:
        """This node's id."""
        return self._id

    @property
    def term(self) -> int:
        """The current term."""
        return self._term

    @property
    def role(self) -> Role:
        """The current role."""
        return self._role

    @property
    def leader(self) -> NodeId | None:
        """The leader this node knows for the current term, if any."""
        return self._leader

    @property
    def commit_index(self) -> int:
        """Highest index known committed."""
        return self._commit

    @property
    def applied_index(self) -> int:
        """Highest index the driver confirmed applied (through ``advance``)."""
        return self._applied

    @property
    def last_index(self) -> int:
        """Index of the last entry in the log."""
        return self._log.last_index

    @property
    def conf(self) -> ConfState:
        """The membership in force (that of the last CONFIG entry appended)."""
        return self._confs.current

    # --- driver API -----------------------------------------------------------

    def tick(self) -> None:
        """Advance the logical clock by one tick."""
        if self._role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def step(self, msg: Message) -> None:
        """Handle a message from the network; stale or odd messages are ignored."""
        if msg.to != self._id or msg.frm == self._id:
            return
        if isinstance(msg, ReadIndexResponse):
            # An answer stays valid whatever the terms; only ids we wait for count.
            if self._reads.forwarded.pop(msg.request_id, None) is not None:
                self._read_states.append(ReadState(msg.request_id, msg.index))
            return
        if not self._step_term(msg):
            return
        if isinstance(msg, AppendEntries):
            self._on_append(msg)
        elif isinstance(msg, AppendResponse):
            self._on_append_response(msg)
        elif isinstance(msg, VoteRequest):
            self._on_vote_request(msg)
        elif isinstance(msg, VoteResponse):
            self._on_vote_response(msg)
        elif isinstance(msg, InstallSnapshot):
            self._on_install_snapshot(msg)
        elif isinstance(msg, SnapshotResponse):
            self._on_snapshot_response(msg)
        elif isinstance(msg, TimeoutNow):
            if self._role is not Role.LEADER and self._promotable():
                self._campaign(prevote=False, transfer=True)
        elif isinstance(msg, ReadIndexRequest):
            self._on_read_index_request(msg)

    def propose(self, data: bytes) -> int:
        """Append a NORMAL entry carrying ``data``; returns its index.

        Raises NotLeader (with the leader to ask, if known) when this node is
        not the leader or is handing leadership over.
        """
        self._check_can_propose()
        return self._append_new(EntryKind.NORMAL, data)

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Append a CONFIG entry for ``cc``; returns its index.

        Raises NotLeader like ``propose``, and InvalidRequest when the change
        is unsafe now (this leader has not committed an entry of its term yet,
        or another change is not committed yet) or invalid for the membership.
        """
        self._check_can_propose()
        if self._commit < self._term_start:
            raise InvalidRequest("the leader has not committed an entry of its term yet; retry")
        if self._confs.last_index > self._commit:
            raise InvalidRequest("another membership change is not committed yet; retry")
        apply_conf_change(self._confs.current, cc)  # raises InvalidRequest
        return self._append_new(EntryKind.CONFIG, encode_conf_change(cc))

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to voter ``to``: catch it up, then tell it to campaign.

        Proposals are refused meanwhile; the transfer is abandoned after an
        election timeout. Raises NotLeader, or InvalidRequest when ``to`` is
        not a voter.
        """
        if self._role is not Role.LEADER:
            raise NotLeader(leader=self._leader)
        if to == self._id:
            return
        if to not in self._confs.current.voters:
            raise InvalidRequest(f"{to} is not a voter")
        if self._transferee == to:
            return
        self._transferee = to
        self._transfer_elapsed = 0
        pr = self._prs.get(to)
        if pr is None:
            return
        if pr.match == self._log.last_index:
            self._send(TimeoutNow(self._id, to, self._term))
        else:
            # Catch it up now: resend what it has not acknowledged.
            if pr.state is ProgressState.REPLICATE:
                pr.become_replicate()
            elif pr.state is ProgressState.PROBE:
                pr.paused = False
            self._send_appends(to, pr)

    def read_index(self, request_id: bytes) -> None:
        """Ask for a linearizable read; the answer comes later in ``Ready.read_states``.

        ``request_id`` must never be reused. Index 0 in the answer means the
        read was refused (no leader, leadership lost, no answer in time):
        retry with a new id.
        """
        if self._role is Role.LEADER:
            self._leader_read(request_id, None)
        elif self._leader is None:
            self._read_states.append(ReadState(request_id, 0))
        else:
            self._reads.forwarded[request_id] = 0
            self._send(ReadIndexRequest(self._id, self._leader, self._term, request_id))

    def campaign(self) -> None:
        """Start an election now (a pre-vote first when enabled)."""
        if self._role is not Role.LEADER and self._promotable():
            self._campaign(prevote=self._cfg.prevote, transfer=False)

    def compact(self, snapshot: Snapshot) -> None:
        """Drop the entries a new application snapshot covers, and keep it for followers.

        ``snapshot.meta`` must be ``snapshot_meta(index)`` for an index no
        higher than ``applied_index``; InvalidRequest otherwise. A snapshot
        not newer than the one held is ignored.
        """
        meta = snapshot.meta
        if meta.index <= self._log.snap_index:
            return
        if meta.index > self._applied:
            raise InvalidRequest(f"cannot compact at {meta.index}: applied is {self._applied}")
        if meta != self.snapshot_meta(meta.index):
            raise InvalidRequest("snapshot meta does not match the log; use snapshot_meta(index)")
        self._confs.compact(meta.index)
        self._log.compact(meta.index, meta.term)
        self._snapshot = snapshot

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """The SnapshotMeta for a snapshot of the state machine at ``index``."""
        term = self._log.term_at(index)
        if term is None or index < self._log.snap_index:
            raise InvalidRequest(f"index {index} is not in the log")
        return SnapshotMeta(index, term, self._confs.at(index))

    def has_ready(self) -> bool:
        """True when ``ready()`` would return something to do."""
        self._flush()
        return bool(
            self._msgs
            or self._early
            or self._log.has_unsent()
            or self._pending_snapshot is not None
            or self._commit > self._applying
            or self._read_states
            or self._hs_sent != HardState(self._term, self._vote, self._commit)
        )

    def ready(self) -> Ready:
        """Everything to persist, send and apply since the last ``ready()``.

        Carry it out in the order ``Ready``'s docstring gives, then call
        ``advance(ready)``. Successive Readies must be handled in order.
        """
        self._flush()
        hs = HardState(self._term, self._vote, self._commit)
        before = self._hs_sent
        hard_state = None if hs == before else hs
        self._hs_sent = hs
        snapshot = self._pending_snapshot
        self._pending_snapshot = None
        entries = self._log.unsent() if self._log.has_unsent() else ()
        committed: tuple[Entry, ...] = ()
        if self._commit > self._applying:
            committed = tuple(self._log.slice(self._applying + 1, self._commit))
            self._applying = self._commit
        early = tuple(self._early)
        self._early.clear()
        msgs = tuple(self._msgs)
        self._msgs.clear()
        if early and (hs.term != before.term or hs.vote != before.vote):
            # Never ahead of a term or vote that is not durable yet: a node that
            # crashed now could lead this term again and send other entries.
            msgs, early = early + msgs, ()
        reads = tuple(self._read_states)
        self._read_states.clear()
        return Ready(
            hard_state=hard_state,
            entries=entries,
            snapshot=snapshot,
            messages=msgs,
            committed=committed,
            read_states=reads,
            role=self._role,
            leader=self._leader,
            early_messages=early,
            must_sync=bool(
                entries or snapshot is not None or hs.term != before.term or hs.vote != before.vote
            ),
        )

    def advance(self, ready: Ready) -> None:
        """The driver carried out ``ready``: note what is now durable and applied."""
        log = self._log
        if ready.snapshot is not None:
            index = ready.snapshot.meta.index
            self._applied = max(self._applied, index)
            if log.snap_index == index and log.persisted < index:
                log.persisted = index
        if ready.entries:
            log.mark_persisted(ready.entries)
            if self._cfg.send_appends_early:
                self._maybe_commit()  # our own copy now counts
        if ready.committed and ready.committed[-1].index > self._applied:
            self._applied = ready.committed[-1].index

    def status(self) -> Status:
        """A frozen record of this node's state (per-peer progress when leader)."""
        progress: tuple[PeerStatus, ...] = ()
        if self._role is Role.LEADER:
            progress = tuple(
                PeerStatus(
                    node,
                    pr.match,
                    pr.next,
                    pr.state,
                    len(pr.inflight),
                    pr.recent_active,
                )
                for node, pr in sorted(self._prs.items())
            )
        return Status(
            id=self._id,
            term=self._term,
            vote=self._vote,
            role=self._role,
            leader=self._leader,
            commit=self._commit,
            applied=self._applied,
            last_index=self._log.last_index,
            snapshot_index=self._log.snap_index,
            conf=self._confs.current,
            progress=progress,
            transferee=self._transferee,
        )

    # --- terms ----------------------------------------------------------------

    def _step_term(self, msg: Message) -> bool:
        """Apply the term rules to ``msg``; False when the message is done with."""
        term = self._term
        if msg.term > term:
            if isinstance(msg, VoteRequest):
                lease = not msg.transfer and self._in_lease()
                if lease and (msg.prevote or self._cfg.check_quorum):
                    return False  # a live leader exists: do not let it be disturbed
                if msg.prevote:
                    return True  # a pre-vote never changes our term
            elif isinstance(msg, VoteResponse) and msg.prevote and msg.granted:
                return True  # granted pre-votes carry the term we asked for
            leader = msg.frm if isinstance(msg, AppendEntries | InstallSnapshot) else None
            self._become_follower(msg.term, leader)
            return True
        if msg.term < term:
            # Tell a stale leader or pre-candidate about the newer term, so that a
            # node that was cut off steps down; everything else is dropped.
            if isinstance(msg, AppendEntries | InstallSnapshot):
                self._send(AppendResponse(self._id, msg.frm, term, False, 0))
            elif isinstance(msg, VoteRequest) and msg.prevote:
                self._send(VoteResponse(self._id, msg.frm, term, False, prevote=True))
            elif isinstance(msg, ReadIndexRequest):
                self._send(ReadIndexResponse(self._id, msg.frm, term, msg.request_id, 0))
            return False
        return True

    # --- elections ------------------------------------------------------------

    def _tick_election(self) -> None:
        self._elapsed += 1
        if self._reads.forwarded:
            for rid in self._reads.expire_forwarded(2 * self._cfg.election_ticks):
                self._read_states.append(ReadState(rid, 0))
        if self._elapsed >= self._timeout and self._promotable():
            self._campaign(prevote=self._cfg.prevote, transfer=False)

    def _campaign(self, *, prevote: bool, transfer: bool) -> None:
        if prevote:
            self._role = Role.PRE_CANDIDATE
            self._set_leader(None)
            self._reset()
            want_term = self._term + 1
        else:
            self._term += 1
            self._vote = self._id
            self._role = Role.CANDIDATE
            self._set_leader(None)
            self._reset()
            want_term = self._term
        self._votes[self._id] = True
        if self._tally() > 0:
            self._won_election()
            return
        last_index, last_term = self._log.last_index, self._log.last_term
        for node in sorted(self._confs.current.voters):
            if node != self._id:
                self._send(
                    VoteRequest(self._id, node, want_term, last_index, last_term, prevote, transfer)
                )

    def _tally(self) -> int:
        """1 when the votes so far win, -1 when they lose, 0 while undecided."""
        voters = self._confs.current.voters
        q = len(voters) // 2 + 1
        granted = sum(1 for v in voters if self._votes.get(v) is True)
        rejected = sum(1 for v in voters if self._votes.get(v) is False)
        if granted >= q:
            return 1
        if rejected > len(voters) - q:
            return -1
        return 0

    def _won_election(self) -> None:
        if self._role is Role.PRE_CANDIDATE:
            self._campaign(prevote=False, transfer=False)
        else:
            self._become_leader()

    def _on_vote_request(self, msg: VoteRequest) -> None:
        prevote = msg.prevote
        can_vote = (
            self._vote == msg.frm
            or (self._vote is None and self._leader is None)
            or (prevote and msg.term > self._term)
        )
        if can_vote and self._log.is_up_to_date(msg.last_index, msg.last_term):
            self._send(VoteResponse(self._id, msg.frm, msg.term, True, prevote))
            if not prevote:
                self._vote = msg.frm
                self._elapsed = 0
        else:
            self._send(VoteResponse(self._id, msg.frm, self._term, False, prevote))

    def _on_vote_response(self, msg: VoteResponse) -> None:
        if msg.prevote:
            if self._role is not Role.PRE_CANDIDATE:
                return
            if msg.term != (self._term + 1 if msg.granted else self._term):
                return
        elif self._role is not Role.CANDIDATE or msg.term != self._term:
            return
        self._votes[msg.frm] = msg.granted
        result = self._tally()
        if result > 0:
            self._won_election()
        elif result < 0:
            self._become_follower(self._term, None)

    def _become_leader(self) -> None:
        self._role = Role.LEADER
        self._set_leader(self._id)
        self._reset()
        self._transferee = None
        nxt = self._log.last_index + 1
        self._prs = {
            n: Progress(nxt) for n in sorted(self._confs.current.members()) if n != self._id
        }
        self._term_start = nxt
        self._append_new(EntryKind.NOOP, b"")

    # --- proposals ------------------------------------------------------------

    def _check_can_propose(self) -> None:
        if self._role is not Role.LEADER:
            raise NotLeader(leader=self._leader)
        if self._transferee is not None:
            raise NotLeader("leadership is being transferred", leader=self._transferee)

    def _append_new(self, kind: EntryKind, data: bytes) -> int:
        index = self._log.last_index + 1
        self._log.append(Entry(self._term, index, kind, data))
        if kind == EntryKind.CONFIG:
            self._confs.append(index, data)
            self._on_conf_changed()
        self._need_bcast = True
        if len(self._confs.current.voters) == 1:
            self._maybe_commit()  # with more voters, a follower's ack is the bottleneck
        return index

    # --- reads ----------------------------------------------------------------

    def _on_read_index_request(self, msg: ReadIndexRequest) -> None:
        if self._role is Role.LEADER:
            self._leader_read(msg.request_id, msg.frm)
        else:
            self._send(ReadIndexResponse(self._id, msg.frm, self._term, msg.request_id, 0))
