"""A simulated disk for one Raft node: durable state plus unsynced writes.

Theory of operation: the disk holds a *durable* image — hard state, the latest
snapshot, the log entries after it, and the state machine's applied index —
and at most one *pending* write, the persist step of the Ready being handled.
``write`` stages that step; ``sync`` makes it durable in one go (the real
storage commits one SQLite transaction and fsyncs). ``crash`` throws the
pending write away: a crash between writing and syncing loses the whole step,
and since messages are only sent after ``sync``, nobody ever heard of it.

The state machine's applied index is written in its own tiny transaction
together with each applied entry (``record_applied``), as the real store
records ``last_applied`` in the same transaction as the change it applies; a
crash can therefore neither skip nor repeat an apply. After a crash the node
is rebuilt from ``snapshot``, ``entries()`` and ``hard_state``, and the state
machine from the snapshot plus the entries up to ``applied``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import final

from dcrond.raft._types import ConfState, Entry, HardState, Snapshot


class DiskContractError(AssertionError):
    """A write broke the storage contract (a gap in the log, a snapshot in the future)."""


@final
@dataclass(frozen=True, slots=True)
class _Pending:
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]
    hard_state: HardState | None


@final
class SimDisk:
    """One node's durable state and its unsynced write, if any."""

    __slots__ = (
        "_log",
        "_pending",
        "_unsynced_hs",
        "applied",
        "bootstrap_conf",
        "hard_state",
        "snapshot",
        "syncs",
    )

    def __init__(self, bootstrap_conf: ConfState | None = None) -> None:
        #: membership this node was created with (before any snapshot or entry)
        self.bootstrap_conf = bootstrap_conf or ConfState()
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self._log: list[Entry] = []
        self.applied = 0  #: the state machine's durable applied index
        self._pending: _Pending | None = None
        self._unsynced_hs: HardState | None = None
        self.syncs = 0

    # --- reading ----------------------------------------------------------

    @property
    def snap_index(self) -> int:
        """Index of the durable snapshot (0 without one)."""
        return self.snapshot.meta.index if self.snapshot is not None else 0

    @property
    def snap_term(self) -> int:
        """Term of the durable snapshot's last entry (0 without one)."""
        return self.snapshot.meta.term if self.snapshot is not None else 0

    @property
    def first_index(self) -> int:
        """Index of the first durable log entry (after the snapshot)."""
        return self.snap_index + 1

    @property
    def last_index(self) -> int:
        """Index of the last durable entry, or of the snapshot when the log is empty."""
        return self.snap_index + len(self._log)

    def term(self, index: int) -> int | None:
        """Term of the durable entry at ``index``; None when compacted away or absent."""
        base = self.snap_index
        if index == base:
            return self.snap_term
        if index < base or index > base + len(self._log):
            return None
        return self._log[index - base - 1].term

    def entry(self, index: int) -> Entry | None:
        """The durable entry at ``index``, or None when compacted away or absent."""
        pos = index - self.snap_index - 1
        if pos < 0 or pos >= len(self._log):
            return None
        return self._log[pos]

    def entries(self, lo: int | None = None, hi: int | None = None) -> list[Entry]:
        """Durable entries with ``lo <= index <= hi`` (default: all of them)."""
        base = self.snap_index
        start = 0 if lo is None else max(0, lo - base - 1)
        stop = len(self._log) if hi is None else max(0, hi - base)
        return self._log[start:stop]

    @property
    def has_pending(self) -> bool:
        """True between ``write`` and ``sync``."""
        return self._pending is not None

    # --- writing ----------------------------------------------------------

    def write(
        self, snapshot: Snapshot | None, entries: tuple[Entry, ...], hard_state: HardState | None
    ) -> None:
        """Stage a Ready's persist step; nothing is durable until ``sync``."""
        self._pending = _Pending(snapshot, entries, hard_state)

    def write_unsynced(self, hard_state: HardState) -> None:
        """Write a new commit index without an fsync (a Ready whose ``must_sync`` is False).

        It becomes durable with the next ``sync`` (as SQLite's WAL is written
        in order) and is lost by a crash before that.
        """
        self._unsynced_hs = hard_state

    def sync(self) -> None:
        """Make the staged write durable, atomically.

        Raises DiskContractError when the staged entries leave a gap after the
        durable log (the Ready asked for something no real log can hold).
        """
        p = self._pending
        self._pending = None
        if self._unsynced_hs is not None:
            self.hard_state = self._unsynced_hs
            self._unsynced_hs = None
        if p is None:
            return
        self.syncs += 1
        if p.snapshot is not None:
            self._install(p.snapshot)
        if p.entries:
            self._append(p.entries)
        if p.hard_state is not None:
            self.hard_state = p.hard_state

    def crash(self) -> None:
        """Lose whatever was written but not synced."""
        self._pending = None
        self._unsynced_hs = None

    def _install(self, snap: Snapshot) -> None:
        """A snapshot replaces every entry up to its index (as ``LogStorage.save`` does).

        The entries after it are kept only when the stored entry at its index
        has the snapshot's term (the Raft paper's rule); otherwise the whole
        log goes.
        """
        idx = snap.meta.index
        if idx <= self.snap_index:
            raise DiskContractError(
                f"snapshot at {idx} does not advance the one at {self.snap_index}"
            )
        if self.term(idx) == snap.meta.term:
            self._log = self._log[idx - self.snap_index :]
        else:
            self._log = []
        self.snapshot = snap

    def _append(self, entries: tuple[Entry, ...]) -> None:
        first = entries[0].index
        base = self.snap_index
        if first > self.last_index + 1:
            raise DiskContractError(
                f"entries start at {first} but the log ends at {self.last_index}"
            )
        for a, b in itertools.pairwise(entries):
            if b.index != a.index + 1:
                raise DiskContractError(f"entries not contiguous: {a.index} then {b.index}")
        if first <= base:
            # the part already covered by the snapshot is not stored again
            entries = entries[base + 1 - first :]
            if not entries:
                return
            first = entries[0].index
        del self._log[first - base - 1 :]
        self._log.extend(entries)

    def compact(self, snap: Snapshot) -> None:
        """Durably store an application snapshot and drop the entries it covers."""
        idx = snap.meta.index
        if idx <= self.snap_index:
            return
        if idx > self.last_index or self.term(idx) != snap.meta.term:
            raise DiskContractError(
                f"compaction snapshot ({idx}, term {snap.meta.term}) is not in the durable log"
            )
        self._log = self._log[idx - self.snap_index :]
        self.snapshot = snap

    def record_applied(self, index: int) -> None:
        """Durably note the state machine's applied index (same transaction as the apply)."""
        self.applied = index
