"""The leader's side of ``RaftCore``: heartbeats, CheckQuorum, replication, snapshots sent.

Theory of operation
-------------------
Proposals only append to the log and set a flag; ``_flush`` (run by
``has_ready``/``ready``) then sends each follower what flow control allows, so
every proposal made between two Readies travels in as few batches as
possible. Each acknowledgement sends the next batch to that follower at once.
See ``_progress`` for the probe/replicate/snapshot states.

Heartbeats are empty AppendEntries; they carry the commit index capped at the
follower's match (a follower must never learn a commit index beyond what it is
known to hold from this leader) and the current ReadIndex round. They also act
as the retransmission timer: a streaming follower with batches in flight that
made no progress for two heartbeat rounds gets them again from its match
(they were lost; a follower that restarted rejects and is probed).
"""

from __future__ import annotations

from dcrond.raft._corebase import CoreBase
from dcrond.raft._progress import Progress, ProgressState
from dcrond.raft._types import (
    AppendEntries,
    AppendResponse,
    InstallSnapshot,
    NodeId,
    Role,
    SnapshotResponse,
    TimeoutNow,
)


class LeaderMixin(CoreBase):
    """Leader behaviour of ``RaftCore``."""

    __slots__ = ()

    def _tick_leader(self) -> None:
        cfg = self._cfg
        self._hb_elapsed += 1
        self._elapsed += 1
        if self._elapsed >= cfg.election_ticks:
            self._elapsed = 0
            if cfg.check_quorum and not self._quorum_active():
                self._become_follower(self._term, None)
                return
            for pr in self._prs.values():
                pr.recent_active = False
        if self._transferee is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= cfg.election_ticks:
                self._transferee = None  # the target did not take over in time
        for r in self._reads.expire(2 * cfg.election_ticks):
            self._answer_read(r.request_id, r.frm, 0)
        resend_after = max(2 * cfg.heartbeat_ticks, cfg.election_ticks // 2)
        for node, pr in self._prs.items():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snap_wait += 1
                if pr.snap_wait >= resend_after:
                    self._send_snapshot_chunk(node, pr)
        if self._hb_elapsed >= cfg.heartbeat_ticks:
            self._hb_elapsed = 0
            self._bcast_heartbeat()

    def _quorum_active(self) -> bool:
        voters = self._confs.current.voters
        active = 0
        for v in voters:
            if v == self._id:
                active += 1
            else:
                pr = self._prs.get(v)
                if pr is not None and pr.recent_active:
                    active += 1
        return active >= len(voters) // 2 + 1

    def _bcast_heartbeat(self) -> None:
        ctx = self._reads.start_round()
        for node, pr in self._prs.items():
            self._send_heartbeat(node, pr, ctx)
            if pr.state is ProgressState.REPLICATE:
                # Batches in flight and no progress for two whole heartbeat rounds:
                # assume they were lost and stream again from what it acknowledged.
                if pr.inflight and not pr.progressed:
                    pr.stalls += 1
                    if pr.stalls >= 2:
                        pr.become_replicate()
                        self._send_appends(node, pr)
                else:
                    pr.stalls = 0
            pr.progressed = False

    def _flush(self) -> None:
        """Send what proposals, commits and reads since the last call made necessary.

        A ReadIndex round's heartbeats also carry the commit index, so they
        replace the commit notifications when both are due.
        """
        if self._role is not Role.LEADER:
            return
        ctx = self._reads.start_round() if self._reads.needs_round() else 0
        entries_too = self._need_bcast or self._need_commit_bcast
        if not (entries_too or ctx):
            return
        commit_too = self._need_commit_bcast
        self._need_bcast = False
        self._need_commit_bcast = False
        for node, pr in self._prs.items():
            sent = self._send_appends(node, pr) if entries_too else False
            if ctx:
                self._send_heartbeat(node, pr, ctx)
            elif not sent and commit_too and min(self._commit, pr.match) > pr.sent_commit:
                self._send_heartbeat(node, pr, 0)

    def _send_appends(self, node: NodeId, pr: Progress) -> bool:
        """Send as many AppendEntries to ``node`` as flow control allows; True if any."""
        sent = False
        while self._send_append(node, pr):
            sent = True
            if pr.state is not ProgressState.REPLICATE:
                break
        return sent

    def _send_append(self, node: NodeId, pr: Progress) -> bool:
        if pr.blocked(self._cfg.max_inflight):
            return False
        log = self._log
        prev = pr.next - 1
        prev_term = log.term_at(prev)
        if prev_term is None:
            self._start_snapshot(node, pr)
            return False
        entries = log.batch(pr.next, self._cfg.max_entries_bytes)
        if pr.state is ProgressState.REPLICATE:
            if not entries:
                return False
            last = entries[-1].index
            pr.next = last + 1
            pr.inflight.append(last)
        else:  # probe: one message (possibly empty) and wait for the answer
            pr.paused = True
        commit = self._commit
        known = min(commit, prev + len(entries))
        pr.sent_commit = max(pr.sent_commit, known)
        self._send_early(
            AppendEntries(self._id, node, self._term, prev, prev_term, entries, commit)
        )
        return True

    def _on_append_response(self, msg: AppendResponse) -> None:
        if self._role is not Role.LEADER:
            return
        pr = self._prs.get(msg.frm)
        if pr is None:
            return
        pr.recent_active = True
        if msg.read_ctx > pr.read_ack:
            pr.read_ack = msg.read_ctx
            self._confirm_reads()
        if pr.state is ProgressState.PROBE:
            pr.paused = False
        if msg.success:
            if pr.update(msg.index) or (pr.state is ProgressState.PROBE and msg.index == pr.match):
                if pr.state is ProgressState.PROBE or (
                    pr.state is ProgressState.SNAPSHOT and pr.match >= pr.snap_index
                ):
                    pr.become_replicate()  # (a snapshot's last answer may have been lost)
                self._maybe_commit()
                if msg.frm == self._transferee and pr.match == self._log.last_index:
                    self._send(TimeoutNow(self._id, msg.frm, self._term))
        elif pr.state is ProgressState.REPLICATE:
            if msg.index > pr.match:
                pr.become_probe(self._back_off(msg))
        elif pr.state is ProgressState.PROBE and msg.index == pr.next - 1:
            pr.next = max(self._back_off(msg), pr.match + 1)
        if self._role is Role.LEADER and pr.state is not ProgressState.SNAPSHOT:
            sent = self._send_appends(msg.frm, pr)
            if not sent and min(self._commit, pr.match) > pr.sent_commit:
                self._need_commit_bcast = True  # it can now use a commit index it lacks

    def _back_off(self, msg: AppendResponse) -> int:
        """Where to probe next after a rejection: skip the follower's conflicting term."""
        j = self._log.last_at_or_below(msg.hint_index, msg.hint_term)
        return min(msg.index, j + 1)

    def _start_snapshot(self, node: NodeId, pr: Progress) -> None:
        snap = self._snapshot
        if snap is None:
            return  # nothing to send: the log was never compacted past this point
        pr.become_snapshot(snap.meta.index)
        self._send_snapshot_chunk(node, pr)

    def _send_snapshot_chunk(self, node: NodeId, pr: Progress) -> None:
        snap = self._snapshot
        if snap is None:
            return
        if snap.meta.index != pr.snap_index:  # compacted again meanwhile: send the new one
            pr.snap_index = snap.meta.index
            pr.snap_offset = 0
        off = pr.snap_offset
        size = self._cfg.snapshot_chunk_bytes
        chunk = snap.data[off : off + size]
        done = off + len(chunk) >= len(snap.data)
        pr.snap_wait = 0
        self._send_early(InstallSnapshot(self._id, node, self._term, snap.meta, off, chunk, done))

    def _on_snapshot_response(self, msg: SnapshotResponse) -> None:
        if self._role is not Role.LEADER:
            return
        pr = self._prs.get(msg.frm)
        if pr is None:
            return
        pr.recent_active = True
        if msg.done and msg.success:
            updated = pr.update(msg.index)
            if pr.state is ProgressState.SNAPSHOT:
                pr.become_replicate()
                self._send_appends(msg.frm, pr)
            if updated:
                self._maybe_commit()
            return
        if pr.state is not ProgressState.SNAPSHOT:
            return
        if not msg.success:
            pr.snap_offset = 0
            self._send_snapshot_chunk(msg.frm, pr)
        elif msg.index == pr.snap_index and msg.offset > pr.snap_offset:
            pr.snap_offset = msg.offset
            self._send_snapshot_chunk(msg.frm, pr)
