"""Small Linux process helpers: /proc/<pid>/stat, process groups, signalling.

A pid alone does not name a process for long: once it is reaped the kernel
may hand the number to someone else. We pair every pid with its start time
(field 22 of ``/proc/<pid>/stat``, in clock ticks since boot), which no later
process with the same number can share.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from typing import final


@final
@dataclass(frozen=True, slots=True)
class ProcStat:
    """The few fields of ``/proc/<pid>/stat`` the runner needs."""

    pid: int
    state: str  #: R, S, D, T, Z (zombie), X (dead), …
    pgrp: int
    session: int
    start_ticks: int

    @property
    def exited(self) -> bool:
        """The process has exited (a zombie waiting to be reaped, or dead)."""
        return self.state in ("Z", "X")


def read_stat(pid: int) -> ProcStat | None:
    """Read ``/proc/<pid>/stat``; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    rest = raw[raw.rindex(b")") + 2 :].split()
    return ProcStat(
        pid=pid,
        state=rest[0].decode(),
        pgrp=int(rest[2]),
        session=int(rest[3]),
        start_ticks=int(rest[19]),
    )


def is_running(pid: int, start_ticks: int) -> bool:
    """The process that had ``pid`` and ``start_ticks`` exists and has not exited."""
    st = read_stat(pid)
    return st is not None and st.start_ticks == start_ticks and not st.exited


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group is empty."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # members we may not signal: still there
    return True


def live_members(pgid: int) -> list[int]:
    """Pids of the group's members that have not exited (zombies do not count).

    Scans /proc, so it is only used once ``signal_group(pgid, 0)`` says the
    group is not empty; where pid 1 does not reap orphans (some containers),
    their zombies keep a group non-empty forever.
    """
    pids: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = read_stat(int(name))
        if st is not None and st.pgrp == pgid and not st.exited:
            pids.append(st.pid)
    return pids


def group_alive(pgid: int) -> bool:
    """Some member of the group is still running."""
    return signal_group(pgid, 0) and bool(live_members(pgid))


def terminate_group(pgid: int) -> None:
    """SIGTERM the group, then SIGCONT so stopped members can act on it."""
    if signal_group(pgid, signal.SIGTERM):
        signal_group(pgid, signal.SIGCONT)


def kill_orphans(pgid: int, markers: list[bytes]) -> int:
    """SIGKILL the live members of session ``pgid`` whose environment holds all ``markers``.

    Used after a restart, when the attempt's leader is gone and its pid might
    in theory have been reused: a process is only killed if it is in our
    session and group *and* carries the attempt's ``DCROND_RUN_ID=…`` and
    ``DCROND_ATTEMPT=…`` entries.
    Returns how many were killed.
    """
    n = 0
    if not signal_group(pgid, 0):
        return 0
    for pid in live_members(pgid):
        st = read_stat(pid)
        if st is None or st.session != pgid:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        entries = set(environ.split(b"\0"))
        if all(m in entries for m in markers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                n += 1
    return n
