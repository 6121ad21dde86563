"""The life of a run and of its attempts, as two transition tables.

Theory of operation
-------------------
A *run* is one execution of a job for one instant (id ``job@instant``). It
is carried out by one or more *attempts*, numbered from 1; only the newest
attempt is *current*. Both have a state; these rules govern them:

1. Every change of state is an *event* applied to a state; the pair must be
   in the table below (``RUN_TRANSITIONS`` / ``ATTEMPT_TRANSITIONS``),
   otherwise the command that carried it is refused and nothing changes.
2. A run's final states (succeeded, failed, timed_out, killed, skipped,
   lost) are final: no event leaves them.
3. An attempt that *ends* (succeeded, failed, timed_out, killed, lost) ends
   the run with the same outcome -- unless the outcome is retryable
   (failed, timed_out, lost), the job allows another attempt, and the run
   is not final: then the run goes back to ``scheduled`` (event ``retry``),
   waiting for its next attempt at ``retry_at``. A run in ``scheduled``
   whose current attempt has ended is *waiting for a retry*; ``claim`` (a
   new attempt) is allowed only then, ``start`` never.
4. An attempt may also end without a ``start`` report (it could not be
   spawned, or was killed before it began).
5. ``lost`` means "the outcome is unknown" (its host died or restarted and
   left no exit status). It is the one final attempt state that a *late
   report* from the host that ran it may correct, so the attempt records
   what really happened. A late report changes the run only while the run
   is not final and that attempt is still current: a late success of a
   lost attempt that is waiting for a retry ends the run as succeeded.
6. Events about an attempt that is no longer current (superseded by a
   retry) are recorded on that attempt only; the run does not change.

The functions below are pure; ``_runs.py`` applies their verdicts.
"""

from __future__ import annotations

import enum
from typing import Final


class RunState(enum.StrEnum):
    """The state of a run, or of one attempt of it."""

    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    KILLED = "killed"
    SKIPPED = "skipped"
    LOST = "lost"


class Event(enum.StrEnum):
    """What can happen to a run or an attempt."""

    CLAIM = "claim"  #: a new attempt of a run waiting for a retry was placed
    START = "start"  #: the attempt's process started
    SUCCEED = "succeed"
    FAIL = "fail"
    TIME_OUT = "time_out"
    KILL = "kill"
    LOSE = "lose"
    SKIP = "skip"  #: the run will not run (policy: paused, concurrency, catch-up, cancel)
    RETRY = "retry"  #: the current attempt ended retryably and another attempt is allowed


S, E = RunState, Event

#: run state -> event -> next run state (anything absent is refused)
RUN_TRANSITIONS: Final[dict[RunState, dict[Event, RunState]]] = {
    S.SCHEDULED: {
        E.CLAIM: S.SCHEDULED,
        E.START: S.RUNNING,
        E.SUCCEED: S.SUCCEEDED,
        E.FAIL: S.FAILED,
        E.TIME_OUT: S.TIMED_OUT,
        E.KILL: S.KILLED,
        E.LOSE: S.LOST,
        E.SKIP: S.SKIPPED,
        E.RETRY: S.SCHEDULED,
    },
    S.RUNNING: {
        E.SUCCEED: S.SUCCEEDED,
        E.FAIL: S.FAILED,
        E.TIME_OUT: S.TIMED_OUT,
        E.KILL: S.KILLED,
        E.LOSE: S.LOST,
        E.RETRY: S.SCHEDULED,
    },
    S.SUCCEEDED: {},
    S.FAILED: {},
    S.TIMED_OUT: {},
    S.KILLED: {},
    S.SKIPPED: {},
    S.LOST: {},
}

#: attempt state -> event -> next attempt state (anything absent is refused)
ATTEMPT_TRANSITIONS: Final[dict[RunState, dict[Event, RunState]]] = {
    S.SCHEDULED: {
        E.START: S.RUNNING,
        E.SUCCEED: S.SUCCEEDED,
        E.FAIL: S.FAILED,
        E.TIME_OUT: S.TIMED_OUT,
        E.KILL: S.KILLED,
        E.LOSE: S.LOST,
        E.SKIP: S.SKIPPED,
    },
    S.RUNNING: {
        E.SUCCEED: S.SUCCEEDED,
        E.FAIL: S.FAILED,
        E.TIME_OUT: S.TIMED_OUT,
        E.KILL: S.KILLED,
        E.LOSE: S.LOST,
    },
    # rule 5: a late report corrects an attempt presumed lost
    S.LOST: {
        E.SUCCEED: S.SUCCEEDED,
        E.FAIL: S.FAILED,
        E.TIME_OUT: S.TIMED_OUT,
        E.KILL: S.KILLED,
    },
    S.SUCCEEDED: {},
    S.FAILED: {},
    S.TIMED_OUT: {},
    S.KILLED: {},
    S.SKIPPED: {},
}

#: states no event leaves (for runs); attempts may still leave ``lost`` (rule 5)
FINAL_STATES: Final = frozenset(s for s, out in RUN_TRANSITIONS.items() if not out)
#: outcomes after which another attempt may follow
RETRYABLE: Final = frozenset({S.FAILED, S.TIMED_OUT, S.LOST})
#: how an attempt can end, and the event that reports each outcome
OUTCOME_EVENTS: Final = {
    S.SUCCEEDED: E.SUCCEED,
    S.FAILED: E.FAIL,
    S.TIMED_OUT: E.TIME_OUT,
    S.KILLED: E.KILL,
    S.LOST: E.LOSE,
}
#: attempt states that mean the attempt has ended
ATTEMPT_ENDED: Final = frozenset(OUTCOME_EVENTS) | {S.SKIPPED}


def run_next(state: RunState, event: Event) -> RunState | None:
    """The run's state after ``event``, or None if the table refuses it."""
    return RUN_TRANSITIONS[state].get(event)


def attempt_next(state: RunState, event: Event) -> RunState | None:
    """The attempt's state after ``event``, or None if the table refuses it."""
    return ATTEMPT_TRANSITIONS[state].get(event)


def run_event_for_outcome(outcome: RunState, *, attempts_left: bool) -> Event:
    """The run event that an attempt ending in ``outcome`` causes (rule 3)."""
    if outcome in RETRYABLE and attempts_left:
        return Event.RETRY
    return OUTCOME_EVENTS[outcome]


def retry_delay_ms(backoff: float, multiplier: float, ended_attempt: int) -> int:
    """Milliseconds to wait after attempt ``ended_attempt`` ends before the next one.

    ``backoff * multiplier ** (ended_attempt - 1)`` seconds, at most a day.
    Computed by repeated multiplication (exactly specified by IEEE 754, unlike
    ``pow`` from the platform's libm) so every replica gets the same figure.
    """
    delay = float(backoff)
    for _ in range(ended_attempt - 1):
        delay *= multiplier
        if delay >= 86400:
            break
    return round(min(delay, 86400.0) * 1000)
