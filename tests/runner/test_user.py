"""Unix users: privileges are dropped in the child when dcrond is root; refused when it is not."""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

import pytest
import trio

from dcrond.errors import InvalidRequest
from dcrond.runner import LocalProcessRunner, Outcome, RunSpec
from dcrond.runner._spawn import Identity, own_identity, resolve_identity

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="dropping privileges needs root (CI runs as root)"
)


@pytest.mark.root
@needs_root
async def test_root_daemon_runs_the_job_as_nobody_with_nobodys_identity(
    runner: LocalProcessRunner,
) -> None:
    nobody = pwd.getpwnam("nobody")
    cmd = 'id -u; id -g; id -G; echo "$HOME $USER $LOGNAME"; pwd'
    with trio.fail_after(10):
        res = await runner.run(RunSpec("who@1", command=cmd, user="nobody"))
    assert res.state is Outcome.SUCCEEDED, res.spool_path.read_bytes()
    uid, gid, groups, names, cwd = res.spool_path.read_text().splitlines()
    assert int(uid) == nobody.pw_uid
    assert int(gid) == nobody.pw_gid
    assert {int(g) for g in groups.split()} == set(os.getgrouplist("nobody", nobody.pw_gid))
    assert names == f"{nobody.pw_dir} nobody nobody"
    assert cwd == "/"  # nobody's home does not exist


@pytest.mark.root
@needs_root
async def test_job_running_as_another_user_can_still_be_killed_with_its_group(
    runner: LocalProcessRunner,
) -> None:
    with trio.fail_after(10):
        res = await runner.run(
            RunSpec("who@2", command="sleep 30", user="nobody", timeout=0.3, kill_grace=2)
        )
    assert res.state is Outcome.TIMED_OUT


def test_unknown_user_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="unknown user 'no-such-user-here'"):
        resolve_identity("no-such-user-here", own_identity())


def test_non_root_daemon_refuses_to_run_as_another_user() -> None:
    own = Identity("alice", 1000, 1000, "/home/alice", (), switch=False)
    with pytest.raises(InvalidRequest, match=r"cannot run as user 'nobody'.*not root"):
        resolve_identity("nobody", own)


def test_non_root_daemon_runs_jobs_of_its_own_user_without_switching() -> None:
    me = pwd.getpwuid(os.geteuid())
    own = Identity(me.pw_name, me.pw_uid, me.pw_gid, me.pw_dir, (), switch=False)
    assert resolve_identity(me.pw_name, own) is own
    assert resolve_identity(str(me.pw_uid), own) is own


@pytest.mark.root
@needs_root
async def test_script_of_a_job_running_as_nobody_is_readable_by_it_and_removed_after(
    runner: LocalProcessRunner,
) -> None:
    # the runner's work dir lives under pytest's private temp dir, which nobody cannot enter
    script = b"import os, sys\nprint(os.getuid(), os.path.basename(os.path.dirname(sys.argv[0])))\n"
    spec = RunSpec("py@1", script=script, interpreter="python", user="nobody")
    with trio.fail_after(10):
        res = await runner.run(spec)
    assert res.state is Outcome.SUCCEEDED, res.spool_path.read_bytes()
    uid, folder = res.spool_path.read_text().split()
    assert int(uid) == pwd.getpwnam("nobody").pw_uid
    assert not (Path(tempfile.gettempdir()) / folder).exists()


@pytest.mark.root
@needs_root
async def test_working_dir_is_entered_as_the_user_so_a_private_one_fails_the_attempt(
    runner: LocalProcessRunner, tmp_path: Path
) -> None:
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    spec = RunSpec("who@3", command="pwd", user="nobody", working_dir=str(private))
    with trio.fail_after(10):
        res = await runner.run(spec)
    assert (res.state, res.exit_code) == (Outcome.FAILED, 2)
    assert f"can't cd to {private}: Permission denied".encode() in res.spool_path.read_bytes()
