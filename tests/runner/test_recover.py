"""A restart while attempts run: each is re-adopted, ends with its real outcome, or is lost."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import trio

from dcrond.runner import LocalProcessRunner, Outcome, RunHandle, RunSpec, _procfs
from tests.runner.conftest import kill_group, poll_until, reap

NewDaemon = Callable[[], LocalProcessRunner]


def printed(handle: RunHandle) -> bytes:
    """What the attempt printed so far (its spool exists from the first byte)."""
    return handle.spool_path.read_bytes() if handle.spool_path.exists() else b""


async def start_then_crash(runner: LocalProcessRunner, spec: RunSpec, ready: bytes) -> RunHandle:
    """Start an attempt, wait for ``ready`` in its output, then drop the daemon's side of it."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle: RunHandle = await nursery.start(runner.run, spec)
            try:
                await poll_until(lambda: ready in printed(handle))
            except BaseException:
                kill_group(handle.pid)  # a failing test leaves no job behind
                raise
            nursery.cancel_scope.cancel()  # the daemon dies: nothing is killed
    st = _procfs.read_stat(handle.pid)
    assert st is not None and not st.exited  # the attempt goes on without a daemon
    return handle


async def wait_exited(pid: int) -> None:
    st = _procfs.read_stat(pid)
    assert st is not None
    ticks = st.start_ticks
    with trio.fail_after(10):
        await poll_until(lambda: not _procfs.is_running(pid, ticks))


async def test_running_attempt_is_readopted_and_reports_its_real_exit_code(
    runner: LocalProcessRunner, new_daemon: NewDaemon, tmp_path: Path
) -> None:
    g1, g2 = tmp_path / "g1", tmp_path / "g2"
    wait = "while [ ! -e {} ]; do sleep 0.02; done"
    cmd = f"echo before; {wait.format(g1)}; echo during; {wait.format(g2)}; echo after; exit 7"
    handle = await start_then_crash(runner, RunSpec("job@1", command=cmd), b"before")
    try:
        g1.touch()  # the job prints while no daemon reads its pipe
        await trio.sleep(0.2)
        second = new_daemon()
        [found] = second.recover()
        assert found.result is None and found.handle is not None
        assert found.handle.adopted and found.handle.pid == handle.pid
        assert second.statistics().running == 1 and second.statistics().adopted == 1
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                results = []

                async def watch() -> None:
                    assert found.handle is not None
                    results.append(await second.supervise(found.handle))

                nursery.start_soon(watch)
                await trio.sleep(0.1)
                g2.touch()
        [res] = results
        assert res.state is Outcome.FAILED and res.exit_code == 7 and res.adopted
        assert res.spool_path.read_bytes() == b"before\nduring\nafter\n"
        assert second.statistics().failed == 1 and second.statistics().running == 0
        assert second.recover() == []  # nothing left behind
    finally:
        kill_group(handle.pid)
        reap(handle.pid)


async def test_attempt_that_ended_while_the_daemon_was_down_reports_its_real_outcome(
    runner: LocalProcessRunner, new_daemon: NewDaemon, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    cmd = f"echo up; while [ ! -e {gate} ]; do sleep 0.02; done; exit 5"
    handle = await start_then_crash(runner, RunSpec("job@2", command=cmd), b"up")
    try:
        gate.touch()
        await wait_exited(handle.pid)
        [found] = new_daemon().recover()
        assert found.handle is None and found.result is not None
        res = found.result
        assert res.state is Outcome.FAILED and res.exit_code == 5
        assert handle.started_at < res.finished_at
        out = res.spool_path.read_bytes()
        assert out.startswith(b"up\n") and b"[dcrond: dcrond was not running" in out
    finally:
        reap(handle.pid)


async def test_attempt_that_died_without_a_status_is_lost(
    runner: LocalProcessRunner, new_daemon: NewDaemon
) -> None:
    handle = await start_then_crash(runner, RunSpec("job@3", command="echo up; sleep 300"), b"up")
    # KillMode=mixed: the spawner and the job die together, so no status is written
    assert runner.spawner_pid is not None
    os.kill(runner.spawner_pid, signal.SIGKILL)
    await wait_exited(runner.spawner_pid)
    kill_group(handle.pid)
    await wait_exited(handle.pid)
    second = new_daemon()
    [found] = second.recover()
    assert found.result is not None
    assert found.result.state is Outcome.LOST
    assert (found.result.exit_code, found.result.signal) == (None, None)
    assert b"left no exit status" in found.result.spool_path.read_bytes()
    assert second.statistics().lost == 1


async def test_timeout_still_applies_to_a_readopted_attempt(
    runner: LocalProcessRunner, new_daemon: NewDaemon
) -> None:
    spec = RunSpec("job@4", command="echo up; sleep 300", timeout=1.0, kill_grace=0.5)
    handle = await start_then_crash(runner, spec, b"up")
    try:
        second = new_daemon()
        [found] = second.recover()
        assert found.handle is not None
        with trio.fail_after(5):
            res = await second.supervise(found.handle)
        assert res.state is Outcome.TIMED_OUT
        assert res.finished_at - res.started_at < 3
    finally:
        kill_group(handle.pid)
        reap(handle.pid)


async def test_kill_begun_before_the_restart_is_finished_by_the_next_daemon(
    runner: LocalProcessRunner, new_daemon: NewDaemon
) -> None:
    cmd = "trap 'echo ignoring TERM' TERM; echo up; while :; do sleep 0.05; done"
    spec = RunSpec("job@5", command=cmd, kill_grace=0.5)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle: RunHandle = await nursery.start(runner.run, spec)
            await poll_until(lambda: b"up" in printed(handle))
            assert runner.kill("job@5")
            await trio.sleep(0.1)  # SIGTERM is out and recorded; the job ignores it
            nursery.cancel_scope.cancel()
    try:
        second = new_daemon()
        [found] = second.recover()
        assert found.handle is not None
        with trio.fail_after(5):
            res = await second.supervise(found.handle)
        assert res.state is Outcome.KILLED and res.signal == signal.SIGKILL
    finally:
        kill_group(handle.pid)
        reap(handle.pid)


def test_state_file_of_a_reused_pid_is_lost_and_nothing_is_killed(
    work_dir: Path, new_daemon: NewDaemon
) -> None:
    runner = new_daemon()
    me = _procfs.read_stat(os.getpid())
    assert me is not None
    record = {
        "v": 1, "run_id": "ghost@1", "attempt": 1, "pid": os.getpid(),
        "start_ticks": me.start_ticks - 1, "started_at": 1.0, "deadline": None,
        "kill_grace": 1.0, "output_cap": 100, "spool": str(work_dir / "spool" / "ghost@1.1.log"),
        "script": None,
    }  # fmt: skip
    (work_dir / "live" / "ghost@1.1.state").write_text(json.dumps(record) + "\n")
    (work_dir / "live" / "junk.state").write_text("not json\n")
    [found] = runner.recover()
    assert found.run_id == "ghost@1" and found.result is not None
    assert found.result.state is Outcome.LOST
    assert [p.name for p in (work_dir / "live").iterdir() if p.suffix == ".state"] == []
