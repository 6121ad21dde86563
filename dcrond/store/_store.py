"""``JobStore``: the replicated job table, a Raft state machine over one SQLite file.

Theory of operation
-------------------
The Raft driver calls ``apply(entry)`` for every committed entry, in log
order. Each call is one SQLite transaction that does two things together:
the entry's effect, and writing the entry's index and term into ``meta``.
So after a crash the file holds either both or neither -- an entry is never
skipped nor applied twice -- and ``applied_index`` says where to resume. An
entry at or below ``applied_index`` (re-delivered after a restart) is
ignored.

A NORMAL entry holds an encoded command. Its effect is computed from the
command and the table only (times travel inside commands), so every replica
computes the same thing. The command first passes the session table: a
request already answered gets its stored answer again and changes nothing
(a client retried it), an older one is refused as stale. Then it runs inside
a savepoint: if it is refused (bad field, duplicate name, a transition the
run table forbids) the savepoint is rolled back, so it changes nothing but
the applied index and the session's stored answer, and the same
``Rejected`` value comes back on every replica. Only a storage failure
raises, because then this replica cannot go on.

Snapshots are SQLite's backup API into memory, serialized to bytes; a
restore deserializes them and backs them up over the file. Both carry
``meta`` and so the applied index. ``snapshot_begin`` pins the table's image
between two applies and lets a worker thread copy it while applies go on
(``_snapshot`` says how).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, final

import apsw

from dcrond.errors import InvalidRequest, ProtocolError, StorageError
from dcrond.raft._types import Entry, EntryKind
from dcrond.store import _jobs, _queries, _runs
from dcrond.store._commands import (
    RUN_COMMANDS,
    Batch,
    Command,
    CreateJob,
    DeleteJob,
    PauseJob,
    PruneRuns,
    ResumeJob,
    RunFinished,
    RunLost,
    RunPlaced,
    RunRefused,
    RunScheduled,
    RunSkipped,
    RunStarted,
    UpdateJob,
    decode,
    decode_entry,
)
from dcrond.store._jobspec import SPEC_FIELDS, JobSpec, check_on_host
from dcrond.store._queries import JobSchedule
from dcrond.store._results import Applied as _Applied
from dcrond.store._results import (
    Rejected,
    Result,
    rejected_from,
    result_to_wire,
)
from dcrond.store._schema import DATA_TABLES, TABLES, check_schema, one, prepare
from dcrond.store._sessions import Sessions
from dcrond.store._snapshot import PinnedImage, image_of, pin, remove_scratch

#: a session unseen for this long (by the ``now`` of later commands) is forgotten
SESSION_TTL_MS: Final = 24 * 3600 * 1000
#: sessions are expired when the applied index is a multiple of this
SESSION_SWEEP_EVERY: Final = 256

_EXECUTORS: Final[dict[type[Command], Callable[[apsw.Connection, Any], dict[str, Any]]]] = {
    CreateJob: _jobs.create_job,
    UpdateJob: _jobs.update_job,
    DeleteJob: _jobs.delete_job,
    PauseJob: _jobs.pause_job,
    ResumeJob: _jobs.resume_job,
    RunScheduled: _runs.run_scheduled,
    RunStarted: _runs.run_started,
    RunFinished: _runs.run_finished,
    RunSkipped: _runs.run_skipped,
    RunLost: _runs.run_lost,
    RunRefused: _runs.run_refused,
    RunPlaced: _runs.run_placed,
    PruneRuns: _runs.prune_runs,
}


@final
@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """Counters of one job table (what ``/metrics`` and ``cluster status`` show)."""

    applied_index: int
    applied_term: int
    applied: int  #: entries applied since this object was opened
    rejected: int  #: commands among them that were refused
    deduplicated: int  #: retried requests answered from the session table
    jobs: int
    runs: int


@final
class JobStore:
    """The job table on one node: Raft state machine (``apply``/``snapshot``/``restore``) + queries.

    Not thread-safe: use it from one thread (the trio driver's), or hand it
    to ``trio.to_thread`` whole. Errors: ``apply`` returns ``Rejected`` for
    the caller's mistakes and raises StorageError only when the disk fails
    (or ValueError for an entry out of order: a bug in the driver).
    """

    def __init__(self, conn: apsw.Connection, path: str) -> None:
        self._db: apsw.Connection | None = conn
        self._path = path
        self._applied, self._applied_term = self._read_meta(conn)
        self._count_applied = 0
        self._count_rejected = 0
        self._count_dedup = 0

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, sync: bool = False) -> JobStore:
        """Open (creating if needed) the job table at ``path``; StorageError if we cannot.

        ``sync=True`` fsyncs every apply (``synchronous=FULL``). It is not
        needed for safety (see ``_schema.prepare``) and costs ~10x per apply.
        """
        name = os.fspath(path)
        try:
            conn = apsw.Connection(name, statementcachesize=256)
        except apsw.Error as exc:
            raise StorageError(f"cannot open job table {name}: {exc}") from exc
        try:
            prepare(conn, name, sync=sync)
            if conn.filename:
                remove_scratch(conn.filename)  # a snapshot's copy that a crash cut short
        except BaseException:
            conn.close()
            raise
        return cls(conn, name)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._db is not None:
            db, self._db = self._db, None
            db.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> apsw.Connection:
        """The open connection; StorageError once closed."""
        if self._db is None:
            raise StorageError(f"job table {self._path} is closed")
        return self._db

    @staticmethod
    def _read_meta(db: apsw.Connection) -> tuple[int, int]:
        index, term = one(db, "SELECT applied_index, applied_term FROM meta WHERE id = 0")
        return int(index), int(term)

    # --- the Raft state machine -------------------------------------------------

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied (durable with the change it made)."""
        return self._applied

    @property
    def applied_term(self) -> int:
        """The term of the last entry applied."""
        return self._applied_term

    def apply(self, entry: Entry) -> Result | None:
        """Apply one committed entry; return its result (None for NOOP/CONFIG or a re-delivery)."""
        return self.apply_many([entry])[0]

    def apply_many(self, entries: Iterable[Entry]) -> list[Result | None]:
        """Apply consecutive committed entries in one transaction (one commit for all).

        Each entry is still all-or-nothing with its applied index, as with ``apply``.
        """
        return self.apply_commands(entries)[0]

    def apply_commands(
        self, entries: Iterable[Entry]
    ) -> tuple[list[Result | None], list[tuple[Command, Result]]]:
        """``apply_many``, and every command applied with its result, in log order.

        A batch entry's commands are listed one by one. The replica's
        watchers need the commands: decoding them once here instead of
        again for them was 4 % of the daemon's time in a burst.
        """
        db = self.db
        results: list[Result | None] = []
        done: list[tuple[Command, Result]] = []
        applied, term = self._applied, self._applied_term
        sessions = Sessions(db)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for entry in entries:
                    if entry.index <= applied:
                        results.append(None)  # re-delivered after a restart: done already
                        continue
                    if entry.index != applied + 1:
                        raise ValueError(
                            f"apply out of order: applied={applied}, got {entry.index}"
                        )
                    results.append(self._apply_entry(db, sessions, entry, done))
                    applied, term = entry.index, entry.term
                sessions.flush()
                db.execute(
                    "UPDATE meta SET applied_index = ?, applied_term = ? WHERE id = 0",
                    (applied, term),
                )
                db.execute("COMMIT")
            except BaseException:
                sessions.forget()
                db.execute("ROLLBACK")
                raise
        except apsw.Error as exc:
            raise StorageError(f"job table {self._path}: apply failed: {exc}") from exc
        self._count_applied += applied - self._applied
        self._applied, self._applied_term = applied, term
        return results, done

    def _apply_entry(
        self,
        db: apsw.Connection,
        sessions: Sessions,
        entry: Entry,
        done: list[tuple[Command, Result]],
    ) -> Result | None:
        if entry.kind != EntryKind.NORMAL:
            return None
        try:
            item = decode_entry(entry.data)
        except (InvalidRequest, ProtocolError) as exc:
            self._count_rejected += 1
            return rejected_from(exc)
        if isinstance(item, Batch):
            out: list[list[Any]] = []
            now: int | None = None
            for data in item.commands:
                try:
                    cmd = decode(data)
                except (InvalidRequest, ProtocolError) as exc:
                    self._count_rejected += 1
                    out.append(result_to_wire(rejected_from(exc)))
                    continue
                result = self._apply_command(db, sessions, cmd)
                done.append((cmd, result))
                out.append(result_to_wire(result))
                now = cmd.now if now is None else now
            if now is not None and entry.index % SESSION_SWEEP_EVERY == 0:
                self._expire_sessions(db, sessions, now)
            return _Applied({"results": out})
        result = self._apply_command(db, sessions, item)
        done.append((item, result))
        if entry.index % SESSION_SWEEP_EVERY == 0:
            self._expire_sessions(db, sessions, item.now)
        return result

    def _apply_command(self, db: apsw.Connection, sessions: Sessions, cmd: Command) -> Result:
        """One command: answered again if its session has (no second effect), else executed."""
        known = sessions.check(cmd)
        if known is not None:
            if isinstance(known, Rejected) and known.code == "stale":
                self._count_rejected += 1
            else:  # a retried request: the same answer, no second effect
                self._count_dedup += 1
            return known
        # A run command checks everything before its first write (``_runs``), so a refusal
        # has written nothing: no savepoint (two statements saved per command, three
        # commands per run on every replica).
        savepoint = not isinstance(cmd, _WRITES_AFTER_CHECKS)
        if savepoint:
            db.execute("SAVEPOINT command")
        result: Result
        try:
            result = _Applied(_EXECUTORS[type(cmd)](db, cmd))
        except (InvalidRequest, ProtocolError) as exc:
            if savepoint:
                db.execute("ROLLBACK TO command")
            result = rejected_from(exc)
            self._count_rejected += 1
        if savepoint:
            db.execute("RELEASE command")
        sessions.remember(cmd, result)
        return result

    @staticmethod
    def _expire_sessions(db: apsw.Connection, sessions: Sessions, now: int) -> None:
        sessions.flush()  # (the sessions this transaction saw, as they are now)
        cutoff = now - SESSION_TTL_MS
        db.execute(
            "DELETE FROM client_results WHERE session IN "
            "(SELECT session FROM client_sessions WHERE last_seen < ?)",
            (cutoff,),
        )
        db.execute("DELETE FROM client_sessions WHERE last_seen < ?", (cutoff,))

    def snapshot(self) -> bytes:
        """The whole table (with its applied index) as bytes, through SQLite's backup API."""
        try:
            return image_of(self.db)
        except StorageError as exc:
            raise StorageError(f"job table {self._path}: {exc}") from exc

    def snapshot_begin(self) -> PinnedImage | None:
        """Pin the table as it is now; its ``read()`` returns what ``snapshot()`` would now.

        ``read()`` may run in any thread while this store goes on applying
        (it uses a connection of its own); ``close()`` it if it is not wanted.
        None for a table that lives in memory (no file to open twice): call
        ``snapshot()`` then. Not while a transaction is open on this store.
        """
        path = self.db.filename
        if not path:
            return None
        return pin(path, (self._applied, self._applied_term))

    def restore(self, data: bytes, index: int) -> None:
        """Replace the whole table with a ``snapshot()`` taken at applied index ``index``.

        Raises StorageError if ``data`` is not such a snapshot (nothing is changed then).
        """
        image = bytearray(data)
        if len(image) >= 100 and image[18] == image[19] == 2:
            image[18] = image[19] = 1
        try:
            mem = apsw.Connection(":memory:")
            try:
                mem.deserialize("main", bytes(image))
                check_schema(mem, "snapshot")
                snap_index, snap_term = self._read_meta(mem)
                if snap_index != index:
                    raise StorageError(f"snapshot holds applied index {snap_index}, not {index}")
                ok = mem.execute("PRAGMA quick_check").fetchone()
                if ok is None or ok[0] != "ok":
                    raise StorageError(f"snapshot is corrupt: {ok}")
                with self.db.backup("main", mem, "main") as backup:
                    backup.step()
            finally:
                mem.close()
        except apsw.Error as exc:
            raise StorageError(f"job table {self._path}: restore failed: {exc}") from exc
        self._applied, self._applied_term = snap_index, snap_term

    # --- before proposing -------------------------------------------------------

    def precheck(self, cmd: Command, *, max_script_bytes: int | None = None) -> None:
        """Refuse early, on the proposer, what apply would refuse, plus host-dependent checks.

        Advisory (apply decides, on every replica), except for what depends
        on the host and so is checked here only, never in apply: whether the
        job's time zone exists in this host's tzdata, and the configured
        script size limit ``max_script_bytes``. Raises InvalidRequest
        (NotFound, AlreadyExists) with the message the user should see. A
        request this table has answered already (a retry of the same session
        and number) passes: apply gives it the answer it got the first time.
        """
        if isinstance(cmd, CreateJob):
            check_on_host(cmd.job, max_script_bytes=max_script_bytes)
        db = self.db
        cached, floor = one(
            db,
            "SELECT (SELECT result FROM client_results WHERE session = ?1 AND seq = ?2), "
            "(SELECT acked FROM client_sessions WHERE session = ?1)",
            (cmd.session, cmd.seq),
        )
        if cached is not None or (floor is not None and cmd.seq <= floor):
            return  # a retried request: apply answers it from the session table, unchanged
        # A dry run of the executor, rolled back: the same verdict apply would give now.
        db.execute("SAVEPOINT precheck")
        try:
            value = _EXECUTORS[type(cmd)](db, cmd)
        except (InvalidRequest, ProtocolError) as exc:
            raise rejected_from(exc).error() from None
        finally:
            db.execute("ROLLBACK TO precheck")
            db.execute("RELEASE precheck")
        if isinstance(cmd, UpdateJob):
            spec = JobSpec.from_wire({k: v for k, v in value.items() if k in _SPEC})
            check_on_host(spec, max_script_bytes=max_script_bytes)

    # --- queries (see _queries) ---------------------------------------------------

    def get_job(self, name: str) -> dict[str, Any]:
        """One job as JSON; NotFound if there is none."""
        return _queries.get_job(self.db, name)

    def list_jobs(
        self, *, paused: bool | None = None, after: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Jobs as JSON by name: all, or a page (``limit`` names after ``after``)."""
        return _queries.list_jobs(self.db, paused=paused, after=after, limit=limit)

    def list_schedules(self) -> list[JobSchedule]:
        """What the scheduler's timer heap needs of every job, fast (no JSON)."""
        return _queries.list_schedules(self.db)

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every version of a job, oldest first; NotFound if the name was never used."""
        return _queries.history(self.db, name)

    def diff(self, name: str, v1: int, v2: int) -> dict[str, Any]:
        """The fields that differ between two versions of a job."""
        return _queries.diff(self.db, name, v1, v2)

    def get_run(self, run_id: str) -> dict[str, Any]:
        """One run with its attempts; NotFound if there is none."""
        return _queries.get_run(self.db, run_id)

    def list_runs(
        self, *, job: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Runs, newest first, optionally of one job and/or in one state."""
        return _queries.list_runs(self.db, job=job, state=state, limit=limit)

    def statistics(self) -> StoreStatistics:
        """Counters and sizes of this table."""
        db = self.db
        (jobs,) = one(db, "SELECT count(*) FROM jobs")
        (runs,) = one(db, "SELECT count(*) FROM runs")
        return StoreStatistics(
            applied_index=self._applied,
            applied_term=self._applied_term,
            applied=self._count_applied,
            rejected=self._count_rejected,
            deduplicated=self._count_dedup,
            jobs=jobs,
            runs=runs,
        )

    def dump(self, *, data_only: bool = False) -> str:
        """Every row of every table as canonical text: equal tables give equal dumps.

        With ``data_only`` the bookkeeping (applied index, client sessions)
        is left out, so a refused command leaves the dump unchanged.
        """
        lines = []
        for table, order in TABLES:
            if data_only and table not in DATA_TABLES:
                continue
            for row in self.db.execute(f"SELECT * FROM {table} ORDER BY {order}"):
                lines.append(f"{table} {row!r}")
        return "\n".join(lines)


_SPEC: Final = frozenset(SPEC_FIELDS)
#: commands whose executor refuses before it writes anything (see ``_runs``)
_WRITES_AFTER_CHECKS: Final = (*RUN_COMMANDS, PruneRuns)
