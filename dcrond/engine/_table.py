"""What the engine reads from this node's copy of the job table, and instants as text.

Read-only SQL over ``JobStore.db`` for the questions the store's JSON
queries answer too slowly or not at all at 100,000 jobs: each job's last
scheduled instant (for catch-up), the runs this host must start or watch,
the runs waiting for a retry, a job's dependents, and where retention has
work. Every query uses one of the store's indexes (``runs_by_job``,
``runs_by_state``, ``runs_by_time``, ``job_deps_after``). Nothing here
writes: changes go through the log (``Replica.propose``).

A job's ``ScheduleRow`` comes from one SELECT, for one job
(``schedule_row``) or for a list of them (``schedule_rows``, what a new
leader loads its heap with: one query per list, read lazily). Its newest
claimed instant is a correlated sub-query that walks ``runs_by_job`` back
from the job's newest run to the first one its schedule (or a catch-up)
claimed -- usually one index entry, however many runs the job keeps; a
``GROUP BY job`` with ``max(scheduled_at)`` would read every run of every
job instead, as ``reason`` is not in the index. The catch-up fields are
read from the spec (msgpack, no column of their own): unpacking it takes
about 2.5 us a job, a sixth of what loading a job into the heap costs.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, final

import msgpack

from dcrond.store import FINAL_STATES, JobStore

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_FINAL: Final = ", ".join(f"'{s}'" for s in sorted(FINAL_STATES))


def iso_ms(text: str) -> int:
    """``"2026-01-02T01:30:00.004Z"`` -> epoch milliseconds (exact, no float)."""
    return (datetime.fromisoformat(text) - _EPOCH) // _MS


@final
@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One job as the scheduler's heap needs it."""

    name: str
    version: int
    schedule: str
    timezone: str
    paused: bool
    updated_at: int  #: ms: the last create, update, pause or resume
    last_instant: int | None  #: ms: the newest run claimed by its schedule (or catch-up)
    catch_up: str
    catch_up_limit: int


_SCHEDULE_SQL: Final = (
    "SELECT j.name, j.version, j.schedule, j.timezone, j.paused, j.updated_at, "
    "(SELECT r.scheduled_at FROM runs r WHERE r.job = j.name "
    "AND r.reason IN ('schedule', 'catch-up') ORDER BY r.scheduled_at DESC LIMIT 1), "
    "j.spec FROM jobs j"
)
#: the rows of the names in a JSON array, in name order (satisfied by the primary key)
_SCHEDULE_ROWS_SQL: Final = (
    f"{_SCHEDULE_SQL} WHERE j.name IN (SELECT value FROM json_each(?)) ORDER BY j.name"
)


def _schedule_row(r: Any) -> ScheduleRow:
    name, version, schedule, timezone, paused, updated_at, last, blob = r
    spec = msgpack.unpackb(blob)
    return ScheduleRow(
        name,
        version,
        schedule,
        timezone,
        bool(paused),
        updated_at,
        last,
        str(spec["catch_up"]),
        int(spec["catch_up_limit"]),
    )


def schedule_row(store: JobStore, name: str) -> ScheduleRow | None:
    """One job's row, or None if there is no such job (any more)."""
    r = store.db.execute(f"{_SCHEDULE_SQL} WHERE j.name = ?", (name,)).fetchone()
    return None if r is None else _schedule_row(r)


def schedule_rows(store: JobStore, names: Sequence[str]) -> Generator[ScheduleRow, None, None]:
    """The rows of those of ``names`` that exist, in name order, in one query read lazily.

    Read them without a checkpoint in between and ``close()`` the generator
    when done (``contextlib.closing``): the query stays open until then.
    """
    cursor = store.db.execute(_SCHEDULE_ROWS_SQL, (json.dumps(list(names)),))
    try:
        for r in cursor:
            yield _schedule_row(r)
    finally:
        cursor.close()


def schedule_keys(store: JobStore, after: str | None, limit: int) -> list[tuple[str, str, str]]:
    """(name, schedule, zone) of up to ``limit`` jobs by name after ``after`` (a page)."""
    if after is None:
        rows = store.db.execute(
            "SELECT name, schedule, timezone FROM jobs ORDER BY name LIMIT ?", (limit,)
        )
    else:
        rows = store.db.execute(
            "SELECT name, schedule, timezone FROM jobs WHERE name > ? ORDER BY name LIMIT ?",
            (after, limit),
        )
    return [(r[0], r[1], r[2]) for r in rows]


def job_spec(store: JobStore, name: str) -> tuple[int, dict[str, Any]] | None:
    """A live job's current version and spec (wire form), or None if it does not exist."""
    r = store.db.execute("SELECT version, spec FROM jobs WHERE name = ?", (name,)).fetchone()
    if r is None:
        return None
    spec: dict[str, Any] = msgpack.unpackb(r[1])
    return int(r[0]), spec


def version_spec(store: JobStore, name: str, version: int) -> dict[str, Any] | None:
    """The spec of one version of a job (kept after edits and deletes), or None."""
    r = store.db.execute(
        "SELECT spec FROM job_versions WHERE name = ? AND version = ?", (name, version)
    ).fetchone()
    if r is None:
        return None
    spec: dict[str, Any] = msgpack.unpackb(r[0])
    return spec


@final
@dataclass(frozen=True, slots=True)
class Claim:
    """A claimed attempt that has not started: what a worker needs to start it."""

    run_id: str
    job: str
    job_version: int
    scheduled_at: int  #: ms
    reason: str
    attempt: int
    host: str | None


def claims_on(store: JobStore, host: str) -> list[Claim]:
    """Attempts placed on ``host`` that are claimed but not started (current, not ended)."""
    rows = store.db.execute(
        "SELECT r.id, r.job, r.job_version, r.scheduled_at, r.reason, r.attempts, a.host "
        "FROM runs r JOIN attempts a ON a.run_id = r.id AND a.attempt = r.attempts "
        "WHERE r.state = 'scheduled' AND a.state = 'scheduled' AND a.host = ? "
        "ORDER BY r.scheduled_at, r.id",
        (host,),
    )
    return [Claim(*r) for r in rows]


def unplaced_claims(store: JobStore) -> list[tuple[Claim, int]]:
    """Claimed attempts with no host (nobody could take them, or their host refused),
    with the time each was claimed (ms)."""
    rows = store.db.execute(
        "SELECT r.id, r.job, r.job_version, r.scheduled_at, r.reason, r.attempts, a.host, "
        "a.claimed_at FROM runs r JOIN attempts a ON a.run_id = r.id AND a.attempt = r.attempts "
        "WHERE r.state = 'scheduled' AND a.state = 'scheduled' AND a.host IS NULL "
        "ORDER BY r.scheduled_at, r.id"
    )
    return [(Claim(*r[:7]), r[7]) for r in rows]


def running_on(store: JobStore, host: str) -> list[tuple[str, int]]:
    """(run id, attempt) of every run the table says is running on ``host``."""
    rows = store.db.execute(
        "SELECT id, attempts FROM runs WHERE state = 'running' AND host = ? ORDER BY id", (host,)
    )
    return [(r[0], r[1]) for r in rows]


def active_attempts(store: JobStore) -> list[tuple[str, int, str, str]]:
    """(run id, attempt, host, attempt state) of every current attempt placed and not ended."""
    rows = store.db.execute(
        "SELECT r.id, r.attempts, a.host, a.state FROM runs r "
        "JOIN attempts a ON a.run_id = r.id AND a.attempt = r.attempts "
        "WHERE r.state IN ('scheduled', 'running') AND a.state IN ('scheduled', 'running') "
        "AND a.host IS NOT NULL ORDER BY r.id"
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def active_hosts_of(store: JobStore, job: str) -> list[str]:
    """Hosts with an unfinished (claimed or running) current attempt of ``job``, newest first."""
    rows = store.db.execute(
        "SELECT DISTINCT a.host FROM runs r "
        "JOIN attempts a ON a.run_id = r.id AND a.attempt = r.attempts "
        "WHERE r.job = ? AND r.state IN ('scheduled', 'running') "
        "AND a.state IN ('scheduled', 'running') AND a.host IS NOT NULL "
        "ORDER BY r.scheduled_at DESC",
        (job,),
    )
    return [r[0] for r in rows]


def runs_at(store: JobStore, job: str, at: int) -> list[tuple[str, str]]:
    """(run id, state) of ``job``'s runs for the instant ``at`` (several for a per-host job)."""
    rows = store.db.execute(
        "SELECT id, state FROM runs WHERE job = ? AND scheduled_at = ? ORDER BY id", (job, at)
    )
    return [(r[0], r[1]) for r in rows]


def has_run_at(store: JobStore, job: str, at: int) -> bool:
    """``job`` has a run (any) for the instant ``at``."""
    row = store.db.execute(
        "SELECT 1 FROM runs WHERE job = ? AND scheduled_at = ? LIMIT 1", (job, at)
    ).fetchone()
    return row is not None


def running_of(store: JobStore, job: str) -> list[tuple[str, str | None]]:
    """(run id, host) of the job's runs that are running now, anywhere."""
    rows = store.db.execute(
        "SELECT id, host FROM runs WHERE state = 'running' AND job = ? ORDER BY id", (job,)
    )
    return [(r[0], r[1]) for r in rows]


@final
@dataclass(frozen=True, slots=True)
class Retry:
    """A run waiting for its next attempt."""

    run_id: str
    job: str
    job_version: int
    scheduled_at: int  #: ms
    next_attempt: int
    retry_at: int  #: ms


def waiting_retries(store: JobStore) -> list[Retry]:
    """Every run whose current attempt ended and that waits for the next one."""
    rows = store.db.execute(
        "SELECT id, job, job_version, scheduled_at, attempts + 1, retry_at FROM runs "
        "WHERE state = 'scheduled' AND retry_at IS NOT NULL ORDER BY retry_at, id"
    )
    return [Retry(*r) for r in rows]


def dependents(store: JobStore, job: str) -> list[str]:
    """The jobs that run after ``job``."""
    return [r[0] for r in store.db.execute("SELECT job FROM job_deps WHERE after = ?", (job,))]


def newest_final_runs(store: JobStore, job: str, limit: int) -> list[tuple[str, int, str, str]]:
    """(run id, scheduled_at ms, state, reason) of the job's newest ended runs."""
    rows = store.db.execute(
        f"SELECT id, scheduled_at, state, reason FROM runs WHERE job = ? AND state IN ({_FINAL}) "
        "ORDER BY scheduled_at DESC, id DESC LIMIT ?",
        (job, limit),
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def ended_count(store: JobStore, job: str) -> int:
    """How many ended runs the job has (what count-based retention looks at)."""
    r = store.db.execute(
        f"SELECT count(*) FROM runs WHERE job = ? AND state IN ({_FINAL})", (job,)
    ).fetchone()
    return int(r[0]) if r else 0


def jobs_with_runs_before(store: JobStore, cutoff_ms: int) -> list[str]:
    """Jobs with ended runs that finished before ``cutoff_ms`` (for age-based retention).

    Walks the ``runs_by_time`` index up to the cutoff only: a run finishes
    after it is scheduled, so older ones are all there.
    """
    rows = store.db.execute(
        f"SELECT DISTINCT job FROM runs WHERE scheduled_at < ?1 AND state IN ({_FINAL}) "
        "AND finished_at < ?1 ORDER BY job",
        (cutoff_ms,),
    )
    return [r[0] for r in rows]


def current_attempt(store: JobStore, run_id: str) -> tuple[str, int, str, str | None] | None:
    """(run state, current attempt number, that attempt's state and host), or None."""
    r = store.db.execute(
        "SELECT r.state, r.attempts, a.state, a.host FROM runs r "
        "JOIN attempts a ON a.run_id = r.id AND a.attempt = r.attempts WHERE r.id = ?",
        (run_id,),
    ).fetchone()
    return None if r is None else (r[0], r[1], r[2], r[3])


def run_state(store: JobStore, run_id: str) -> str | None:
    """A run's state, or None if there is no such run."""
    r = store.db.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if r is None else str(r[0])


def all_deps(store: JobStore) -> list[tuple[str, str, int]]:
    """(job, upstream, the job's created_at ms) for every ``after`` edge."""
    rows = store.db.execute(
        "SELECT d.job, d.after, j.created_at FROM job_deps d JOIN jobs j ON j.name = d.job "
        "ORDER BY d.job, d.after"
    )
    return [(r[0], r[1], r[2]) for r in rows]
