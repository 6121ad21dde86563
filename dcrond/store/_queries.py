"""Read-only queries on the local job table, for the API, ``dcronctl`` and the scheduler.

They read this replica's SQLite file as it is: the caller makes a read
linearizable (a Raft ReadIndex barrier) when it needs that. Every result is
a JSON object from ``_objects``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, final

import apsw
import msgpack

from dcrond.errors import InvalidRequest, NotFound
from dcrond.store._jobs import no_such_job, unpack_spec
from dcrond.store._objects import (
    ATTEMPT_COLUMNS,
    JOB_COLUMNS,
    RUN_COLUMNS,
    VERSION_COLUMNS,
    diff_json,
    job_json,
    run_json,
    version_json,
)
from dcrond.store._runs import load_run_json
from dcrond.store._runstate import RunState
from dcrond.store._validate import check_int, check_job_name

MAX_RUN_LIMIT: Final = 10_000
_STATES: Final = frozenset(s.value for s in RunState)


def get_job(db: apsw.Connection, name: str) -> dict[str, Any]:
    """One job; NotFound if there is none by that name."""
    row = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise no_such_job(name)
    return _job(row)


def _job(row: tuple[Any, ...]) -> dict[str, Any]:
    _name, version, blob, created_at, created_by, updated_at, updated_by = row
    return job_json(
        unpack_spec(blob),
        version=version,
        created_at=created_at,
        created_by=created_by,
        updated_at=updated_at,
        updated_by=updated_by,
    )


def list_jobs(
    db: apsw.Connection,
    *,
    paused: bool | None = None,
    after: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Jobs by name: all, or a page of ``limit`` after the name ``after``; optionally by ``paused``.

    Building the JSON costs ~10 us a job (msgpack and dicts), so pages suit
    an API; the scheduler wants ``list_schedules``.
    """
    where: list[str] = []
    args: list[object] = []
    if paused is not None:
        where.append("paused = ?")
        args.append(paused)
    if after is not None:
        where.append("name > ?")
        args.append(after)
    sql = f"SELECT {JOB_COLUMNS} FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY name"
    if limit is not None:
        check_int("limit", limit, 1, 1 << 31, "a count of jobs")
        sql += f" LIMIT {limit}"
    return [_job(r) for r in db.execute(sql, tuple(args))]


@final
@dataclass(frozen=True, slots=True)
class JobSchedule:
    """What the scheduler's timer heap needs of a job (read from columns, without the spec)."""

    name: str
    version: int
    schedule: str
    timezone: str
    paused: bool


def list_schedules(db: apsw.Connection) -> list[JobSchedule]:
    """Every job's name, version, schedule, zone and paused flag, by name (fast: ~1 us a job)."""
    return [
        JobSchedule(name, version, schedule, timezone, bool(paused))
        for name, version, schedule, timezone, paused in db.execute(
            "SELECT name, version, schedule, timezone, paused FROM jobs ORDER BY name"
        )
    ]


def _version(row: tuple[Any, ...]) -> dict[str, Any]:
    _name, version, op, actor, at, changed, spec, created_at, created_by = row
    return version_json(
        unpack_spec(spec),
        version=version,
        op=op,
        actor=actor,
        at=at,
        changed=msgpack.unpackb(changed),
        created_at=created_at,
        created_by=created_by,
    )


def history(db: apsw.Connection, name: str) -> list[dict[str, Any]]:
    """Every version of a job, oldest first (a deleted job keeps its history)."""
    rows = db.execute(
        f"SELECT {VERSION_COLUMNS} FROM job_versions WHERE name = ? ORDER BY version", (name,)
    ).fetchall()
    if not rows:
        raise NotFound(f"no job named {name!r} has ever existed")
    return [_version(r) for r in rows]


def diff(db: apsw.Connection, name: str, v1: int, v2: int) -> dict[str, Any]:
    """What differs between versions ``v1`` and ``v2`` of a job, field by field."""
    specs = []
    for v in (v1, v2):
        check_int("version", v, 1, 1 << 62, "a version number")
        row = db.execute(
            "SELECT spec FROM job_versions WHERE name = ? AND version = ?", (name, v)
        ).fetchone()
        if row is None:
            raise NotFound(f"job {name!r} has no version {v}")
        specs.append(unpack_spec(row[0]))
    return diff_json(name, v1, specs[0], v2, specs[1])


def get_run(db: apsw.Connection, run_id: str) -> dict[str, Any]:
    """One run with its attempts; NotFound if there is none."""
    return load_run_json(db, run_id)


def list_runs(
    db: apsw.Connection,
    *,
    job: str | None = None,
    state: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Runs, newest scheduled instant first, optionally of one job and/or in one state."""
    check_int("limit", limit, 1, MAX_RUN_LIMIT, "a count of runs")
    where: list[str] = []
    args: list[object] = []
    if job is not None:
        check_job_name("job", job)
        where.append("job = ?")
        args.append(job)
    if state is not None:
        if state not in _STATES:
            raise InvalidRequest(
                f"state: {state!r} is not allowed; use one of " + ", ".join(RunState)
            )
        where.append("state = ?")
        args.append(state)
    sql = f"SELECT {RUN_COLUMNS} FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY scheduled_at DESC, id DESC LIMIT ?"
    rows = db.execute(sql, (*args, limit)).fetchall()
    return [
        run_json(
            row,
            db.execute(
                f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ? ORDER BY attempt",
                (row[0],),
            ).fetchall(),
        )
        for row in rows
    ]
