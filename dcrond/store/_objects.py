"""The JSON objects of the job table: jobs, versions, diffs, runs and attempts, as plain dicts.

This is the one place that decides their shape; the API, ``dcronctl -o json``
and the web page serve these dicts as they are (docs/jobs.md describes
them). Instants are ISO-8601 UTC strings with ``Z``; durations are seconds.
The functions take rows as the store selects them (see the ``*_COLUMNS``
constants) and never touch the database.
"""

from __future__ import annotations

from typing import Any, Final

from dcrond.store._instants import format_instant, format_optional
from dcrond.store._jobspec import SPEC_DEFAULTS, SPEC_FIELDS

JOB_COLUMNS: Final = "name, version, spec, created_at, created_by, updated_at, updated_by"
RUN_COLUMNS: Final = (
    "id, job, job_version, scheduled_at, reason, state, host, started_at, finished_at, "
    "exit_code, signal, attempts, max_attempts, retry_at, message, created_at, created_by, "
    "updated_at"
)
ATTEMPT_COLUMNS: Final = (
    "run_id, attempt, host, state, claimed_at, started_at, finished_at, pid, exit_code, "
    "signal, log_path, truncated, late, message"
)
VERSION_COLUMNS: Final = "name, version, op, actor, at, changed, spec, created_at, created_by"


def job_json(
    spec: dict[str, Any],
    *,
    version: int,
    created_at: int,
    created_by: str,
    updated_at: int,
    updated_by: str,
) -> dict[str, Any]:
    """A job: every spec field (wire form), then version and who created/updated it when."""
    out = dict(spec)
    out["version"] = version
    out["created_at"] = format_instant(created_at)
    out["created_by"] = created_by
    out["updated_at"] = format_instant(updated_at)
    out["updated_by"] = updated_by
    return out


def version_json(
    spec: dict[str, Any],
    *,
    version: int,
    op: str,
    actor: str,
    at: int,
    changed: list[str],
    created_at: int,
    created_by: str,
) -> dict[str, Any]:
    """One entry of a job's history: what was done, by whom, when, and the job as it became."""
    return {
        "version": version,
        "op": op,
        "actor": actor,
        "at": format_instant(at),
        "changed": changed,
        "job": job_json(
            spec,
            version=version,
            created_at=created_at,
            created_by=created_by,
            updated_at=at,
            updated_by=actor,
        ),
    }


def changed_fields(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """The spec fields whose values differ (all non-default ones when ``old`` is None)."""
    if old is None:
        old = SPEC_DEFAULTS
    return [f for f in SPEC_FIELDS if old.get(f) != new.get(f)]


def diff_json(
    name: str, v1: int, spec1: dict[str, Any], v2: int, spec2: dict[str, Any]
) -> dict[str, Any]:
    """What differs between two versions of a job, field by field, in field order."""
    return {
        "job": name,
        "from_version": v1,
        "to_version": v2,
        "changes": [
            {"field": f, "from": spec1.get(f), "to": spec2.get(f)}
            for f in changed_fields(spec1, spec2)
        ],
    }


def attempt_json(row: tuple[Any, ...]) -> dict[str, Any]:
    """One attempt of a run (``row`` as selected by ``ATTEMPT_COLUMNS``)."""
    (
        _run_id,
        attempt,
        host,
        state,
        claimed_at,
        started_at,
        finished_at,
        pid,
        exit_code,
        signal,
        log_path,
        truncated,
        late,
        message,
    ) = row
    return {
        "attempt": attempt,
        "host": host,
        "state": state,
        "claimed_at": format_instant(claimed_at),
        "started_at": format_optional(started_at),
        "finished_at": format_optional(finished_at),
        "pid": pid,
        "exit_code": exit_code,
        "signal": signal,
        "log_path": log_path,
        "truncated": bool(truncated),
        "late": bool(late),
        "message": message,
    }


def run_json(row: tuple[Any, ...], attempts: list[tuple[Any, ...]]) -> dict[str, Any]:
    """One run with its attempts (``row`` as selected by ``RUN_COLUMNS``)."""
    (
        run_id,
        job,
        job_version,
        scheduled_at,
        reason,
        state,
        host,
        started_at,
        finished_at,
        exit_code,
        signal,
        n_attempts,
        max_attempts,
        retry_at,
        message,
        created_at,
        created_by,
        updated_at,
    ) = row
    return {
        "id": run_id,
        "job": job,
        "job_version": job_version,
        "scheduled_at": format_instant(scheduled_at),
        "reason": reason,
        "state": state,
        "host": host,
        "started_at": format_optional(started_at),
        "finished_at": format_optional(finished_at),
        "exit_code": exit_code,
        "signal": signal,
        "attempt": n_attempts,
        "max_attempts": max_attempts,
        "retry_at": format_optional(retry_at),
        "message": message,
        "created_at": format_instant(created_at),
        "created_by": created_by,
        "updated_at": format_instant(updated_at),
        "attempts": [attempt_json(a) for a in attempts],
    }
