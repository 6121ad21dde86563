"""Starting one attempt: who it runs as, its environment, and what the spawner is sent.

The daemon never forks a job itself: it sends ``spawn_request`` to its
spawner (``_spawner``), a small separate process that forks and execs the
job in a new session (so the job's pid is also the process group id of
everything it starts), with stdin on /dev/null and stdout and stderr on the
attempt's output pipe. This module decides what goes into the request: the
user (``resolve_identity``; privileges are dropped in the child —
``setgroups``, ``setgid``, ``setuid``, in that order — when the daemon is
root), the environment (``build_env``), the working dir, a script given as
bytes (``write_script``), and the soft open-files limit the job gets back
(``raise_fd_limit``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import resource
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import final

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


def spawn_request(
    *,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    who: Identity,
    nofile: int | None,
    state_path: str,
    record: bytes,
) -> tuple[object, ...]:
    """The spawner's ``spawn`` request (without op and id): see ``_spawner``."""
    creds = (who.uid, who.gid, list(who.groups)) if who.switch else None
    env_list = [f"{k}={v}".encode(errors="surrogateescape") for k, v in env.items()]
    return (
        argv,
        env_list,
        env.get("PATH"),
        cwd,
        creds,
        -1 if nofile is None else nofile,
        state_path,
        record,
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

    A running attempt holds two descriptors in the daemon (pipe, spool)
    and one in the spawner (which inherits the raised limit), so a thousand
    at once need more than the usual soft limit of 1024. Returns the
    original soft limit when it was raised (jobs get that one back: some
    programs loop over every possible descriptor), else None.
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
