"""The scheduler's pure core: every instant once, in order; catch-up by policy."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from dcrond.schedule import Schedule, parse
from dcrond.scheduler import Due, JobTiming, SchedulerCore, newest_missed
from dcrond.store import make_run_id

T0 = 1_800_000_000  # 2027-01-15T08:00:00Z


def _walk(core: SchedulerCore, start: int, stop: int, step: int) -> list[Due]:
    out: list[Due] = []
    for now in range(start, stop, step):
        out += core.due(now)
    return out


def test_run_id_is_the_stores_job_at_utc_instant() -> None:
    due = Due("backup", 1_795_838_400, "schedule")
    assert due.run_id == "backup@2026-11-28T04:00:00Z"
    assert due.run_id == make_run_id("backup", due.instant_ms)  # one format, the store's


@settings(max_examples=60, deadline=None)
@given(
    expr=st.sampled_from(["* * * * * *", "*/7 * * * * *", "*/2 * * * *", "@every 45s"]),
    step=st.integers(1, 200),
)
def test_every_instant_is_due_exactly_once_in_order(expr: str, step: int) -> None:
    sched = parse(expr)
    core = SchedulerCore()
    core.load([JobTiming("j", sched, last_instant=T0)], T0)
    got = [d.instant for d in _walk(core, T0, T0 + 3600, step)]
    want = list(sched.iter_after(T0, len(got)))
    assert got == want
    assert got and got[-1] > T0 + 3600 - step - 3600 // 2
    assert len(set(got)) == len(got)


def test_next_deadline_is_the_earliest_instant_so_the_driver_need_not_poll() -> None:
    core = SchedulerCore()
    core.load(
        [
            JobTiming("a", parse("0 * * * *"), last_instant=T0),
            JobTiming("b", parse("*/10 * * * * *"), last_instant=T0),
        ],
        T0,
    )
    assert core.next_deadline() == T0 + 10
    assert core.due(T0 + 9) == []
    assert [d.job for d in core.due(T0 + 10)] == ["b"]


def test_downtime_with_catch_up_none_skips_to_the_next_instant() -> None:
    core = SchedulerCore()
    job = JobTiming("j", parse("*/5 * * * *"), catch_up="none", last_instant=T0)
    core.load([job], T0 + 3600 + 60)
    assert core.due(T0 + 3600 + 60) == []
    assert core.next_deadline() == T0 + 3600 + 300


def test_downtime_with_catch_up_latest_runs_once_for_the_newest_missed_instant() -> None:
    core = SchedulerCore()
    job = JobTiming("j", parse("*/5 * * * *"), catch_up="latest", last_instant=T0)
    core.load([job], T0 + 3600 + 60)
    due = core.due(T0 + 3600 + 60)
    assert due == [Due("j", T0 + 3600, "catch-up")]


def test_downtime_with_catch_up_all_runs_every_missed_instant_up_to_the_cap() -> None:
    core = SchedulerCore()
    job = JobTiming("j", parse("*/5 * * * *"), catch_up="all", catch_up_cap=4, last_instant=T0)
    core.load([job], T0 + 3600 + 60)
    due = core.due(T0 + 3600 + 60)
    assert [d.instant for d in due] == [
        T0 + 3600 - 900,
        T0 + 3600 - 600,
        T0 + 3600 - 300,
        T0 + 3600,
    ]
    assert {d.reason for d in due} == {"catch-up"}


def test_a_run_due_a_moment_ago_is_simply_due_whatever_the_policy() -> None:
    core = SchedulerCore(grace=5)
    job = JobTiming("j", parse("* * * * *"), catch_up="none", last_instant=T0 - 60)
    core.load([job], T0 + 2)
    assert core.due(T0 + 2) == [Due("j", T0, "schedule")]


def test_a_new_job_has_nothing_to_catch_up() -> None:
    core = SchedulerCore()
    job = JobTiming("j", parse("* * * * *"), catch_up="all", since=T0 - 86400)
    core.load([job], T0 + 30)
    assert core.due(T0 + 30) == []
    assert core.next_deadline() == T0 + 60


def test_paused_and_removed_jobs_are_never_due() -> None:
    core = SchedulerCore()
    core.load([JobTiming("p", parse("* * * * * *"), paused=True, last_instant=T0)], T0)
    core.upsert(JobTiming("r", parse("* * * * * *"), last_instant=T0), T0)
    core.remove("r")
    assert _walk(core, T0, T0 + 100, 1) == []
    assert core.next_deadline() is None


def test_update_replaces_the_schedule_without_doubling() -> None:
    core = SchedulerCore()
    core.load([JobTiming("j", parse("*/10 * * * * *"), last_instant=T0)], T0)
    core.upsert(JobTiming("j", parse("*/15 * * * * *"), last_instant=T0), T0)
    got = [d.instant for d in _walk(core, T0, T0 + 61, 1)]
    assert got == [T0 + 15, T0 + 30, T0 + 45, T0 + 60]


def test_upcoming_lists_the_next_instants() -> None:
    core = SchedulerCore()
    core.load([JobTiming("j", parse("0 3 * * *", "Europe/Berlin"), last_instant=T0)], T0)
    nxt = core.upcoming("j", 3)
    assert len(nxt) == 3
    assert nxt[1] - nxt[0] == 86400


def _walk_missed(sched: Schedule, start: int, cutoff: int) -> tuple[list[int], int]:
    missed = []
    instant = sched.next_after(start)
    while instant < cutoff:
        missed.append(instant)
        instant = sched.next_after(instant)
    return missed, instant


@settings(max_examples=80, deadline=None)
@given(
    expr=st.sampled_from(["* * * * * *", "*/7 * * * * *", "0 9 * * 1-5", "@every 45s", "@hourly"]),
    gap=st.integers(0, 4 * 3600),
    keep=st.integers(0, 12),
)
def test_newest_missed_equals_walking_every_missed_instant(expr: str, gap: int, keep: int) -> None:
    sched = parse(expr, "Europe/Berlin")
    missed, following = _walk_missed(sched, T0, T0 + gap)
    got, got_following = newest_missed(sched, T0, T0 + gap, keep)
    assert got_following == following
    assert got == (missed[-keep:] if keep else [])


def test_a_long_downtime_does_not_walk_every_missed_instant() -> None:
    # a job every second, a year down: 31 million missed instants, caught up in a blink
    core = SchedulerCore()
    year = 365 * 86400
    jobs = [
        JobTiming(f"j{i}", parse("* * * * * *"), catch_up=c, catch_up_cap=5, last_instant=T0)  # type: ignore[arg-type]
        for i, c in enumerate(["none", "latest", "all"])
    ]
    started = time.perf_counter()
    core.load(jobs, T0 + year)
    assert time.perf_counter() - started < 1.0
    due = core.due(T0 + year)
    caught_up = [(d.job, d.instant) for d in due if d.reason == "catch-up"]
    newest = T0 + year - 6  # instants within the 5 s grace are simply due
    assert caught_up == [("j2", newest - 4 + i) for i in range(4)] + [
        ("j1", newest),
        ("j2", newest),
    ]
