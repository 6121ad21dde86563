"""A batch entry: several commands in one log entry, each applied as if it came alone."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from dcrond.errors import ProtocolError
from dcrond.raft import Entry
from dcrond.store import Applied, CreateJob, JobSpec, JobStore, PauseJob, Rejected, Result
from dcrond.store._commands import MAX_BATCH, Batch, decode_entry
from dcrond.store._results import result_from_wire
from tests.store.conftest import Proposer


def _create(p: Proposer, name: str, **over: Any) -> CreateJob:
    return CreateJob(job=JobSpec(name=name, schedule="@daily", command="x"), **p.common(**over))


def _apply_batch(p: Proposer, *datas: bytes) -> list[Result]:
    result = p.store.apply(p.entry(Batch(tuple(datas)).encode()))
    assert isinstance(result, Applied)
    return [result_from_wire(item) for item in result.value["results"]]


def test_each_command_of_a_batch_is_applied_in_order_with_its_own_answer(
    p: Proposer, store: JobStore
) -> None:
    a, b = _create(p, "a"), _create(p, "b", acked=0)
    dup = _create(p, "a", acked=0)  # a second create of "a": refused, and alone
    pause = PauseJob(name="b", **p.common(acked=0))
    results = _apply_batch(p, a.encode(), b.encode(), dup.encode(), pause.encode())
    assert [type(r) for r in results] == [Applied, Applied, Rejected, Applied]
    assert isinstance(results[2], Rejected) and results[2].code == "already_exists"
    assert store.get_job("b")["paused"] is True  # the pause saw the create before it
    assert store.applied_index == 1  # one entry


def test_a_command_sent_again_in_another_batch_applies_once(p: Proposer, store: JobStore) -> None:
    a = _create(p, "a")
    b = _create(p, "b", acked=0)
    first = _apply_batch(p, a.encode())
    after = store.dump(data_only=True)
    # the proposer saw no answer (a leader change) and sent both in a new batch
    again = _apply_batch(p, b.encode(), a.encode())
    assert again[1] == first[0]  # the same answer, no second effect
    assert isinstance(again[0], Applied)
    assert store.statistics().deduplicated == 1
    assert after != store.dump(data_only=True)  # b was created


def test_a_bad_command_in_a_batch_is_refused_alone(p: Proposer, store: JobStore) -> None:
    good = _create(p, "good")
    nested = Batch((good.encode(),)).encode()
    results = _apply_batch(p, b"\x92\xa3bad\x80", nested, good.encode())
    assert [r.code for r in results[:2] if isinstance(r, Rejected)] == ["protocol", "protocol"]
    assert isinstance(results[2], Applied)
    assert store.get_job("good")["name"] == "good"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "a batch is a list of 1 to"),
        ("x", "a batch is a list of 1 to"),
        ([b"x"] * (MAX_BATCH + 1), "a batch is a list of 1 to"),
        ([b"x", 1], "encoded commands"),
    ],
)
def test_a_malformed_batch_is_a_protocol_error_and_changes_nothing(
    p: Proposer, store: JobStore, body: object, message: str
) -> None:
    data = msgpack.packb(["batch", body])
    with pytest.raises(ProtocolError, match=message):
        decode_entry(data)
    before = store.dump(data_only=True)
    result = store.apply(Entry(term=1, index=1, data=data))
    assert isinstance(result, Rejected) and result.code == "protocol"
    assert store.dump(data_only=True) == before


def test_the_watchers_see_every_command_of_a_batch(p: Proposer, store: JobStore) -> None:
    a, b = _create(p, "a"), _create(p, "b", acked=0)
    entry = p.entry(Batch((a.encode(), b.encode())).encode())
    results, done = store.apply_commands([entry])
    assert [cmd for cmd, _ in done] == [a, b]
    assert all(isinstance(r, Applied) for _, r in done)
    assert isinstance(results[0], Applied)
