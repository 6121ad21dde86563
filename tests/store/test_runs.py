"""Runs and attempts: the transition tables, retries, late reports, skips, and pruning."""

from __future__ import annotations

from typing import Any

import pytest

from dcrond.errors import AlreadyExists, InvalidRequest, NotFound
from dcrond.store import (
    ATTEMPT_TRANSITIONS,
    FINAL_STATES,
    RUN_TRANSITIONS,
    Command,
    JobSpec,
    JobStore,
    PauseJob,
    PruneRuns,
    Rejected,
    RunFinished,
    RunLost,
    RunPlaced,
    RunRefused,
    RunScheduled,
    RunSkipped,
    RunStarted,
    RunState,
    UpdateJob,
    make_run_id,
    run_host,
    unwrap,
)
from tests.store.conftest import T0, Proposer


def test_the_tables_cover_every_state_and_final_states_are_final() -> None:
    assert set(RUN_TRANSITIONS) == set(RunState)
    assert set(ATTEMPT_TRANSITIONS) == set(RunState)
    final = {"succeeded", "failed", "timed_out", "killed", "skipped", "lost"}
    assert set(FINAL_STATES) == final
    for state in FINAL_STATES:
        assert RUN_TRANSITIONS[state] == {}
        if state != RunState.LOST:  # a late report may correct a lost attempt, nothing else
            assert ATTEMPT_TRANSITIONS[state] == {}


def test_a_run_goes_scheduled_running_succeeded(p: Proposer, store: JobStore) -> None:
    p.create("backup")
    run_id = p.schedule_run("backup", at=T0 + 3_600_000)
    assert run_id == "backup@2026-01-01T01:00:00Z"
    run = p.run(
        RunStarted(
            run_id=run_id, attempt=1, host="h1", pid=4242, started_at=T0 + 3_600_002, **p.common()
        )
    )
    assert (run["state"], run["host"], run["started_at"]) == (
        "running",
        "h1",
        "2026-01-01T01:00:00.002Z",
    )
    run = p.run(
        RunFinished(
            run_id=run_id,
            attempt=1,
            state="succeeded",
            exit_code=0,
            finished_at=T0 + 3_601_500,
            log_path="logs/backup/1.log",
            truncated=True,
            **p.common(),
        )
    )
    assert run == store.get_run(run_id)
    assert {k: run[k] for k in ("id", "job", "scheduled_at", "state", "host", "exit_code")} == {
        "id": run_id,
        "job": "backup",
        "scheduled_at": "2026-01-01T01:00:00Z",
        "state": "succeeded",
        "host": "h1",
        "exit_code": 0,
    }
    assert run["finished_at"] == "2026-01-01T01:00:01.500Z"
    [attempt] = run["attempts"]
    assert attempt["pid"] == 4242
    assert attempt["log_path"] == "logs/backup/1.log"
    assert attempt["truncated"] is True
    assert attempt["state"] == "succeeded"


class RunDriver:
    """Applies a little event language to one run: 'start 1', 'finish 2 failed', 'lost 1'..."""

    def __init__(self, p: Proposer, retries: int) -> None:
        self.p = p
        p.create("j", retries=retries, backoff=10, backoff_multiplier=2)
        self.run_id = p.schedule_run("j")

    def command(self, step: str) -> Command:
        p, words = self.p, step.split()
        if words[0] == "claim":
            return RunScheduled(
                run_id=self.run_id,
                job="j",
                job_version=1,
                scheduled_at=T0,
                host="h2",
                attempt=int(words[1]),
                reason="retry",
                **p.common(),
            )
        if words[0] == "start":
            host = words[3] if len(words) > 3 else None
            return RunStarted(
                run_id=self.run_id,
                attempt=int(words[1]),
                host=host or ("h1" if words[1] == "1" else "h2"),
                pid=100,
                started_at=p.clock,
                **p.common(),
            )
        if words[0] == "finish":
            state = words[2]
            code = {"succeeded": 0, "failed": 1}.get(state)
            signal = 9 if state in ("killed", "timed_out") else None
            return RunFinished(
                run_id=self.run_id,
                attempt=int(words[1]),
                state=state,
                exit_code=code,
                signal=signal,
                finished_at=p.clock,
                **p.common(),
            )
        if words[0] == "lost":
            return RunLost(
                run_id=self.run_id, attempt=int(words[1]), reason="host died", **p.common()
            )
        assert words[0] == "skip"
        return RunSkipped(run_id=self.run_id, reason="concurrency forbid", **p.common())


# (retries, steps, run state after them, attempt states; a step ending in " !code" is refused)
RUN_CASES: list[tuple[int, list[str], str, list[str]]] = [
    (0, ["start 1", "finish 1 succeeded"], "succeeded", ["succeeded"]),
    (0, ["start 1", "finish 1 failed"], "failed", ["failed"]),
    (0, ["start 1", "finish 1 timed_out"], "timed_out", ["timed_out"]),
    (0, ["start 1", "finish 1 killed"], "killed", ["killed"]),
    (0, ["finish 1 killed"], "killed", ["killed"]),  # killed before it started
    (0, ["finish 1 failed"], "failed", ["failed"]),  # could not be spawned
    (0, ["skip"], "skipped", ["skipped"]),
    (0, ["start 1", "lost 1"], "lost", ["lost"]),
    (1, ["start 1", "finish 1 failed"], "scheduled", ["failed"]),  # waiting for a retry
    (1, ["start 1", "finish 1 timed_out"], "scheduled", ["timed_out"]),
    (1, ["start 1", "lost 1"], "scheduled", ["lost"]),
    (1, ["start 1", "finish 1 killed"], "killed", ["killed"]),  # a kill is never retried
    (
        1,
        ["start 1", "finish 1 failed", "claim 2", "start 2", "finish 2 succeeded"],
        "succeeded",
        ["failed", "succeeded"],
    ),
    (
        1,
        ["start 1", "finish 1 failed", "claim 2", "start 2", "finish 2 failed"],
        "failed",
        ["failed", "failed"],
    ),
    # a late report of a superseded attempt is recorded on it; the run's outcome stands
    (
        1,
        ["start 1", "lost 1", "claim 2", "start 2", "finish 2 failed", "finish 1 succeeded"],
        "failed",
        ["succeeded", "failed"],
    ),
    (
        1,
        ["start 1", "lost 1", "claim 2", "start 2", "finish 1 succeeded", "finish 2 succeeded"],
        "succeeded",
        ["succeeded", "succeeded"],
    ),
    # a late success of the lost current attempt ends the wait for a retry
    (
        1,
        ["start 1", "lost 1", "finish 1 succeeded", "claim 2 !conflict"],
        "succeeded",
        ["succeeded"],
    ),
    # a final state is final, even when a late report says the lost attempt succeeded
    (0, ["start 1", "lost 1", "finish 1 succeeded"], "lost", ["succeeded"]),
    (0, ["start 1", "start 1 !conflict"], "running", ["running"]),
    (
        0,
        ["start 1", "finish 1 succeeded", "finish 1 failed !conflict"],
        "succeeded",
        ["succeeded"],
    ),
    (0, ["start 1", "finish 1 succeeded", "skip !conflict"], "succeeded", ["succeeded"]),
    (0, ["start 1", "finish 1 succeeded", "lost 1 !conflict"], "succeeded", ["succeeded"]),
    (0, ["start 1", "lost 1", "lost 1 !conflict"], "lost", ["lost"]),
    (0, ["start 1", "skip !conflict"], "running", ["running"]),
    (0, ["claim 2 !conflict"], "scheduled", ["scheduled"]),
    (0, ["start 1 on h2 !conflict"], "scheduled", ["scheduled"]),
    (0, ["finish 2 succeeded !not_found"], "scheduled", ["scheduled"]),
    (1, ["start 1", "finish 1 failed", "start 1 !conflict"], "scheduled", ["failed"]),
    (1, ["start 1", "finish 1 failed", "skip"], "skipped", ["failed"]),  # a cancelled retry
    (2, ["start 1", "finish 1 failed", "claim 3 !conflict"], "scheduled", ["failed"]),
    (
        1,
        ["start 1", "finish 1 failed", "claim 2", "claim 3 !conflict"],
        "scheduled",
        ["failed", "scheduled"],
    ),
]


@pytest.mark.parametrize(
    "case", RUN_CASES, ids=[" > ".join(c[1]) + f" (retries={c[0]})" for c in RUN_CASES]
)
def test_run_transitions(
    p: Proposer, store: JobStore, case: tuple[int, list[str], str, list[str]]
) -> None:
    retries, steps, run_state, attempt_states = case
    driver = RunDriver(p, retries)
    for step in steps:
        text, _, refusal = step.partition(" !")
        before = store.dump(data_only=True)
        result = p.apply(driver.command(text))
        if refusal:
            assert isinstance(result, Rejected), step
            assert result.code == refusal, result
            assert store.dump(data_only=True) == before, step
        else:
            assert not isinstance(result, Rejected), (step, result)
    run = store.get_run(driver.run_id)
    assert run["state"] == run_state
    assert [a["state"] for a in run["attempts"]] == attempt_states


def test_retries_back_off_and_record_when_the_next_attempt_is_due(p: Proposer) -> None:
    driver = RunDriver(p, retries=3)
    p.ok(driver.command("start 1"))
    run = p.run(driver.command("finish 1 failed"))
    assert run["state"] == "scheduled"
    assert run["exit_code"] == 1
    assert run["retry_at"] == "2026-01-01T00:00:14Z"  # failed at :04, backoff 10 s
    assert run["max_attempts"] == 4
    run = p.run(driver.command("claim 2"))
    assert (run["attempt"], run["host"], run["retry_at"]) == (2, "h2", None)
    p.ok(driver.command("start 2"))
    run = p.run(driver.command("finish 2 failed"))
    assert run["retry_at"] == "2026-01-01T00:00:27Z"  # failed at :07, then 10 s x 2


def test_a_late_report_is_marked_late(p: Proposer, store: JobStore) -> None:
    driver = RunDriver(p, retries=1)
    for step in ("start 1", "lost 1", "claim 2", "finish 1 failed"):
        p.ok(driver.command(step))
    first, second = store.get_run(driver.run_id)["attempts"]
    assert (first["state"], first["late"], first["message"]) == ("failed", True, None)
    assert (second["state"], second["late"]) == ("scheduled", False)


def test_claiming_a_run_twice_is_already_exists(p: Proposer, store: JobStore) -> None:
    p.create("j")
    p.schedule_run("j")
    with pytest.raises(AlreadyExists, match=r"run 'j@2026-01-01T00:00:00Z' already exists"):
        p.schedule_run("j")


def test_a_run_of_an_old_version_or_a_paused_job_is_refused(p: Proposer) -> None:
    p.create("j")
    p.ok(UpdateJob(name="j", changes={"timeout": 5}, **p.common()))
    result = p.apply(
        RunScheduled(
            run_id=make_run_id("j", T0),
            job="j",
            job_version=1,
            scheduled_at=T0,
            host=None,
            **p.common(),
        )
    )
    assert isinstance(result, Rejected) and result.code == "conflict"
    assert "version 2, not 1" in result.message
    p.ok(PauseJob(name="j", **p.common()))
    paused_at = p.clock
    with pytest.raises(InvalidRequest, match="paused; only a trigger can run it"):
        p.schedule_run("j", at=paused_at + 1000)  # an instant after the pause
    # an instant due before the pause may still be claimed (a leader that was behind)
    assert p.schedule_run("j", at=paused_at - 1000) == make_run_id("j", paused_at - 1000)
    assert p.schedule_run("j", reason="trigger", host=None) == "j@2026-01-01T00:00:00Z"


def test_a_run_of_a_missing_job_is_not_found(p: Proposer) -> None:
    with pytest.raises(NotFound, match="no job named 'ghost'"):
        p.ok(
            RunScheduled(
                run_id=make_run_id("ghost", T0),
                job="ghost",
                job_version=1,
                scheduled_at=T0,
                host=None,
                **p.common(),
            )
        )


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"run_id": "j@2026-01-01T00:00:01Z"}, "run_id: 'j@2026-01-01T00:00:01Z' is not allowed"),
        ({"scheduled_at": 1_767_225_600}, "scheduled_at:"),  # seconds, not milliseconds
        ({"attempt": 1, "reason": "retry"}, "reason:"),
        ({"attempt": 2, "reason": "schedule"}, "reason:"),
        ({"reason": "whim"}, "reason:"),
        ({"host": ""}, "host:"),
        ({"job_version": 0}, "job_version:"),
    ],
)
def test_a_bad_run_scheduled_is_refused_by_name(fields: dict[str, Any], words: str) -> None:
    values: dict[str, Any] = {
        "run_id": make_run_id("j", T0),
        "job": "j",
        "job_version": 1,
        "scheduled_at": T0,
        "host": "h1",
        "now": T0,
        "actor": "scheduler@h1",
        "session": "s",
        "seq": 1,
    }
    values.update(fields)
    with pytest.raises(InvalidRequest) as err:
        RunScheduled(**values)
    assert words in str(err.value)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"state": "succeeded", "exit_code": 1}, "exit_code:"),
        ({"state": "failed", "exit_code": 0}, "exit_code:"),
        ({"state": "failed", "exit_code": 1, "signal": 9}, "signal:"),
        ({"state": "lost", "exit_code": 1}, "state:"),
        ({"state": "running"}, "state: 'running' is not allowed; use one of succeeded"),
        ({"state": "failed", "exit_code": 256}, "exit_code:"),
        ({"state": "killed", "signal": 9, "started_at": T0 + 5000}, "started_at:"),
        ({"run_id": "not-a-run-id", "state": "lost"}, "run_id:"),
    ],
)
def test_a_bad_run_finished_is_refused_by_name(fields: dict[str, Any], words: str) -> None:
    values: dict[str, Any] = {
        "run_id": make_run_id("j", T0),
        "attempt": 1,
        "finished_at": T0 + 1000,
        "now": T0,
        "actor": "h1",
        "session": "s",
        "seq": 1,
    }
    values.update(fields)
    with pytest.raises(InvalidRequest) as err:
        RunFinished(**values)
    assert words in str(err.value)


def test_list_runs_is_newest_first_and_filters_by_job_and_state(
    p: Proposer, store: JobStore
) -> None:
    p.create("a")
    p.create("b")
    for i in range(3):
        p.schedule_run("a", at=T0 + i * 60_000)
    p.schedule_run("b", at=T0 + 30_000)
    first = make_run_id("a", T0)
    p.ok(RunStarted(run_id=first, attempt=1, host="h1", pid=7, started_at=T0, **p.common()))
    assert [r["id"] for r in store.list_runs()] == [
        "a@2026-01-01T00:02:00Z",
        "a@2026-01-01T00:01:00Z",
        "b@2026-01-01T00:00:30Z",
        "a@2026-01-01T00:00:00Z",
    ]
    assert [r["id"] for r in store.list_runs(job="b")] == ["b@2026-01-01T00:00:30Z"]
    assert [r["id"] for r in store.list_runs(state="running")] == [first]
    assert len(store.list_runs(job="a", limit=2)) == 2
    assert store.list_runs(job="a", state="failed") == []
    with pytest.raises(InvalidRequest, match="state: 'done' is not allowed"):
        store.list_runs(state="done")
    with pytest.raises(NotFound):
        store.get_run("a@2030-01-01T00:00:00Z")


def _finished_run(p: Proposer, at: int, state: str = "succeeded") -> str:
    run_id = p.schedule_run("j", at=at)
    p.ok(
        RunFinished(
            run_id=run_id,
            attempt=1,
            state=state,
            exit_code=0 if state == "succeeded" else 1,
            finished_at=at + 1000,
            log_path=f"logs/j/{run_id}/1.log",
            **p.common(),
        )
    )
    return run_id


def test_prune_keeps_the_newest_runs_and_returns_the_logs_to_delete(
    p: Proposer, store: JobStore
) -> None:
    p.create("j")
    ids = [_finished_run(p, T0 + i * 60_000) for i in range(5)]
    running = p.schedule_run("j", at=T0 - 60_000)  # older, but not ended: never pruned
    result = p.ok(PruneRuns(job="j", keep_count=2, **p.common()))
    assert result["runs"] == ids[:3]
    assert result["log_paths"] == [f"logs/j/{r}/1.log" for r in ids[:3]]
    assert result["more"] is False
    assert [r["id"] for r in store.list_runs(job="j")] == [ids[4], ids[3], running]


def test_prune_by_age_and_in_limited_steps(p: Proposer, store: JobStore) -> None:
    p.create("j")
    ids = [_finished_run(p, T0 + i * 3_600_000) for i in range(4)]  # finished hourly
    now = T0 + 4 * 3_600_000
    result = p.ok(PruneRuns(job="j", max_age=2 * 3600 + 60, limit=1, **p.common(now=now)))
    assert (result["runs"], result["more"]) == ([ids[0]], True)
    result = p.ok(PruneRuns(job="j", max_age=2 * 3600 + 60, **p.common(now=now)))
    assert (result["runs"], result["more"]) == ([ids[1]], False)
    assert [r["id"] for r in store.list_runs(job="j")] == [ids[3], ids[2]]
    with pytest.raises(InvalidRequest, match="give at least one limit"):
        PruneRuns(job="j", **p.common())


def unwrap_ok(result: Any) -> dict[str, Any]:
    value: dict[str, Any] = unwrap(result)
    return value


def test_a_job_on_several_hosts_has_one_run_per_host_and_the_ids_say_so(p: Proposer) -> None:
    """``on`` all or N: runs are ``job@T~host`` (host as placed); a one-host job's are ``job@T``."""
    p.create("everywhere", on="all")
    p.create("one")

    def claim(job: str, run_id: str, host: str | None, at: int = T0) -> Any:
        return p.apply(
            RunScheduled(
                run_id=run_id, job=job, job_version=1, scheduled_at=at, host=host, **p.common()
            )
        )

    for host in ("h1", "h2"):
        run = unwrap_ok(claim("everywhere", make_run_id("everywhere", T0, host), host))
        assert run["id"] == f"everywhere@2026-01-01T00:00:00Z~{host}"
        assert run_host(run["id"]) == host
    # the host in the id must be the one placed
    with pytest.raises(InvalidRequest, match="on host h3"):
        claim("everywhere", make_run_id("everywhere", T0, "h1"), "h3")
    # a per-host job's run names its host; a one-host job's never does
    refused = claim("everywhere", make_run_id("everywhere", T0 + 1000), "h1", T0 + 1000)
    assert isinstance(refused, Rejected) and "job@instant~host" in refused.message
    refused = claim("one", make_run_id("one", T0, "h1"), "h1")
    assert isinstance(refused, Rejected) and "one host per instant" in refused.message
    # with no host at all (nobody could take it) the plain id records the instant
    nowhere = claim("everywhere", make_run_id("everywhere", T0 + 2000), None, T0 + 2000)
    assert unwrap_ok(nowhere)["host"] is None


def test_on_takes_any_all_or_a_number_of_hosts(p: Proposer) -> None:
    for good in ("any", "all", 1, 3, 1000):
        assert JobSpec(name="j", schedule="@hourly", command="x", on=good).on == good
    bad: Any
    for bad in ("some", 0, -1, 1001, True, "2", 2.0):
        with pytest.raises(InvalidRequest, match="on:"):
            JobSpec(name="j", schedule="@hourly", command="x", on=bad)


def test_a_host_refuses_a_claim_it_has_no_slot_for_and_the_leader_places_it_again(
    p: Proposer,
) -> None:
    p.create("job")
    run_id = p.schedule_run("job", host="h1")
    # only the host it is placed on may refuse, and only before the start
    refused = p.apply(RunRefused(run_id=run_id, attempt=1, host="h2", reason="full", **p.common()))
    assert isinstance(refused, Rejected) and "not waiting to start on 'h2'" in refused.message
    run = p.run(
        RunRefused(run_id=run_id, attempt=1, host="h1", reason="no free slot", **p.common())
    )
    assert run["host"] is None and run["state"] == "scheduled"
    assert run["attempts"][0]["message"] == "h1 refused it: no free slot"
    # placed again (elsewhere, or back), once
    run = p.run(RunPlaced(run_id=run_id, attempt=1, host="h2", **p.common()))
    assert (run["host"], run["attempts"][0]["host"]) == ("h2", "h2")
    again = p.apply(RunPlaced(run_id=run_id, attempt=1, host="h3", **p.common()))
    assert isinstance(again, Rejected) and "on 'h2'" in again.message
    # a started attempt cannot be refused any more
    p.ok(RunStarted(run_id=run_id, attempt=1, host="h2", pid=7, started_at=T0, **p.common()))
    late = p.apply(RunRefused(run_id=run_id, attempt=1, host="h2", reason="x", **p.common()))
    assert isinstance(late, Rejected)


def test_a_per_host_run_is_placed_only_on_its_own_host(p: Proposer) -> None:
    p.create("everywhere", on="all")
    run_id = make_run_id("everywhere", T0, "h1")
    p.ok(
        RunScheduled(
            run_id=run_id, job="everywhere", job_version=1, scheduled_at=T0, host="h1", **p.common()
        )
    )
    p.ok(RunRefused(run_id=run_id, attempt=1, host="h1", reason="full", **p.common()))
    wrong = p.apply(RunPlaced(run_id=run_id, attempt=1, host="h2", **p.common()))
    assert isinstance(wrong, Rejected) and "belongs to host h1" in wrong.message
    assert p.ok(RunPlaced(run_id=run_id, attempt=1, host="h1", **p.common()))["host"] == "h1"
