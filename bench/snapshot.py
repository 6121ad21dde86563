"""Print how long a Raft snapshot of a 100,000-job table holds the event loop, on it and off it.

Usage: ``.venv/bin/python bench/snapshot.py [--jobs 100000] [--runs 3] [--dir /path]``

Builds once a job table of ``--jobs`` jobs (``bench/store.py``'s jobs) and a
Raft log (fsync'd, as a daemon's) holding the 10,000 entries that follow its
stored snapshot (a daemon snapshots every ``snapshot_entries`` = 10,000).
Then, ``--runs`` times for each way, on a fresh copy of both files, it
starts a one-voter ``RaftNode`` over them that snapshots after ``--after``
more entries (the snapshot then compacts 10,000 + ``--after`` entries),
while two tasks run on the same trio loop:

* a ticker sleeps 1 ms in a loop and records how late each wake-up is: the
  longest is how long the loop was held, the sum of those over 5 ms is the
  time the loop spent on the snapshot;
* a proposer pauses and resumes one job, one proposal after another (these
  are the entries that make the snapshot due), and counts the proposals
  answered from the one that made it due until it is installed.

``on the loop`` is the old way (``snapshot_in_thread=False``: the copy, the
file and the compaction all on the loop); ``in threads`` is the new one.
Prints each run and the medians. The machine is shared: compare the two
ways of the same run, not figures across runs.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from store import Proposer, create_jobs  # bench/ is on sys.path when a bench script runs

from dcrond.raft._node import open_node
from dcrond.raft._storage import LogStorage
from dcrond.raft._transport import RaftTransport
from dcrond.raft._types import (
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from dcrond.replica import ReplicatedTable
from dcrond.store import JobStore, PauseJob, ResumeJob

EVERY = 10_000  #: snapshot_entries, the daemon's default
TICK = 0.001
HELD = 0.005  #: a wake-up later than this counts as time the loop was held


def build(folder: Path, jobs: int) -> None:
    """A job table of ``jobs`` jobs and a log whose next snapshot is due."""
    with JobStore.open(folder / "jobs.db") as store:
        create_jobs(Proposer(store), jobs, 1000)
        applied = store.applied_index
    conf = ConfState(frozenset({"n1"}))
    base = applied - EVERY
    with LogStorage.open(folder / "raft.db") as log:
        log.save(
            hard_state=HardState(1, "n1", base),
            entries=(),
            snapshot=Snapshot(SnapshotMeta(base, 1, conf), b"an older image"),
        )
        # Entries as big as the CreateJob commands they stand for (~300 bytes).
        entries = [Entry(1, i, EntryKind.NORMAL, b"x" * 300) for i in range(base + 1, applied + 1)]
        log.save(hard_state=HardState(1, "n1", applied), entries=entries, snapshot=None)


async def one_run(folder: Path, in_thread: bool, after: int) -> dict[str, Any]:
    store = JobStore.open(folder / "jobs.db")
    storage = LogStorage.open(folder / "raft.db")
    table = ReplicatedTable(store)
    held: list[float] = []
    answered = 0
    try:
        transport = RaftTransport("n1", "bench", ("127.0.0.1", 0), {})
        node = open_node(
            "n1",
            storage,
            transport,
            table,
            bootstrap=ConfState(frozenset({"n1"})),
            config=Config(election_ticks=8),
            rng=random.Random(0),
            tick_seconds=0.05,
            snapshot_entries=after,
            snapshot_in_thread=in_thread,
        )
        seq = 0
        due_at: float | None = None

        async def ticker() -> None:
            last = trio.current_time()
            while True:
                await trio.sleep(TICK)
                now = trio.current_time()
                held.append(now - last - TICK)
                last = now

        async def proposer() -> None:
            nonlocal answered, seq, due_at
            await node.wait_leader()
            while node.statistics().snapshots == 0:  # then stop: no second one
                if due_at is None and node.statistics().applied_index + 1 >= due:
                    due_at = time.perf_counter()  # this proposal makes the snapshot due
                    held.clear()
                elif due_at is not None:
                    answered += 1
                seq += 1
                now = 1_800_000_000_000 + seq
                kind = PauseJob if seq % 2 else ResumeJob
                cmd = kind(name="job-000007", now=now, actor="b", session="b", seq=seq)
                await node.propose(cmd.encode())

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ticker)
                await nursery.start(node.run)
                due = node.statistics().applied_index + after
                await node.campaign()
                nursery.start_soon(proposer)
                while node.statistics().snapshots == 0:
                    await node.wait_changed()
                assert due_at is not None
                took = time.perf_counter() - due_at
                await trio.sleep(0.05)  # the ticker records the wake-up the snapshot delayed
                nursery.cancel_scope.cancel()
        late = [h for h in held if h > HELD]
        return {
            "longest_ms": max(held) * 1000,
            "held_ms": sum(late) * 1000,
            "snapshot_s": took,
            "answered": answered,
            "bytes": storage.statistics().file_bytes,
        }
    finally:
        storage.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--after", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        pristine = Path(tmp) / "pristine"
        pristine.mkdir()
        t0 = time.perf_counter()
        build(pristine, args.jobs)
        print(f"built {args.jobs} jobs and the log in {time.perf_counter() - t0:.0f} s")
        results: dict[str, list[dict[str, Any]]] = {"on the loop": [], "in threads": []}
        for run in range(args.runs):
            for way, in_thread in (("on the loop", False), ("in threads", True)):
                folder = Path(tmp) / f"run-{run}-{int(in_thread)}"
                shutil.copytree(pristine, folder)
                r = trio.run(one_run, folder, in_thread, args.after)
                shutil.rmtree(folder)
                results[way].append(r)
                print(
                    f"run {run + 1} {way:11}: loop held at most {r['longest_ms']:6.1f} ms, "
                    f"{r['held_ms']:6.0f} ms in all; snapshot installed {r['snapshot_s']:.2f} s "
                    f"after it was due; proposals answered meanwhile: {r['answered']}"
                )
        print(f"\nmedians of {args.runs} ({args.jobs} jobs, image ~{r['bytes'] / 1e6:.0f} MB):")
        for way, rs in results.items():
            med = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
            print(
                f"  {way:11}: loop held at most {med['longest_ms']:.1f} ms, "
                f"{med['held_ms']:.0f} ms in all; installed {med['snapshot_s']:.2f} s after due; "
                f"proposals answered meanwhile: {med['answered']:.0f}"
            )


if __name__ == "__main__":
    main()
