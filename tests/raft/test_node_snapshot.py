"""RaftNode takes the job table's snapshot off the event loop.

These prove, on a real node over a real job table and log (SQLite files,
fsync'd):

* the event loop stays responsive, and the node keeps applying proposals,
  while a snapshot of a ~64 MB table is copied and written: the longest the
  loop is blocked stays well below what one copy of the table takes on it;
* the snapshot holds exactly the table at its index: restored on a fresh
  store it equals a store that applied the same log up to that index, and a
  node rebuilt from the compacted log and an empty table equals the live one;
* a snapshot from the leader that arrives while the node's own one is under
  way discards it: nothing of it is installed, the leader's stays, and the
  next snapshot of the node's own works.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from dcrond.raft._node import RaftNode, open_node
from dcrond.raft._snapjob import SnapshotImage
from dcrond.raft._storage import LogStorage
from dcrond.raft._types import (
    AppendEntries,
    Config,
    ConfState,
    Entry,
    EntryKind,
    InstallSnapshot,
    Message,
    NodeId,
    SnapshotMeta,
)
from dcrond.replica import ReplicatedTable
from dcrond.store import CreateJob, JobSpec, JobStore

T0 = 1_767_225_600_000


class FakeTransport:
    """Messages in through ``deliver``; what the node sends is kept in ``sent``."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Message](1000)
        self.sent: list[Message] = []

    @property
    def receive_channel(self) -> trio.MemoryReceiveChannel[Message]:
        return self._receive

    async def serve(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    def send_nowait(self, msg: Message) -> None:
        self.sent.append(msg)

    def update_peers(self, peers: Mapping[NodeId, tuple[str, int]]) -> None:
        pass

    def deliver(self, msg: Message) -> None:
        self._send.send_nowait(msg)


class GatedImage:
    """A pinned image whose copy waits until the test opens the gate."""

    def __init__(self, inner: SnapshotImage, gate: threading.Event, entered: threading.Event):
        self._inner, self._gate, self._entered = inner, gate, entered

    @property
    def index(self) -> int:
        return self._inner.index

    def read(self) -> bytes:
        self._entered.set()
        self._gate.wait(30)
        return self._inner.read()

    def close(self) -> None:
        self._inner.close()


class Table:
    """The replicated job table, recording what it applies; its images wait on ``gate``."""

    def __init__(self, store: JobStore) -> None:
        self.inner = ReplicatedTable(store)
        self.applied: list[Entry] = []
        self.gate = threading.Event()
        self.gate.set()
        self.copying = threading.Event()  #: an image's copy has started

    def apply_many(self, entries: Sequence[Entry]) -> Sequence[object]:
        self.applied.extend(entries)
        return self.inner.apply_many(entries)

    def snapshot(self) -> bytes:
        return self.inner.snapshot()

    def snapshot_begin(self) -> SnapshotImage | None:
        image = self.inner.snapshot_begin()
        return None if image is None else GatedImage(image, self.gate, self.copying)

    def restore(self, data: bytes, index: int) -> None:
        self.inner.restore(data, index)

    @property
    def applied_index(self) -> int:
        return self.inner.applied_index


def create(i: int, prefix: str = "job") -> bytes:
    spec = JobSpec(name=f"{prefix}-{i:05d}", schedule="@hourly", command=f"echo {i}")
    return CreateJob(job=spec, now=T0 + i, actor="t", session=prefix, seq=i).encode()


def fill(store: JobStore, megabytes: int) -> None:
    """Make the table's file big fast: a table of its own that no command reads."""
    store.db.execute(
        "CREATE TABLE filler (v BLOB); "
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO filler SELECT randomblob(1000) FROM n",
        (megabytes * 1000,),
    )


@asynccontextmanager
async def running(
    folder: Path, table: Table, voters: frozenset[str], **options: Any
) -> AsyncIterator[tuple[RaftNode, FakeTransport, LogStorage]]:
    storage = LogStorage.open(folder / "raft.db")
    transport = FakeTransport()
    try:
        node = open_node(
            "n1",
            storage,
            transport,
            table,
            bootstrap=ConfState(voters=voters),
            config=Config(election_ticks=2 if len(voters) == 1 else 10_000),
            tick_seconds=0.01,
            **options,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            yield node, transport, storage
            nursery.cancel_scope.cancel()
    finally:
        storage.close()


def snapshot_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith("raft.db.snap-")]


def scratch_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".image-" in p.name]


async def test_the_loop_keeps_applying_while_a_big_snapshot_is_taken_and_it_holds_its_index(
    tmp_path: Path,
) -> None:
    store = JobStore.open(tmp_path / "jobs.db")
    fill(store, 64)
    started = time.perf_counter()
    on_loop = len(store.snapshot())  # what the old path did on the loop (half of it)
    copy_seconds = time.perf_counter() - started
    table = Table(store)
    longest = 0.0
    with trio.fail_after(60):
        async with running(tmp_path, table, frozenset({"n1"}), snapshot_entries=20) as (
            node,
            _,
            storage,
        ):
            await node.campaign()
            await node.wait_leader()

            async def watch_the_loop() -> None:
                nonlocal longest
                last = trio.current_time()
                while True:
                    await trio.sleep(0.001)
                    now = trio.current_time()
                    longest = max(longest, now - last - 0.001)
                    last = now

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_the_loop)
                i = 0
                while node.statistics().applied_index < 20:
                    i += 1
                    await node.propose(create(i))
                assert node.statistics().snapshot_in_flight
                during = 0
                while node.statistics().snapshots == 0 and during < 15:
                    i += 1
                    await node.propose(create(i))
                    during += 1
                while node.statistics().snapshots == 0:
                    await node.wait_changed()
                nursery.cancel_scope.cancel()
            stats = node.statistics()
            loaded = storage.load()
            assert len(snapshot_files(tmp_path)) == 1
    assert (stats.snapshots, stats.snapshots_discarded, stats.snapshot_in_flight) == (1, 0, False)
    # The loop went on: proposals were applied while the snapshot was under way,
    # and no timer waited anywhere near as long as one copy of the table takes.
    assert during >= 3, during
    assert longest < copy_seconds / 3, (longest, copy_seconds)
    print(f"longest {longest * 1000:.1f} ms, one copy {copy_seconds * 1000:.0f} ms, {during=}")
    # The snapshot is the table at its index, with that index's term and membership.
    snap = loaded.snapshot
    assert snap is not None
    assert len(snap.data) >= on_loop * 0.9
    at = snap.meta.index
    assert snap.meta == SnapshotMeta(at, table.applied[at - 1].term, ConfState(frozenset({"n1"})))
    assert loaded.entries[0].index == at + 1
    with JobStore.open(tmp_path / "reference.db") as reference:
        reference.apply_many([e for e in table.applied if e.index <= at])
        with JobStore.open(tmp_path / "restored.db") as restored:
            restored.restore(snap.data, at)
            assert restored.dump() == reference.dump()
            assert restored.list_jobs() == reference.list_jobs()
    # A node rebuilt from the compacted log and an empty table is the live table.
    live = store.dump(data_only=True)
    store.close()
    with JobStore.open(tmp_path / "empty.db") as rebuilt:
        async with running(tmp_path, Table(rebuilt), frozenset({"n1"})) as (node, _, _):
            assert node.statistics().applied_index >= i + 1  # the leader's NOOP and i jobs
        assert rebuilt.dump(data_only=True) == live


async def test_a_snapshot_from_the_leader_discards_the_one_under_way(tmp_path: Path) -> None:
    voters = frozenset({"l", "n1"})
    conf = ConfState(voters)
    # What the leader has: 30 entries, of which it sends the first 12, then a snapshot at 30.
    log = [Entry(1, 1, EntryKind.NOOP, b"")] + [Entry(1, i, data=create(i)) for i in range(2, 31)]
    with JobStore.open(tmp_path / "leader.db") as leader:
        leader.apply_many(log)
        image = leader.snapshot()
        leader_dump = leader.dump()
    store = JobStore.open(tmp_path / "jobs.db")
    table = Table(store)
    table.gate.clear()  # the node's own image will wait, mid-snapshot
    try:
        with trio.fail_after(30):
            async with running(tmp_path, table, voters, snapshot_entries=10) as (
                node,
                net,
                storage,
            ):
                net.deliver(AppendEntries("l", "n1", 1, 0, 0, tuple(log[:12]), 12))
                await node.wait_applied(12)
                assert await trio.to_thread.run_sync(table.copying.wait, 10)
                assert node.statistics().snapshot_in_flight
                net.deliver(
                    InstallSnapshot("l", "n1", 1, SnapshotMeta(30, 1, conf), 0, image, True)
                )
                await node.wait_applied(30)
                assert node.statistics().snapshots_discarded == 1
                table.gate.set()  # the abandoned copy now stops at its first step
                while node.statistics().snapshot_in_flight:
                    await node.wait_changed()
                stats = node.statistics()
                assert (stats.snapshots, stats.snapshots_discarded) == (0, 1)
                assert storage.statistics().snapshot_index == 30
                assert store.dump() == leader_dump
                assert len(snapshot_files(tmp_path)) == 1  # the leader's only
                # Life goes on: ten more entries, and the node's own next snapshot.
                more = tuple(Entry(1, i, data=create(i, "more")) for i in range(31, 41))
                net.deliver(AppendEntries("l", "n1", 1, 30, 1, more, 40))
                await node.wait_applied(40)
                while node.statistics().snapshots == 0:
                    await node.wait_changed()
                assert storage.statistics().snapshot_index == 40
                assert len(snapshot_files(tmp_path)) == 1
        with LogStorage.open(tmp_path / "raft.db") as reopened:
            snap = reopened.load().snapshot
        assert snap is not None
        assert snap.meta == SnapshotMeta(40, 1, conf)
        with JobStore.open(tmp_path / "restored.db") as restored:
            restored.restore(snap.data, 40)
            assert restored.dump() == store.dump()
    finally:
        store.close()
    assert scratch_files(tmp_path) == []


async def test_a_shutdown_mid_snapshot_abandons_it_and_leaves_a_log_that_loads(
    tmp_path: Path,
) -> None:
    store = JobStore.open(tmp_path / "jobs.db")
    table = Table(store)
    table.gate.clear()
    try:
        with trio.fail_after(30):
            async with running(tmp_path, table, frozenset({"n1"}), snapshot_entries=5) as (
                node,
                _,
                _,
            ):
                await node.campaign()
                await node.wait_leader()
                for i in range(1, 6):
                    await node.propose(create(i))
                assert await trio.to_thread.run_sync(table.copying.wait, 10)
                assert node.statistics().snapshot_in_flight
            # The node is down; its abandoned copy stops at its first step.
            table.gate.set()
            for _ in range(1000):
                if not scratch_files(tmp_path):
                    break
                await trio.sleep(0.01)
            assert scratch_files(tmp_path) == []
            assert snapshot_files(tmp_path) == []
            live = store.dump(data_only=True)
            async with running(tmp_path, table, frozenset({"n1"})) as (node, _, storage):
                assert storage.statistics().snapshot_index == 0
                assert node.statistics().applied_index >= 6
            assert store.dump(data_only=True) == live
    finally:
        store.close()
