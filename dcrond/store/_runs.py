"""Applying the run commands (scheduled, started, finished, skipped, lost) and PruneRuns.

Each function checks the command against the tables of ``_runstate`` before
writing, so a refused command writes nothing; the rules themselves live
there, at the top of that module. Like ``_jobs``, every input comes from the
command and the table.

A run command's result is the run's *summary* (``run_summary``), not its
full JSON: every replica applies every run command, three per run, and
building the full JSON (two queries, a dozen instants formatted as text,
then stored in the session table) was a third of the cost of applying them.
Whoever wants the whole run reads it (``get_run``) once the command is
applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

import apsw

from dcrond.errors import AlreadyExists, NotFound
from dcrond.store._commands import (
    PruneRuns,
    RunFinished,
    RunLost,
    RunPlaced,
    RunRefused,
    RunScheduled,
    RunSkipped,
    RunStarted,
)
from dcrond.store._instants import run_host
from dcrond.store._jobs import no_such_job, unpack_spec
from dcrond.store._objects import ATTEMPT_COLUMNS, RUN_COLUMNS, run_json
from dcrond.store._results import Conflict
from dcrond.store._runstate import (
    ATTEMPT_ENDED,
    FINAL_STATES,
    OUTCOME_EVENTS,
    Event,
    RunState,
    attempt_next,
    retry_delay_ms,
    run_event_for_outcome,
    run_next,
)


@final
@dataclass(frozen=True, slots=True)
class _Run:
    id: str
    job: str
    job_version: int
    state: RunState
    attempts: int
    max_attempts: int
    backoff: float
    backoff_multiplier: float


def load_run_json(db: apsw.Connection, run_id: str) -> dict[str, Any]:
    """The JSON object of one run with its attempts; NotFound if there is none."""
    row = db.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    attempts = db.execute(
        f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ? ORDER BY attempt", (run_id,)
    ).fetchall()
    return run_json(row, attempts)


def run_summary(db: apsw.Connection, run_id: str, attempt: int) -> dict[str, Any]:
    """What the engine needs of a run after a command on its attempt ``attempt``.

    Keys: ``id``, ``job``, ``job_version``, ``reason``, ``state``, ``host``,
    ``attempt`` (the run's current attempt), and instants as integer
    milliseconds: ``scheduled_at_ms``, ``retry_at_ms`` (None unless it waits
    for a retry) and ``claimed_at_ms`` (of attempt ``attempt``).
    """
    # (two plain lookups: the same as one LEFT JOIN took 4 times as long, per run command)
    row = db.execute(
        "SELECT job, job_version, scheduled_at, reason, state, host, attempts, retry_at "
        "FROM runs WHERE id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    claimed = db.execute(
        "SELECT claimed_at FROM attempts WHERE run_id = ? AND attempt = ?", (run_id, attempt)
    ).fetchone()
    claimed_at = None if claimed is None else claimed[0]
    job, version, scheduled_at, reason, state, host, attempts, retry_at = row
    return {
        "id": run_id,
        "job": job,
        "job_version": version,
        "reason": reason,
        "state": state,
        "host": host,
        "attempt": attempts,
        "scheduled_at_ms": scheduled_at,
        "retry_at_ms": retry_at,
        "claimed_at_ms": claimed_at,
    }


def _load_run(db: apsw.Connection, run_id: str) -> _Run:
    row = db.execute(
        "SELECT job, job_version, state, attempts, max_attempts, backoff, backoff_multiplier "
        "FROM runs WHERE id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    job, version, state, attempts, max_attempts, backoff, mult = row
    return _Run(run_id, job, version, RunState(state), attempts, max_attempts, backoff, mult)


def _attempt_state(db: apsw.Connection, run: _Run, attempt: int) -> tuple[RunState, str | None]:
    row = db.execute(
        "SELECT state, host FROM attempts WHERE run_id = ? AND attempt = ?", (run.id, attempt)
    ).fetchone()
    if row is None:
        raise NotFound(f"run {run.id!r} has no attempt {attempt} (it has {run.attempts})")
    return RunState(row[0]), row[1]


def run_scheduled(db: apsw.Connection, cmd: RunScheduled) -> dict[str, Any]:
    """Create a run (attempt 1) or add the next attempt of a run waiting for a retry."""
    if cmd.attempt == 1:
        job = db.execute(
            "SELECT version, paused, spec, updated_at FROM jobs WHERE name = ?", (cmd.job,)
        ).fetchone()
        if job is None:
            raise no_such_job(cmd.job)
        version, paused, blob, changed_at = job
        existing = db.execute("SELECT state FROM runs WHERE id = ?", (cmd.run_id,)).fetchone()
        if existing is not None:
            raise AlreadyExists(f"run {cmd.run_id!r} already exists ({existing[0]})")
        if cmd.job_version != version:
            raise Conflict(
                f"job_version: job {cmd.job!r} is at version {version}, not {cmd.job_version}; "
                "claim runs of the current version"
            )
        if paused and cmd.reason in ("schedule", "catch-up") and cmd.scheduled_at > changed_at:
            # (an instant due before the pause may still be claimed: a leader that was behind
            # records it, and the worker skips it as paused, so no due instant goes without a run)
            raise Conflict(f"job {cmd.job!r} is paused; only a trigger can run it")
        spec = unpack_spec(blob)
        on = spec.get("on", "any")
        if on == "any" and run_host(cmd.run_id) is not None:
            raise Conflict(f"job {cmd.job!r} runs on one host per instant: its run is {cmd.job}@…")
        if on != "any" and run_host(cmd.run_id) is None and cmd.host is not None:
            raise Conflict(
                f"job {cmd.job!r} runs on several hosts per instant ({on}): "
                "name the host in the run id (job@instant~host)"
            )
        db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, 'scheduled', ?, NULL, NULL, NULL, NULL, 1, "
            "?, ?, ?, NULL, NULL, ?, ?, ?)",
            (
                cmd.run_id,
                cmd.job,
                version,
                cmd.scheduled_at,
                cmd.reason,
                cmd.host,
                spec["retries"] + 1,
                spec["backoff"],
                spec["backoff_multiplier"],
                cmd.now,
                cmd.actor,
                cmd.now,
            ),
        )
    else:
        run = _load_run(db, cmd.run_id)
        if (run.job, run.job_version) != (cmd.job, cmd.job_version):
            raise Conflict(
                f"job_version: run {run.id!r} belongs to version {run.job_version} of its job"
            )
        current, _host = _attempt_state(db, run, run.attempts)
        waiting = current in ATTEMPT_ENDED and run_next(run.state, Event.CLAIM) is not None
        if not waiting:
            raise Conflict(f"run {run.id!r} is {run.state} and not waiting for a retry")
        if cmd.attempt != run.attempts + 1 or cmd.attempt > run.max_attempts:
            raise Conflict(
                f"attempt: run {run.id!r} has had {run.attempts} of at most "
                f"{run.max_attempts} attempts; the next is {run.attempts + 1}"
            )
        db.execute(
            "UPDATE runs SET attempts = ?, host = ?, retry_at = NULL, updated_at = ? WHERE id = ?",
            (cmd.attempt, cmd.host, cmd.now, run.id),
        )
    db.execute(
        "INSERT INTO attempts VALUES (?, ?, ?, 'scheduled', ?, NULL, NULL, NULL, NULL, NULL, "
        "NULL, 0, 0, NULL)",
        (cmd.run_id, cmd.attempt, cmd.host, cmd.now),
    )
    return run_summary(db, cmd.run_id, cmd.attempt)


def run_started(db: apsw.Connection, cmd: RunStarted) -> dict[str, Any]:
    """Mark an attempt (and, if it is current, its run) running on ``host``."""
    run = _load_run(db, cmd.run_id)
    state, host = _attempt_state(db, run, cmd.attempt)
    if host is not None and host != cmd.host:
        raise Conflict(
            f"host: attempt {cmd.attempt} of run {run.id!r} was placed on {host!r}, "
            f"not {cmd.host!r}"
        )
    if attempt_next(state, Event.START) is None:
        raise Conflict(f"attempt {cmd.attempt} of run {run.id!r} is {state}; it cannot start")
    current = cmd.attempt == run.attempts
    if current and run_next(run.state, Event.START) is None:
        raise Conflict(f"run {run.id!r} is {run.state}; it cannot start")
    db.execute(
        "UPDATE attempts SET state = 'running', host = ?, pid = ?, started_at = ? "
        "WHERE run_id = ? AND attempt = ?",
        (cmd.host, cmd.pid, cmd.started_at, run.id, cmd.attempt),
    )
    if current:
        db.execute(
            "UPDATE runs SET state = 'running', host = ?, "
            "started_at = coalesce(started_at, ?), updated_at = ? WHERE id = ?",
            (cmd.host, cmd.started_at, cmd.now, run.id),
        )
    return run_summary(db, run.id, cmd.attempt)


def _end_attempt(
    db: apsw.Connection,
    cmd: RunFinished | RunLost,
    outcome: RunState,
    *,
    exit_code: int | None,
    signal: int | None,
    finished_at: int,
    started_at: int | None,
    log_path: str | None,
    truncated: bool,
    message: str | None,
) -> dict[str, Any]:
    run = _load_run(db, cmd.run_id)
    state, _host = _attempt_state(db, run, cmd.attempt)
    if attempt_next(state, OUTCOME_EVENTS[outcome]) is None:
        raise Conflict(f"attempt {cmd.attempt} of run {run.id!r} is already {state}")
    db.execute(
        "UPDATE attempts SET state = ?, exit_code = ?, signal = ?, finished_at = ?, "
        "started_at = coalesce(started_at, ?), log_path = coalesce(?, log_path), "
        "truncated = ?, late = ?, message = ? WHERE run_id = ? AND attempt = ?",
        (
            outcome,
            exit_code,
            signal,
            finished_at,
            started_at,
            log_path,
            truncated,
            state == RunState.LOST,
            message,
            run.id,
            cmd.attempt,
        ),
    )
    if cmd.attempt != run.attempts or run.state in FINAL_STATES:
        return run_summary(db, run.id, cmd.attempt)  # rule 6 / rule 2: the run does not change
    event = run_event_for_outcome(outcome, attempts_left=run.attempts < run.max_attempts)
    new_state = run_next(run.state, event)
    assert new_state is not None, (run.state, event)  # every end event is allowed here
    if new_state == RunState.SCHEDULED:
        retry_at = cmd.now + retry_delay_ms(run.backoff, run.backoff_multiplier, cmd.attempt)
        db.execute(
            "UPDATE runs SET state = 'scheduled', exit_code = ?, signal = ?, retry_at = ?, "
            "message = ?, updated_at = ? WHERE id = ?",
            (exit_code, signal, retry_at, message, cmd.now, run.id),
        )
    else:
        db.execute(
            "UPDATE runs SET state = ?, exit_code = ?, signal = ?, finished_at = ?, "
            "started_at = coalesce(started_at, ?), retry_at = NULL, message = ?, "
            "updated_at = ? WHERE id = ?",
            (new_state, exit_code, signal, finished_at, started_at, message, cmd.now, run.id),
        )
    return run_summary(db, run.id, cmd.attempt)


def run_finished(db: apsw.Connection, cmd: RunFinished) -> dict[str, Any]:
    """Record how an attempt ended; the run follows if the attempt is current (rules 3, 5, 6)."""
    return _end_attempt(
        db,
        cmd,
        RunState(cmd.state),
        exit_code=cmd.exit_code,
        signal=cmd.signal,
        finished_at=cmd.finished_at,
        started_at=cmd.started_at,
        log_path=cmd.log_path,
        truncated=cmd.truncated,
        message=None,
    )


def run_lost(db: apsw.Connection, cmd: RunLost) -> dict[str, Any]:
    """Record that an attempt's outcome is unknown, at the command's ``now``."""
    return _end_attempt(
        db,
        cmd,
        RunState.LOST,
        exit_code=None,
        signal=None,
        finished_at=cmd.now,
        started_at=None,
        log_path=None,
        truncated=False,
        message=cmd.reason or None,
    )


def run_skipped(db: apsw.Connection, cmd: RunSkipped) -> dict[str, Any]:
    """End a scheduled run (not started, or waiting for a retry) as skipped."""
    run = _load_run(db, cmd.run_id)
    if run_next(run.state, Event.SKIP) is None:
        raise Conflict(f"run {run.id!r} is {run.state}; only a scheduled run can be skipped")
    state, _host = _attempt_state(db, run, run.attempts)
    if state == RunState.SCHEDULED:
        db.execute(
            "UPDATE attempts SET state = 'skipped', finished_at = ?, message = ? "
            "WHERE run_id = ? AND attempt = ?",
            (cmd.now, cmd.reason, run.id, run.attempts),
        )
    db.execute(
        "UPDATE runs SET state = 'skipped', finished_at = ?, retry_at = NULL, message = ?, "
        "updated_at = ? WHERE id = ?",
        (cmd.now, cmd.reason, cmd.now, run.id),
    )
    return run_summary(db, run.id, run.attempts)


def run_refused(db: apsw.Connection, cmd: RunRefused) -> dict[str, Any]:
    """The placed host refuses a claimed attempt: it is unplaced, the refusal noted."""
    run = _load_run(db, cmd.run_id)
    state, host = _attempt_state(db, run, cmd.attempt)
    if cmd.attempt != run.attempts or run.state != RunState.SCHEDULED:
        raise Conflict(f"attempt {cmd.attempt} of run {run.id!r} is not waiting to start")
    if state != RunState.SCHEDULED or host != cmd.host:
        raise Conflict(
            f"attempt {cmd.attempt} of run {run.id!r} is {state} on {host!r}, "
            f"not waiting to start on {cmd.host!r}"
        )
    db.execute(
        "UPDATE attempts SET host = NULL, message = ? WHERE run_id = ? AND attempt = ?",
        (f"{cmd.host} refused it: {cmd.reason}"[:1024], run.id, cmd.attempt),
    )
    db.execute("UPDATE runs SET host = NULL, updated_at = ? WHERE id = ?", (cmd.now, run.id))
    return run_summary(db, run.id, cmd.attempt)


def run_placed(db: apsw.Connection, cmd: RunPlaced) -> dict[str, Any]:
    """Give an unplaced claimed attempt its host."""
    run = _load_run(db, cmd.run_id)
    state, host = _attempt_state(db, run, cmd.attempt)
    if cmd.attempt != run.attempts or run.state != RunState.SCHEDULED:
        raise Conflict(f"attempt {cmd.attempt} of run {run.id!r} is not waiting to start")
    if state != RunState.SCHEDULED or host is not None:
        raise Conflict(f"attempt {cmd.attempt} of run {run.id!r} is {state} on {host!r}")
    own = run_host(run.id)
    if own is not None and own != cmd.host:
        raise Conflict(f"run {run.id!r} belongs to host {own}, not {cmd.host}")
    db.execute(
        "UPDATE attempts SET host = ? WHERE run_id = ? AND attempt = ?",
        (cmd.host, run.id, cmd.attempt),
    )
    db.execute("UPDATE runs SET host = ?, updated_at = ? WHERE id = ?", (cmd.host, cmd.now, run.id))
    return run_summary(db, run.id, cmd.attempt)


_FINAL_LIST = ", ".join(f"'{s}'" for s in sorted(FINAL_STATES))


def prune_runs(db: apsw.Connection, cmd: PruneRuns) -> dict[str, Any]:
    """Delete the job's oldest ended runs beyond the limits; list their attempts' log paths."""
    rows: list[tuple[Any, ...]] = db.execute(
        f"SELECT id, finished_at FROM runs WHERE job = ? AND state IN ({_FINAL_LIST}) "
        "ORDER BY scheduled_at DESC, id DESC",
        (cmd.job,),
    ).fetchall()
    cutoff = None if cmd.max_age is None else cmd.now - cmd.max_age * 1000
    doomed = [
        run_id
        for i, (run_id, finished_at) in enumerate(rows)
        if (cmd.keep_count is not None and i >= cmd.keep_count)
        or (cutoff is not None and finished_at is not None and finished_at < cutoff)
    ]
    doomed.reverse()  # oldest first, so a limited prune removes the oldest
    more = len(doomed) > cmd.limit
    doomed = doomed[: cmd.limit]
    log_paths: list[str] = []
    for run_id in doomed:
        log_paths.extend(
            r[0]
            for r in db.execute(
                "SELECT log_path FROM attempts WHERE run_id = ? AND log_path IS NOT NULL "
                "ORDER BY attempt",
                (run_id,),
            )
        )
        db.execute("DELETE FROM attempts WHERE run_id = ?", (run_id,))
        db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
    return {
        "job": cmd.job,
        "deleted": len(doomed),
        "runs": doomed,
        "log_paths": log_paths,
        "more": more,
    }
