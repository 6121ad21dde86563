"""Raft's safety invariants, checked incrementally while the simulator runs.

Theory of operation: the simulator calls the hooks below at the moments that
matter (after every step, around every persist, at every apply, snapshot and
acknowledgement), and each hook does a constant amount of work per new fact, so
the checks can run after every single event.

- **Election safety** (``observe_role``): a map term -> leader; a second node
  leading in a term already taken is a violation.
- **Log matching** (``after_persist``): every entry ever made durable is
  remembered by (index, term) together with the term of the entry before it.
  If (index, term) always comes with the same content and the same previous
  term, then by induction two logs that share an (index, term) are identical
  up to it, which is the invariant, without ever comparing whole logs.
- **Committed is forever** (``before_persist``): an entry at or below a node's
  durable commit index, or equal to a known-committed entry, must never be
  replaced or cut off; terms never go back and a vote never changes within a
  term.
- **Leader completeness** (``observe_role``): the *ledger* holds every entry
  known to be committed (from commit indexes and applies), with the lowest
  term in which some node knew it committed (an upper bound of the term it
  was committed in). When a node first leads term T, its durable log must
  hold every ledger entry committed before T (a snapshot covers the part it
  compacted). Entries committed in T or later need not be there: a candidate
  of an old term may still win it late, from votes that were delayed.
- **State machine safety** (``on_apply``): every applied entry must equal the
  ledger's entry at its index, and each node applies indexes in order without
  gaps. Snapshots (``on_snapshot_created``, ``on_restore``) must hold the
  same bytes for the same index on every node: the state machine's image
  includes a digest of every entry it applied.
- **No acknowledged write lost** (``on_ack``): an acknowledged entry is in the
  ledger, so every node that later applies its index must apply it.

A broken invariant raises ``InvariantViolation`` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

from dcrond.raft._types import Entry, NodeId, Ready, Role, Snapshot
from dcrond.testing._simdisk import SimDisk


class InvariantViolation(AssertionError):
    """A safety invariant broke; ``invariant`` names it and ``detail`` says how."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


@final
@dataclass(frozen=True, slots=True)
class CheckerStats:
    """How much the checker saw (also a cheap fingerprint of a run)."""

    terms_with_leader: int
    entries_seen: int
    committed: int
    applies: int
    snapshots: int
    acked: int


def _e(e: Entry | None) -> str:
    if e is None:
        return "nothing"
    return f"({e.index}, term {e.term}, {e.kind.name}, {e.data[:40]!r})"


@final
class SafetyChecker:
    """Incremental checks of Raft's safety properties across every node of one simulation."""

    __slots__ = (
        "_applied",
        "_applies",
        "_by_index_term",
        "_checked_leaders",
        "_prev_commit",
        "acked",
        "commit_term",
        "leaders",
        "ledger",
        "ledger_max",
        "snap_data",
    )

    def __init__(self) -> None:
        self.leaders: dict[int, NodeId] = {}
        self._checked_leaders: set[tuple[NodeId, int]] = set()
        #: (index, term) -> (entry, term of the entry before it)
        self._by_index_term: dict[tuple[int, int], tuple[Entry, int]] = {}
        #: index -> the committed entry there
        self.ledger: dict[int, Entry] = {}
        self.ledger_max = 0
        #: index -> lowest term in which a node was seen knowing that entry committed
        self.commit_term: dict[int, int] = {}
        #: index -> the state machine image every snapshot at that index must hold
        self.snap_data: dict[int, bytes] = {}
        self._applied: dict[NodeId, int] = {}
        self._applies = 0
        self.acked: dict[int, Entry] = {}
        self._prev_commit = 0

    # --- election safety and leader completeness ----------------------------

    def observe_role(self, node: NodeId, term: int, role: Role, disk: SimDisk) -> None:
        """After every step or tick: at most one leader per term; a new leader holds the ledger."""
        if role != Role.LEADER:
            return
        prev = self.leaders.get(term)
        if prev is None:
            self.leaders[term] = node
        elif prev != node:
            raise InvariantViolation(
                "election safety", f"{prev} and {node} are both leaders of term {term}"
            )
        if (node, term) not in self._checked_leaders:
            self._checked_leaders.add((node, term))
            self._check_completeness(node, term, disk)

    def _check_completeness(self, node: NodeId, term: int, disk: SimDisk) -> None:
        snap = disk.snap_index
        ledger = self.ledger
        known = ledger.get(snap)
        if snap and known is not None and known.term != disk.snap_term:
            raise InvariantViolation(
                "leader completeness",
                f"{node} leads term {term} from a snapshot at ({snap}, term "
                f"{disk.snap_term}) but the committed entry there is {_e(known)}",
            )
        commit_term = self.commit_term
        for i in range(snap + 1, self.ledger_max + 1):
            ct = commit_term.get(i)
            if ct is None or ct >= term:
                continue
            have = disk.term(i)
            want = ledger[i]
            if have != want.term:
                where = "lacks" if have is None else f"holds term {have} at {i} instead of"
                raise InvariantViolation(
                    "leader completeness",
                    f"{node} leads term {term} but {where} {_e(want)}, committed by term {ct}",
                )

    # --- persistence ----------------------------------------------------------

    def before_persist(self, node: NodeId, disk: SimDisk, rd: Ready) -> None:
        """Before a Ready is written: nothing committed is rewritten; hard state only moves on."""
        hs = rd.hard_state
        old = disk.hard_state
        self._prev_commit = old.commit
        if hs is not None:
            if hs.term < old.term:
                raise InvariantViolation(
                    "durable term", f"{node} would persist term {hs.term} after {old.term}"
                )
            if hs.term == old.term and old.vote is not None and hs.vote != old.vote:
                raise InvariantViolation(
                    "one vote per term",
                    f"{node} voted for {old.vote} in term {old.term} and now for {hs.vote}",
                )
            if hs.commit < old.commit:
                raise InvariantViolation(
                    "durable commit", f"{node} would persist commit {hs.commit} after {old.commit}"
                )
        if rd.entries:
            first = rd.entries[0].index
            last = disk.last_index
            if first <= last:
                self._check_overwrite(node, disk, rd.entries, first, last)
        if rd.snapshot is not None:
            self._check_snapshot(node, rd.snapshot, "received")

    def _check_overwrite(
        self, node: NodeId, disk: SimDisk, entries: tuple[Entry, ...], first: int, last: int
    ) -> None:
        commit = disk.hard_state.commit
        ledger = self.ledger
        n = len(entries)
        for i in range(max(first, disk.first_index), last + 1):
            old = disk.entry(i)
            new = entries[i - first] if i - first < n else None
            if old == new:
                continue
            if i <= commit or (old is not None and ledger.get(i) == old):
                raise InvariantViolation(
                    "committed entries are never removed",
                    f"{node} (durable commit {commit}) would replace committed "
                    f"{_e(old)} with {_e(new)}",
                )

    def after_persist(self, node: NodeId, disk: SimDisk, rd: Ready) -> None:
        """After a Ready is durable: log matching for its entries; its commit extends the ledger."""
        if rd.entries:
            by_it = self._by_index_term
            base = disk.snap_index
            for e in rd.entries:
                if e.index <= base:
                    continue
                prev = disk.term(e.index - 1)
                if prev is None:
                    raise InvariantViolation(
                        "log matching", f"{node} stored {_e(e)} without the entry before it"
                    )
                if e.term < prev:
                    raise InvariantViolation(
                        "log terms never decrease",
                        f"{node} stored {_e(e)} after an entry of term {prev}",
                    )
                key = (e.index, e.term)
                seen = by_it.get(key)
                if seen is None:
                    by_it[key] = (e, prev)
                elif seen[0] != e or seen[1] != prev:
                    raise InvariantViolation(
                        "log matching",
                        f"{node} stored {_e(e)} after term {prev}; another log has "
                        f"{_e(seen[0])} after term {seen[1]}",
                    )
        hs = rd.hard_state
        if hs is not None and hs.commit > 0:
            if hs.commit > disk.last_index:
                raise InvariantViolation(
                    "commit within the log",
                    f"{node} persisted commit {hs.commit} beyond its log end {disk.last_index}",
                )
            if hs.commit > self._prev_commit:
                self._extend_ledger(node, disk, self._prev_commit + 1, hs.commit, hs.term)

    def _extend_ledger(self, node: NodeId, disk: SimDisk, lo: int, commit: int, term: int) -> None:
        ledger = self.ledger
        commit_term = self.commit_term
        for e in disk.entries(lo, commit):
            known = ledger.get(e.index)
            ct = commit_term.get(e.index)
            if ct is None or term < ct:
                commit_term[e.index] = term
            if known is None:
                ledger[e.index] = e
            elif known != e:
                raise InvariantViolation(
                    "state machine safety",
                    f"{node} has committed {_e(e)} but {_e(known)} was committed there before",
                )
        self.ledger_max = max(self.ledger_max, commit)

    # --- applying -------------------------------------------------------------

    def on_apply(self, node: NodeId, entry: Entry, term: int) -> None:
        """Every node applies the same entry at each index, in order, without gaps.

        ``term`` is the applying node's current term (the entry is committed by then).
        """
        i = entry.index
        prev = self._applied.get(node, 0)
        if i != prev + 1:
            raise InvariantViolation(
                "apply in order", f"{node} applied {_e(entry)} right after index {prev}"
            )
        self._applied[node] = i
        self._applies += 1
        ct = self.commit_term.get(i)
        if ct is None or term < ct:
            self.commit_term[i] = term
        known = self.ledger.get(i)
        if known is None:
            self.ledger[i] = entry
            self.ledger_max = max(self.ledger_max, i)
        elif known is not entry and known != entry:
            raise InvariantViolation(
                "state machine safety",
                f"{node} applied {_e(entry)} but {_e(known)} is committed at {i}",
            )

    def on_restart(self, node: NodeId, applied: int) -> None:
        """A node came back with its state machine at ``applied``."""
        self._applied[node] = applied

    def _check_snapshot(self, node: NodeId, snap: Snapshot, how: str) -> None:
        meta = snap.meta
        known = self.ledger.get(meta.index)
        if known is not None and known.term != meta.term:
            raise InvariantViolation(
                "snapshot safety",
                f"{node} {how} a snapshot at ({meta.index}, term {meta.term}) "
                f"but {_e(known)} is committed there",
            )
        data = self.snap_data.get(meta.index)
        if data is None:
            self.snap_data[meta.index] = snap.data
        elif data != snap.data:
            raise InvariantViolation(
                "snapshot safety",
                f"{node} {how} a snapshot at {meta.index} whose state differs from "
                "another node's snapshot at the same index",
            )

    def on_snapshot_created(self, node: NodeId, snap: Snapshot) -> None:
        """A node compacted its log into ``snap``."""
        self._check_snapshot(node, snap, "took")

    def on_restore(self, node: NodeId, snap: Snapshot) -> None:
        """A node's state machine was replaced by a received snapshot."""
        prev = self._applied.get(node, 0)
        if snap.meta.index < prev:
            raise InvariantViolation(
                "state machine safety",
                f"{node} restored a snapshot at {snap.meta.index}, behind its applied {prev}",
            )
        self._check_snapshot(node, snap, "restored")
        self._applied[node] = snap.meta.index

    # --- clients --------------------------------------------------------------

    def on_ack(self, node: NodeId, entry: Entry) -> None:
        """A client was told its command at ``entry.index`` succeeded."""
        known = self.ledger.get(entry.index)
        if known != entry:
            raise InvariantViolation(
                "acknowledged writes are kept",
                f"{node} acknowledged {_e(entry)} but the committed entry is {_e(known)}",
            )
        self.acked[entry.index] = entry

    def stats(self) -> CheckerStats:
        """Counters of what was checked."""
        return CheckerStats(
            terms_with_leader=len(self.leaders),
            entries_seen=len(self._by_index_term),
            committed=len(self.ledger),
            applies=self._applies,
            snapshots=len(self.snap_data),
            acked=len(self.acked),
        )
