"""Real processes: exit codes, signals, interpreters, environment, working dir, stdin."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sys
from pathlib import Path

import pytest
import trio

from dcrond.errors import InvalidRequest
from dcrond.runner import LocalProcessRunner, Outcome, RunResult, RunSpec
from tests.runner.conftest import DAEMON_ONLY, WALL_OFFSET


async def run(runner: LocalProcessRunner, spec: RunSpec, limit: float = 10) -> RunResult:
    with trio.fail_after(limit):
        return await runner.run(spec)


def output(res: RunResult) -> bytes:
    """What the attempt printed (an attempt that printed nothing has no spool file)."""
    return res.spool_path.read_bytes() if res.spool_path.exists() else b""


async def test_exit_zero_succeeds_with_its_output_and_injected_wall_clock_times(
    runner: LocalProcessRunner,
) -> None:
    before = trio.current_time()
    res = await run(runner, RunSpec("hello@1", command="echo hello"))
    assert res.state is Outcome.SUCCEEDED
    assert (res.exit_code, res.signal) == (0, None)
    assert output(res) == b"hello\n"
    assert res.output_bytes == 6 and not res.truncated
    assert res.started_at > WALL_OFFSET and res.started_at <= res.finished_at
    assert res.finished_at - res.started_at < trio.current_time() - before + 1
    assert runner.statistics().succeeded == 1
    assert runner.statistics().running == 0


async def test_non_zero_exit_fails_with_its_exit_code(runner: LocalProcessRunner) -> None:
    res = await run(runner, RunSpec("three@1", command="echo out; echo err >&2; exit 3"))
    assert res.state is Outcome.FAILED
    assert (res.exit_code, res.signal) == (3, None)
    assert output(res) == b"out\nerr\n"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM])
async def test_job_killed_by_a_signal_dcrond_did_not_send_fails_with_that_signal(
    runner: LocalProcessRunner, sig: signal.Signals
) -> None:
    res = await run(runner, RunSpec("sig@1", command=f"kill -{sig.name[3:]} $$"))
    assert res.state is Outcome.FAILED
    assert (res.exit_code, res.signal) == (None, sig.value)
    # no shell's "Killed"/"Segmentation fault" notice lands in the output
    assert output(res) == b""


async def test_attempt_that_prints_nothing_leaves_no_spool_file(runner: LocalProcessRunner) -> None:
    res = await run(runner, RunSpec("quiet@1", command="true"))
    assert res.state is Outcome.SUCCEEDED and res.output_bytes == 0
    assert not res.spool_path.exists()


async def test_missing_program_fails_with_the_shells_message(runner: LocalProcessRunner) -> None:
    res = await run(runner, RunSpec("nope@1", command="no-such-program-here"))
    assert res.state is Outcome.FAILED and res.exit_code == 127
    assert b"no-such-program-here: not found" in output(res)


SCRIPTS = {
    "bash": b'echo "bash ${BASH_VERSINFO[0]} $1"\n',
    "sh": b'echo "sh $1"\n',
    "python": b"import sys\nprint('python', sys.version_info[0], sys.argv[1])\n",
    "ruby": b'puts "ruby #{ARGV[0]}"\n',
}
EXPECTED = {"bash": b"bash 5 arg\n", "sh": b"sh arg\n", "python": b"python 3 arg\n"}


@pytest.mark.parametrize("interpreter", sorted(SCRIPTS))
async def test_scripts_run_under_each_interpreter_with_their_args(
    runner: LocalProcessRunner, interpreter: str
) -> None:
    if interpreter == "ruby":
        # ruby is in .ci/apt-packages: CI installs it, so this never skips there
        assert shutil.which("ruby"), "ruby is missing: install the packages in .ci/apt-packages"
    script = SCRIPTS[interpreter]
    spec = RunSpec(f"{interpreter}@1", script=script, interpreter=interpreter, args=("arg",))
    res = await run(runner, spec)
    assert res.state is Outcome.SUCCEEDED, output(res)
    assert output(res) == EXPECTED.get(interpreter, b"ruby arg\n")
    assert list((runner.spool_path(spec.run_id, 1).parent.parent / "scripts").iterdir()) == []


async def test_script_given_as_a_path_runs_from_there(
    runner: LocalProcessRunner, tmp_path: Path
) -> None:
    script = tmp_path / "cached.sh"
    script.write_bytes(b'echo "cached $0"\n')
    res = await run(runner, RunSpec("cached@1", script=script, interpreter="sh"))
    assert output(res) == f"cached {script}\n".encode()


async def test_job_gets_its_env_and_a_safe_base_but_nothing_of_the_daemons(
    runner: LocalProcessRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in DAEMON_ONLY.items():
        monkeypatch.setenv(k, v)  # in the real environment too, not only the injected one
    spec = RunSpec("envy@2026-11-22T03:00Z", attempt=2, command="env", env={"GREETING": "hi there"})
    res = await run(runner, spec)
    env = dict(line.split("=", 1) for line in output(res).decode().splitlines())
    for k in DAEMON_ONLY:
        assert k not in env
    assert env["GREETING"] == "hi there"
    assert env["DCROND_RUN_ID"] == "envy@2026-11-22T03:00Z"
    assert env["DCROND_JOB"] == "envy"
    assert env["DCROND_ATTEMPT"] == "2"
    assert env["DCROND_SCHEDULED_AT"] == "2026-11-22T03:00Z"
    assert env["PATH"] == os.environ["PATH"]
    assert env["LANG"] == "C.UTF-8"
    assert env["SHELL"] == "/bin/sh"
    assert set(env) <= {
        "GREETING", "PATH", "LANG", "HOME", "USER", "LOGNAME", "SHELL", "PWD",
        "DCROND_RUN_ID", "DCROND_JOB", "DCROND_ATTEMPT", "DCROND_SCHEDULED_AT",
    }  # fmt: skip


async def test_job_env_cannot_override_dcronds_own_variables(runner: LocalProcessRunner) -> None:
    spec = RunSpec("own@1", command='echo "$DCROND_RUN_ID"', env={"DCROND_RUN_ID": "forged"})
    assert output(await run(runner, spec)) == b"own@1\n"


async def test_job_starts_in_its_working_dir(runner: LocalProcessRunner, tmp_path: Path) -> None:
    res = await run(runner, RunSpec("pwd@1", command="pwd", working_dir=str(tmp_path)))
    assert output(res) == f"{tmp_path}\n".encode()


async def test_missing_working_dir_fails_the_attempt_with_a_message(
    runner: LocalProcessRunner,
) -> None:
    res = await run(runner, RunSpec("pwd@1", command="pwd", working_dir="/no/such/dir"))
    assert res.state is Outcome.FAILED and res.exit_code == 2
    assert b"can't cd to /no/such/dir" in output(res)


async def test_stdin_is_dev_null(runner: LocalProcessRunner) -> None:
    res = await run(runner, RunSpec("cat@1", command="cat; echo done"))
    assert output(res) == b"done\n"


async def test_the_same_attempt_cannot_run_twice_at_once(runner: LocalProcessRunner) -> None:
    spec = RunSpec("twice@1", command="sleep 5", timeout=5)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run, spec)
            with pytest.raises(InvalidRequest, match="already running"):
                await runner.run(spec)
            assert runner.kill("twice@1")


async def test_started_handle_names_the_process_group(runner: LocalProcessRunner) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(runner.run, RunSpec("pg@1", command="sleep 5", timeout=5))
            assert os.getpgid(handle.pid) == handle.pid
            assert os.getsid(handle.pid) == handle.pid
            assert handle.started_at > WALL_OFFSET
            assert runner.statistics().running == 1
            runner.kill("pg@1")


async def test_burst_of_concurrent_attempts_all_run(runner: LocalProcessRunner) -> None:
    results: list[RunResult] = []

    async def one(i: int) -> None:
        results.append(await runner.run(RunSpec(f"burst{i}@1", command=f"echo {i}")))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(one, i)
    assert len(results) == 100
    assert all(r.state is Outcome.SUCCEEDED for r in results)
    assert sorted(int(output(r)) for r in results) == list(range(100))
    assert runner.statistics().succeeded == 100


RAISE_AND_RUN = """
import pathlib, resource, sys, tempfile, trio
from dcrond.runner import LocalProcessRunner, RunSpec
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
async def main():
    with tempfile.TemporaryDirectory() as d:
        r = LocalProcessRunner(pathlib.Path(d))
        res = await r.run(RunSpec("limits@1", command="ulimit -Sn"))
        r.close()
        print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], res.spool_path.read_text().strip())
trio.run(main)
"""


async def test_daemon_raises_its_open_files_limit_but_jobs_get_the_original(
    tmp_path: Path,
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with trio.fail_after(20):
        done = await trio.run_process([sys.executable, "-c", RAISE_AND_RUN], capture_stdout=True)
    daemon, job = done.stdout.decode().split()
    assert int(daemon) == hard and hard > 256
    assert int(job) == 256
