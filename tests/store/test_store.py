"""The job table as a Raft state machine: applied index, retried requests, snapshots, decoding."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dcrond.store
from dcrond.errors import InvalidRequest, ProtocolError, StorageError
from dcrond.raft import Entry, EntryKind
from dcrond.store import (
    Applied,
    CreateJob,
    DeleteJob,
    JobSpec,
    JobStore,
    PauseJob,
    Rejected,
    RunFinished,
    Script,
    UpdateJob,
    decode,
    make_run_id,
)
from dcrond.store._store import SESSION_SWEEP_EVERY
from tests.store.conftest import T0, Proposer


def _create(p: Proposer, name: str, **over: Any) -> CreateJob:
    return CreateJob(job=JobSpec(name=name, schedule="@daily", command="x"), **p.common(**over))


def test_a_retried_request_applies_once_and_gets_the_same_answer(
    p: Proposer, store: JobStore
) -> None:
    cmd = _create(p, "j")
    first = p.apply(cmd)
    after_first = store.dump(data_only=True)
    again = p.apply(cmd)  # the client timed out and proposed it again: a second log entry
    assert again == first
    assert isinstance(again, Applied)  # not "already exists": the retry is the same request
    assert store.dump(data_only=True) == after_first
    assert store.statistics().deduplicated == 1


def test_a_retried_refusal_is_the_same_refusal(p: Proposer, store: JobStore) -> None:
    cmd = PauseJob(name="ghost", **p.common())
    first = p.apply(cmd)
    Proposer(store, session="s2").create("ghost")  # meanwhile another client creates it:
    # the retry must not pause it now
    assert p.apply(cmd) == first
    assert isinstance(first, Rejected) and first.code == "not_found"
    assert store.get_job("ghost")["paused"] is False


def test_an_older_request_of_a_session_is_stale(p: Proposer, store: JobStore) -> None:
    old = _create(p, "a")
    p.apply(old)
    p.apply(_create(p, "b"))  # seq 2 acknowledges seq 1 (one request in flight)
    result = p.apply(old)
    assert isinstance(result, Rejected) and result.code == "stale"
    with pytest.raises(InvalidRequest, match="answered already"):
        dcrond.store.unwrap(result)


def test_pipelined_requests_keep_their_answers_until_acknowledged(p: Proposer) -> None:
    one = CreateJob(
        job=JobSpec(name="a", schedule="@daily", command="x"),
        now=T0,
        actor="api",
        session="pipe",
        seq=1,
        acked=0,
    )
    two = CreateJob(
        job=JobSpec(name="b", schedule="@daily", command="x"),
        now=T0,
        actor="api",
        session="pipe",
        seq=2,
        acked=0,
    )
    three = PauseJob(name="a", now=T0, actor="api", session="pipe", seq=3, acked=0)
    answers = [p.apply(c) for c in (one, two, three)]
    assert [p.apply(c) for c in (three, one, two)] == [answers[2], answers[0], answers[1]]
    four = PauseJob(name="b", now=T0, actor="api", session="pipe", seq=4, acked=3)
    p.apply(four)
    assert isinstance(p.apply(one), Rejected)


def test_idle_sessions_are_forgotten_deterministically(p: Proposer, store: JobStore) -> None:
    p.apply(_create(p, "a"))
    later = T0 + 2 * 24 * 3600 * 1000
    other = Proposer(store, session="s2")
    while store.applied_index + 1 < SESSION_SWEEP_EVERY:
        store.apply(Entry(term=1, index=store.applied_index + 1, kind=EntryKind.NOOP))
    other.apply(PauseJob(name="a", **other.common(now=later)))
    sessions = [line for line in store.dump().splitlines() if line.startswith("client_sessions")]
    assert len(sessions) == 1 and "'s2'" in sessions[0]


def test_the_applied_index_is_written_with_the_change_and_survives_reopening(
    tmp_path: Path,
) -> None:
    with JobStore.open(tmp_path / "jobs.db") as store:
        p = Proposer(store, term=3)
        p.create("j")
        store.apply(Entry(term=3, index=2, kind=EntryKind.NOOP))
        dump = store.dump()
    with JobStore.open(tmp_path / "jobs.db") as store:
        assert (store.applied_index, store.applied_term) == (2, 3)
        assert store.dump() == dump


def test_a_redelivered_entry_is_ignored(p: Proposer, store: JobStore) -> None:
    cmd = _create(p, "j")
    entry = p.entry(cmd.encode())
    assert isinstance(store.apply(entry), Applied)
    dump = store.dump()
    assert store.apply(entry) is None
    assert store.apply(Entry(term=1, index=1, data=b"anything")) is None
    assert store.dump() == dump
    assert store.applied_index == 1


def test_an_entry_out_of_order_is_a_bug_in_the_driver(store: JobStore) -> None:
    with pytest.raises(ValueError, match="out of order"):
        store.apply(Entry(term=1, index=2, kind=EntryKind.NOOP))
    assert store.applied_index == 0


def test_noop_and_config_entries_only_advance_the_index(store: JobStore) -> None:
    before = store.dump(data_only=True)
    assert store.apply(Entry(term=1, index=1, kind=EntryKind.NOOP)) is None
    assert store.apply(Entry(term=2, index=2, kind=EntryKind.CONFIG, data=b"\x01")) is None
    assert (store.applied_index, store.applied_term) == (2, 2)
    assert store.dump(data_only=True) == before


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "not a msgpack command"),
        (b"\xc1", "not a msgpack command"),
        (msgpack.packb([1, 2, 3]), "a command is [kind, {fields}]"),
        (msgpack.packb(["launch_missiles", {}]), "unknown command 'launch_missiles'"),
        (msgpack.packb(["pause_job", {"name": "j"}]), "missing field"),
        (
            msgpack.packb(
                [
                    "pause_job",
                    {
                        "name": "j",
                        "now": T0,
                        "actor": "a",
                        "session": "s",
                        "seq": 1,
                        "colour": "red",
                    },
                ]
            ),
            "unknown field 'colour'",
        ),
        (msgpack.packb(["pause_job", {}]) + b"\x00", "not a msgpack command"),
        (b"\x92" + b"\xff" * 10, "not a msgpack command"),
    ],
)
def test_garbage_in_the_log_is_rejected_as_a_protocol_error_and_changes_nothing(
    p: Proposer, store: JobStore, data: bytes, words: str
) -> None:
    p.create("j")
    before = store.dump(data_only=True)
    result = store.apply(p.entry(data))
    assert isinstance(result, Rejected) and result.code == "protocol"
    assert words in result.message
    with pytest.raises(ProtocolError):
        dcrond.store.unwrap(result)
    assert store.dump(data_only=True) == before
    with pytest.raises(ProtocolError):
        decode(data)


def test_a_bad_value_in_a_well_formed_command_is_an_invalid_request() -> None:
    data = msgpack.packb(
        ["pause_job", {"name": "j", "now": 5, "actor": "a", "session": "s", "seq": 1}]
    )
    with pytest.raises(InvalidRequest, match="now: 5 is not allowed; give integer milliseconds"):
        decode(data)


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_decoding_random_bytes_never_fails_otherwise(data: bytes) -> None:
    with contextlib.suppress(ProtocolError, InvalidRequest):
        decode(data)


def test_every_command_survives_encoding(p: Proposer) -> None:
    commands = [
        _create(p, "j"),
        CreateJob(
            job=JobSpec(
                name="s",
                schedule="@every 30s",
                script=Script("0" * 64, 3),
                interpreter="python",
                args=("-v",),
                env={"A": "b"},
                working_dir="/srv",
                user="backup",
                timeout=1.5,
                retries=2,
                backoff=0.5,
                backoff_multiplier=1.5,
                concurrency="forbid",
                catch_up="all",
                catch_up_limit=3,
                tags={"zone": "eu"},
                after=("j",),
                paused=True,
                description="d",
                metadata={"owner": "ops"},
            ),
            **p.common(),
        ),
        UpdateJob(name="j", changes={"script": {"sha256": "1" * 64, "size": 1}}, **p.common()),
        DeleteJob(name="j", **p.common(acked=0)),
        RunFinished(
            run_id=make_run_id("j", T0),
            attempt=2,
            state="killed",
            signal=15,
            finished_at=T0 + 1,
            started_at=T0,
            log_path="l",
            truncated=True,
            **p.common(),
        ),
    ]
    for cmd in commands:
        assert decode(cmd.encode()) == cmd
    second = commands[1]
    assert isinstance(second, CreateJob) and second.job.after == ("j",)


def test_apply_many_commits_a_batch_with_each_entry_on_its_own(
    p: Proposer, store: JobStore
) -> None:
    entries = [
        Entry(term=1, index=1, data=_create(p, "a").encode()),
        Entry(term=1, index=2, data=_create(p, "a").encode()),  # a duplicate: refused alone
        Entry(term=1, index=3, kind=EntryKind.NOOP),
        Entry(term=2, index=4, data=_create(p, "b").encode()),
    ]
    results = store.apply_many(entries)
    assert [type(r).__name__ for r in results] == ["Applied", "Rejected", "NoneType", "Applied"]
    assert [j["name"] for j in store.list_jobs()] == ["a", "b"]
    assert (store.applied_index, store.applied_term) == (4, 2)


def _busy_store(p: Proposer) -> None:
    p.create("a", retries=1)
    p.create("b", after=["a"])
    p.ok(UpdateJob(name="b", changes={"tags": {"k": "v"}}, **p.common()))
    run_id = p.schedule_run("a")
    p.ok(
        RunFinished(
            run_id=run_id, attempt=1, state="failed", exit_code=2, finished_at=T0, **p.common()
        )
    )


def test_snapshot_restored_on_a_fresh_store_equals_the_original(
    p: Proposer, store: JobStore, tmp_path: Path
) -> None:
    _busy_store(p)
    data = store.snapshot()
    with JobStore.open(tmp_path / "fresh.db") as fresh:
        fresh.restore(data, store.applied_index)
        assert fresh.dump() == store.dump()
        assert (fresh.applied_index, fresh.applied_term) == (store.applied_index, 1)
        assert fresh.list_runs() == store.list_runs()
        # and it goes on applying from there, like the original
        for s in (store, fresh):
            q = Proposer(s)
            q.seq, q.clock = p.seq, p.clock
            q.ok(PauseJob(name="a", **q.common()))
        assert fresh.dump() == store.dump()
    with JobStore.open(tmp_path / "fresh.db") as reopened:
        assert reopened.dump() == store.dump()


def test_restore_replaces_whatever_the_store_held(
    p: Proposer, store: JobStore, tmp_path: Path
) -> None:
    _busy_store(p)
    with JobStore.open(tmp_path / "other.db") as other:
        Proposer(other).create("zzz")
        other.restore(store.snapshot(), store.applied_index)
        assert [j["name"] for j in other.list_jobs()] == ["a", "b"]


def test_restore_refuses_a_wrong_index_or_garbage_and_changes_nothing(
    p: Proposer, store: JobStore
) -> None:
    _busy_store(p)
    data = store.snapshot()
    dump = store.dump()
    with pytest.raises(StorageError, match="holds applied index"):
        store.restore(data, store.applied_index + 1)
    with pytest.raises(StorageError):
        store.restore(b"not a database" * 100, 5)
    with pytest.raises(StorageError):
        store.restore(data[: len(data) // 2], store.applied_index)
    assert store.dump() == dump


def test_opening_a_file_that_is_not_a_job_table_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"hello" * 1000)
    with pytest.raises(StorageError, match="cannot open job table"):
        JobStore.open(path)


def test_statistics_count_what_happened(p: Proposer, store: JobStore) -> None:
    _busy_store(p)
    p.apply(PauseJob(name="nope", **p.common()))
    stats = store.statistics()
    assert (stats.jobs, stats.runs, stats.rejected) == (2, 1, 1)
    assert stats.applied == stats.applied_index == 6


def test_the_public_surface_is_what_all_says() -> None:
    for name in dcrond.store.__all__:
        assert hasattr(dcrond.store, name), name
    assert "JobStore" in dcrond.store.__all__


def test_the_store_is_what_the_raft_driver_applies_to(store: JobStore) -> None:
    from dcrond.raft._node import StateMachine

    machine: StateMachine = store  # checked by mypy; the driver needs nothing else
    assert machine.applied_index == 0


def test_a_batch_that_fails_midway_leaves_nothing_behind(p: Proposer, store: JobStore) -> None:
    p.create("a")
    dump = store.dump()
    entries = [
        Entry(term=1, index=2, data=_create(p, "b").encode()),
        Entry(term=1, index=4, kind=EntryKind.NOOP),  # a gap: the driver has a bug
    ]
    with pytest.raises(ValueError, match="out of order"):
        store.apply_many(entries)
    assert store.dump() == dump
    assert store.applied_index == 1
    assert isinstance(store.apply(entries[0]), Applied)  # and the store goes on


_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
specs = st.builds(
    JobSpec,
    name=st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True),
    schedule=st.sampled_from(["@hourly", "*/7 * * * *", "@every 45s", "0 0 * * 1-5"]),
    timezone=st.sampled_from(["UTC", "Europe/Berlin", "Australia/Lord_Howe"]),
    command=st.just("run it"),
    args=st.lists(_text, max_size=3).map(tuple),
    env=st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True), _text, max_size=3),
    timeout=st.none() | st.integers(1, 86400) | st.floats(0.001, 86400),
    retries=st.integers(0, 100),
    backoff=st.integers(0, 600) | st.floats(0, 600),
    concurrency=st.sampled_from(["allow", "forbid", "replace"]),
    tags=st.dictionaries(st.from_regex(r"[a-z][a-z/.-]{0,8}", fullmatch=True), _text, max_size=3),
    paused=st.booleans(),
    description=_text,
)


@given(specs, st.integers(1, 1 << 40), st.integers(0, 3))
@settings(max_examples=150, deadline=None)
def test_any_valid_command_decodes_to_itself(spec: JobSpec, seq: int, lag: int) -> None:
    common: dict[str, Any] = {"now": T0 + seq, "actor": "a", "session": "s", "seq": seq}
    cmd = CreateJob(job=spec, acked=max(0, seq - 1 - lag), **common)
    assert decode(cmd.encode()) == cmd
    assert JobSpec.from_wire(spec.to_wire()) == spec
