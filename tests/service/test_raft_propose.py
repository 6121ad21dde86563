"""``raft.propose`` (a follower's command forwarded to the leader) answers a refusal as a result.

A command the leader's precheck refuses comes back as the encoded ``Rejected``
value apply would have given -- the same thing ``Replica.propose`` returns
on the leader itself -- and takes no log entry. It used to be raised as an
error instead, which reached the follower's engine as an exception: on five
real hosts (tests/cluster/test_exactly_once.py) a ``RunStarted`` retried
after a leader change, and a ``RunFinished`` sent again from the outbox after
a restart, each stopped the daemon that sent it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from dcrond.config import Config
from dcrond.replica import Replica
from dcrond.service import RunEngine, Service
from dcrond.store import (
    Applied,
    CreateJob,
    JobSpec,
    Rejected,
    RunFinished,
    RunScheduled,
    RunStarted,
    make_run_id,
)
from dcrond.store._blobs import Blobs
from dcrond.store._results import decode_result
from dcrond.testing._replica import local_replica

AT = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[tuple[Service, Replica]]:
    blobs = Blobs((tmp_path / "objects").as_uri())
    async with local_replica(tmp_path / "node") as replica:
        # raft.propose never reaches the engine
        yield Service(replica, cast(RunEngine, None), blobs, replace(Config())), replica


def _stamp(replica: Replica, actor: str = "runner@h2") -> dict[str, Any]:
    return replica.stamp(actor)


async def _forwarded(service: Service, replica: Replica, data: bytes) -> Any:
    """What the follower's ``Replica.propose`` gets back, and the leader's last index after."""
    answer = await service.raft_propose({"data": data})
    assert isinstance(answer, bytes)
    return decode_result(answer), replica.node.statistics().last_index


async def test_reports_sent_again_after_they_committed_come_back_rejected_not_raised(
    leader: tuple[Service, Replica],
) -> None:
    service, replica = leader
    job = JobSpec(name="tick", schedule="@every 1s", command="true")
    assert isinstance(await replica.propose(CreateJob(job=job, **_stamp(replica))), Applied)
    run_id = make_run_id("tick", AT)
    claim = RunScheduled(run_id=run_id, job="tick", job_version=1, scheduled_at=AT, host="h2",
                         reason="schedule", **_stamp(replica, "scheduler@h1"))  # fmt: skip
    assert isinstance(await replica.propose(claim), Applied)

    started: dict[str, Any] = {"run_id": run_id, "attempt": 1, "host": "h2", "pid": 4242,
                               "started_at": AT + 3}  # fmt: skip
    first, _ = await _forwarded(service, replica, RunStarted(**started, **_stamp(replica)).encode())
    assert isinstance(first, Applied)
    # the same start again, as a new request (the first answer was lost with the old leader)
    index = replica.node.statistics().last_index
    again, after = await _forwarded(
        service, replica, RunStarted(**started, **_stamp(replica)).encode()
    )
    assert isinstance(again, Rejected), again
    assert "cannot start" in again.message
    assert after == index, "a refused command took a log entry"

    finished: dict[str, Any] = {"run_id": run_id, "attempt": 1, "state": "succeeded",
                                "exit_code": 0, "finished_at": AT + 9}  # fmt: skip
    done, _ = await _forwarded(
        service, replica, RunFinished(**finished, **_stamp(replica)).encode()
    )
    assert isinstance(done, Applied)
    # the outbox sends the end again after a restart (a new session)
    resent, _ = await _forwarded(
        service, replica, RunFinished(**finished, **_stamp(replica)).encode()
    )
    assert isinstance(resent, Rejected), resent
    assert "already succeeded" in resent.message
    assert replica.store.get_run(run_id)["state"] == "succeeded"


async def test_a_forwarded_create_of_an_existing_job_is_rejected_as_on_the_leader(
    leader: tuple[Service, Replica],
) -> None:
    service, replica = leader
    job = JobSpec(name="dup", schedule="@hourly", command="true")
    on_leader = await replica.propose(CreateJob(job=job, **_stamp(replica)))
    assert isinstance(on_leader, Applied)
    direct = await replica.propose(CreateJob(job=job, **_stamp(replica)))
    forwarded, _ = await _forwarded(
        service, replica, CreateJob(job=job, **_stamp(replica)).encode()
    )
    assert isinstance(direct, Rejected) and isinstance(forwarded, Rejected)
    assert forwarded.code == direct.code == "already_exists"
