"""The one write path: commands through a real one-voter Raft log into the real job table."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcrond.errors import AlreadyExists, Unavailable
from dcrond.replica import Replica
from dcrond.store import Applied, Command, CreateJob, JobSpec, Rejected, Result, unwrap
from dcrond.testing._replica import local_replica

T0 = 1_767_225_600_000


def _create(stamp: dict[str, object], name: str) -> CreateJob:
    return CreateJob(**stamp, job=JobSpec(name=name, schedule="* * * * *", command="true"))  # type: ignore[arg-type]


async def test_a_committed_command_is_applied_watched_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    seen: list[tuple[Command | None, Result | None]] = []
    async with local_replica(tmp_path, fsync=True) as replica:
        replica.watch(lambda cmd, result: seen.append((cmd, result)))
        result = await replica.propose(_create(replica.stamp("alice"), "backup"))
        assert isinstance(result, Applied)
        assert unwrap(result)["name"] == "backup"
        assert [type(c).__name__ for c, _ in seen] == ["CreateJob"]
        duplicate = await replica.propose(_create(replica.stamp("alice"), "backup"))
        assert isinstance(duplicate, Rejected)
        try:
            unwrap(duplicate)
        except AlreadyExists as exc:
            assert "backup" in str(exc)
        else:
            raise AssertionError("a duplicate name was accepted")
        assert len(seen) == 1  # a refused command changes nothing and is not watched
    async with local_replica(tmp_path, fsync=True) as replica:
        assert replica.store.get_job("backup")["name"] == "backup"


async def test_a_retried_request_is_applied_once_and_answered_the_same(tmp_path: Path) -> None:
    async with local_replica(tmp_path) as replica:
        cmd = _create(replica.stamp("alice"), "report")
        first = await replica.propose(cmd)
        again = await replica.propose(cmd)  # e.g. after a timeout whose outcome was unknown
        assert first == again
        assert [j["name"] for j in replica.store.list_jobs()] == ["report"]


async def test_requests_in_flight_together_keep_the_oldest_unanswered_one_retryable(
    tmp_path: Path,
) -> None:
    async with local_replica(tmp_path) as replica:
        s1 = replica.stamp("a")
        s2 = replica.stamp("a")
        assert (s1["seq"], s1["acked"]) == (1, 0)
        assert (s2["seq"], s2["acked"]) == (2, 0)  # 1 still outstanding
        await replica.propose(_create(s2, "two"))
        await replica.propose(_create(s1, "one"))  # not "stale": 1 was never acknowledged
        s3 = replica.stamp("a")
        assert s3["acked"] == 2


async def test_a_request_the_caller_retries_after_an_error_stays_unacknowledged(
    tmp_path: Path,
) -> None:
    """An engine report that failed (no leader) is proposed again later: meanwhile newer
    requests must not acknowledge it, or the store would refuse the retry as stale and the
    run would stay 'running' for ever (found by the engine simulator, seed 14)."""
    async with local_replica(tmp_path) as replica:
        cmd = _create(replica.stamp("runner"), "late")
        real = replica.propose_data

        async def timed_out(data: bytes) -> Result:
            raise Unavailable("entry not applied within 10s; outcome unknown")

        replica.propose_data = timed_out  # type: ignore[method-assign]
        with pytest.raises(Unavailable):
            await replica.propose(cmd, attempts=1, retrying=True)
        replica.propose_data = real  # type: ignore[method-assign]
        assert replica.stamp("other")["acked"] == 0  # request 1 still outstanding
        assert unwrap(await replica.propose(cmd, retrying=True))["name"] == "late"
        replica.release(cmd)
        assert replica.stamp("other")["acked"] == 1  # 1 answered (2 was stamped, never sent)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.just("stamp"), st.integers(0, 40)), max_size=120))
def test_acked_is_one_below_the_oldest_request_still_outstanding(ops: list[object]) -> None:
    """Against the definition (min over the outstanding set), through stamps and releases.

    The replica keeps the outstanding numbers in a heap (``min`` over the set was
    quadratic: 2/3 of an overloaded leader's time with thousands in flight).
    """
    replica = Replica.__new__(Replica)  # the numbering only: no node, no table
    replica.session = "s"
    replica._seq = 0
    replica._outstanding = set()
    replica._lowest = []
    model: set[int] = set()
    stamped: list[int] = []
    for op in ops:
        if op == "stamp":
            _session, seq, acked = replica.next_request()
            assert acked == (min(model) if model else seq) - 1
            model.add(seq)
            stamped.append(seq)
        elif stamped:
            seq = stamped[int(op) % len(stamped)]  # type: ignore[call-overload]
            cmd = CreateJob(
                now=T0,
                actor="a",
                session="s",
                seq=seq,
                job=JobSpec(name="j", schedule="@daily", command="true"),
            )
            replica.release(cmd)
            model.discard(seq)
