"""RaftNode drops the ticks it missed while its event loop was held up.

Under load (3 daemons, their spawners and 500 jobs a second on 2 cores) a
node's tick task fell seconds behind its schedule and then fired the missed
ticks back to back: an election timeout or a CheckQuorum window passed in
a few milliseconds, before the heartbeats waiting behind the same hold-up
were stepped, and leadership moved every few seconds (bench/cluster.py,
docs/benchmarks.md). A held-up loop now counts as one tick.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio
import trio.testing

from dcrond.raft._node import RaftNode, open_node
from dcrond.raft._storage import LogStorage
from dcrond.raft._types import AppendEntries, Config, ConfState, Entry, Role, VoteRequest

from .test_node_snapshot import FakeTransport


class NullMachine:
    """A state machine that keeps nothing (these tests look at ticks only)."""

    applied_index = 0

    def apply_many(self, entries: Sequence[Entry]) -> Sequence[object]:
        return [None] * len(entries)

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes, index: int) -> None:
        pass


TICK = 0.05


def vote_requests(transport: FakeTransport) -> int:
    return sum(1 for m in transport.sent if isinstance(m, VoteRequest))


@asynccontextmanager
async def follower(folder: Path) -> AsyncIterator[tuple[RaftNode, FakeTransport]]:
    """A running member of a 3-voter log whose peers are silent, ticking every ``TICK``."""
    transport = FakeTransport()
    with LogStorage.open(folder / "raft.db") as storage:
        node = open_node(
            "n1",
            storage,
            transport,
            NullMachine(),
            bootstrap=ConfState(voters=frozenset({"n1", "n2", "n3"})),
            config=Config(election_ticks=8),  # a timeout of 8 to 16 ticks
            tick_seconds=TICK,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            yield node, transport
            nursery.cancel_scope.cancel()


async def ticks(clock: trio.testing.MockClock, n: int) -> None:
    """Let ``n`` tick periods pass, each on time."""
    for _ in range(n):
        clock.jump(TICK)
        await trio.testing.wait_all_tasks_blocked()


async def test_ticks_missed_while_the_loop_was_held_up_are_dropped_not_fired_in_a_burst(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with follower(tmp_path) as (node, transport):
        await ticks(mock_clock, 4)  # on time: no tick dropped
        assert node.statistics().ticks_dropped == 0
        # The loop is held up for 2 s: the tick due 50 ms in fires when it runs again,
        # the 39 due after it are dropped, not fired back to back (which would have
        # passed the election timeout at once).
        mock_clock.jump(2.0)
        await trio.testing.wait_all_tasks_blocked()
        assert node.statistics().ticks_dropped == 39
        await ticks(mock_clock, 2)  # 4 + 1 + 2 = 7 ticks: below any election timeout
        assert node.core.role is Role.FOLLOWER and vote_requests(transport) == 0
        await ticks(mock_clock, 16)  # ticks still count: with no leader heard, it campaigns
        assert vote_requests(transport) >= 2  # (a pre-vote to each of the two others)


async def test_a_follower_that_hears_its_leader_after_a_hold_up_does_not_campaign(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """The heartbeat that waited behind the hold-up is stepped before an election is due."""
    async with follower(tmp_path) as (node, transport):
        for _ in range(30):  # a leader's heartbeat every other tick for 1.5 s
            transport.deliver(AppendEntries("n2", "n1", 1, 0, 0, (), 0))
            await ticks(mock_clock, 2)
            assert (node.core.role, node.core.leader) == (Role.FOLLOWER, "n2")
        transport.deliver(AppendEntries("n2", "n1", 1, 0, 0, (), 0))
        mock_clock.jump(5.0)  # held up for longer than any election timeout
        await trio.testing.wait_all_tasks_blocked()
        assert (node.core.role, node.core.leader) == (Role.FOLLOWER, "n2")
        assert vote_requests(transport) == 0
