"""The follower's side of ``RaftCore``: entries and snapshots received from the leader.

Theory of operation
-------------------
An AppendEntries is accepted when our entry at ``prev_index`` has
``prev_term``; then entries we already hold with the same term are skipped,
the first conflicting one cuts off our suffix (reverting any membership it
carried) and the rest is appended. Everything up to our commit index agrees
with every later leader's log, so the part of a message below it is skipped
unchecked (it may be compacted here). A rejection carries a hint: the last
index at or below ``prev_index`` whose term is at most ``prev_term``, so the
leader can skip our whole conflicting term.

Snapshot chunks are assembled in memory in order; a chunk that does not fit
(after a restart, say) is answered with ``success=False`` and the leader
starts over. The last chunk installs the snapshot: the log is replaced (its
suffix is kept when it agrees with the snapshot's last entry) and the next
Ready hands the image to the driver to persist and restore.
"""

from __future__ import annotations

from dcrond.raft._corebase import CANDIDATES, CoreBase
from dcrond.raft._types import (
    AppendEntries,
    AppendResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    NodeId,
    Role,
    Snapshot,
    SnapshotResponse,
)


class FollowerMixin(CoreBase):
    """Follower behaviour of ``RaftCore``."""

    __slots__ = ()

    def _accept_leader(self, leader: NodeId) -> None:
        if self._role in CANDIDATES:
            self._become_follower(self._term, leader)
        else:
            self._set_leader(leader)
        self._elapsed = 0

    def _on_append(self, msg: AppendEntries) -> None:
        if self._role is Role.LEADER:
            return  # impossible for a correct peer: one leader per term
        self._accept_leader(msg.frm)
        log = self._log
        prev, prev_term, entries = msg.prev_index, msg.prev_term, msg.entries
        if prev < self._commit:
            # Everything up to commit agrees with every later leader's log;
            # skip that part (it may be compacted here).
            skip = self._commit - prev
            entries = entries[skip:] if skip < len(entries) else ()
            prev = self._commit
            t = log.term_at(prev)
            prev_term = t if t is not None else 0
        elif log.term_at(prev) != prev_term:
            hint = log.last_at_or_below(prev, prev_term)
            hint_term = log.term_at(hint)
            self._send(
                AppendResponse(
                    self._id,
                    msg.frm,
                    self._term,
                    False,
                    msg.prev_index,
                    hint,
                    hint_term if hint_term is not None else 0,
                    msg.read_ctx,
                )
            )
            return
        if entries:
            self._append_from_leader(entries)
        last_new = prev + len(entries)
        if msg.commit > self._commit:
            new_commit = min(msg.commit, last_new)
            self._commit = max(self._commit, new_commit)
        self._send(
            AppendResponse(self._id, msg.frm, self._term, True, last_new, read_ctx=msg.read_ctx)
        )

    def _append_from_leader(self, entries: tuple[Entry, ...]) -> None:
        """Append what is new in ``entries`` (which follow a matching prev entry)."""
        log = self._log
        last = log.last_index
        start = 0
        n = len(entries)
        # skip the entries we already hold with the same term
        while start < n:
            e = entries[start]
            if e.index > last:
                break
            if log.term_at(e.index) != e.term:
                if e.index <= self._commit:
                    return  # would cut off a committed entry: a broken peer, ignore
                log.truncate_from(e.index)
                if self._confs.truncate_from(e.index):
                    self._on_conf_changed()
                break
            start += 1
        if start >= n:
            return
        new = entries[start:]
        log.extend(new)
        conf_changed = False
        for e in new:
            if e.kind == EntryKind.CONFIG:
                self._confs.append(e.index, e.data)
                conf_changed = True
        if conf_changed:
            self._on_conf_changed()

    def _on_install_snapshot(self, msg: InstallSnapshot) -> None:
        if self._role is Role.LEADER:
            return
        self._accept_leader(msg.frm)
        meta = msg.meta
        log = self._log

        def answer(index: int, offset: int, done: bool, success: bool = True) -> None:
            self._send(
                SnapshotResponse(self._id, msg.frm, self._term, index, offset, done, success)
            )

        if meta.index <= self._commit:
            self._snap_recv = None
            answer(self._commit, 0, True)
            return
        if log.term_at(meta.index) == meta.term:
            # We hold the snapshot's last entry: everything up to it agrees and
            # is committed; no need for the image.
            self._snap_recv = None
            self._commit = meta.index
            answer(meta.index, 0, True)
            return
        recv = self._snap_recv
        if msg.offset == 0:
            recv = (meta, bytearray())
        elif recv is None or recv[0] != meta or msg.offset > len(recv[1]):
            self._snap_recv = None
            answer(meta.index, 0, False, False)
            return
        elif msg.offset < len(recv[1]):
            answer(meta.index, len(recv[1]), False)  # a duplicate chunk
            return
        recv[1].extend(msg.chunk)
        if not msg.done:
            self._snap_recv = recv
            answer(meta.index, len(recv[1]), False)
            return
        self._snap_recv = None
        self._install(Snapshot(meta, bytes(recv[1])))
        answer(meta.index, len(recv[1]), True)

    def _install(self, snap: Snapshot) -> None:
        meta = snap.meta
        log = self._log
        kept = log.restore(meta.index, meta.term)
        self._confs.reset(meta.conf, meta.index)
        if kept:
            for e in log.slice(meta.index + 1, log.last_index):
                if e.kind == EntryKind.CONFIG:
                    self._confs.append(e.index, e.data)
        self._snapshot = snap
        self._pending_snapshot = snap
        self._commit = max(self._commit, meta.index)
        self._applying = max(self._applying, meta.index)
        self._on_conf_changed()
