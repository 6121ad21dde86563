"""When each job is due: a heap of next fire instants, with catch-up after downtime.

Theory of operation
-------------------
The scheduler runs on the leader only, and it is pure: it never reads a
clock, never sleeps and never writes the log. Its driver asks
``next_deadline()`` (a UTC epoch second), sleeps until then on trio's clock,
and calls ``due(now)``; every ``Due`` it gets back is proposed to the log as
``RunScheduled`` *before* anything starts. Its run id is the store's
(``dcrond.store.make_run_id``: ``job@<instant>`` in the one format every
host and reader uses; instants here are whole seconds, the store's are
milliseconds, so the id has no fraction). The
store refuses a second ``RunScheduled`` with an id it already holds, so a
new leader that recomputes the same instant cannot double a run.

A job's position is the last instant already recorded in the log
(``JobTiming.last_instant``). On ``load`` or ``upsert`` the scheduler looks
at the instants between that position and ``now`` (missed while no leader
was scheduling) and applies the job's catch-up policy:

========  ==============================================================
none      missed instants are dropped; the next run is the next instant
latest    one run for the newest missed instant, then on schedule
all       one run per missed instant, oldest first, at most ``cap``
          (the newest ``cap`` when more were missed)
========  ==============================================================

An instant is "missed" only if it is older than ``now - grace``: a run due a
moment ago (a leader change, a slow start) is simply due now, whatever the
policy — catch-up is for downtime, not for the scheduler's own latency.

A paused job keeps no heap entry; resuming it counts from ``now`` (pausing
is the user saying "do not run these", so nothing is caught up).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, final

from dcrond.schedule import Schedule
from dcrond.store._instants import make_run_id

CatchUp = Literal["none", "latest", "all"]
Reason = Literal["schedule", "catch-up"]

#: Instants older than this (seconds) are treated as missed (catch-up policy);
#: newer ones are simply due.
DEFAULT_GRACE = 5


@final
@dataclass(frozen=True, slots=True)
class JobTiming:
    """What the scheduler needs to know about one job."""

    name: str
    schedule: Schedule
    paused: bool = False
    catch_up: CatchUp = "none"
    catch_up_cap: int = 10
    #: the newest instant already recorded in the log (None: never scheduled)
    last_instant: int | None = None
    #: when the job was created or last resumed; nothing before it is due
    since: int = 0


@final
@dataclass(frozen=True, slots=True)
class Due:
    """One run to record in the log and start."""

    job: str
    instant: int
    reason: Reason

    @property
    def instant_ms(self) -> int:
        """The instant in milliseconds, as commands and the job table carry it."""
        return self.instant * 1000

    @property
    def run_id(self) -> str:
        """``job@instant``, named by the store (``make_run_id``)."""
        return make_run_id(self.job, self.instant_ms)


#: the first look-back window (seconds) when searching for the newest missed instants
_WINDOW = 64


def newest_missed(schedule: Schedule, start: int, cutoff: int, keep: int) -> tuple[list[int], int]:
    """The newest ``keep`` instants in ``(start, cutoff)``, oldest first, and the first >= cutoff.

    Cost: a few ``next_after`` calls per instant returned, however long the
    gap -- never a walk over every instant missed (a job every second after a
    month of downtime has 2.6 million). The search looks back from
    ``cutoff`` over windows that grow fourfold until one holds ``keep``
    instants or reaches back to ``start``.
    """
    first = schedule.next_after(start)
    if first >= cutoff:
        return [], first
    following = schedule.next_after(cutoff - 1)
    if keep <= 0:
        return [], following
    window = _WINDOW
    while True:
        low = max(start, cutoff - window)
        found: list[int] = []
        instant = schedule.next_after(low)
        while instant < cutoff:
            found.append(instant)
            if len(found) > keep:
                del found[0]
            instant = schedule.next_after(instant)
        if len(found) >= keep or low == start:
            return found, following
        window *= 4


@final
class SchedulerCore:
    """The heap of next fire instants (pure: no clock, no I/O)."""

    def __init__(self, *, grace: int = DEFAULT_GRACE) -> None:
        self.grace = grace
        self._jobs: dict[str, JobTiming] = {}
        self._heap: list[tuple[int, str, int]] = []  # (instant, job, generation)
        self._gen: dict[str, int] = {}
        self._backlog: list[Due] = []  # catch-up runs, already due

    # --- the job set ------------------------------------------------------------

    def load(self, jobs: Iterable[JobTiming], now: int) -> None:
        """Start over from the job table (a new leader does this)."""
        self._jobs.clear()
        self._heap.clear()
        self._gen.clear()
        self._backlog.clear()
        for job in jobs:
            self.upsert(job, now)

    def upsert(self, job: JobTiming, now: int) -> None:
        """Add a job or replace what the scheduler knows of it."""
        self.remove(job.name)
        self._jobs[job.name] = job
        if job.paused:
            return
        start = max(job.since - 1, job.last_instant if job.last_instant is not None else -1)
        if job.last_instant is None:
            start = max(start, now - self.grace - 1)
        cap = max(job.catch_up_cap, 0)
        keep = {"none": 0, "latest": 1}.get(job.catch_up, cap)
        missed, instant = newest_missed(job.schedule, start, now - self.grace, keep)
        if missed:
            if job.catch_up == "latest":
                self._backlog.append(Due(job.name, missed[-1], "catch-up"))
            elif job.catch_up == "all":
                self._backlog.extend(Due(job.name, i, "catch-up") for i in missed[-cap:] if cap)
        self._push(job.name, instant)

    def remove(self, name: str) -> None:
        """Forget a job (deleted, or about to be replaced)."""
        if self._jobs.pop(name, None) is not None:
            self._gen[name] = self._gen.get(name, 0) + 1
            self._backlog = [d for d in self._backlog if d.job != name]

    def _push(self, name: str, instant: int) -> None:
        gen = self._gen.setdefault(name, 0)
        heapq.heappush(self._heap, (instant, name, gen))

    # --- time -------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        """The earliest instant at which ``due`` returns something (None: nothing)."""
        if self._backlog:
            return min(d.instant for d in self._backlog)
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def due(self, now: int) -> list[Due]:
        """Every run due at or before ``now``, oldest first; each is returned once."""
        out = self._backlog
        self._backlog = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            instant, name, gen = heapq.heappop(heap)
            if self._gen.get(name) != gen or name not in self._jobs:
                continue
            out.append(Due(name, instant, "schedule"))
            self._push(name, self._jobs[name].schedule.next_after(instant))
        out.sort(key=lambda d: (d.instant, d.job))
        return out

    def upcoming(self, name: str, n: int) -> list[int]:
        """The next ``n`` instants of a job from its current position."""
        for instant, job, gen in self._heap:
            if job == name and self._gen.get(name) == gen:
                return list(self._jobs[name].schedule.iter_after(instant - 1, n))
        return []

    def active(self, name: str) -> bool:
        """The job is known and not paused (it has a place in the heap)."""
        job = self._jobs.get(name)
        return job is not None and not job.paused

    def __len__(self) -> int:
        return len(self._jobs)

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and (self._gen.get(heap[0][1]) != heap[0][2] or heap[0][1] not in self._jobs):
            heapq.heappop(heap)
