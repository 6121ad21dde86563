"""The engine simulator's checkers: the run guarantees, judged on the final tables and processes.

Each checker is a pure function of an ``Observed`` record (what the run left:
the settled job table, every simulated process, and what the workload and
nemesis did) and returns its violations as readable lines. The mutation tests
(tests/enginesim/test_mutations.py) feed them doctored copies to prove they
notice.

(a) **Every due instant has exactly one run, ended.** The due instants of a
    job are computed here from ``dcrond.schedule`` alone: every instant of
    its schedule from its creation (``ceil(created_at)``) to the window's end.
    Each must have a run whose state is final. The only instants allowed to
    have no run are:

    * those within a *pause* of the job (from 1.2 s before the pause was
      sent to 1.2 s after the resume was acknowledged: the leader claims up
      to 1 s ahead, and hosts' clocks differ by up to the skew);
    * those before the job's create was *committed* less ``grace``: a create
      stamped at T whose forward waited out a partition commits later, and
      the leader counts the job's instants from the commit (less the grace),
      not from the stamp (acknowledgement time stands in for the commit);
    * those the *catch-up* policy drops after a time with no working
      leader: a gap of more than ``grace`` seconds between two commits made
      by a leader (the ``tick`` job commits a claim every second whenever a
      leader works) excuses the instants from 0.2 s before the gap to
      ``grace - 0.2`` s before its end -- those the next leader finds more
      than ``grace`` late -- except, with catch-up ``all``, the newest
      ``catch_up_limit`` of them.

    A forbid skip, a pause skip and a stale claim skipped after a host's
    downtime all leave a *skipped* run: a final run record, so they need no
    exclusion. A run at an instant that is not on the job's schedule is an
    error too, unless it is a dependent run whose upstream has a run there.
(b) **One execution per attempt, attempts one at a time.** From the
    processes: no (run, attempt) was started twice anywhere, no two
    processes of one run overlap in time, and every process is an attempt
    the table records on the host that ran it.
(c) **forbid**: at no moment do two processes of a ``forbid`` job run at once.
(d) **tags**: no process ran on a host lacking one of its job's tags.
(e) **Nothing acknowledged lost**: every job write the workload was told
    succeeded is in every host's table (that version or a later one), and
    every host's table is the same once settled.
(f) **No daemon died**: no host's daemon (Raft node, engine, RPC service)
    raised out of its tasks. The simulator restarts a dead daemon after a
    second, as systemd would, so the other checks still judge the run.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, final

from dcrond.schedule import parse
from dcrond.store import FINAL_STATES
from dcrond.testing._enginehost import BASE, ProcRecord

#: how far ahead of an instant the leader claims it, at most (s) -- ``_leader.LOOKAHEAD``
LOOKAHEAD: Final = 1.0
#: the pause exclusion's margin (s): lookahead plus clock skew
PAUSE_MARGIN: Final = 1.2
#: the catch-up exclusion's margin (s): clock skew, lead time and rounding
GAP_MARGIN: Final = 0.2
CHECKS: Final = (
    "a_exactly_one",
    "b_one_execution",
    "c_forbid",
    "d_tags",
    "e_acknowledged",
    "f_daemon_alive",
)


def iso_s(text: str) -> float:
    """``"2027-01-15T08:00:03.000Z"`` -> epoch seconds."""
    return datetime.fromisoformat(text).timestamp()


@final
@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of the settled table, reduced to what the checkers read."""

    run_id: str
    job: str
    instant: int  #: epoch seconds (runs here are at whole seconds)
    reason: str
    state: str
    attempts: tuple[tuple[int, str, str | None], ...]  #: (number, state, host)


@final
@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job of the settled table."""

    name: str
    version: int
    schedule: str
    timezone: str
    created_at: float  #: epoch seconds
    concurrency: str
    catch_up: str
    catch_up_limit: int
    tags: tuple[tuple[str, str], ...]
    after: tuple[str, ...]


@dataclass(slots=True)
class Observed:
    """Everything the checkers judge (see the module doc)."""

    window_end: float  #: epoch seconds: instants up to here must have ended runs
    grace: float
    jobs: dict[str, JobRecord]
    runs: dict[str, RunRecord]
    processes: list[ProcRecord]
    host_tags: dict[str, dict[str, str]]
    pauses: dict[str, list[tuple[float, float]]]  #: job -> (from, to) epoch seconds
    leader_commits: list[float]  #: true seconds of commits applied on a leader
    acked: list[tuple[str, int, str]]  #: (job, version, what) acknowledged to the workload
    host_jobs: dict[str, dict[str, int]]  #: host -> job -> version in its table
    table_digests: dict[str, str]  #: host -> digest of its whole table
    daemon_errors: list[str] = field(default_factory=list)  #: "host at t: error"
    notes: list[str] = field(default_factory=list)
    #: job -> epoch seconds its create was acknowledged (a create's commit may come long
    #: after the stamp its created_at carries, when its forward waited out a partition)
    created_acked: dict[str, float] = field(default_factory=dict)


def due_instants(job: JobRecord, until: float) -> list[int]:
    """The job's instants from its creation to ``until`` (epoch s), by ``dcrond.schedule``."""
    sched = parse(job.schedule, job.timezone)
    start = math.ceil(job.created_at) - 1
    out = []
    for t in sched.iter_after(start):
        if t > until:
            break
        out.append(t)
    return out


def catch_up_gaps(obs: Observed) -> list[tuple[float, float]]:
    """Epoch-second ranges of instants the catch-up policy may drop (see the module doc)."""
    out = []
    commits = obs.leader_commits
    for a, b in itertools.pairwise(commits):
        if b - a > obs.grace:
            lo, hi = BASE + a - GAP_MARGIN, BASE + b - obs.grace + GAP_MARGIN
            if hi >= lo:
                out.append((lo, hi))
    return out


def _excused(obs: Observed, job: JobRecord, t: int, gaps: list[tuple[float, float]]) -> str | None:
    acked = obs.created_acked.get(job.name)
    if acked is not None and t < acked - obs.grace:
        return "created late"  # the log had no such job then (the leader counts from its commit)
    for lo, hi in obs.pauses.get(job.name, []):
        if lo - PAUSE_MARGIN <= t <= hi + PAUSE_MARGIN:
            return "paused"
    for lo, hi in gaps:
        if lo <= t <= hi:
            if job.catch_up != "all":
                return "catch-up"
            sched = parse(job.schedule, job.timezone)
            newer = 0
            probe = t
            while True:
                probe = sched.next_after(probe)
                if probe > hi:
                    break
                newer += 1
            if newer >= job.catch_up_limit:
                return "catch-up beyond the limit"
    return None


def check_exactly_one(obs: Observed) -> list[str]:
    """(a): every due instant has one run, in a final state; no run off the schedule."""
    bad: list[str] = []
    gaps = catch_up_gaps(obs)
    by_job: dict[str, dict[int, RunRecord]] = defaultdict(dict)
    for run in obs.runs.values():
        by_job[run.job][run.instant] = run
    for job in sorted(obs.jobs.values(), key=lambda j: j.name):
        runs = by_job.get(job.name, {})
        due = due_instants(job, obs.window_end)
        for t in due:
            found = runs.get(t)
            if found is None:
                if _excused(obs, job, t, gaps) is None:
                    bad.append(f"{job.name}@{_fmt(t)}: due, no run (and no pause or catch-up gap)")
            elif found.state not in FINAL_STATES:
                bad.append(f"{found.run_id}: stuck {found.state} (attempts {found.attempts})")
        due_set = set(due)
        last = due[-1] if due else math.inf
        for t, run in sorted(runs.items()):
            if t in due_set or run.reason == "trigger":
                continue
            if t > obs.window_end and t > last and _on_schedule(job, t):
                continue  # after the window: not judged for finality
            if job.after and any(t in by_job.get(up, {}) for up in job.after):
                continue  # a dependent run, claimed because its upstream ran at t
            bad.append(f"{run.run_id}: a run at an instant not due ({run.reason}, {run.state})")
    return bad


def excused_instants(obs: Observed) -> dict[str, int]:
    """How many due instants without a run each exclusion excused (for reports)."""
    gaps = catch_up_gaps(obs)
    have = {(r.job, r.instant) for r in obs.runs.values()}
    out: dict[str, int] = {}
    for job in obs.jobs.values():
        for t in due_instants(job, obs.window_end):
            if (job.name, t) not in have:
                why = _excused(obs, job, t, gaps)
                if why is not None:
                    out[why] = out.get(why, 0) + 1
    return out


def _on_schedule(job: JobRecord, t: int) -> bool:
    return parse(job.schedule, job.timezone).next_after(t - 1) == t


def check_one_execution(obs: Observed) -> list[str]:
    """(b): one process per attempt, one attempt of a run at a time, each in the table."""
    bad: list[str] = []
    seen: dict[tuple[str, int], ProcRecord] = {}
    by_run: dict[str, list[ProcRecord]] = defaultdict(list)
    for p in obs.processes:
        key = (p.run_id, p.attempt)
        first = seen.get(key)
        if first is not None:
            bad.append(
                f"{p.run_id} attempt {p.attempt}: started twice "
                f"({first.host} at {first.start:.3f}s, {p.host} at {p.start:.3f}s)"
            )
        seen[key] = p
        by_run[p.run_id].append(p)
        run = obs.runs.get(p.run_id)
        recorded = None if run is None else {a[0]: a for a in run.attempts}.get(p.attempt)
        if recorded is None:
            bad.append(f"{p.run_id} attempt {p.attempt}: ran on {p.host} but is not in the table")
        elif recorded[2] != p.host:
            bad.append(
                f"{p.run_id} attempt {p.attempt}: ran on {p.host}, the table says {recorded[2]}"
            )
    for run_id, procs in sorted(by_run.items()):
        for x, y in _overlaps(procs):
            bad.append(
                f"{run_id}: attempts {x.attempt} ({x.host} {_span(x)}) and "
                f"{y.attempt} ({y.host} {_span(y)}) ran at the same time"
            )
    return bad


def check_forbid(obs: Observed) -> list[str]:
    """(c): at most one process of a ``forbid`` job at any moment, cluster-wide."""
    bad: list[str] = []
    by_job: dict[str, list[ProcRecord]] = defaultdict(list)
    for p in obs.processes:
        by_job[p.run_id.rpartition("@")[0]].append(p)
    for name, procs in sorted(by_job.items()):
        job = obs.jobs.get(name)
        if job is None or job.concurrency != "forbid":
            continue
        for x, y in _overlaps(procs):
            bad.append(
                f"{name} (forbid): {x.run_id}#{x.attempt} on {x.host} {_span(x)} overlaps "
                f"{y.run_id}#{y.attempt} on {y.host} {_span(y)}"
            )
    return bad


def check_tags(obs: Observed) -> list[str]:
    """(d): every process ran on a host carrying all of its job's tags."""
    bad: list[str] = []
    for p in obs.processes:
        job = obs.jobs.get(p.run_id.rpartition("@")[0])
        if job is None:
            continue
        have = obs.host_tags.get(p.host, {})
        missing = [f"{k}={v}" for k, v in job.tags if have.get(k) != v]
        if missing:
            bad.append(
                f"{p.run_id}#{p.attempt} ran on {p.host} (tags {have}) lacking {','.join(missing)}"
            )
    return bad


def check_acknowledged(obs: Observed) -> list[str]:
    """(e): acknowledged writes are in every table; the tables are equal."""
    bad: list[str] = []
    for job, version, what in obs.acked:
        for host, jobs in sorted(obs.host_jobs.items()):
            have = jobs.get(job)
            if have is None or have < version:
                bad.append(f"{what} {job} v{version} was acknowledged; {host} has v{have}")
    digests = set(obs.table_digests.values())
    if len(digests) > 1:
        bad.append(f"the hosts' tables differ after settling: {obs.table_digests}")
    return bad


def check_all(obs: Observed) -> dict[str, list[str]]:
    """Every checker's violations, by check name (empty lists: all good)."""
    return {
        "a_exactly_one": check_exactly_one(obs),
        "b_one_execution": check_one_execution(obs),
        "c_forbid": check_forbid(obs),
        "d_tags": check_tags(obs),
        "e_acknowledged": check_acknowledged(obs),
        "f_daemon_alive": list(obs.daemon_errors),
    }


def _overlaps(procs: list[ProcRecord]) -> list[tuple[ProcRecord, ProcRecord]]:
    """Pairs of processes whose [start, end) intervals intersect (an open end is +inf)."""
    ordered = sorted(procs, key=lambda p: (p.start, p.host, p.attempt))
    out = []
    for i, x in enumerate(ordered):
        x_end = math.inf if x.end is None else x.end
        for y in ordered[i + 1 :]:
            if y.start >= x_end:
                break
            out.append((x, y))
    return out


def _span(p: ProcRecord) -> str:
    end = "still running" if p.end is None else f"{p.end:.3f}s"
    return f"[{p.start:.3f}s, {end}]"


def _fmt(t: int) -> str:
    return f"{t} (+{t - BASE:.0f}s)"


def reduce_run(run: dict[str, Any]) -> RunRecord:
    """A run's JSON (``JobStore.get_run``) as a ``RunRecord``."""
    return RunRecord(
        run_id=str(run["id"]),
        job=str(run["job"]),
        instant=round(iso_s(str(run["scheduled_at"]))),
        reason=str(run["reason"]),
        state=str(run["state"]),
        attempts=tuple(
            (int(a["attempt"]), str(a["state"]), a.get("host")) for a in run["attempts"]
        ),
    )


def reduce_job(job: dict[str, Any]) -> JobRecord:
    """A job's JSON (``JobStore.get_job``) as a ``JobRecord``."""
    return JobRecord(
        name=str(job["name"]),
        version=int(job["version"]),
        schedule=str(job["schedule"]),
        timezone=str(job.get("timezone") or "UTC"),
        created_at=iso_s(str(job["created_at"])),
        concurrency=str(job.get("concurrency") or "allow"),
        catch_up=str(job.get("catch_up") or "latest"),
        catch_up_limit=int(job.get("catch_up_limit") or 10),
        tags=tuple(sorted((job.get("tags") or {}).items())),
        after=tuple(job.get("after") or ()),
    )
