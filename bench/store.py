"""Print how fast the job table applies commands, lists jobs and loads schedules at 100,000 jobs.

Usage: ``.venv/bin/python bench/store.py [--jobs 100000] [--batch 1000] [--dir /path]``

Creates ``--jobs`` jobs through ``JobStore.apply_many`` in batches of
``--batch`` entries (one SQLite transaction per batch, as the Raft driver
hands committed entries over in batches), then measures, on the full table:

* ``apply`` one entry at a time (one transaction each): pause/resume
  commands, and RunScheduled/RunStarted/RunFinished for 1,000 runs;
* a run's three commands as the engine sends them: 100 runs' RunScheduled
  in one batch entry, then their RunStarted, then their RunFinished
  (``--batched-runs`` runs): microseconds of apply per run, what every
  host of a cluster pays for every run;
* ``list_jobs()`` of every job as JSON, and one page of 100;
* what a scheduler does at start: ``list_schedules()`` and, for every
  job, ``dcrond.schedule.parse`` + ``next_after``, then ``heapify``;
* ``get_job`` of one job (p50, p99), what an API read costs.

The anchor, measured in the same run on the same disk, is a bare apsw WAL
insert of one ~600-byte row per transaction (synchronous=NORMAL) and in
batches of ``--batch``: compare ratios, not figures (the machines are shared).
"""

from __future__ import annotations

import argparse
import heapq
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import apsw

from dcrond import schedule
from dcrond.raft._types import Entry
from dcrond.store import (
    Command,
    CreateJob,
    JobSpec,
    JobStore,
    PauseJob,
    ResumeJob,
    RunFinished,
    RunScheduled,
    RunStarted,
    make_run_id,
    unwrap,
)
from dcrond.store._commands import Batch
from dcrond.store._results import result_from_wire

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms
SCHEDULES = ("*/5 * * * *", "@hourly", "0 3 * * *", "@every 90s", "*/10 * * * * *", "30 2 * * 1-5")
ZONES = ("UTC", "Europe/Berlin", "America/New_York")


def anchor(folder: Path, n: int, batch: int) -> tuple[float, float]:
    """Rows/s of a bare apsw insert: one row per transaction, and ``batch`` rows per one."""
    conn = apsw.Connection(str(folder / "anchor.db"))
    conn.pragma("journal_mode", "WAL")
    conn.pragma("synchronous", "NORMAL")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID")
    payload = b"x" * 600
    t0 = time.perf_counter()
    for i in range(n // 10):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?, ?)", (f"single-{i:08d}", payload))
        conn.execute("COMMIT")
    single = (n // 10) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        conn.execute("BEGIN")
        for i in range(start, min(n, start + batch)):
            conn.execute("INSERT INTO t VALUES (?, ?)", (f"batch-{i:08d}", payload))
        conn.execute("COMMIT")
    batched = n / (time.perf_counter() - t0)
    conn.close()
    return single, batched


class Proposer:
    """Numbers entries and requests like a one-voter cluster would."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.seq = 0

    def common(self) -> dict[str, Any]:
        self.seq += 1
        return {"now": T0 + self.seq, "actor": "bench", "session": "bench", "seq": self.seq}

    def entry(self, data: bytes) -> Entry:
        return Entry(term=1, index=self.store.applied_index + 1, data=data)


def create_jobs(p: Proposer, n: int, batch: int) -> tuple[float, float]:
    """Create ``n`` jobs in batches; return (applies/s, commands built and encoded/s)."""
    encode_s = apply_s = 0.0
    for start in range(0, n, batch):
        t0 = time.perf_counter()
        entries: list[Entry] = []
        first = p.store.applied_index + 1
        for i in range(start, min(n, start + batch)):
            spec = JobSpec(
                name=f"job-{i:06d}",
                schedule=SCHEDULES[i % len(SCHEDULES)],
                timezone=ZONES[i % len(ZONES)],
                command=f"/usr/local/bin/task --id {i}",
                tags={"team": f"t{i % 17}"},
                timeout=600,
                retries=i % 3,
            )
            data = CreateJob(job=spec, **p.common()).encode()
            entries.append(Entry(term=1, index=first + len(entries), data=data))
        t1 = time.perf_counter()
        for result in p.store.apply_many(entries):
            unwrap(result)
        t2 = time.perf_counter()
        encode_s += t1 - t0
        apply_s += t2 - t1
    return n / apply_s, n / encode_s


def single_applies(p: Proposer, n: int, jobs: int) -> tuple[float, float]:
    """Applies/s, one transaction each: pause/resume, then a run's three commands."""
    t0 = time.perf_counter()
    for i in range(n):
        name = f"job-{(i // 2) * 7 % jobs:06d}"  # pause, then resume, each job
        cmd_cls = PauseJob if i % 2 == 0 else ResumeJob
        unwrap(p.store.apply(p.entry(cmd_cls(name=name, **p.common()).encode())))
    jobs_rate = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(n // 3):
        name = f"job-{i:06d}"
        version = p.store.get_job(name)["version"]
        at = T0 + 60_000 * (i + 1)
        run_id = make_run_id(name, at)
        c = p.common
        cmds = [
            RunScheduled(
                run_id=run_id, job=name, job_version=version, scheduled_at=at, host="h1", **c()
            ),
            RunStarted(run_id=run_id, attempt=1, host="h1", pid=1000 + i, started_at=at + 1, **c()),
            RunFinished(
                run_id=run_id,
                attempt=1,
                state="succeeded",
                exit_code=0,
                finished_at=at + 500,
                log_path=f"logs/{name}/{run_id}/1.log",
                **c(),
            ),
        ]
        for cmd in cmds:
            unwrap(p.store.apply(p.entry(cmd.encode())))
    runs_rate = (n // 3) * 3 / (time.perf_counter() - t0)
    return jobs_rate, runs_rate


def batched_runs(p: Proposer, jobs: int, runs: int, per_batch: int = 100) -> float:
    """Microseconds of apply per run when runs come as the engine sends them.

    Each round: ``per_batch`` RunScheduled in one batch entry, then their
    RunStarted in another, then their RunFinished: three entries, each its
    own transaction, one engine session with ``per_batch`` requests in flight.
    Only ``apply_many`` is timed (the commands are encoded before).
    """
    spent = 0.0

    def stamp(now: int) -> dict[str, Any]:
        fields = p.common()
        fields.update(now=now, session="engine", acked=max(0, fields["seq"] - per_batch))
        return fields

    for r in range(runs // per_batch):
        at = T0 + 1000 * (10_000 + r)
        names = [f"job-{(r * per_batch + i) % jobs:06d}" for i in range(per_batch)]
        version = {n: p.store.get_job(n)["version"] for n in names}  # (pauses bumped some)
        rounds: list[list[Command]] = [
            [
                RunScheduled(
                    run_id=make_run_id(n, at),
                    job=n,
                    job_version=version[n],
                    scheduled_at=at,
                    host="h1",
                    **stamp(at - 300),
                )
                for n in names
            ],
            [
                RunStarted(
                    run_id=make_run_id(n, at),
                    attempt=1,
                    host="h1",
                    pid=1000 + i,
                    started_at=at + 1,
                    **stamp(at + 2),
                )
                for i, n in enumerate(names)
            ],
            [
                RunFinished(
                    run_id=make_run_id(n, at),
                    attempt=1,
                    state="succeeded",
                    exit_code=0,
                    finished_at=at + 5,
                    log_path=f"logs/{n}/1.log",
                    **stamp(at + 6),
                )
                for n in names
            ],
        ]
        datas = [Batch(tuple(c.encode() for c in cmds)).encode() for cmds in rounds]
        for data in datas:
            entry = p.entry(data)
            t0 = time.perf_counter()
            [result] = p.store.apply_many([entry])
            spent += time.perf_counter() - t0
            for item in unwrap(result)["results"]:  # every command applied
                unwrap(result_from_wire(item))
    return spent / (runs // per_batch * per_batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=3000, help="even")
    parser.add_argument(
        "--batched-runs", type=int, default=3000, help="runs applied as the engine batches them"
    )
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        single_anchor, batch_anchor = anchor(folder, args.jobs, args.batch)
        with JobStore.open(folder / "jobs.db") as store:
            p = Proposer(store)
            create_rate, encode_rate = create_jobs(p, args.jobs, args.batch)
            jobs_rate, runs_rate = single_applies(p, args.singles, args.jobs)
            batched_us = batched_runs(p, args.jobs, args.batched_runs)

            t0 = time.perf_counter()
            jobs = store.list_jobs()
            list_s = time.perf_counter() - t0
            assert len(jobs) == args.jobs

            t0 = time.perf_counter()
            page = store.list_jobs(limit=100)
            page_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            now_s = T0 // 1000
            heap = [
                (schedule.parse(j.schedule, j.timezone).next_after(now_s), j.name)
                for j in store.list_schedules()
                if not j.paused
            ]
            heapq.heapify(heap)
            heap_s = time.perf_counter() - t0
            assert len(heap) == args.jobs and len(page) == 100

            lat = []
            for i in range(2000):
                t1 = time.perf_counter()
                store.get_job(f"job-{i * 37 % args.jobs:06d}")
                lat.append(time.perf_counter() - t1)
            lat.sort()
            snap_t0 = time.perf_counter()
            snap = store.snapshot()
            snap_s = time.perf_counter() - snap_t0
            db_bytes = sum(f.stat().st_size for f in folder.glob("jobs.db*"))

    print(f"job table, {args.jobs:,} jobs (bench/store.py)")
    print(f"  anchor: bare apsw insert, 1 row/txn      {single_anchor:12,.0f} rows/s")
    print(f"  anchor: bare apsw insert, {args.batch} rows/txn  {batch_anchor:12,.0f} rows/s")
    print(
        f"  CreateJob, {args.batch}/txn (apply_many)     {create_rate:12,.0f} applies/s"
        f"   ({create_rate / batch_anchor:.2f}x anchor)"
    )
    print(f"  CreateJob built + encoded (proposer)    {encode_rate:12,.0f} commands/s")
    print(
        f"  Pause/ResumeJob, 1/txn (apply)          {jobs_rate:12,.0f} applies/s"
        f"   ({jobs_rate / single_anchor:.2f}x anchor)"
    )
    print(
        f"  RunScheduled/Started/Finished, 1/txn    {runs_rate:12,.0f} applies/s"
        f"   ({runs_rate / single_anchor:.2f}x anchor)"
    )
    print(
        f"  a run's 3 commands, 100 runs per batch  {batched_us:12,.0f} us of apply per run"
        f"   ({1e6 / batched_us / single_anchor:.2f}x anchor rows)"
    )
    print(f"  list_jobs() of all, as JSON             {list_s * 1000:12,.0f} ms")
    print(f"  list_jobs(limit=100), one API page      {page_s * 1000:12,.1f} ms")
    print(f"  list_schedules + parse + next_after +   {heap_s * 1000:12,.0f} ms")
    print("    heapify, all jobs (scheduler start)")
    print(
        f"  get_job p50 / p99                       {statistics.median(lat) * 1e6:9,.0f} us"
        f" / {lat[int(0.99 * len(lat))] * 1e6:,.0f} us"
    )
    print(
        f"  snapshot()                              {snap_s * 1000:12,.0f} ms, {len(snap):,} bytes"
    )
    print(f"  database files                          {db_bytes:12,} bytes")


if __name__ == "__main__":
    main()
