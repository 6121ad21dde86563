"""Snapshot files beside the log: written in another thread, installed by a short transaction.

These prove that a snapshot written by ``write_snapshot`` while the log keeps
saving entries is installed exactly; that a crash at each step of an install
leaves a log that loads (with no stray file once reopened); that a missing or
damaged file is reported as a damaged snapshot; and that a version 1 log,
which kept the bytes in its row, still opens and moves them to a file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import apsw
import pytest

from dcrond.errors import CorruptLog, StorageError
from dcrond.raft._storage import LogStorage
from dcrond.raft._storage_format import (
    APPLICATION_ID,
    SCHEMA,
    encode_conf,
    entry_crc,
    hard_state_crc,
    snapshot_crc,
)
from dcrond.raft._types import ConfState, Entry, HardState, Snapshot, SnapshotMeta

CONF = ConfState(voters=frozenset({"n1", "n2", "n3"}))


def ents(start: int, stop: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=b"e-%d" % i) for i in range(start, stop + 1)]


def snap(index: int, data: bytes, term: int = 1) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, CONF), data)


def image(index: int, size: int = 300_000) -> bytes:
    return (b"image-%d;" % index * (size // 8 + 1))[:size]


def snapshot_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("raft.db.snap-"))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "raft.db"


def test_a_file_written_in_another_thread_while_entries_are_saved_installs_exactly(
    path: Path,
) -> None:
    big = image(100, 20 << 20)
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(1, "n1", 100), entries=ents(1, 100), snapshot=None)
        written = []
        writer = threading.Thread(target=lambda: written.append(log.write_snapshot(snap(100, big))))
        writer.start()
        last = 100
        while writer.is_alive() or last < 110:  # the log goes on saving meanwhile
            log.save(hard_state=None, entries=ents(last + 1, last + 1), snapshot=None)
            last += 1
        writer.join()
        log.compact(snap(100, big), written[0])
        assert log.statistics().file_bytes >= len(big)
    assert snapshot_files(path.parent) == [written[0].name]
    with LogStorage.open(path) as log:
        state = log.load()
    assert state.snapshot == snap(100, big)
    assert state.entries == tuple(ents(101, last))


def test_a_crash_after_writing_the_file_before_installing_it_loses_nothing(path: Path) -> None:
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(1, "n1", 20), entries=ents(1, 20), snapshot=None)
        log.compact(snap(10, image(10)))
        log.write_snapshot(snap(20, image(20)))  # then "killed": never installed
        assert len(snapshot_files(path.parent)) == 2
    with LogStorage.open(path) as log:
        state = log.load()
        assert state.snapshot == snap(10, image(10))
        assert state.entries == tuple(ents(11, 20))
        (kept,) = snapshot_files(path.parent)  # the stray file went at open
        log.compact(snap(20, image(20)))  # and the log carries on
    assert snapshot_files(path.parent) != [kept]
    assert len(snapshot_files(path.parent)) == 1


def test_a_crash_after_installing_before_deleting_the_old_file_loses_nothing(path: Path) -> None:
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(1, "n1", 20), entries=ents(1, 20), snapshot=None)
        log.compact(snap(10, image(10)))
        (old,) = snapshot_files(path.parent)
        log.compact(snap(15, image(15)))
    (new,) = snapshot_files(path.parent)
    (path.parent / old).write_bytes(image(10))  # the unlink that the crash cut short
    with LogStorage.open(path) as log:
        assert log.load().snapshot == snap(15, image(15))
    assert snapshot_files(path.parent) == [new]


def test_abandoning_a_write_leaves_no_file(path: Path) -> None:
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(1, "n1", 5), entries=ents(1, 5), snapshot=None)
        with pytest.raises(StorageError, match="abandoned"):
            log.write_snapshot(snap(5, image(5, 20 << 20)), stop=lambda: True)
        written = log.write_snapshot(snap(5, image(5)))
        log.discard_snapshot(written)
    assert snapshot_files(path.parent) == []


def test_a_missing_snapshot_file_is_a_damaged_snapshot_that_truncation_cannot_fix(
    path: Path,
) -> None:
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(1, "n1", 0), entries=(), snapshot=snap(5, image(5)))
    (name,) = snapshot_files(path.parent)
    os.rename(path.parent / name, path.parent / "elsewhere")
    with LogStorage.open(path) as log:
        with pytest.raises(
            CorruptLog, match=f"snapshot is corrupt: its file {name} cannot be read"
        ):
            log.load()
        with pytest.raises(CorruptLog, match="cannot be repaired by truncation"):
            log.repair()


def test_a_flipped_byte_in_the_snapshot_file_is_reported(path: Path) -> None:
    with LogStorage.open(path) as log:
        log.save(hard_state=HardState(1, "n1", 0), entries=(), snapshot=snap(5, image(5)))
    (name,) = snapshot_files(path.parent)
    damaged = bytearray((path.parent / name).read_bytes())
    damaged[1234] ^= 0x40
    (path.parent / name).write_bytes(damaged)
    with LogStorage.open(path) as log, pytest.raises(CorruptLog, match="checksum mismatch"):
        log.load()


def test_a_version_1_log_with_the_image_in_its_row_opens_and_moves_it_to_a_file(
    path: Path,
) -> None:
    old_schema = SCHEMA.replace(",\n    file TEXT\n", "\n")
    assert old_schema != SCHEMA
    conn = apsw.Connection(str(path))
    conn.pragma("journal_mode", "WAL")
    conn.execute(old_schema)
    conn.execute("INSERT INTO schema_version(version) VALUES (1)")
    conn.pragma("application_id", APPLICATION_ID)
    conf = encode_conf(CONF)
    conn.execute(
        "INSERT INTO snapshot(id, idx, term, conf, data, crc) VALUES (0, 5, 1, ?, ?, ?)",
        (conf, image(5), snapshot_crc(5, 1, conf, image(5))),
    )
    conn.execute("INSERT INTO hard_state VALUES (0, 1, 'n1', 7, ?)", (hard_state_crc(1, "n1", 7),))
    for e in ents(6, 8):
        crc = entry_crc(e.term, e.index, e.kind, e.data)
        conn.execute(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?)",
            (e.index, e.term, int(e.kind), e.data, crc),
        )
    conn.close()
    with LogStorage.open(path) as log:
        state = log.load()
        assert state.snapshot == snap(5, image(5))
        assert state.entries == tuple(ents(6, 8))
        assert snapshot_files(path.parent) == []  # still in the row
        log.compact(snap(7, image(7)))
    assert len(snapshot_files(path.parent)) == 1
    with LogStorage.open(path) as log:
        assert log.load().snapshot == snap(7, image(7))
    conn = apsw.Connection(str(path))
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
    conn.close()
