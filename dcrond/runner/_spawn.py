"""Starting one attempt: who it runs as, its environment, and the supervisor shell.

Theory of operation
-------------------

Every attempt runs under a tiny supervisor: ``/bin/sh`` (dash on Debian)
with the fixed script :func:`supervisor_script`. It is started in a new
session (so its pid is also the process group id of everything the job
starts), changes to the working dir, runs the job's argv as its only child,
and writes the job's exit status (``$?``: 0-255, 128+N after signal N) to an
*exit file* through an inherited descriptor. A daemon that restarts while the
job runs thus still learns the real status later. A POSIX shell is the
cheapest process that can wait for a child and record its status: it adds
about half a millisecond to a start, where a Python supervisor would add
20 ms of CPU per attempt.

The supervisor traps SIGTERM, SIGINT and SIGHUP (the traps are reset to the
default in the job), so a SIGTERM to the whole group stops the job but leaves
the supervisor to record its status. A SIGTERM that arrives before the job
is started (a kill right after the start) sets a flag and the job is not
started at all. The shell only runs a trap's action between commands, so a
SIGTERM that lands just before the fork is seen too late; to close that
window the child writes ``started`` to the state file before it execs, and
a daemon that finds that line *after* its own stop record knows the job
missed the signal and sends SIGTERM once more. Its own
stderr is closed once the job is started, and the job is started as
``(exec "$@" 2>&9)`` so the redirection lives only in the child: the shell's
"Killed" and "Segmentation fault" notices never land in the job's output.

Output goes through a named pipe (FIFO) that the daemon reads; the
supervisor also holds the FIFO's read end (never reading it), so if the
daemon dies the job does not get SIGPIPE: it keeps running and, once the
pipe's 64 KiB buffer is full, waits in ``write`` until a new daemon opens the
FIFO again.

Processes are created with ``subprocess.Popen`` called directly on the trio
thread: trio's ``open_process`` would hop to a worker thread first, and the
benchmark cares about the time from the fire instant to the job's first
instruction. ``user=``/``group=``/``extra_groups=`` drop privileges in the
child (setgroups, setgid, setuid, in that order) when the daemon is root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import resource
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, final

from dcrond.errors import InvalidRequest
from dcrond.runner._spec import SHELL, RunSpec

#: the PATH jobs get when the daemon has none
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: variables copied from the daemon's environment when set (nothing else is)
PASSED_THROUGH = ("PATH", "LANG")

#: variables dcrond sets for every job; the job's own env cannot change them
DCROND_VARS = ("DCROND_RUN_ID", "DCROND_JOB", "DCROND_ATTEMPT", "DCROND_SCHEDULED_AT")


@final
@dataclass(frozen=True, slots=True)
class Identity:
    """The unix account an attempt runs as."""

    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...]
    switch: bool  #: the daemon must drop privileges to become this user


def _passwd(user: str) -> pwd.struct_passwd:
    try:
        if user.isdigit():
            return pwd.getpwuid(int(user))
        return pwd.getpwnam(user)
    except KeyError:
        raise InvalidRequest(f"unknown user {user!r} on this host") from None


def resolve_identity(user: str | None, own: Identity) -> Identity:
    """Who an attempt runs as: ``own`` (the daemon's account) or ``user``.

    Raises ``InvalidRequest`` for a user unknown on this host, or for a
    different user when the daemon is not root.
    """
    if user is None:
        return own
    pw = _passwd(user)
    if pw.pw_uid == own.uid:
        return own
    if own.uid != 0:
        raise InvalidRequest(
            f"cannot run as user {pw.pw_name!r}: dcrond runs as {own.name!r}, not root"
        )
    groups = tuple(os.getgrouplist(pw.pw_name, pw.pw_gid))
    return Identity(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, groups, switch=True)


def own_identity() -> Identity:
    """The account the daemon runs as."""
    uid = os.geteuid()
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return Identity(str(uid), uid, os.getegid(), "/", (), switch=False)
    return Identity(pw.pw_name, uid, os.getegid(), pw.pw_dir, (), switch=False)


def build_env(spec: RunSpec, who: Identity, daemon_env: Mapping[str, str]) -> dict[str, str]:
    """The job's environment: a small safe base, then the job's env, then dcrond's own.

    Nothing else of the daemon's environment reaches a job — in particular
    never ``NOTIFY_SOCKET``, ``WATCHDOG_*``, ``LISTEN_FDS`` or
    ``INVOCATION_ID``.
    """
    env = {k: daemon_env[k] for k in PASSED_THROUGH if k in daemon_env}
    env.setdefault("PATH", DEFAULT_PATH)
    env["HOME"] = who.home
    env["USER"] = who.name
    env["LOGNAME"] = who.name
    env["SHELL"] = SHELL
    env.update(spec.env)
    env["DCROND_RUN_ID"] = spec.run_id
    env["DCROND_JOB"] = spec.job
    env["DCROND_ATTEMPT"] = str(spec.attempt)
    env["DCROND_SCHEDULED_AT"] = spec.instant
    return env


def working_dir(spec: RunSpec, who: Identity) -> str:
    """Where the job starts: its working dir, else the user's home if it exists, else /."""
    if spec.working_dir is not None:
        return spec.working_dir
    return who.home if os.path.isdir(who.home) else "/"


#: The supervisor's ``sh -c`` text. On entry fd 0 is the exit file, fd 1 the
#: FIFO's write end and fd 2 its read end (dash only knows one-digit
#: descriptors, so everything arrives in the three standard slots and is moved
#: to 3 and 4 first); ``$1`` is the working dir, ``$2`` the soft limit of open
#: files to give back to the job (empty: leave it), the rest the job's argv.
#: A failing ``cd`` prints the shell's own message into the output and
#: records status 2. Neither the exit file nor the read end reaches the job.
SUPERVISOR_SCRIPT = """\
exec 3>&0 4<&2 2>&1 0</dev/null
trap stopping=1 TERM INT HUP
[ -z "$2" ] || ulimit -Sn "$2"
cd -- "$1" && {
  unset OLDPWD
  shift 2
  exec 9>&2 2>&-
  if [ -z "$stopping" ]; then (echo started >&3; exec "$@" 2>&9 9>&- 3>&- 4<&-); else (exit 143); fi
}
s=$?
echo $s >&3
exit $s
"""


def spawn(
    spec: RunSpec,
    *,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    who: Identity,
    out_fd: int,
    exit_fd: int,
    keep_fd: int,
    nofile: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start the supervisor (and through it the job) in a new session.

    ``out_fd`` (the FIFO's write end) becomes the job's stdout and stderr: one
    pipe keeps output in arrival order. The job's stdin is /dev/null.
    ``nofile`` is the soft open-files limit the job gets back (see
    ``raise_fd_limit``).
    Returns once the supervisor has been exec'd.
    """
    kw: dict[str, Any] = {}
    if who.switch:
        kw = {"user": who.uid, "group": who.gid, "extra_groups": list(who.groups)}
    return subprocess.Popen(
        [
            SHELL,
            "-c",
            SUPERVISOR_SCRIPT,
            spec.job,
            cwd,
            "" if nofile is None else str(nofile),
            *argv,
        ],
        executable=SHELL,
        stdin=exit_fd,
        stdout=out_fd,
        stderr=keep_fd,
        env=env,
        start_new_session=True,
        **kw,
    )


#: prefix of the private folders that hold scripts of jobs running as other users
SCRIPT_DIR_PREFIX = "dcrond-script-"


def write_script(default_dir: str, name: str, body: bytes, who: Identity) -> str:
    """Write a script given as bytes where its interpreter (run as ``who``) can read it.

    For the daemon's own user that is ``default_dir``; for another user a
    private folder of theirs under the system's temp dir, since the daemon's
    work dir may not be reachable for them. Returns the script's path.
    """
    folder = default_dir
    if who.switch:
        folder = tempfile.mkdtemp(prefix=SCRIPT_DIR_PREFIX)
        os.chown(folder, who.uid, who.gid)
    path = os.path.join(folder, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view) :]
        if who.switch:
            os.fchown(fd, who.uid, who.gid)
        os.fchmod(fd, 0o400)
    finally:
        os.close(fd)
    return path


def remove_script(path: str) -> None:
    """Remove a script written by ``write_script`` (and its private folder)."""
    remove_quietly(path)
    folder = os.path.dirname(path)
    if os.path.basename(folder).startswith(SCRIPT_DIR_PREFIX):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


_original_nofile: list[int | None] = []


def raise_fd_limit() -> int | None:
    """Raise this process's soft open-files limit to its hard limit, once.

    A running attempt holds three descriptors in the daemon (pidfd, pipe,
    spool), so a thousand at once need more than the usual soft limit of
    1024. Returns the original soft limit when it was raised (jobs get that
    one back: some programs loop over every possible descriptor), else None.
    """
    if not _original_nofile:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        raised: int | None = None
        if soft != resource.RLIM_INFINITY and soft < target:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                raised = soft
            except (OSError, ValueError):
                pass
        _original_nofile.append(raised)
    return _original_nofile[0]


def remove_quietly(*paths: str) -> None:
    """Remove files that may already be gone."""
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
