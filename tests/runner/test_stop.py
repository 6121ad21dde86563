"""Stopping: timeouts and kills reach the whole process group, SIGKILL follows SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path

import trio

from dcrond.runner import LocalProcessRunner, Outcome, RunResult, RunSpec, _procfs
from tests.runner.conftest import poll_until, read_int


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie nobody reaps counts as gone)."""
    st = _procfs.read_stat(pid)
    return st is None or st.exited


async def wait_for_file(path: Path) -> int:
    await poll_until(lambda: read_int(path) is not None)
    pid = read_int(path)
    assert pid is not None
    return pid


async def test_timeout_sends_sigterm_and_ends_as_timed_out(runner: LocalProcessRunner) -> None:
    t0 = trio.current_time()
    with trio.fail_after(10):
        res = await runner.run(RunSpec("slow@1", command="sleep 30", timeout=0.3, kill_grace=5))
    assert res.state is Outcome.TIMED_OUT
    assert res.signal == signal.SIGTERM
    assert 0.3 <= trio.current_time() - t0 < 3
    assert runner.statistics().timed_out == 1


async def test_job_that_traps_sigterm_is_sigkilled_after_the_grace(
    runner: LocalProcessRunner,
) -> None:
    cmd = "trap 'echo got TERM' TERM; while :; do sleep 0.05; done"
    t0 = trio.current_time()
    with trio.fail_after(10):
        res = await runner.run(RunSpec("stubborn@1", command=cmd, timeout=0.3, kill_grace=0.5))
    took = trio.current_time() - t0
    assert res.state is Outcome.TIMED_OUT
    assert res.signal == signal.SIGKILL
    assert 0.8 <= took < 4
    assert b"got TERM" in res.spool_path.read_bytes()


async def test_timeout_kills_the_whole_group_including_grandchildren(
    runner: LocalProcessRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild"
    cmd = f"sh -c 'sleep 300 & echo $! > {pidfile}; wait'"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            done: list[RunResult] = []

            async def attempt() -> None:
                spec = RunSpec("tree@1", command=cmd, timeout=1, kill_grace=1)
                done.append(await runner.run(spec))

            nursery.start_soon(attempt)
            grandchild = await wait_for_file(pidfile)
            assert not gone(grandchild)
    assert done[0].state is Outcome.TIMED_OUT
    assert gone(grandchild)


async def test_kill_on_request_stops_the_group_and_ends_as_killed(
    runner: LocalProcessRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild"
    cmd = f"sleep 300 & echo $! > {pidfile}; sleep 300"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            done: list[RunResult] = []

            async def attempt() -> None:
                done.append(await runner.run(RunSpec("victim@1", command=cmd, kill_grace=2)))

            nursery.start_soon(attempt)
            grandchild = await wait_for_file(pidfile)
            assert runner.kill("victim@1")
    assert done[0].state is Outcome.KILLED
    assert done[0].signal == signal.SIGTERM
    assert gone(grandchild)
    assert runner.statistics().killed == 1
    assert not runner.kill("victim@1")  # nothing left to kill


async def test_kill_of_an_unknown_run_reports_nothing_to_kill(runner: LocalProcessRunner) -> None:
    assert not runner.kill("nobody@1")


async def test_background_children_are_stopped_when_the_job_exits_normally(
    runner: LocalProcessRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "straggler"
    cmd = f"sleep 300 & echo $! > {pidfile}; echo bye"
    with trio.fail_after(10):
        res = await runner.run(RunSpec("leaver@1", command=cmd, kill_grace=2))
    assert res.state is Outcome.SUCCEEDED and res.exit_code == 0
    assert gone(int(pidfile.read_text()))


async def test_straggler_that_ignores_sigterm_is_sigkilled_after_the_grace(
    runner: LocalProcessRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "straggler"
    cmd = f"sh -c 'trap \"\" TERM; sleep 300' & echo $! > {pidfile}; sleep 0.1"
    t0 = trio.current_time()
    with trio.fail_after(10):
        res = await runner.run(RunSpec("stuck@1", command=cmd, kill_grace=0.5))
    assert res.state is Outcome.SUCCEEDED  # the job itself ended well
    assert gone(int(pidfile.read_text()))
    assert trio.current_time() - t0 >= 0.5
