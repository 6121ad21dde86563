"""The in-memory Raft log of one node: a snapshot point plus the entries after it.

Theory of operation
-------------------
The log is a Python list of entries that starts right after a *snapshot
point* ``(snap_index, snap_term)``: the entry at index ``i`` lives at
``entries[i - snap_index - 1]``. Index ``snap_index`` itself still has a known
term (the snapshot's), which is all that log matching needs; anything below it
is gone. A fresh log has the point (0, 0), the empty log's sentinel.

``sent`` marks how far the entries were handed to the driver in a ``Ready``
(the driver persists them in that order); entries after it are *unsent*.
``persisted`` marks how far the driver confirmed them durable (``advance``).
When a conflicting suffix is cut off, both move back, so the next ``Ready``
carries the replacement entries (storage replaces everything from the first
one on).

Terms never decrease along the log, so "the last index whose term is at most
t" is a binary search; the fast back-off after a rejected AppendEntries uses
it on both sides (follower and leader) to skip a whole term per round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

from dcrond.raft._types import Entry


@final
class RaftLog:
    """Entries after a snapshot point, and how far they were handed to the driver."""

    __slots__ = ("_entries", "persisted", "sent", "snap_index", "snap_term")

    def __init__(self, snap_index: int, snap_term: int, entries: Sequence[Entry]) -> None:
        self.snap_index = snap_index
        self.snap_term = snap_term
        self._entries: list[Entry] = []
        expected = snap_index + 1
        for e in entries:
            if e.index < expected:
                continue  # already covered by the snapshot
            if e.index != expected:
                raise ValueError(
                    f"log entries are not contiguous: expected {expected}, got {e.index}"
                )
            self._entries.append(e)
            expected += 1
        self.sent = self.last_index  # what we were given is already durable
        self.persisted = self.last_index

    # --- reading ------------------------------------------------------------

    @property
    def last_index(self) -> int:
        """Index of the last entry (the snapshot's when there is none after it)."""
        return self.snap_index + len(self._entries)

    @property
    def last_term(self) -> int:
        """Term of the last entry (the snapshot's when there is none after it)."""
        return self._entries[-1].term if self._entries else self.snap_term

    @property
    def first_index(self) -> int:
        """Index of the first entry still held (``snap_index + 1``)."""
        return self.snap_index + 1

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when compacted away or beyond the end."""
        off = index - self.snap_index - 1
        if off == -1:
            return self.snap_term
        if off < 0 or off >= len(self._entries):
            return None
        return self._entries[off].term

    def entry(self, index: int) -> Entry:
        """The entry at ``index`` (must be held)."""
        return self._entries[index - self.snap_index - 1]

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with ``lo <= index <= hi`` that are held (``lo`` above the snapshot)."""
        base = self.snap_index + 1
        return self._entries[max(lo - base, 0) : max(hi - base + 1, 0)]

    def batch(self, lo: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries from ``lo`` whose data totals at most ``max_bytes`` (at least one entry)."""
        start = lo - self.snap_index - 1
        n = len(self._entries)
        if start < 0 or start >= n:
            return ()
        total = 0
        stop = start
        entries = self._entries
        while stop < n:
            size = len(entries[stop].data)
            if stop > start and total + size > max_bytes:
                break
            total += size
            stop += 1
        return tuple(entries[start:stop])

    def unsent(self) -> tuple[Entry, ...]:
        """Entries not yet handed to the driver, and mark them handed."""
        start = self.sent - self.snap_index
        out = tuple(self._entries[max(start, 0) :])
        self.sent = self.last_index
        return out

    def has_unsent(self) -> bool:
        """True when some entries were not yet handed to the driver."""
        return self.sent < self.last_index

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """True when a log ending at (last_index, last_term) is at least as new as ours."""
        my_term = self.last_term
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index)

    def last_at_or_below(self, index: int, term: int) -> int:
        """The largest held index ``<= index`` whose term is ``<= term``.

        Returns ``snap_index - 1`` when even the snapshot point has a newer term
        (the answer lies in the compacted part). Terms never decrease along
        the log, so this is a binary search.
        """
        lo = self.snap_index
        hi = min(index, self.last_index)
        if hi < lo:
            return hi
        if self.snap_term > term:
            return lo - 1
        # invariant: term_at(lo) <= term; find the largest such index in [lo, hi]
        while lo < hi:
            mid = (lo + hi + 1) // 2
            t = self.term_at(mid)
            assert t is not None
            if t <= term:
                lo = mid
            else:
                hi = mid - 1
        return lo

    # --- writing ------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        """Append one entry right after the last one (the leader's path)."""
        self._entries.append(entry)

    def truncate_from(self, index: int) -> None:
        """Drop the entries at ``index`` and after (a conflicting suffix)."""
        off = index - self.snap_index - 1
        off = max(off, 0)
        del self._entries[off:]
        if self.sent >= index:
            self.sent = index - 1
        if self.persisted >= index:
            self.persisted = index - 1

    def extend(self, entries: Sequence[Entry]) -> None:
        """Append entries that follow the last one (after a ``truncate_from``)."""
        self._entries.extend(entries)

    def compact(self, index: int, term: int) -> None:
        """Drop every entry up to ``index`` (a snapshot now covers them)."""
        drop = index - self.snap_index
        if drop <= 0:
            return
        del self._entries[:drop]
        self.snap_index = index
        self.snap_term = term
        self.sent = max(self.sent, index)

    def restore(self, index: int, term: int) -> bool:
        """Reset to a received snapshot point; keep the suffix when the point matches.

        Returns True when the entries after the point were kept (the entry at
        ``index`` had ``term``: by log matching everything before it agrees).
        """
        keep = self.term_at(index) == term and index <= self.last_index
        if keep:
            self.compact(index, term)
            return True
        self._entries.clear()
        self.snap_index = index
        self.snap_term = term
        self.sent = index
        self.persisted = min(self.persisted, index)
        return False

    def mark_persisted(self, entries: Sequence[Entry]) -> None:
        """The driver made ``entries`` durable (those still in the log count)."""
        for e in reversed(entries):
            if self.term_at(e.index) == e.term:
                self.persisted = max(self.persisted, e.index)
                return
