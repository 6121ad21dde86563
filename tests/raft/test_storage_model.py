"""LogStorage behaves like a plain in-memory Raft log across saves, compactions and reopens.

A hypothesis state machine drives LogStorage and a list-based model side by
side with random saves (appends, suffix replacements, hard states, snapshots),
compactions and reopens, some of them invalid on purpose. After every step
the file, read back through ``load()``, must equal the model; an invalid step
must raise ValueError and change nothing.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dcrond.raft._storage import LogStorage
from dcrond.raft._types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta

VOTES = st.sampled_from([None, "n1", "n2"])


class StorageVersusModel(RuleBasedStateMachine):
    """LogStorage against a list-based model of the same log."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="dcrond-storage-model-"))
        self.path = self.folder / "raft.db"
        self.log = LogStorage.open(self.path, sync=False)
        self.hs = HardState()
        self.snap: Snapshot | None = None
        self.entries: list[Entry] = []  # the entries after the snapshot
        self.serial = 0

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.folder)

    # --- the model ------------------------------------------------------------------

    @property
    def snap_index(self) -> int:
        return self.snap.meta.index if self.snap else 0

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snap_index

    def term_at(self, index: int) -> int | None:
        if self.snap and index == self.snap_index:
            return self.snap.meta.term
        if index == 0:
            return 0
        if self.snap_index < index <= self.last_index:
            return self.entries[index - self.snap_index - 1].term
        return None

    def hard_state_ok(self, new: HardState | None, last: int) -> bool:
        hs = new or self.hs
        if hs.term < self.hs.term or hs.commit > last:
            return False
        return not (
            hs.term == self.hs.term and self.hs.vote is not None and hs.vote != self.hs.vote
        )

    def attempt(self, ok: bool, hs: HardState | None, es: list[Entry], sn: Snapshot | None) -> bool:
        """Save through LogStorage; True when it was accepted (and the model must follow)."""
        event("save " + ("accepted" if ok else "refused"))
        if ok and es and es[0].index <= self.last_index:
            event("save replaced a suffix")
        if ok and sn and self.term_at(sn.meta.index) == sn.meta.term:
            event("snapshot kept a suffix")
        try:
            self.log.save(hard_state=hs, entries=es, snapshot=sn)
        except ValueError:
            assert not ok, f"a valid save was refused: {hs} {es} {sn}"
            return False
        assert ok, f"an invalid save was accepted: {hs} {es} {sn}"
        return True

    # --- rules ----------------------------------------------------------------------

    def wild(self, data: st.DataObject) -> bool:
        """One step in four draws from ranges that include invalid values."""
        return data.draw(st.integers(0, 3), label="wild") == 0

    @rule(
        data=st.data(), count=st.integers(1, 5), kind=st.sampled_from(list(EntryKind)), vote=VOTES
    )
    def append(self, data: st.DataObject, count: int, kind: EntryKind, vote: str | None) -> None:
        wild = self.wild(data)
        low = self.snap_index if wild else max(self.snap_index, self.hs.commit) + 1
        start = data.draw(st.integers(low, self.last_index + 1 + wild), label="start")
        prev_term = self.term_at(start - 1) or 0
        valid_terms = [max(prev_term, 1), max(prev_term, self.hs.term, 1)]
        valid_terms.append(valid_terms[-1] + 1)  # a new term, which needs a new hard state
        term = data.draw(
            st.sampled_from([*valid_terms, prev_term - 1] if wild else valid_terms), label="term"
        )
        entries = []
        for i in range(count):
            self.serial += 1
            entries.append(Entry(term, start + i, kind, b"d%d" % self.serial))
        last = start + count - 1
        hs = None
        if term > self.hs.term or data.draw(st.booleans(), label="with hard state"):
            low, high = sorted((self.hs.commit, last + wild))
            commit = data.draw(st.integers(low, high), label="commit")
            new_term = data.draw(st.sampled_from([term, self.hs.term]), label="hs term")
            if term > self.hs.term and not wild:
                new_term = term
            hs = HardState(
                new_term, vote if new_term > self.hs.term or wild else self.hs.vote, commit
            )
        ok = (
            self.snap_index < start <= self.last_index + 1
            and start > self.hs.commit
            and max(prev_term, 1) <= term <= (hs or self.hs).term
            and self.hard_state_ok(hs, last)
        )
        if self.attempt(ok, hs, entries, None):
            self.entries = [e for e in self.entries if e.index < start] + entries
            self.hs = hs or self.hs

    @rule(term_step=st.integers(-1, 1), vote=VOTES, data=st.data())
    def set_hard_state(self, term_step: int, vote: str | None, data: st.DataObject) -> None:
        wild = self.wild(data)
        commit = data.draw(st.integers(self.hs.commit, self.last_index + wild), label="commit")
        term = max(self.hs.term + (term_step if wild else abs(term_step)), 0)
        if term == self.hs.term and self.hs.vote is not None and not wild:
            vote = self.hs.vote
        hs = HardState(term, vote, commit)
        if self.attempt(self.hard_state_ok(hs, self.last_index), hs, [], None):
            self.hs = hs

    @rule(data=st.data(), image=st.binary(max_size=64), with_hs=st.booleans())
    def install_snapshot(self, data: st.DataObject, image: bytes, with_hs: bool) -> None:
        wild = self.wild(data)
        low = self.snap_index if wild else max(self.snap_index, self.hs.commit, 1)
        index = data.draw(st.integers(low, self.last_index + 3), label="index")
        stored = self.term_at(index)
        choices = [max(self.hs.term, 1), max(stored or 0, 1)]
        if wild:
            choices += [1, self.hs.term + 1]
        term = data.draw(st.sampled_from(choices), label="term")
        conf = ConfState(voters=frozenset({"n1", "n2"}), learners=frozenset({"n3"}))
        snap = Snapshot(SnapshotMeta(index, term, conf), image)
        keep = stored == term
        last = self.last_index if keep else index
        hs = None
        if with_hs or term > self.hs.term:
            hs = HardState(max(self.hs.term, term), self.hs.vote, max(index, self.hs.commit))
        ok = (
            index >= max(self.snap_index, 1)
            and 1 <= term <= (hs or self.hs).term
            and (keep or index >= self.hs.commit)
            and self.hard_state_ok(hs, last)
        )
        if self.attempt(ok, hs, [], snap):
            self.entries = [e for e in self.entries if e.index > index] if keep else []
            self.snap = snap
            self.hs = hs or self.hs

    @rule(data=st.data(), file_first=st.booleans())
    def compact(self, data: st.DataObject, file_first: bool) -> None:
        index = data.draw(st.integers(self.snap_index, self.last_index), label="index")
        term = self.term_at(index)
        assert term is not None
        snap = Snapshot(SnapshotMeta(index, term, ConfState(frozenset({"n1"}))), b"c%d" % index)
        # file_first: the file written beforehand (as the driver does in a thread)
        written = self.log.write_snapshot(snap) if file_first and index > 0 else None
        try:
            self.log.compact(snap, written)
        except ValueError:
            assert index == 0, "a compaction to a stored entry was refused"
            return
        assert index > 0
        self.entries = [e for e in self.entries if e.index > index]
        self.snap = snap

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = LogStorage.open(self.path, sync=False)

    @rule(data=st.data())
    def read_range(self, data: st.DataObject) -> None:
        lo = data.draw(st.integers(self.snap_index + 1, self.last_index + 1), label="lo")
        hi = data.draw(st.integers(lo, self.last_index + 1), label="hi")
        assert self.log.entries(lo, hi) == [e for e in self.entries if lo <= e.index < hi]

    # --- what must always hold --------------------------------------------------------

    @invariant()
    def file_equals_model(self) -> None:
        state = self.log.load()
        assert state.hard_state == self.hs
        assert state.snapshot == self.snap
        assert state.entries == tuple(self.entries)
        assert (state.first_index, state.last_index) == (self.snap_index + 1, self.last_index)
        stats = self.log.statistics()
        assert (stats.entries, stats.last_index, stats.term) == (
            len(self.entries),
            self.last_index,
            self.hs.term,
        )
        assert stats.entry_bytes == sum(len(e.data) for e in self.entries)
        files = [p for p in self.folder.iterdir() if p.name.startswith("raft.db.snap-")]
        assert len(files) == (self.snap is not None), "a snapshot file too many or missing"


StorageVersusModel.TestCase.settings = settings(
    max_examples=75, stateful_step_count=30, deadline=None
)
test_storage_behaves_like_an_in_memory_log = StorageVersusModel.TestCase
