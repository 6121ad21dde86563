"""The checkers are worth trusting: each one notices the fault it exists for.

One calm run gives a correct result; each test injects one fault into a copy
of what it observed (a doubled run, a skipped instant, a forbid overlap, ...)
and asserts that the right checker reports it -- and that the exclusions
(pauses, catch-up after a leaderless gap) excuse only what they should.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest

from dcrond.testing._enginecheck import Observed, check_all
from dcrond.testing._enginehost import BASE, ProcRecord
from dcrond.testing._enginesim import EngineSimConfig, simulate_engines


@pytest.fixture(scope="module")
def calm() -> Observed:
    result = simulate_engines(EngineSimConfig(seed=11, hosts=3, window=20.0, faults=False))
    found = {k: v for k, v in result.violations.items() if v and k != "d_tags"}
    assert not found, result.report()
    return result.observed


def _copy(obs: Observed) -> Observed:
    return copy.deepcopy(obs)


def _proc(obs: Observed, job: str) -> ProcRecord:
    return next(p for p in obs.processes if p.run_id.startswith(f"{job}@") and p.end)


def test_a_doubled_run_is_caught(calm: Observed) -> None:
    obs = _copy(calm)
    p = _proc(obs, "tick")
    other = next(h for h in obs.host_tags if h != p.host)
    obs.processes.append(dataclasses.replace(p, host=other, start=p.start + 0.01))
    found = check_all(obs)["b_one_execution"]
    assert any("started twice" in v for v in found)
    assert any("ran at the same time" in v for v in found)
    assert any("the table says" in v for v in found)


def test_an_unrecorded_process_is_caught(calm: Observed) -> None:
    obs = _copy(calm)
    p = _proc(obs, "tick")
    obs.processes.append(dataclasses.replace(p, attempt=7, start=p.end or 0.0))
    assert any("not in the table" in v for v in check_all(obs)["b_one_execution"])


def test_a_skipped_instant_is_caught(calm: Observed) -> None:
    obs = _copy(calm)
    victim = next(
        r for r in obs.runs.values() if r.job == "tick" and r.instant < obs.window_end - 2
    )
    del obs.runs[victim.run_id]
    found = check_all(obs)["a_exactly_one"]
    assert any(v.startswith("tick@") and "no run" in v for v in found), found


def test_a_stuck_run_is_caught(calm: Observed) -> None:
    obs = _copy(calm)
    victim = next(r for r in obs.runs.values() if r.job == "tick")
    obs.runs[victim.run_id] = dataclasses.replace(victim, state="running")
    assert any("stuck running" in v for v in check_all(obs)["a_exactly_one"])


def test_a_run_off_the_schedule_is_caught(calm: Observed) -> None:
    obs = _copy(calm)
    victim = next(r for r in obs.runs.values() if r.job == "b0")
    moved = dataclasses.replace(victim, run_id="b0@moved", instant=victim.instant + 1)
    obs.runs[moved.run_id] = moved
    assert any("not due" in v for v in check_all(obs)["a_exactly_one"])


def test_a_pause_excuses_the_instants_it_covers_and_no_others(calm: Observed) -> None:
    obs = _copy(calm)
    victim = next(
        r for r in obs.runs.values() if r.job == "tick" and r.instant < obs.window_end - 5
    )
    del obs.runs[victim.run_id]
    obs.pauses["tick"] = [(victim.instant - 0.5, victim.instant + 0.5)]
    assert check_all(obs)["a_exactly_one"] == []
    obs.pauses["tick"] = [(victim.instant - 5.0, victim.instant - 2.0)]
    assert check_all(obs)["a_exactly_one"]


def test_a_late_committed_create_excuses_only_instants_before_its_commit_less_grace(
    calm: Observed,
) -> None:
    obs = _copy(calm)
    victim = next(
        r for r in obs.runs.values() if r.job == "tick" and r.instant < obs.window_end - 8
    )
    del obs.runs[victim.run_id]
    obs.created_acked["tick"] = victim.instant + obs.grace + 0.5  # committed after it, less grace
    assert check_all(obs)["a_exactly_one"] == []
    obs.created_acked["tick"] = victim.instant + obs.grace - 0.5  # within the grace: still due
    assert check_all(obs)["a_exactly_one"]


def test_a_leaderless_gap_excuses_only_what_catch_up_drops(calm: Observed) -> None:
    obs = _copy(calm)
    victim = next(
        r for r in obs.runs.values() if r.job == "tick" and r.instant < obs.window_end - 5
    )
    del obs.runs[victim.run_id]
    t = victim.instant - BASE
    others = [c for c in obs.leader_commits if not t - 1 <= c <= t + obs.grace + 1]
    # a gap longer than grace around the instant: the next leader finds it missed
    obs.leader_commits = sorted([*others, t - 0.1, t + obs.grace + 0.5])
    assert check_all(obs)["a_exactly_one"] == []
    # a gap shorter than grace: the next leader must claim it late, so it is an error
    obs.leader_commits = sorted([*others, t - 0.1, t + obs.grace - 0.5])
    assert check_all(obs)["a_exactly_one"]


def test_a_forbid_overlap_is_caught(calm: Observed) -> None:
    obs = _copy(calm)
    forbid = next(j for j in obs.jobs.values() if j.concurrency == "forbid")
    p = _proc(obs, forbid.name)
    later = next(
        r for r in obs.runs.values() if r.job == forbid.name and r.instant > p.start + BASE
    )
    obs.processes.append(
        ProcRecord(p.host, later.run_id, 1, p.start + 0.5, (p.end or p.start) + 1.0, "succeeded")
    )
    assert any("(forbid)" in v for v in check_all(obs)["c_forbid"])


def test_a_run_on_a_host_without_the_tags_is_caught(calm: Observed) -> None:
    obs = _copy(calm)
    p = _proc(obs, "db0")
    web = next(h for h, tags in obs.host_tags.items() if tags.get("role") == "web")
    db = next(h for h, tags in obs.host_tags.items() if tags.get("role") == "db")
    obs.processes = [
        dataclasses.replace(q, host=web) if q == p else q
        for q in obs.processes
        if not (q.run_id.startswith("db") and q != p)
    ]
    assert any("lacking role=db" in v for v in check_all(obs)["d_tags"])
    obs.processes = [
        dataclasses.replace(q, host=db) for q in obs.processes if q.run_id.startswith("db")
    ]
    assert check_all(obs)["d_tags"] == []


def test_a_lost_acknowledged_write_and_diverging_tables_are_caught(calm: Observed) -> None:
    obs = _copy(calm)
    host = sorted(obs.host_jobs)[0]
    job, _version, _what = obs.acked[0]
    del obs.host_jobs[host][job]
    obs.table_digests[host] = "something else"
    found = check_all(obs)["e_acknowledged"]
    assert any(f"{host} has vNone" in v for v in found)
    assert any("tables differ" in v for v in found)


def test_a_daemon_that_died_is_reported(calm: Observed) -> None:
    obs = _copy(calm)
    obs.daemon_errors.append("h1 at 3.000s: InvalidRequest: boom")
    assert check_all(obs)["f_daemon_alive"] == ["h1 at 3.000s: InvalidRequest: boom"]
