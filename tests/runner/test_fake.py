"""The fake runner obeys the real runner's rules, deterministically, in simulated time."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio
import trio.testing

from dcrond.errors import InvalidRequest, NotFound
from dcrond.runner import LocalProcessRunner, Outcome, ProcessRunner, RunHandle, RunSpec
from dcrond.testing._fakerunner import Behaviour, FakeHost, FakeProcessRunner


def test_both_runners_fit_the_seam(tmp_path: Path) -> None:
    local = LocalProcessRunner(tmp_path)
    runners: list[ProcessRunner] = [FakeProcessRunner(), local]
    assert len(runners) == 2  # the point is that mypy accepts both
    local.close()


async def test_exit_code_after_simulated_seconds(autojump_clock: trio.testing.MockClock) -> None:
    runner = FakeProcessRunner(behaviour=Behaviour.exits(3, after=5, output=b"hi\n"))
    res = await runner.run(RunSpec("j@1", command="x"))
    assert res.state is Outcome.FAILED and res.exit_code == 3
    assert res.finished_at - res.started_at == 5
    assert trio.current_time() == 5
    assert [c async for c in runner.follow("j@1", 1)] == [b"hi\n"]
    assert runner.statistics().failed == 1


async def test_death_by_someone_elses_signal_fails(autojump_clock: trio.testing.MockClock) -> None:
    runner = FakeProcessRunner(behaviour=Behaviour.dies(signal.SIGSEGV, after=1))
    res = await runner.run(RunSpec("j@1", command="x"))
    assert (res.state, res.exit_code, res.signal) == (Outcome.FAILED, None, signal.SIGSEGV)


@pytest.mark.parametrize(
    ("ignores_term", "ends_at", "sig"), [(False, 10, signal.SIGTERM), (True, 13, signal.SIGKILL)]
)
async def test_hang_times_out_with_sigterm_then_sigkill_after_the_grace(
    autojump_clock: trio.testing.MockClock, ignores_term: bool, ends_at: float, sig: int
) -> None:
    runner = FakeProcessRunner(behaviour=Behaviour.hangs(ignores_term=ignores_term))
    res = await runner.run(RunSpec("j@1", command="x", timeout=10, kill_grace=3))
    assert res.state is Outcome.TIMED_OUT and res.signal == sig
    assert trio.current_time() == ends_at


async def test_kill_on_request(autojump_clock: trio.testing.MockClock) -> None:
    runner = FakeProcessRunner(behaviour=Behaviour.hangs())
    async with trio.open_nursery() as nursery:
        handle: RunHandle = await nursery.start(runner.run, RunSpec("j@1", command="x"))
        with pytest.raises(InvalidRequest):
            await runner.run(RunSpec("j@1", command="x"))
        await trio.sleep(2)
        assert runner.statistics().running == 1
        assert runner.kill("j@1")
    assert runner.statistics().killed == 1
    assert handle.run_id == "j@1" and not runner.kill("j@1")


async def test_output_cap_and_trailer_match_the_real_runner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runner = FakeProcessRunner(behaviour=Behaviour.exits(0, output=b"0123456789\n"))
    res = await runner.run(RunSpec("j@1", command="x", output_cap=4))
    assert res.truncated and (res.output_bytes, res.discarded_bytes) == (4, 7)
    chunks = [c async for c in runner.follow("j@1", 1)]
    assert b"".join(chunks) == b"0123[dcrond: output truncated after 4 bytes; 7 bytes discarded]\n"
    with pytest.raises(NotFound):
        runner.follow("j@2", 1)


async def test_restart_readopts_running_attempts_and_reports_ended_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def behaviour(spec: RunSpec) -> Behaviour:
        return {
            "long": Behaviour.exits(0, after=100),
            "short": Behaviour.exits(4, after=5),
            "silent": Behaviour(exit_code=0, after=5, records_status=False),
        }[spec.job]

    host = FakeHost()
    first = FakeProcessRunner(host, behaviour)
    async with trio.open_nursery() as nursery:
        for job in ("long", "short", "silent"):
            await nursery.start(first.run, RunSpec(f"{job}@1", command="x"))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()  # the daemon dies; the processes go on
    await trio.sleep(9)
    second = FakeProcessRunner(host, behaviour)
    found = {r.run_id: r for r in second.recover()}
    assert found["short@1"].result is not None
    assert found["short@1"].result.exit_code == 4 and found["short@1"].result.adopted
    assert found["silent@1"].result is not None
    assert found["silent@1"].result.state is Outcome.LOST
    handle = found["long@1"].handle
    assert handle is not None and handle.adopted
    res = await second.supervise(handle)
    assert res.state is Outcome.SUCCEEDED and res.adopted and trio.current_time() == 100
    assert second.recover() == []


def test_host_core_steps_without_trio() -> None:
    host = FakeHost()
    host.start(RunSpec("a@1", command="x"), Behaviour.exits(0, after=3), now=0)
    host.start(RunSpec("b@1", command="x", timeout=2), Behaviour.hangs(), now=0)
    assert host.next_event() == 2
    [b] = host.advance(2)
    assert (b.run_id, b.state) == ("b@1", Outcome.TIMED_OUT)
    assert host.next_event() == 3
    assert host.request_stop("a@1", now=2.5)
    [a] = host.advance(10)
    assert (a.run_id, a.state, a.signal) == ("a@1", Outcome.KILLED, signal.SIGTERM)
