"""Print how long a new leader takes to load a 100,000-job table into its timer heap.

Usage: ``.venv/bin/python bench/heapload.py [--jobs 100000] [--rounds 3] [--dir DIR]``

Builds a job table through ``JobStore.apply_many`` (no Raft): ``--jobs``
jobs on 1,440 different times of day (January 1st: never due here) in 3
zones, a tenth paused, plus one job every second (``tick``); each job has
about one run: a scheduled run, a trigger for the paused ones, and for every
7th job also a newer catch-up run and for every 11th a newer trigger. Then
it runs the leader's load (``Leader._begin`` + ``Leader._load``, as on every
leadership change) ``--rounds`` times on that table, each into a fresh
heap, and prints for each: the load time (``Leader.load_seconds``), when
``tick`` was in the heap, and the longest the load held the event loop
(measured by a task that wakes at every checkpoint).

With ``--dir`` the table is kept in ``DIR/jobs.db`` and reused by the next
run (building 100,000 jobs takes about a minute); without it, a temporary
folder is used and removed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import trio

from dcrond.config import Config
from dcrond.engine._clock import WallClock
from dcrond.engine._context import Context
from dcrond.engine._leader import Leader
from dcrond.raft._types import Entry
from dcrond.store import CreateJob, JobSpec, JobStore, RunScheduled, make_run_id, unwrap
from dcrond.store._schema import one

ZONES = ("UTC", "Europe/Berlin", "America/New_York")
HOUR_MS = 3_600_000


def build(store: JobStore, jobs: int, batch: int = 2000) -> None:
    """Fill ``store`` with ``jobs`` jobs plus ``tick``, and about one run each."""
    seq = 0
    now = int(time.time() * 1000) - 24 * HOUR_MS

    def common() -> dict[str, Any]:
        nonlocal seq
        seq += 1
        return {"now": now + seq, "actor": "bench", "session": "bench", "seq": seq}

    def apply(cmds: list[Any]) -> None:
        first = store.applied_index + 1
        entries = [Entry(term=1, index=first + i, data=c.encode()) for i, c in enumerate(cmds)]
        for result in store.apply_many(entries):
            unwrap(result)

    names = ["tick", *(f"t{i:06d}" for i in range(jobs))]
    for start in range(0, len(names), batch):
        cmds: list[Any] = []
        for k, name in enumerate(names[start : start + batch], start):
            i = k - 1
            spec = JobSpec(
                name=name,
                schedule="* * * * * *" if i < 0 else f"{i % 60} {(i // 60) % 24} 1 1 *",
                timezone=ZONES[k % 3],
                command="true",
                paused=i % 10 == 0,
            )
            cmds.append(CreateJob(job=spec, **common()))
        apply(cmds)
    for start in range(0, len(names), batch):
        cmds = []
        for k, name in enumerate(names[start : start + batch], start):
            i = k - 1
            at = now - HOUR_MS - k * 1000
            runs = [("trigger" if i % 10 == 0 else "schedule", at)]
            if i % 7 == 0:
                runs.append(("catch-up", at + 500))
            if i % 11 == 0:
                runs.append(("trigger", at + 700))
            for reason, instant in runs:
                if reason != "trigger" and i % 10 == 0:
                    continue  # a paused job's schedule claims nothing
                cmds.append(
                    RunScheduled(
                        run_id=make_run_id(name, instant),
                        job=name,
                        job_version=1,
                        scheduled_at=instant,
                        host="h1",
                        reason=reason,
                        **common(),
                    )
                )
        apply(cmds)


async def load_once(store: JobStore) -> tuple[float, float, float, int]:
    """One leader load: (load s, s until ``tick`` was in the heap, longest hold s, jobs)."""
    ctx = SimpleNamespace(
        store=store, clock=WallClock(), grace=5, config=Config(), host="bench", lease=None
    )
    leader = Leader(cast(Context, ctx), prune_interval=3600)
    leader._begin()
    held = 0.0
    tick_at = -1.0
    done = False
    started = time.perf_counter()

    async def watch() -> None:
        nonlocal held, tick_at
        last = time.perf_counter()
        while not done:
            await trio.lowlevel.checkpoint()
            t = time.perf_counter()
            held = max(held, t - last)
            last = t
            if tick_at < 0 and "tick" in leader._versions:
                tick_at = t - started

    async def load() -> None:
        nonlocal done
        await leader._load()
        done = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        nursery.start_soon(load)
    assert leader.load_seconds is not None
    return leader.load_seconds, tick_at, held, leader.jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="keep (and reuse) the table here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "jobs.db"
        fresh = not path.exists()
        with JobStore.open(path) as store:
            if fresh:
                t0 = time.perf_counter()
                build(store, args.jobs)
                print(f"built {args.jobs + 1:,} jobs in {time.perf_counter() - t0:.1f} s")
            jobs, runs = (
                one(store.db, f"SELECT count(*) FROM {table}")[0] for table in ("jobs", "runs")
            )
            print(f"table: {jobs:,} jobs, {runs:,} runs")
            loads = []
            for n in range(args.rounds):
                load_s, tick_s, held_s, in_heap = trio.run(load_once, store)
                loads.append(load_s)
                print(
                    f"round {n + 1}: loaded {in_heap:,} jobs in {load_s:.3f} s; tick in the heap "
                    f"after {tick_s * 1000:.1f} ms; longest hold {held_s * 1000:.2f} ms"
                )
            print(f"median load: {statistics.median(loads):.3f} s")


if __name__ == "__main__":
    main()
