"""A one-voter Raft node with the real job table, for tests of what sits on top of the log."""

from __future__ import annotations

import os
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from dcrond.raft._node import open_node
from dcrond.raft._storage import LogStorage
from dcrond.raft._transport import RaftTransport
from dcrond.raft._types import Config, ConfState
from dcrond.replica import Replica, ReplicatedTable
from dcrond.store import JobStore


@asynccontextmanager
async def local_replica(
    data_dir: Path,
    *,
    name: str = "n1",
    wall_clock: Callable[[], float] | None = None,
    fsync: bool = False,
) -> AsyncIterator[Replica]:
    """Run a one-voter cluster in ``data_dir`` (real SQLite files, loopback transport).

    Yields once this node leads; reopening the same ``data_dir`` is a restart.
    """
    os.makedirs(data_dir, exist_ok=True)
    store = JobStore.open(data_dir / "jobs.db")
    storage = LogStorage.open(data_dir / "raft.db", sync=fsync)
    try:
        table = ReplicatedTable(store)
        transport = RaftTransport(name, "test", ("127.0.0.1", 0), {})
        node = open_node(
            name,
            storage,
            transport,
            table,
            bootstrap=ConfState(voters=frozenset([name])),
            config=Config(election_ticks=2, send_appends_early=True),
            rng=random.Random(0),
            tick_seconds=0.01,
        )
        replica = Replica(node, table, name=name, wall_clock=wall_clock or time.time)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await node.campaign()
            await node.wait_leader(timeout=5)
            yield replica
            nursery.cancel_scope.cancel()
    finally:
        storage.close()
        store.close()
