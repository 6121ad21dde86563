"""What ``LogStorage.save`` refuses to write: the log's invariants, checked before writing.

Every rule here mirrors a check of the verifying scan in ``_storage_format``:
a save that passes them leaves a log that the next start-up accepts, so a
log written by dcrond can only fail that scan through damage. A save that
breaks one is a bug in the caller (the Raft core or its driver) and raises
``ValueError`` with nothing written. The rules:

- indexes are contiguous; new entries start after the snapshot and at most
  one past the last stored entry (an earlier start replaces the suffix);
- terms never decrease along the log, and none is newer than the current term;
- the current term never goes back, and a vote once cast in a term never
  changes within it (term and vote are written together, in one transaction);
- a committed entry is never replaced (the Raft paper: only a *conflicting*
  suffix is deleted, and committed entries never conflict);
- the commit index never points past the end of the log;
- a snapshot is never older than the stored one, nor newer than the term.

Pure: no I/O. The one thing it needs from the file, the term of an entry in
the middle of the log, comes through the ``term_at`` callable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, final

from dcrond.raft._types import Entry, EntryKind, HardState, Snapshot

KINDS: Final = frozenset(int(k) for k in EntryKind)


@final
@dataclass(frozen=True, slots=True)
class LogShape:
    """The figures of a stored log that a save is checked against."""

    hard_state: HardState
    snap_index: int
    snap_term: int
    last_index: int  #: the last entry's index, or the snapshot's without entries
    last_term: int


@final
@dataclass(frozen=True, slots=True)
class SavePlan:
    """What one save will do and leave behind, decided before anything is written."""

    after: LogShape
    keep_suffix: bool  #: the snapshot keeps the stored entries after its index
    last_before_entries: int  #: the last index once the snapshot is applied
    entry_bytes: int


def term_in(shape: LogShape, index: int, lookup: Callable[[int], int | None]) -> int | None:
    """The term at ``index`` (the snapshot's at its own index); None outside the log."""
    if index == shape.snap_index:
        return shape.snap_term
    if index == shape.last_index:
        return shape.last_term
    if index < shape.snap_index or index > shape.last_index:
        return None
    return lookup(index)


def plan_save(
    shape: LogShape,
    hard_state: HardState | None,
    entries: Sequence[Entry],
    snapshot: Snapshot | None,
    lookup: Callable[[int], int | None],
) -> SavePlan:
    """Check a save against the rules above and say what it will do; ValueError if not."""
    snap_index, snap_term = shape.snap_index, shape.snap_term
    last_index, last_term = shape.last_index, shape.last_term
    term_now = hard_state.term if hard_state is not None else shape.hard_state.term
    keep = False
    if snapshot is not None:
        meta = snapshot.meta
        if meta.index < 1 or meta.term < 1:
            raise ValueError(f"snapshot index {meta.index} / term {meta.term} is below 1")
        if meta.index < snap_index:
            raise ValueError(
                f"snapshot at {meta.index} is older than the stored one at {snap_index}"
            )
        if meta.term > term_now:
            raise ValueError(f"snapshot term {meta.term} is newer than the current term {term_now}")
        keep = term_in(shape, meta.index, lookup) == meta.term
        if not keep and meta.index < shape.hard_state.commit:
            raise ValueError(
                f"snapshot ({meta.index}, term {meta.term}) disagrees with the committed "
                f"log (commit is {shape.hard_state.commit}): it would drop committed entries"
            )
        snap_index, snap_term = meta.index, meta.term
        if not keep:
            last_index, last_term = snap_index, snap_term
    last_before = last_index
    size = 0
    if entries:
        first = entries[0].index
        if not snap_index < first <= last_index + 1:
            raise ValueError(
                f"entries start at {first}; this log accepts {snap_index + 1}..{last_index + 1}"
            )
        if first <= shape.hard_state.commit:
            raise ValueError(
                f"entry {first} would replace a committed entry (commit is "
                f"{shape.hard_state.commit}); only an uncommitted suffix may be replaced"
            )
        after_snapshot = LogShape(shape.hard_state, snap_index, snap_term, last_index, last_term)
        prev_term = term_in(after_snapshot, first - 1, lookup) or 0
        prev_index = first - 1
        for e in entries:
            if e.index != prev_index + 1:
                raise ValueError(f"entry {e.index} follows entry {prev_index}: not contiguous")
            if e.term < max(prev_term, 1):
                raise ValueError(f"entry {e.index} has term {e.term}, below {max(prev_term, 1)}")
            if e.term > term_now:
                raise ValueError(
                    f"entry {e.index} has term {e.term}, newer than the current term {term_now}"
                )
            if not isinstance(e.data, bytes) or e.kind not in KINDS:
                raise ValueError(f"entry {e.index} has an unknown kind or data that is not bytes")
            size += len(e.data)
            prev_index, prev_term = e.index, e.term
        last_index, last_term = prev_index, prev_term
    old = shape.hard_state
    new = hard_state if hard_state is not None else old
    if new.term < old.term:
        raise ValueError(f"the term would go back from {old.term} to {new.term}")
    if new.term == old.term and old.vote is not None and new.vote != old.vote:
        raise ValueError(
            f"the vote in term {old.term} would change from {old.vote!r} to {new.vote!r}"
        )
    if not 0 <= new.commit <= last_index:
        raise ValueError(f"commit {new.commit} is outside the log, which ends at {last_index}")
    after = LogShape(new, snap_index, snap_term, last_index, last_term)
    return SavePlan(after, keep, last_before, size)
