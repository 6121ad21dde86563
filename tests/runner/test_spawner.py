"""The spawner: its lifetime, exact statuses, exec failures, and the death of it or the daemon."""

from __future__ import annotations

import os
import resource
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from dcrond.runner import LocalProcessRunner, Outcome, RunHandle, RunResult, RunSpec, _procfs
from tests.runner.conftest import kill_group, poll_until, wall

NewDaemon = Callable[[], LocalProcessRunner]


def alive(pid: int) -> bool:
    st = _procfs.read_stat(pid)
    return st is not None and not st.exited


def output(res: RunResult) -> bytes:
    return res.spool_path.read_bytes() if res.spool_path.exists() else b""


async def test_spawner_exits_when_the_runner_closes_and_it_has_no_jobs(
    work_dir: Path, daemon_env: dict[str, str]
) -> None:
    runner = LocalProcessRunner(work_dir, wall_clock=wall, daemon_env=daemon_env)
    pid = runner.spawner_pid
    assert pid is not None
    with trio.fail_after(10):
        res = await runner.run(RunSpec("one@1", command="echo hi"))
    assert res.state is Outcome.SUCCEEDED and output(res) == b"hi\n"
    # it has a high open-files limit of its own (it holds a pipe per running job)
    with open(f"/proc/{pid}/limits") as f:  # noqa: ASYNC230 (procfs: never blocks)
        limits = f.read()
    soft = int(next(ln for ln in limits.splitlines() if "open files" in ln).split()[3])
    assert soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    runner.close()
    assert _procfs.read_stat(pid) is None  # exited and reaped, nothing left behind
    assert runner.spawner_pid is None


async def test_closed_runners_spawner_stays_for_its_running_job_then_exits(
    runner: LocalProcessRunner, new_daemon: NewDaemon, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    spec = RunSpec("stay@1", command=f"echo up; while [ ! -e {gate} ]; do sleep 0.02; done; exit 4")
    spawner = runner.spawner_pid
    assert spawner is not None
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle: RunHandle = await nursery.start(runner.run, spec)
            await poll_until(lambda: handle.spool_path.exists())
            nursery.cancel_scope.cancel()  # detached: the job runs on
    runner.close()
    await trio.sleep(0.1)
    assert alive(spawner) and alive(handle.pid)
    gate.touch()
    with trio.fail_after(10):
        await poll_until(lambda: not alive(spawner))  # its last job ended: it left too
    [found] = new_daemon().recover()
    assert found.result is not None
    assert (found.result.state, found.result.exit_code) == (Outcome.FAILED, 4)


DAEMON = """
import sys, trio
from pathlib import Path
from dcrond.runner import LocalProcessRunner, RunSpec
work, gate, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
async def main():
    r = LocalProcessRunner(work)
    cmd = f"echo up; while [ ! -e {gate} ]; do sleep 0.02; done; echo down; exit 7"
    async with trio.open_nursery() as n:
        h = await n.start(r.run, RunSpec("crash@1", command=cmd))
        out.write_text(f"{h.pid} {r.spawner_pid}")
        await trio.sleep_forever()
trio.run(main)
"""


async def test_daemon_killed_mid_run_new_runner_readopts_and_gets_the_real_exit_code(
    work_dir: Path, new_daemon: NewDaemon, tmp_path: Path
) -> None:
    gate, pids = tmp_path / "gate", tmp_path / "pids"
    daemon = await trio.lowlevel.open_process(
        [sys.executable, "-c", DAEMON, str(work_dir), str(gate), str(pids)]
    )
    job = spawner = 0
    try:
        with trio.fail_after(20):
            await poll_until(lambda: pids.exists() and pids.read_text() != "")
        job, spawner = map(int, pids.read_text().split())
        daemon.kill()  # kill -9: no close(), no clean-up of any kind
        await daemon.wait()
        assert alive(job) and alive(spawner)
        second = new_daemon()
        [found] = second.recover()
        assert found.handle is not None and found.handle.pid == job
        gate.touch()
        with trio.fail_after(10):
            res = await second.supervise(found.handle)
        assert res.state is Outcome.FAILED
        assert (res.exit_code, res.signal) == (7, None)
        assert output(res) == b"up\ndown\n"  # the pipe was reopened through the spawner
        with trio.fail_after(10):
            await poll_until(lambda: not alive(spawner))
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
        if job:
            kill_group(job)
        if spawner and alive(spawner):
            os.kill(spawner, signal.SIGKILL)


async def test_spawner_killed_attempt_ends_lost_and_the_next_run_gets_a_new_spawner(
    runner: LocalProcessRunner,
) -> None:
    results: list[RunResult] = []

    async def attempt(spec: RunSpec, task_status: trio.TaskStatus[RunHandle]) -> None:
        results.append(await runner.run(spec, task_status=task_status))

    first = runner.spawner_pid
    assert first is not None
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            lost: RunHandle = await nursery.start(attempt, RunSpec("a@1", command="sleep 300"))
            killed: RunHandle = await nursery.start(
                attempt, RunSpec("b@1", command="sleep 300", kill_grace=0.5)
            )
            os.kill(first, signal.SIGKILL)
            await poll_until(lambda: not alive(first))
            await trio.sleep(0.05)
            kill_group(lost.pid)  # someone else ends it, and no spawner records how
            assert runner.kill("b@1")  # kill and timeouts still work without the spawner
    by_id = {r.run_id: r for r in results}
    assert by_id["a@1"].state is Outcome.LOST
    assert by_id["b@1"].state is Outcome.KILLED
    assert not alive(killed.pid)
    with trio.fail_after(10):
        res = await runner.run(RunSpec("c@1", command="echo again"))
    assert res.state is Outcome.SUCCEEDED and output(res) == b"again\n"
    assert runner.spawner_pid not in (None, first)


async def test_exit_status_is_exact_not_the_shells_128_plus_n(runner: LocalProcessRunner) -> None:
    with trio.fail_after(10):
        res = await runner.run(RunSpec("x@1", command="exit 137"))
    assert (res.state, res.exit_code, res.signal) == (Outcome.FAILED, 137, None)


async def test_exec_failures_give_the_shells_codes_and_a_message(
    runner: LocalProcessRunner, tmp_path: Path
) -> None:
    not_exec = tmp_path / "not-executable"
    not_exec.write_text("#!/bin/sh\necho never\n")
    not_exec.chmod(stat.S_IRUSR)
    cases = [
        (RunSpec("a@1", script=b"", interpreter="/no/such/interpreter"), 127, b"not found"),
        (RunSpec("b@1", script=b"", interpreter=str(not_exec)), 126, b"Permission denied"),
        (RunSpec("c@1", command="true", working_dir="/no/such/dir"), 2, b"can't cd to"),
    ]
    for spec, code, message in cases:
        with trio.fail_after(10):
            res = await runner.run(spec)
        assert (res.state, res.exit_code) == (Outcome.FAILED, code), spec
        assert output(res).startswith(b"[dcrond: ") and message in output(res)


async def test_request_too_big_for_one_packet_still_starts_the_job(
    runner: LocalProcessRunner,
) -> None:
    big = "x" * 100_000  # over a 64 KiB packet, under Linux's 128 KiB for one string
    spec = RunSpec("big@1", command='printf %s "$BIG" | wc -c', env={"BIG": big})
    with trio.fail_after(10):
        res = await runner.run(spec)
    assert res.state is Outcome.SUCCEEDED, output(res)
    assert int(output(res)) == len(big)


async def test_requests_beyond_the_socket_buffer_wait_their_turn_and_all_run(
    runner: LocalProcessRunner,
) -> None:
    padding = {"PAD": "p" * 50_000}  # 200 requests of ~50 KB: more than the socket holds
    results: list[RunResult] = []

    async def one(i: int) -> None:
        results.append(await runner.run(RunSpec(f"q{i}@1", command=f"echo {i}", env=padding)))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
    assert sorted(int(output(r)) for r in results) == list(range(200))
    assert all(r.state is Outcome.SUCCEEDED for r in results)


async def test_kill_before_the_pid_is_known_is_sent_once_it_is(runner: LocalProcessRunner) -> None:
    results: list[RunResult] = []

    async def attempt() -> None:
        results.append(await runner.run(RunSpec("early@1", command="sleep 30", kill_grace=5)))

    t0 = trio.current_time()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(attempt)
            while not runner.kill("early@1"):  # until the request is out
                await trio.lowlevel.checkpoint()
            assert runner.running() == []  # the spawner's reply is not in yet: no pid
    [res] = results
    assert res.state is Outcome.KILLED and res.signal == signal.SIGTERM
    assert trio.current_time() - t0 < 3  # SIGTERM, not the 30 s sleep nor the grace
