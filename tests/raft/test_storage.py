"""LogStorage: what is saved comes back, the log's rules hold, and damage is reported."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest

from dcrond.errors import CorruptLog, StorageError
from dcrond.raft._storage import LogStorage
from dcrond.raft._storage_format import entry_crc, hard_state_crc
from dcrond.raft._types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)


def ents(start: int, stop: int, term: int, tag: bytes = b"") -> list[Entry]:
    """Entries start..stop inclusive, all of ``term``, each with data naming it."""
    return [Entry(term=term, index=i, data=b"%s-%d" % (tag, i)) for i in range(start, stop + 1)]


def snap(index: int, term: int, data: bytes = b"image") -> Snapshot:
    conf = ConfState(voters=frozenset({"n1", "n2", "n3"}), learners=frozenset({"n4"}))
    return Snapshot(meta=SnapshotMeta(index=index, term=term, conf=conf), data=data)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "raft.db"


@pytest.fixture
def log(path: Path) -> Iterator[LogStorage]:
    storage = LogStorage.open(path)
    yield storage
    storage.close()


def tamper(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Edit the closed log file behind LogStorage's back."""
    conn = apsw.Connection(str(path))
    for sql, args in statements:
        conn.execute(sql, args)
    conn.close()


def filled(path: Path, last: int = 10, commit: int = 0) -> None:
    """Write entries 1..last (term 1 up to 5, term 2 after) and close."""
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(2, "n1", 0), entries=ents(1, 5, 1), snapshot=None)
        log.save(hard_state=HardState(2, "n1", commit), entries=ents(6, last, 2), snapshot=None)


# --- round trips ---------------------------------------------------------------------


def test_new_log_loads_empty_state(log: LogStorage) -> None:
    state = log.load()
    assert state.hard_state == HardState()
    assert state.snapshot is None
    assert state.entries == ()
    assert (state.first_index, state.last_index) == (1, 0)


def test_saved_entries_and_hard_state_come_back_after_reopen(path: Path) -> None:
    kinds = [
        Entry(1, 1, EntryKind.NOOP, b""),
        Entry(1, 2, EntryKind.NORMAL, bytes(range(256)) * 40),
        Entry(1, 3, EntryKind.CONFIG, b"\x00conf"),
    ]
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(term=1, vote="n2", commit=2), entries=kinds, snapshot=None)
        assert log.entries(1, 4) == kinds
    with LogStorage.open(path) as log:
        state = log.load()
    assert state.hard_state == HardState(term=1, vote="n2", commit=2)
    assert state.entries == tuple(kinds)
    assert (state.first_index, state.last_index) == (1, 3)


def test_term_and_vote_are_saved_together_and_vote_may_be_cleared_by_a_new_term(
    log: LogStorage,
) -> None:
    log.save(hard_state=HardState(3, "n1", 0), entries=(), snapshot=None)
    log.save(hard_state=HardState(4, None, 0), entries=(), snapshot=None)
    assert log.load().hard_state == HardState(4, None, 0)


def test_entry_at_stored_index_replaces_it_and_every_later_one(log: LogStorage) -> None:
    log.save(hard_state=HardState(2, "n1", 3), entries=ents(1, 8, 1), snapshot=None)
    log.save(hard_state=None, entries=ents(5, 6, 2, b"new"), snapshot=None)
    state = log.load()
    assert [e.index for e in state.entries] == [1, 2, 3, 4, 5, 6]
    assert state.entries[4:] == tuple(ents(5, 6, 2, b"new"))
    stats = log.statistics()
    assert (stats.entries, stats.last_index, stats.truncations) == (6, 6, 1)


def test_snapshot_in_a_save_drops_covered_entries_and_keeps_a_matching_suffix(
    log: LogStorage,
) -> None:
    log.save(hard_state=HardState(2, "n1", 4), entries=ents(1, 10, 2), snapshot=None)
    log.save(hard_state=HardState(2, "n1", 6), entries=(), snapshot=snap(6, 2))
    state = log.load()
    assert state.snapshot == snap(6, 2)
    assert [e.index for e in state.entries] == [7, 8, 9, 10]
    assert (state.first_index, state.last_index) == (7, 10)


def test_snapshot_that_disagrees_with_the_log_replaces_the_whole_log(log: LogStorage) -> None:
    log.save(hard_state=HardState(3, "n1", 2), entries=ents(1, 10, 1), snapshot=None)
    log.save(
        hard_state=HardState(3, "n1", 8),
        entries=ents(9, 9, 3),
        snapshot=snap(8, 3),
    )
    state = log.load()
    assert state.snapshot == snap(8, 3)
    assert state.entries == tuple(ents(9, 9, 3))


def test_snapshot_beyond_the_log_installs_on_an_empty_follower(log: LogStorage) -> None:
    log.save(hard_state=HardState(5, None, 40), entries=(), snapshot=snap(40, 5))
    state = log.load()
    assert (state.first_index, state.last_index, state.entries) == (41, 40, ())
    log.save(hard_state=None, entries=ents(41, 42, 5), snapshot=None)
    assert log.entries(41, 43) == ents(41, 42, 5)


def test_compact_deletes_entries_up_to_the_snapshot_and_keeps_the_rest(path: Path) -> None:
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(1, "n1", 7), entries=ents(1, 10, 1), snapshot=None)
        log.compact(snap(7, 1))
        stats = log.statistics()
        assert (stats.entries, stats.first_index, stats.snapshot_index) == (3, 8, 7)
        assert stats.compactions == 1
        with pytest.raises(ValueError, match="outside the stored log"):
            log.entries(5, 9)
    with LogStorage.open(path) as log:
        state = log.load()
    assert state.snapshot == snap(7, 1)
    assert state.entries == tuple(ents(8, 10, 1))


def test_compact_refuses_a_snapshot_that_is_not_a_prefix_of_the_log(log: LogStorage) -> None:
    log.save(hard_state=HardState(2, "n1", 3), entries=ents(1, 5, 1), snapshot=None)
    with pytest.raises(ValueError, match="stored term there is 1"):
        log.compact(snap(3, 2))
    with pytest.raises(ValueError, match="stored term there is None"):
        log.compact(snap(9, 1))
    assert log.load().snapshot is None


def test_a_batch_is_one_transaction_and_one_fsync(path: Path) -> None:
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(1, "n1", 0), entries=ents(1, 64, 1), snapshot=None)
        log.save(hard_state=None, entries=(), snapshot=None)  # nothing to do: no fsync
        stats = log.statistics()
    assert (stats.save_count, stats.fsyncs, stats.entries_written) == (1, 1, 64)
    assert stats.entry_bytes == sum(len(e.data) for e in ents(1, 64, 1))
    with LogStorage.open(path, sync=False) as log:
        log.save(hard_state=None, entries=ents(65, 65, 1), snapshot=None)
        assert (log.statistics().fsyncs, log.statistics().sync) == (0, False)


def test_a_commit_only_save_may_skip_its_fsync_and_is_still_stored(path: Path) -> None:
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(1, "n1", 0), entries=ents(1, 3, 1), snapshot=None)
        log.save(hard_state=HardState(1, "n1", 3), entries=(), snapshot=None, sync=False)
        assert log.statistics().fsyncs == 1
        log.save(hard_state=None, entries=ents(4, 4, 1), snapshot=None)  # synced again
        assert log.statistics().fsyncs == 2
    with LogStorage.open(path) as log:
        loaded = log.load()
    assert (loaded.hard_state, len(loaded.entries)) == (HardState(1, "n1", 3), 4)


# --- what save refuses -----------------------------------------------------------------

Refused = Callable[[LogStorage], None]


def _save(hs: HardState | None, es: list[Entry], sn: Snapshot | None = None) -> Refused:
    return lambda log: log.save(hard_state=hs, entries=es, snapshot=sn)


@pytest.mark.parametrize(
    ("attempt", "message"),
    [
        (_save(None, ents(12, 12, 2)), "entries start at 12"),
        (_save(None, [Entry(2, 11), Entry(2, 13)]), "not contiguous"),
        (_save(None, ents(11, 11, 1)), "below 2"),
        (_save(None, ents(11, 11, 3)), "newer than the current term 2"),
        (_save(None, ents(4, 4, 2)), "would replace a committed entry"),
        (_save(HardState(1, "n1", 4), []), "term would go back from 2 to 1"),
        (_save(HardState(2, "n3", 4), []), "vote in term 2 would change"),
        (_save(HardState(2, None, 4), []), "vote in term 2 would change"),
        (_save(HardState(2, "n1", 11), []), "commit 11 is outside the log"),
        (_save(HardState(2, "n1", 4), [], snap(3, 2)), "disagrees with the committed log"),
        (_save(None, [], snap(6, 5)), "newer than the current term"),
    ],
)
def test_save_refuses_writes_that_would_break_the_log_and_writes_nothing(
    path: Path, attempt: Refused, message: str
) -> None:
    filled(path, last=10, commit=4)
    with LogStorage.open(path) as log:
        before = log.load()
        with pytest.raises(ValueError, match=message):
            attempt(log)
        assert log.load() == before
        log.save(hard_state=None, entries=ents(11, 11, 2), snapshot=None)  # still usable
        assert log.load().last_index == 11


def test_save_refuses_a_snapshot_older_than_the_stored_one(log: LogStorage) -> None:
    log.save(hard_state=HardState(1, "n1", 5), entries=ents(1, 6, 1), snapshot=None)
    log.compact(snap(5, 1))
    with pytest.raises(ValueError, match="older than the stored one"):
        log.save(hard_state=None, entries=(), snapshot=snap(4, 1))


# --- opening -------------------------------------------------------------------------


def test_a_second_open_of_the_same_log_is_refused_while_it_is_held(path: Path) -> None:
    with LogStorage.open(path), pytest.raises(StorageError, match="in use by another"):
        LogStorage.open(path)
    LogStorage.open(path).close()  # free again once closed


def test_some_other_sqlite_file_is_not_taken_for_a_raft_log(path: Path) -> None:
    tamper(path, ("CREATE TABLE jobs (name TEXT)", ()))
    with pytest.raises(StorageError, match="not a dcrond raft log"):
        LogStorage.open(path)


def test_a_log_from_a_newer_schema_is_refused(path: Path) -> None:
    LogStorage.open(path).close()
    tamper(path, ("UPDATE schema_version SET version = 99", ()))
    with pytest.raises(StorageError, match="schema version"):
        LogStorage.open(path)


def test_an_unopenable_path_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open raft log"):
        LogStorage.open(tmp_path / "no-such-dir" / "raft.db")


def test_a_closed_log_refuses_use(log: LogStorage) -> None:
    log.close()
    log.close()
    with pytest.raises(StorageError, match="closed"):
        log.load()


def test_a_failed_write_leaves_the_old_state_and_refuses_later_writes(path: Path) -> None:
    filled(path, last=10)
    with LogStorage.open(path) as log:
        before = log.load()
        conn = log._reader()  # simulate a full disk: cap the file at its current size
        conn.pragma("max_page_count", conn.pragma("page_count"))
        big = [Entry(2, 11 + i, data=b"x" * 4000) for i in range(50)]
        with pytest.raises(StorageError, match="write failed"):
            log.save(hard_state=None, entries=big, snapshot=None)
        conn.pragma("max_page_count", 1 << 30)
        with pytest.raises(StorageError, match="earlier write failed"):
            log.save(hard_state=None, entries=ents(11, 11, 2), snapshot=None)
    with LogStorage.open(path) as log:
        assert log.load() == before


# --- damage is detected, reported and only repaired on request ---------------------------


def test_flipped_byte_in_entry_data_is_reported_with_its_index(path: Path) -> None:
    filled(path)
    tamper(path, ("UPDATE entries SET data = ? WHERE idx = 7", (b"-6",)))  # was b"-7": one bit
    with LogStorage.open(path) as log, pytest.raises(CorruptLog, match=r"at entry 7: checksum"):
        log.load()


def test_flipped_checksum_is_reported_with_its_index(path: Path) -> None:
    filled(path)
    tamper(path, ("UPDATE entries SET crc = crc + 1 WHERE idx = 3", ()))
    with LogStorage.open(path) as log, pytest.raises(CorruptLog, match=r"at entry 3: checksum"):
        log.load()


def test_bit_rot_in_the_database_file_itself_is_detected(path: Path) -> None:
    marker = b"MARKER-" * 30
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(1, "n1", 0), entries=ents(1, 4, 1), snapshot=None)
        log.save(hard_state=None, entries=[Entry(1, 5, data=marker)], snapshot=None)
        log.save(hard_state=None, entries=ents(6, 9, 1), snapshot=None)
    raw = bytearray(path.read_bytes())
    at = raw.index(marker) + 100
    raw[at] ^= 0x10  # one bit, below SQLite's notice (it has no page checksums)
    path.write_bytes(bytes(raw))
    with LogStorage.open(path) as log, pytest.raises(CorruptLog, match=r"at entry 5: checksum"):
        log.load()


def test_a_missing_middle_entry_is_reported(path: Path) -> None:
    filled(path)
    tamper(path, ("DELETE FROM entries WHERE idx = 5", ()))
    with LogStorage.open(path) as log:
        with pytest.raises(CorruptLog, match=r"at entry 5: it is missing"):
            log.load()
        with pytest.raises(CorruptLog, match="entry 5"):
            log.entries(4, 7)


def test_a_term_lower_than_its_predecessor_is_reported(path: Path) -> None:
    filled(path)
    crc = entry_crc(1, 7, 0, b"-7")  # a valid checksum: only the order is wrong
    tamper(path, ("UPDATE entries SET term = 1, data = ?, crc = ? WHERE idx = 7", (b"-7", crc)))
    with LogStorage.open(path) as log:
        with pytest.raises(CorruptLog, match=r"at entry 7: its term 1 is lower than the term 2"):
            log.load()
        problem = log.check()
    assert problem is not None
    assert (problem.part, problem.index, problem.repairable) == ("entry", 7, True)


def test_an_entry_newer_than_the_stored_term_is_reported(path: Path) -> None:
    filled(path)  # entries 6..10 have term 2
    crc = hard_state_crc(1, "n1", 0)  # a valid row whose term went back to 1
    tamper(path, ("UPDATE hard_state SET term = 1, commit_index = 0, crc = ?", (crc,)))
    with LogStorage.open(path) as log, pytest.raises(CorruptLog, match=r"at entry 6: .* newer"):
        log.load()


def test_entries_that_do_not_start_after_the_snapshot_are_reported(path: Path) -> None:
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(1, "n1", 0), entries=(), snapshot=snap(5, 1))
    tamper(path, ("INSERT INTO entries VALUES (7, 1, 0, X'', ?)", (entry_crc(1, 7, 0, b""),)))
    with LogStorage.open(path) as log, pytest.raises(CorruptLog, match="at entry 6: it is missing"):
        log.load()


def test_saving_onto_a_damaged_log_is_refused_before_anything_is_written(path: Path) -> None:
    filled(path)
    tamper(path, ("UPDATE entries SET crc = crc + 1 WHERE idx = 9", ()))
    with LogStorage.open(path) as log:
        with pytest.raises(CorruptLog, match="at entry 9"):
            log.save(hard_state=None, entries=ents(11, 11, 2), snapshot=None)
        assert log.statistics().save_count == 0


def test_repair_cuts_the_log_at_the_first_bad_entry_and_records_it(path: Path) -> None:
    filled(path, last=10, commit=8)
    tamper(path, ("UPDATE entries SET crc = crc + 1 WHERE idx = 6", ()))
    with LogStorage.open(path) as log:
        report = log.repair(now=1_790_000_000.0)
        assert report is not None
        assert (report.first_bad_index, report.entries_removed) == (6, 5)
        assert (report.commit_before, report.commit_after) == (8, 5)
        assert "checksum" in report.reason
        state = log.load()
        assert [e.index for e in state.entries] == [1, 2, 3, 4, 5]
        assert state.hard_state == HardState(2, "n1", 5)
        assert log.statistics().repairs == 1
        log.save(hard_state=None, entries=ents(6, 6, 2, b"again"), snapshot=None)
        assert log.repair() is None  # a sound log needs nothing
    conn = apsw.Connection(str(path))
    rows = list(conn.execute("SELECT repaired_at, first_bad_index, entries_removed FROM repairs"))
    conn.close()
    assert rows == [(1_790_000_000.0, 6, 5)]


def test_repair_drops_a_stale_row_inside_the_snapshot_and_keeps_the_log(path: Path) -> None:
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(1, "n1", 5), entries=(), snapshot=snap(5, 1))
        log.save(hard_state=None, entries=ents(6, 7, 1), snapshot=None)
    tamper(path, ("INSERT INTO entries VALUES (3, 1, 0, X'', ?)", (entry_crc(1, 3, 0, b""),)))
    with LogStorage.open(path) as log:
        with pytest.raises(CorruptLog, match="at entry 3: it lies inside the snapshot"):
            log.load()
        report = log.repair()
        assert report is not None
        assert (report.first_bad_index, report.entries_removed) == (3, 1)
        assert log.load().entries == tuple(ents(6, 7, 1))


def test_lost_committed_tail_is_reported_and_repair_lowers_commit(path: Path) -> None:
    filled(path, last=10, commit=9)
    tamper(path, ("DELETE FROM entries WHERE idx >= 8", ()))
    with LogStorage.open(path) as log:
        with pytest.raises(CorruptLog, match="lost committed entries from 8 on"):
            log.load()
        report = log.repair()
        assert report is not None
        assert (report.entries_removed, report.commit_after) == (0, 7)
        assert log.load().hard_state.commit == 7


def test_damaged_hard_state_is_reported_and_not_repaired(path: Path) -> None:
    filled(path)
    tamper(path, ("UPDATE hard_state SET vote = 'n9'", ()))
    with LogStorage.open(path) as log:
        with pytest.raises(CorruptLog, match="hard state is corrupt: checksum"):
            log.load()
        with pytest.raises(CorruptLog, match="cannot be repaired by truncation"):
            log.repair()


def test_damaged_snapshot_is_reported(path: Path) -> None:
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(1, "n1", 0), entries=(), snapshot=snap(5, 1))
    tamper(path, ("UPDATE snapshot SET data = X'00'", ()))
    with LogStorage.open(path) as log, pytest.raises(CorruptLog, match="snapshot is corrupt"):
        log.load()
