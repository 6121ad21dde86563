"""A new leader's heap load: the rows it reads, the order, the slices, and changes meanwhile.

The load reads the job table (``_table.schedule_rows``, one query per
slice) where ``_refresh_dirty`` and claims read one job (``schedule_row``):
both must give the same rows. The leader runs here on a real job table with
a stand-in for the engine's context (the load needs only the store, a wall
clock, the grace and the config); ``LOAD_SLICE = 0`` makes every row a
slice of its own, and a trio instrument numbers the steps the load's task
runs between checkpoints.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import trio

from dcrond.config import Config
from dcrond.engine import _leader, _table
from dcrond.engine._clock import WallClock
from dcrond.engine._context import Context
from dcrond.engine._leader import Leader
from dcrond.store import (
    DeleteJob,
    JobStore,
    PauseJob,
    RunFinished,
    RunScheduled,
    RunStarted,
    UpdateJob,
)
from tests.store.conftest import T0, Proposer

MIN = 60_000
#: the wall clock when the load begins (s); it reads 100 s later from the second look on
NOW = T0 // 1000 + 3600


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    with JobStore.open(tmp_path / "jobs.db") as s:
        yield s


@pytest.fixture
def p(store: JobStore) -> Proposer:
    return Proposer(store)


def run(p: Proposer, job: str, at: int, reason: str = "schedule", host: str = "h1") -> str:
    """Claim attempt 1 of ``job``'s run at ``at`` (per host for a job ``on`` all)."""
    return p.schedule_run(job, at, host, reason)


def varied_table(p: Proposer) -> dict[str, int | None]:
    """Jobs with runs of every reason, paused, deleted and re-created; their newest claims."""
    p.create("a-sched", schedule="* * * * *")
    run(p, "a-sched", T0)
    run(p, "a-sched", T0 + MIN)
    run(p, "a-sched", T0 + 2 * MIN, "trigger")  # newer, but not the schedule's
    p.create("b-catch", schedule="0 * * * *", catch_up="all", catch_up_limit=3)
    run(p, "b-catch", T0)
    run(p, "b-catch", T0 + 60 * MIN, "catch-up")
    p.create("c-retry", schedule="*/5 * * * *", retries=2, timezone="Europe/Berlin")
    retried = run(p, "c-retry", T0 + 5 * MIN)
    p.ok(RunStarted(run_id=retried, attempt=1, host="h1", pid=7, started_at=p.clock, **p.common()))
    p.ok(
        RunFinished(
            run_id=retried,
            attempt=1,
            state="failed",
            exit_code=1,
            finished_at=p.clock,
            **p.common(),
        )
    )
    p.ok(
        RunScheduled(
            run_id=retried,
            job="c-retry",
            job_version=1,
            scheduled_at=T0 + 5 * MIN,
            host="h2",
            attempt=2,
            reason="retry",
            **p.common(),
        )
    )
    p.create("d-trigger-only", schedule="@daily", catch_up="none")
    run(p, "d-trigger-only", T0 + 3 * MIN, "trigger")
    p.create("e-no-runs", schedule="@every 90s")
    p.create("f-paused", schedule="* * * * *", timezone="America/New_York")
    run(p, "f-paused", T0)
    p.ok(PauseJob(name="f-paused", **p.common()))
    run(p, "f-paused", T0 + 10 * MIN, "trigger")
    p.create("g-deleted", schedule="* * * * *")
    run(p, "g-deleted", T0)
    p.ok(DeleteJob(name="g-deleted", **p.common()))
    p.create("h-recreated", schedule="* * * * *")
    run(p, "h-recreated", T0 + MIN)
    p.ok(DeleteJob(name="h-recreated", **p.common()))
    p.create("h-recreated", schedule="*/2 * * * *")  # its old runs stay in the table
    p.create("i-everywhere", schedule="* * * * *", on="all")
    run(p, "i-everywhere", T0 + 7 * MIN, host="h1")
    run(p, "i-everywhere", T0 + 7 * MIN, host="h2")
    p.ok(UpdateJob(name="i-everywhere", changes={"catch_up_limit": 5}, **p.common()))
    return {
        "a-sched": T0 + MIN,
        "b-catch": T0 + 60 * MIN,
        "c-retry": T0 + 5 * MIN,
        "d-trigger-only": None,
        "e-no-runs": None,
        "f-paused": T0,
        "h-recreated": T0 + MIN,
        "i-everywhere": T0 + 7 * MIN,
    }


def test_the_load_reads_the_same_rows_as_one_job_at_a_time(p: Proposer, store: JobStore) -> None:
    newest = varied_table(p)
    asked = sorted([*newest, "g-deleted", "never-existed"])
    each = [row for name in asked if (row := _table.schedule_row(store, name)) is not None]
    assert [r.name for r in each] == sorted(newest)
    assert {r.name: r.last_instant for r in each} == newest
    rows = _table.schedule_rows(store, asked)
    try:
        assert list(rows) == each
    finally:
        rows.close()
    # what the rows say beyond the newest claim
    by_name = {r.name: r for r in each}
    assert (by_name["b-catch"].catch_up, by_name["b-catch"].catch_up_limit) == ("all", 3)
    assert by_name["d-trigger-only"].catch_up == "none"
    assert by_name["f-paused"].paused and by_name["f-paused"].timezone == "America/New_York"
    assert (by_name["h-recreated"].schedule, by_name["h-recreated"].version) == ("*/2 * * * *", 3)
    assert (by_name["i-everywhere"].version, by_name["i-everywhere"].catch_up_limit) == (2, 5)
    # a part of the names, in any order, gives the rows of that part in name order
    part = ["i-everywhere", "a-sched", "g-deleted", "c-retry"]
    rows = _table.schedule_rows(store, part)
    try:
        assert [r.name for r in rows] == ["a-sched", "c-retry", "i-everywhere"]
    finally:
        rows.close()


def test_the_load_queries_search_indexes_and_never_scan_a_table(store: JobStore) -> None:
    queries = [
        (_table._SCHEDULE_ROWS_SQL, ('["a","b"]',)),
        (f"{_table._SCHEDULE_SQL} WHERE j.name = ?", ("a",)),
    ]
    for sql, args in queries:
        plan = [r[3] for r in store.db.execute(f"EXPLAIN QUERY PLAN {sql}", args)]
        assert "SEARCH j USING PRIMARY KEY (name=?)" in plan, plan
        assert "SEARCH r USING INDEX runs_by_job (job=?)" in plan, plan
        for step in plan:
            assert not step.startswith("SCAN") or "json_each" in step, plan
            assert "TEMP B-TREE" not in step, plan


def leader_on(store: JobStore) -> Leader:
    """A leader about to load ``store``'s jobs (the context holds what the load reads)."""
    looks = itertools.count()
    ctx = SimpleNamespace(
        store=store,
        clock=WallClock(lambda: NOW + (100 if next(looks) else 0)),
        grace=5,
        config=Config(),
        host="h1",
        lease=None,
    )
    leader = Leader(cast(Context, ctx), prune_interval=3600)
    leader._begin()
    return leader


class TaskSteps(trio.abc.Instrument):
    """Numbers the steps tasks run between checkpoints (``step`` is the current one)."""

    def __init__(self) -> None:
        self.step = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.step += 1


async def load_watched(leader: Leader, at_yield: Callable[[int], None]) -> list[tuple[int, bool]]:
    """Load the heap; return (task step, cyclic collector on) at each job's upsert.

    ``at_yield(jobs loaded)`` runs where a slice of the load ends, right
    before its checkpoint (the queries of the slice are closed by then).
    """
    upserts: list[tuple[int, bool]] = []
    steps = TaskSteps()
    upsert = leader._upsert

    def recorded(row: _table.ScheduleRow, now: int, *, changed: bool = False) -> None:
        upserts.append((steps.step, gc.isenabled()))
        upsert(row, now, changed=changed)

    def slice_ends() -> None:
        at_yield(len(leader._versions))

    leader._upsert = recorded  # type: ignore[method-assign]
    leader._wake = cast(trio.Event, SimpleNamespace(set=slice_ends))
    trio.lowlevel.add_instrument(steps)
    try:
        await leader._load()
    finally:
        trio.lowlevel.remove_instrument(steps)
    return upserts


def frequency_table(p: Proposer) -> list[str]:
    """Jobs of four frequencies, created in no particular order; the order they load in."""
    for name, expr in [
        ("daily-2", "0 3 * * *"),
        ("min-b", "* * * * *"),
        ("hourly-1", "0 * * * *"),
        ("tick", "* * * * * *"),
        ("daily-1", "@daily"),
        ("min-a", "*/1 * * * *"),
        ("hourly-2", "30 * * * *"),
        ("gone", "* * * * * *"),
        ("daily-3", "15 4 * * *"),
    ]:
        p.create(name, schedule=expr)
    p.ok(PauseJob(name="daily-3", **p.common()))  # a paused job is loaded too (and waits)
    p.ok(DeleteJob(name="gone", **p.common()))
    return ["tick", "min-a", "min-b", "hourly-1", "hourly-2", "daily-1", "daily-2", "daily-3"]


async def test_the_load_yields_after_every_slice_most_frequent_first_collector_off(
    p: Proposer, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = frequency_table(p)
    monkeypatch.setattr(_leader, "LOAD_SLICE", 0.0)
    leader = leader_on(store)
    assert gc.isenabled()
    upserts = await load_watched(leader, lambda _loaded: None)
    # every slice (one job here) ended at a checkpoint: no two upserts in one task step
    assert len({step for step, _gc in upserts}) == len(upserts) == len(order)
    assert not any(collecting for _step, collecting in upserts)
    assert gc.isenabled()
    # the job every second first, then by frequency, ties by name; the deleted one not at all
    assert list(leader._versions) == order
    assert leader.jobs == len(order) and leader.load_seconds is not None
    # judged against the time the load began (the clock read 100 s later meanwhile): the
    # instants from then less the grace are due, not missed
    assert leader._core is not None
    due = [d.instant for d in leader._core.due(NOW) if d.job == "tick" and d.reason == "schedule"]
    assert due == list(range(NOW - 5, NOW + 1))


async def test_a_job_changed_or_deleted_while_the_heap_loads_keeps_the_change(
    p: Proposer, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = frequency_table(p)
    monkeypatch.setattr(_leader, "LOAD_SLICE", 0.0)
    leader = leader_on(store)
    changed = False

    def change(loaded: int) -> None:
        # min-a is in; min-b was asked for by the same query (read eagerly, or kept
        # open across the checkpoint, it would still be version 1)
        nonlocal changed
        if loaded == order.index("min-a") + 1:
            p.ok(UpdateJob(name="min-b", changes={"schedule": "*/2 * * * * *"}, **p.common()))
            p.ok(DeleteJob(name="hourly-2", **p.common()))
            changed = True

    await load_watched(leader, change)
    assert changed
    assert leader._versions["min-b"] == 2
    assert "hourly-2" not in leader._versions
    core = leader._core
    assert core is not None and len(core) == len(order) - 1
    first, second = core.upcoming("min-b", 2)
    assert second - first == 2
