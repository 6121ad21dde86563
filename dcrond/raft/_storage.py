"""The durable Raft log and hard state, in one SQLite file through apsw.

Theory of operation
-------------------
The driver calls :meth:`LogStorage.save` with a ``Ready``'s snapshot, entries
and hard state. ``save`` first checks that they keep the log's invariants
(contiguous indexes, terms never decreasing, no vote changed within a term,
nothing newer than the current term, no committed entry replaced, commit
within the log; see ``_storage_rules``) and raises
``ValueError`` when they do not: that is a bug in the caller, and writing it
would leave a log that the next start-up refuses. Then it writes all three in
ONE transaction, in the Ready's order, and returns only once SQLite has
committed it with ``synchronous=FULL`` (the WAL is fsync'd). A crash at any
point leaves either everything or nothing of that call.

A snapshot's bytes are kept in a file of their own beside the log and the
``snapshot`` row names it (``_storage_snapfile`` says why and how a crash at
any step is survived). :meth:`LogStorage.write_snapshot` writes that file
without touching the SQLite connection, so a driver can run it in a worker
thread while it goes on saving entries, then install it with a short
:meth:`LogStorage.compact`.

At start-up :meth:`LogStorage.load` reads everything back and verifies it
(see ``_storage_format``): a damaged row raises ``CorruptLog`` naming the
first bad index and nothing past it reaches Raft. :meth:`LogStorage.repair`
is the operator's explicit choice to cut the log there. It is never automatic:
an entry this node acknowledged may be counted in a quorum that committed it,
so silently dropping it can lose a committed write (docs/raft.md, Storage).

The file is opened in ``locking_mode=EXCLUSIVE``: a second process (a second
daemon pointed at the same data directory) cannot open it while we hold it.

After a failed write (disk full, an fsync error) the object refuses every
later write: after a failed fsync the kernel may have dropped the dirty pages,
so retrying could report durable what is not (PostgreSQL's "fsyncgate").
The node must restart and reload the log.

A ``LogStorage`` is not thread-safe: one thread at a time must use it (the
driver calls it directly, or hands a big batch to ``trio.to_thread`` and waits).
The exceptions are ``write_snapshot`` and ``discard_snapshot``, which touch
only files of their own and may run in another thread at any time.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, final

import apsw

from dcrond.errors import CorruptLog, StorageError
from dcrond.raft import _storage_snapfile as snapfile
from dcrond.raft._storage_format import (
    LogProblem,
    encode_conf,
    entry_crc,
    hard_state_crc,
    prepare,
    scan,
)
from dcrond.raft._storage_rules import KINDS, LogShape, SavePlan, plan_save, term_in
from dcrond.raft._storage_snapfile import SnapshotFile
from dcrond.raft._types import Entry, EntryKind, HardState, Snapshot

_INSERT_ENTRY = "INSERT INTO entries(idx, term, kind, data, crc) VALUES (?, ?, ?, ?, ?)"
_PUT_HARD_STATE = (
    "INSERT OR REPLACE INTO hard_state(id, term, vote, commit_index, crc) VALUES (0, ?, ?, ?, ?)"
)
_PUT_SNAPSHOT = (
    "INSERT OR REPLACE INTO snapshot(id, idx, term, conf, data, crc, file) "
    "VALUES (0, ?, ?, ?, X'', ?, ?)"
)
_SIZE_FROM = "SELECT count(*), total(length(data)) FROM entries WHERE idx >= ?"
_SIZE_UPTO = "SELECT count(*), total(length(data)) FROM entries WHERE idx <= ?"


@final
@dataclass(frozen=True, slots=True)
class LoadedState:
    """Everything stored, verified, to construct the Raft core at start-up.

    ``entries`` are contiguous and start right after the snapshot (at 1 without
    one). ``first_index`` is the first index *after* the snapshot, whether or
    not an entry is stored there; ``last_index`` is the last entry's index, or
    the snapshot's when no entry follows it (0 for an empty log).
    """

    hard_state: HardState
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]

    @property
    def first_index(self) -> int:
        """The index of the first entry that is not inside the snapshot."""
        return (self.snapshot.meta.index if self.snapshot else 0) + 1

    @property
    def last_index(self) -> int:
        """The index of the last entry (or of the snapshot; 0 when empty)."""
        if self.entries:
            return self.entries[-1].index
        return self.first_index - 1


@final
@dataclass(frozen=True, slots=True)
class StorageStatistics:
    """Counters of one ``LogStorage`` (the ``/metrics`` and ``cluster status`` figures).

    ``fsyncs`` counts committed write transactions made durable with an fsync
    of the WAL (0 when opened with ``sync=False``); SQLite's checkpoints add a
    few fsyncs of their own that are not counted.
    """

    entries: int  #: entries stored now
    entry_bytes: int  #: bytes of entry data stored now
    file_bytes: int  #: size of the database file, its WAL and the snapshot's file
    first_index: int
    last_index: int
    snapshot_index: int
    snapshot_term: int
    term: int
    commit: int
    save_count: int  #: save() calls that wrote something (since open)
    fsyncs: int
    entries_written: int
    bytes_written: int
    truncations: int  #: saves that replaced a stored suffix of the log
    compactions: int
    repairs: int  #: repairs ever recorded in this file
    save_seconds: float  #: total time spent inside write transactions (since open)
    sync: bool


@final
@dataclass(frozen=True, slots=True)
class RepairReport:
    """What :meth:`LogStorage.repair` did (the same record is kept in the file)."""

    first_bad_index: int | None
    reason: str
    entries_removed: int
    commit_before: int
    commit_after: int


@final
class LogStorage:
    """The Raft log, hard state and latest snapshot of one node, durable in SQLite.

    Not thread-safe: one thread at a time must use an instance. Every method
    blocks on the disk (apsw releases the GIL inside SQLite); a trio driver
    calls them directly, or through ``trio.to_thread.run_sync`` for big
    batches and snapshots, never from two threads at once. The deterministic
    simulator calls them synchronously.
    """

    def __init__(self, conn: apsw.Connection, path: str, *, sync: bool) -> None:
        """Wrap an open, prepared connection; use :meth:`open` instead."""
        self._conn: apsw.Connection | None = conn
        self._path = path
        self._sync = sync
        self._verified = False
        self._failed: str | None = None
        self._shape = LogShape(HardState(), 0, 0, 0, 0)
        self._snap_file: str | None = None  #: the snapshot file the row names
        self._count = 0
        self._bytes = 0
        self._repairs = 0
        self._save_count = 0
        self._fsyncs = 0
        self._entries_written = 0
        self._bytes_written = 0
        self._truncations = 0
        self._compactions = 0
        self._save_seconds = 0.0
        self._read_caches()

    # --- opening and closing ----------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, sync: bool = True) -> LogStorage:
        """Open (creating if needed) the log at ``path``; StorageError if we cannot.

        ``sync=False`` uses ``synchronous=NORMAL``: commits survive a process
        crash but not a power loss. Only tests and benchmarks want that.
        """
        name = os.fspath(path)
        try:
            conn = apsw.Connection(name)
        except apsw.Error as exc:
            raise StorageError(f"cannot open raft log {name}: {exc}") from exc
        try:
            prepare(conn, name, sync)
            storage = cls(conn, name, sync=sync)
            # Left by a crash between writing a snapshot file and installing it
            # (or before the old one was deleted); the file lock says no one writes any.
            snapfile.remove_unreferenced(name, storage._snap_file)
        except BaseException:
            conn.close()
            raise
        return storage

    def close(self) -> None:
        """Close the file (idempotent). Every save that returned is already durable."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def __enter__(self) -> LogStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def path(self) -> str:
        """The database file's path."""
        return self._path

    # --- reading ------------------------------------------------------------

    def load(self) -> LoadedState:
        """Read and verify everything stored; CorruptLog names the first bad index."""
        result = scan(self._reader(), keep_entries=True, read_file=self._read_image)
        if result.problem is not None:
            raise CorruptLog(result.problem.describe(self._path))
        self._verified = True
        return LoadedState(
            hard_state=result.hard_state, snapshot=result.snapshot, entries=result.entries
        )

    def check(self) -> LogProblem | None:
        """Verify the stored log without loading it; return its first problem or None."""
        problem = scan(self._reader(), keep_entries=False, read_file=self._read_image).problem
        self._verified = problem is None
        return problem

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Return the stored entries with ``lo <= index < hi``, verified.

        ValueError when the range reaches outside ``[first_index, last_index + 1)``
        (a caller's bug); CorruptLog when a row in it is damaged or missing.
        """
        first, end = self._shape.snap_index + 1, self._shape.last_index + 1
        if not first <= lo <= hi <= end:
            raise ValueError(f"entries({lo}, {hi}) is outside the stored log [{first}, {end})")
        out: list[Entry] = []
        expected = lo
        rows = self._reader().execute(
            "SELECT idx, term, kind, data, crc FROM entries WHERE idx >= ? AND idx < ? "
            "ORDER BY idx",
            (lo, hi),
        )
        for idx, term, kind, data, crc in rows:
            problem = None
            if idx != expected:
                problem = LogProblem("entry", expected, f"it is missing (next stored is {idx})")
            elif (
                type(term) is not int
                or type(kind) is not int
                or not isinstance(data, bytes)
                or entry_crc(term, idx, kind, data) != crc
                or kind not in KINDS
            ):
                problem = LogProblem("entry", idx, "checksum mismatch or damaged columns")
            if problem is not None:
                raise CorruptLog(problem.describe(self._path))
            out.append(Entry(term=term, index=idx, kind=EntryKind(kind), data=data))
            expected += 1
        if expected != hi:
            problem = LogProblem("entry", expected, "it is missing")
            raise CorruptLog(problem.describe(self._path))
        return out

    def statistics(self) -> StorageStatistics:
        """Return the current counters."""
        size = snapfile.image_size(self._path, self._snap_file)
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(self._path + suffix).st_size
        return StorageStatistics(
            entries=self._count,
            entry_bytes=self._bytes,
            file_bytes=size,
            first_index=self._shape.snap_index + 1,
            last_index=self._shape.last_index,
            snapshot_index=self._shape.snap_index,
            snapshot_term=self._shape.snap_term,
            term=self._shape.hard_state.term,
            commit=self._shape.hard_state.commit,
            save_count=self._save_count,
            fsyncs=self._fsyncs,
            entries_written=self._entries_written,
            bytes_written=self._bytes_written,
            truncations=self._truncations,
            compactions=self._compactions,
            repairs=self._repairs,
            save_seconds=self._save_seconds,
            sync=self._sync,
        )

    # --- writing ------------------------------------------------------------

    def save(
        self,
        *,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        sync: bool = True,
    ) -> None:
        """Persist a Ready's snapshot, then entries, then hard state: one durable transaction.

        ``sync=False`` (for a Ready whose ``must_sync`` is False) skips this
        transaction's fsync; the next synced one makes it durable too (the WAL
        is written in order).

        The snapshot replaces every entry up to its index; the entries after it
        are kept only if the stored entry at its index has the snapshot's term
        (the Raft paper's rule), otherwise the whole log is dropped. An entry
        at an index already stored replaces that entry and every later one.
        Returns once the transaction is durable. ValueError (nothing written)
        when the arguments would break the log's invariants; StorageError when
        the disk fails (this object then refuses further writes); CorruptLog
        when the stored log was found damaged before anything was written.
        """
        if hard_state is None and not entries and snapshot is None:
            return
        conn = self._writer()
        plan = plan_save(self._shape, hard_state, entries, snapshot, self._lookup)
        written = None if snapshot is None else self.write_snapshot(snapshot)
        try:
            # A snapshot is always committed as durably as this log can: the
            # old file is deleted right after, and must never be named again.
            if sync or not self._sync or written is not None:
                self._write(conn, plan, hard_state, entries, written)
            else:
                conn.pragma("synchronous", "NORMAL")
                try:
                    self._write(conn, plan, hard_state, entries, None, synced=False)
                finally:
                    conn.pragma("synchronous", "FULL")
        except StorageError:
            raise  # the commit may have reached the disk: the next open decides
        except BaseException:
            if written is not None:
                self.discard_snapshot(written)
            raise
        self._save_count += 1

    def compact(self, snapshot: Snapshot, written: SnapshotFile | None = None) -> None:
        """Store ``snapshot`` and delete the entries up to its index, in one transaction.

        The snapshot must cover a prefix of this log: the entry at its index
        must be stored with its term (or be the current snapshot's point).
        ValueError otherwise. ``written`` is the snapshot's file made earlier
        by :meth:`write_snapshot` (in another thread, say): then only the
        transaction is left to do here. Without it the file is written first.
        When this raises, a ``written`` file is left alone: the next open
        deletes it unless the log names it.
        """
        conn = self._writer()
        index, term = snapshot.meta.index, snapshot.meta.term
        stored = term_in(self._shape, index, self._lookup)
        if stored != term:
            raise ValueError(
                f"compact to {index}: the stored term there is {stored}, the snapshot says {term}"
            )
        if written is not None and written.meta != snapshot.meta:
            raise ValueError(f"the file {written.name} holds another snapshot than {snapshot.meta}")
        plan = plan_save(self._shape, None, (), snapshot, self._lookup)
        if written is None:
            written = self.write_snapshot(snapshot)
        self._write(conn, plan, None, (), written)
        self._compactions += 1

    def write_snapshot(
        self, snapshot: Snapshot, *, stop: Callable[[], bool] | None = None
    ) -> SnapshotFile:
        """Write the snapshot's bytes to a new file beside the log, durably; install it later.

        Uses no SQLite connection and no state of this object, so unlike
        every other method it may run in another thread while the log is
        used (that is what it is for). ``stop`` is asked between chunks:
        True abandons the file (StorageError). Hand the result to
        :meth:`compact`, or to :meth:`discard_snapshot` if it is not wanted.
        """
        return snapfile.write_image(
            self._path, snapshot.meta, snapshot.data, sync=self._sync, stop=stop
        )

    def discard_snapshot(self, written: SnapshotFile) -> None:
        """Delete a file from :meth:`write_snapshot` that will not be installed (any thread)."""
        if written.name != self._snap_file:
            snapfile.remove(self._path, written.name)

    def repair(self, *, now: float | None = None) -> RepairReport | None:
        """Cut the log at its first bad entry, as the operator asked; None if it is sound.

        Removes the damaged entry and every later one, lowers the recorded
        commit index to the new end of the log if it was beyond it, and records
        what it did (with ``now``, default the wall clock) in the ``repairs``
        table, all in one transaction. CorruptLog when the damage is in the
        hard state or the snapshot, which truncation cannot fix.
        """
        conn = self._writer(verify=False)
        at = time.time() if now is None else now
        first = scan(conn, keep_entries=False, read_file=self._read_image).problem
        if first is None:
            self._verified = True
            return None
        if not first.repairable:
            raise CorruptLog(first.describe(self._path))
        removed = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = scan(conn, keep_entries=False, read_file=self._read_image)
            for _ in range(3):  # at most: stale rows, then a bad entry, then commit
                problem = result.problem
                if problem is None or problem.part != "entry":
                    break
                assert problem.index is not None
                if problem.index <= result.snapshot_index:
                    conn.execute("DELETE FROM entries WHERE idx <= ?", (result.snapshot_index,))
                else:
                    conn.execute("DELETE FROM entries WHERE idx >= ?", (problem.index,))
                removed += conn.changes()
                result = scan(conn, keep_entries=False, read_file=self._read_image)
            hs = result.hard_state
            commit_after = hs.commit
            if result.problem is not None and result.problem.part == "commit":
                assert result.problem.index is not None
                commit_after = result.problem.index - 1
                crc = hard_state_crc(hs.term, hs.vote, commit_after)
                conn.execute(_PUT_HARD_STATE, (hs.term, hs.vote, commit_after, crc))
            elif result.problem is not None:
                raise CorruptLog(result.problem.describe(self._path))
            conn.execute(
                "INSERT INTO repairs(repaired_at, first_bad_index, reason, entries_removed,"
                " commit_before, commit_after) VALUES (?, ?, ?, ?, ?, ?)",
                (at, first.index, first.reason, removed, hs.commit, commit_after),
            )
            conn.execute("COMMIT")
        except apsw.Error as exc:
            self._fail(conn, exc)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._read_caches()
        self._verified = True
        return RepairReport(first.index, first.reason, removed, hs.commit, commit_after)

    # --- internals ----------------------------------------------------------

    def _reader(self) -> apsw.Connection:
        if self._conn is None:
            raise StorageError(f"raft log {self._path} is closed")
        return self._conn

    def _writer(self, *, verify: bool = True) -> apsw.Connection:
        conn = self._reader()
        if self._failed is not None:
            raise StorageError(
                f"raft log {self._path}: an earlier write failed ({self._failed}); "
                f"restart the node so it reloads the log"
            )
        if verify and not self._verified:
            problem = self.check()
            if problem is not None:
                raise CorruptLog(problem.describe(self._path))
        return conn

    def _fail(self, conn: apsw.Connection, exc: apsw.Error) -> NoReturn:
        self._failed = f"{type(exc).__name__}: {exc}"
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except apsw.Error:
            pass
        raise StorageError(f"raft log {self._path}: write failed: {self._failed}") from exc

    def _read_image(self, name: str) -> bytes:
        return snapfile.read_image(self._path, name)

    def _lookup(self, index: int) -> int | None:
        """The term of the stored entry at ``index``, or None."""
        for (term,) in self._reader().execute("SELECT term FROM entries WHERE idx = ?", (index,)):
            return int(term)
        return None

    def _write(
        self,
        conn: apsw.Connection,
        plan: SavePlan,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: SnapshotFile | None,
        *,
        synced: bool = True,
    ) -> None:
        count, size = self._count, self._bytes
        truncated = False
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            if snapshot is not None:
                meta = snapshot.meta
                conf = encode_conf(meta.conf)
                conn.execute(
                    _PUT_SNAPSHOT, (meta.index, meta.term, conf, snapshot.crc, snapshot.name)
                )
                cut = meta.index if plan.keep_suffix else self._shape.last_index
                gone, gone_bytes = _one(conn, _SIZE_UPTO, cut)
                if gone:
                    conn.execute("DELETE FROM entries WHERE idx <= ?", (cut,))
                    count, size = count - gone, size - gone_bytes
            if entries:
                first = entries[0].index
                if first <= plan.last_before_entries:
                    gone, gone_bytes = _one(conn, _SIZE_FROM, first)
                    conn.execute("DELETE FROM entries WHERE idx >= ?", (first,))
                    count, size = count - gone, size - gone_bytes
                    truncated = True
                conn.executemany(
                    _INSERT_ENTRY,
                    [
                        (
                            e.index,
                            e.term,
                            int(e.kind),
                            e.data,
                            entry_crc(e.term, e.index, e.kind, e.data),
                        )
                        for e in entries
                    ],
                )
                count += len(entries)
                size += plan.entry_bytes
            if hard_state is not None:
                hs = hard_state
                crc = hard_state_crc(hs.term, hs.vote, hs.commit)
                conn.execute(_PUT_HARD_STATE, (hs.term, hs.vote, hs.commit, crc))
            conn.execute("COMMIT")
        except apsw.Error as exc:
            self._fail(conn, exc)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._save_seconds += time.perf_counter() - started
        if self._sync and synced:
            self._fsyncs += 1
        self._count, self._bytes = count, size
        self._truncations += truncated
        self._entries_written += len(entries)
        self._bytes_written += plan.entry_bytes
        self._shape = plan.after
        if snapshot is not None:
            old, self._snap_file = self._snap_file, snapshot.name
            if old is not None and old != snapshot.name:
                snapfile.remove(self._path, old)

    def _read_caches(self) -> None:
        """Read the figures ``save`` validates against (trusting them; ``check`` verifies)."""
        conn = self._reader()

        def ints(sql: str, width: int) -> tuple[int, ...]:
            for row in conn.execute(sql):
                if all(type(v) is int or type(v) is float for v in row[:width]):
                    return tuple(int(v) for v in row[:width])
            return (0,) * width

        term, commit = ints("SELECT term, commit_index FROM hard_state WHERE id = 0", 2)
        votes = [v for (v,) in conn.execute("SELECT vote FROM hard_state WHERE id = 0")]
        vote = votes[0] if votes and isinstance(votes[0], str) else None
        snap_index, snap_term = ints("SELECT idx, term FROM snapshot WHERE id = 0", 2)
        names = [n for (n,) in conn.execute("SELECT file FROM snapshot WHERE id = 0")]
        self._snap_file = names[0] if names and isinstance(names[0], str) else None
        last_index, last_term = ints("SELECT idx, term FROM entries ORDER BY idx DESC LIMIT 1", 2)
        if last_index == 0:
            last_index, last_term = snap_index, snap_term
        hard_state = HardState(term=term, vote=vote, commit=commit)
        self._shape = LogShape(hard_state, snap_index, snap_term, last_index, last_term)
        self._count, self._bytes = ints("SELECT count(*), total(length(data)) FROM entries", 2)
        (self._repairs,) = ints("SELECT count(*) FROM repairs", 1)


def _one(conn: apsw.Connection, sql: str, arg: int) -> tuple[int, int]:
    for count, size in conn.execute(sql, (arg,)):
        return int(count), int(size)
    return 0, 0
