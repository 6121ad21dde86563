"""The engine's batcher: proposals made together travel in few log entries, each answered alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dcrond.engine._batcher import MAX_COMMANDS, Batcher
from dcrond.errors import Unavailable
from dcrond.replica import Replica
from dcrond.store import Applied, CreateJob, JobSpec, PauseJob, Rejected, Result
from dcrond.testing._replica import local_replica


def _create(replica: Replica, name: str) -> CreateJob:
    spec = JobSpec(name=name, schedule="@daily", command="true")
    return CreateJob(**replica.stamp("test"), job=spec)  # type: ignore[arg-type]


async def test_proposals_made_together_share_entries_and_each_gets_its_answer(
    tmp_path: Path,
) -> None:
    async with local_replica(tmp_path) as replica, trio.open_nursery() as nursery:
        batcher = Batcher(replica)
        await nursery.start(batcher.run)
        await batcher.propose(_create(replica, "first"))  # (the leader's first entry is in)
        index_before = replica.node.statistics().commit_index
        sent_before = batcher.batches, batcher.commands
        results: dict[str, Result] = {}

        async def one(name: str) -> None:
            results[name] = await batcher.propose(_create(replica, name))

        names = [f"j{i:03d}" for i in range(300)] + ["j000"]  # the last: a duplicate name
        async with trio.open_nursery() as inner:
            for name in names[:-1]:
                inner.start_soon(one, name)
        results["dup"] = await batcher.propose(_create(replica, "j000"))
        assert all(isinstance(results[n], Applied) for n in names[:-1])
        assert isinstance(results["dup"], Rejected) and results["dup"].code == "already_exists"
        assert len(replica.store.list_jobs()) == 301
        # 300 commands made in one scheduler pass: two batches (MAX_COMMANDS each), and
        # the duplicate, proposed alone, went as itself
        batches = batcher.batches - sent_before[0]
        assert batcher.commands - sent_before[1] == 301
        assert batches == -(-300 // MAX_COMMANDS) + 1
        assert replica.node.statistics().commit_index - index_before == batches
        assert not replica._outstanding  # every answered request is released
        nursery.cancel_scope.cancel()


class _Unreachable:
    """A replica whose leader cannot be reached."""

    def __init__(self) -> None:
        self.released: list[int] = []

    async def propose_encoded(self, data: bytes, **_: object) -> Result:
        await trio.lowlevel.checkpoint()
        raise Unavailable("no leader")

    def release(self, cmd: object) -> None:  # pragma: no cover - not answered
        raise AssertionError("an unanswered request must stay outstanding")


async def test_an_error_reaches_every_caller_of_the_batch(tmp_path: Path) -> None:
    async with local_replica(tmp_path) as replica, trio.open_nursery() as nursery:
        batcher = Batcher(_Unreachable())  # type: ignore[arg-type]
        await nursery.start(batcher.run)
        errors: list[BaseException] = []

        async def one(i: int) -> None:
            cmd = PauseJob(**replica.stamp("test"), name=f"j{i}")  # type: ignore[arg-type]
            with pytest.raises(Unavailable) as info:
                await batcher.propose(cmd)
            errors.append(info.value)

        async with trio.open_nursery() as inner:
            for i in range(5):
                inner.start_soon(one, i)
        assert len(errors) == 5
        nursery.cancel_scope.cancel()


async def test_a_stopped_batcher_fails_what_it_holds_so_callers_can_try_again(
    tmp_path: Path,
) -> None:
    async with local_replica(tmp_path) as replica:
        batcher = Batcher(replica)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(batcher.run)
                assert batcher.running
                scope.cancel()
        assert not batcher.running
