"""The job table's SQLite schema, and opening a database file with it.

Tables (instants are integer milliseconds since the UNIX epoch, UTC):

* ``meta`` -- one row: schema version, and the index and term of the last
  applied log entry, written in the same transaction as what it applied;
* ``jobs`` -- one row per live job: its spec as canonical msgpack, plus the
  columns listings and the scheduler's timer heap need;
* ``job_versions`` -- every create, update, pause, resume and delete of a
  job, with the full spec at that version and the fields that changed; kept
  when the job is deleted, so a job re-created under the same name goes on
  counting versions;
* ``job_deps`` -- the ``after`` edges between live jobs, indexed both ways;
* ``runs`` and ``attempts`` -- append-only records of runs and their attempts
  (only ``PruneRuns`` deletes them);
* ``client_results`` and ``client_sessions`` -- the answers of recent client
  requests and each session's acknowledged floor, to apply a retried
  request once.
"""

from __future__ import annotations

from typing import Any, Final

import apsw

from dcrond.errors import StorageError

SCHEMA_VERSION: Final = 1

DDL: Final = """
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    schema_version INTEGER NOT NULL,
    applied_index INTEGER NOT NULL,
    applied_term INTEGER NOT NULL
);
CREATE TABLE jobs (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    paused INTEGER NOT NULL,
    schedule TEXT NOT NULL,
    timezone TEXT NOT NULL,
    spec BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE job_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    op TEXT NOT NULL,
    actor TEXT NOT NULL,
    at INTEGER NOT NULL,
    changed BLOB NOT NULL,
    spec BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
CREATE TABLE job_deps (
    job TEXT NOT NULL,
    after TEXT NOT NULL,
    PRIMARY KEY (job, after)
) WITHOUT ROWID;
CREATE INDEX job_deps_after ON job_deps (after, job);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    job_version INTEGER NOT NULL,
    scheduled_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    host TEXT,
    started_at INTEGER,
    finished_at INTEGER,
    exit_code INTEGER,
    signal INTEGER,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    backoff REAL NOT NULL,
    backoff_multiplier REAL NOT NULL,
    retry_at INTEGER,
    message TEXT,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX runs_by_time ON runs (scheduled_at, id);
CREATE INDEX runs_by_job ON runs (job, scheduled_at, id);
CREATE INDEX runs_by_state ON runs (state, scheduled_at, id);
CREATE TABLE attempts (
    run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    host TEXT,
    state TEXT NOT NULL,
    claimed_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    pid INTEGER,
    exit_code INTEGER,
    signal INTEGER,
    log_path TEXT,
    truncated INTEGER NOT NULL,
    late INTEGER NOT NULL,
    message TEXT,
    PRIMARY KEY (run_id, attempt)
) WITHOUT ROWID;
CREATE TABLE client_results (
    session TEXT NOT NULL,
    seq INTEGER NOT NULL,
    result BLOB NOT NULL,
    PRIMARY KEY (session, seq)
) WITHOUT ROWID;
CREATE TABLE client_sessions (
    session TEXT PRIMARY KEY,
    acked INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX client_sessions_seen ON client_sessions (last_seen);
"""

#: every table, in the order ``dump`` writes them, with the columns that order its rows
TABLES: Final = (
    ("meta", "id"),
    ("jobs", "name"),
    ("job_versions", "name, version"),
    ("job_deps", "job, after"),
    ("runs", "id"),
    ("attempts", "run_id, attempt"),
    ("client_results", "session, seq"),
    ("client_sessions", "session"),
)
#: the tables that hold the job table's data (not the bookkeeping of applies)
DATA_TABLES: Final = ("jobs", "job_versions", "job_deps", "runs", "attempts")


def prepare(conn: apsw.Connection, name: str, *, sync: bool) -> None:
    """Set the pragmas and create the schema if the file is new; StorageError if it is foreign.

    WAL with ``synchronous=NORMAL`` (``sync=False``) is safe here: a commit
    lost in a power cut leaves the table behind but consistent (its
    ``applied_index`` went back with it), and the Raft driver hands the
    missing entries out again, or the snapshot if the log was compacted.
    """
    try:
        conn.pragma("journal_mode", "WAL")
        conn.pragma("synchronous", "FULL" if sync else "NORMAL")
        conn.pragma("foreign_keys", False)
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
            if not tables:
                conn.execute(DDL)
                conn.execute("INSERT INTO meta VALUES (0, ?, 0, 0)", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except apsw.Error as exc:
        raise StorageError(f"cannot open job table {name}: {exc}") from exc
    check_schema(conn, name)


def one(db: apsw.Connection, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """The one row ``sql`` selects (StorageError if there is none: the table is damaged)."""
    row = db.execute(sql, args).fetchone()
    if row is None:
        raise StorageError(f"job table: expected a row from {sql!r}")
    return tuple(row)


def check_schema(conn: apsw.Connection, name: str) -> None:
    """Raise StorageError unless ``conn`` holds a job table of our schema version."""
    try:
        row = conn.execute("SELECT schema_version FROM meta WHERE id = 0").fetchone()
    except apsw.Error as exc:
        raise StorageError(f"{name} is not a dcrond job table: {exc}") from exc
    if row is None or row[0] != SCHEMA_VERSION:
        found = None if row is None else row[0]
        raise StorageError(
            f"{name} holds job table schema {found}, this dcrond reads {SCHEMA_VERSION}"
        )
