"""One live attempt: its book-keeping and how it is stopped.

Stopping follows systemd's ``KillMode=control-group``: at the deadline or on
``kill`` the whole process group gets SIGTERM (and SIGCONT, for stopped
members), and SIGKILL once the grace has passed; when the job ends by itself,
whatever it left running in the group gets the same treatment. A process
only escapes by leaving the session (``setsid``). The group's membership is
read from /proc (zombies nobody reaps do not count).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import final
from urllib.parse import quote

import trio

from dcrond.runner import _procfs, _statefile
from dcrond.runner._output import OutputPump
from dcrond.runner._spec import Outcome, RunHandle

#: how often the leftovers of a group are checked while they get their grace
GROUP_POLL = 0.02
#: after the group is gone, how long to wait for the pipe's end of file
#: (a process that escaped with setsid may still hold it)
DRAIN_WAIT = 1.0
#: how long SIGKILLed leftovers get to disappear before we stop looking
KILL_WAIT = 2.0


def key(run_id: str, attempt: int) -> str:
    """The file-name-safe key of an attempt (``job@instant.N``, percent-escaped)."""
    return f"{quote(run_id, safe='@+-_.~')}.{attempt}"


@final
@dataclass(slots=True)
class Paths:
    """An attempt's files."""

    state: str
    spool: str
    script: str | None


def decode(status: int | None) -> tuple[int | None, int | None]:
    """A shell status (0-255, 128+N after signal N) as (exit code, signal)."""
    if status is None:
        return None, None
    if 128 < status <= 128 + 64:
        return None, status - 128
    return status, None


@final
class Attempt:
    """One live attempt: its process, its files, and the rules for stopping it."""

    def __init__(
        self,
        *,
        handle: RunHandle,
        paths: Paths,
        pidfd: int,
        popen: subprocess.Popen[bytes] | None,
        wall: Callable[[], float],
        state_fd: int | None,
        start_ticks: int | None,
        pump: OutputPump,
        deadline: float | None,
        kill_grace: float,
        stop: Outcome | None = None,
        stop_at: float | None = None,
    ) -> None:
        self.handle = handle
        self.paths = paths
        self.pidfd: int | None = pidfd
        self.popen = popen
        self.wall = wall
        self.state_fd = state_fd  #: open only until the record is written
        self.start_ticks = start_ticks  #: None until the state record is written
        self.pump = pump
        self.deadline = deadline  #: wall clock
        self.kill_grace = kill_grace
        self.stop = stop
        self.stop_at = stop_at  #: wall clock
        self.stop_requested = trio.Event()
        self.kill_at: float | None = None  #: trio clock: when SIGKILL is due
        self.sigkilled = False  #: dcrond sent SIGKILL to the group
        self.supervised = False

    @property
    def pgid(self) -> int:
        """The process group (and session) of everything the attempt started."""
        return self.handle.pid

    def close_fds(self) -> None:
        """Close the pidfd and the state file (if still open)."""
        if self.pidfd is not None:
            trio.lowlevel.notify_closing(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
        if self.state_fd is not None:
            os.close(self.state_fd)
            self.state_fd = None

    def record(self) -> None:
        """Write the state file's record, so a restart can find the attempt."""
        stat = _procfs.read_stat(self.handle.pid)  # our unreaped child: it exists
        assert stat is not None and self.state_fd is not None
        self.start_ticks = stat.start_ticks
        fd, self.state_fd = self.state_fd, None
        try:
            _statefile.write_record(
                fd,
                _statefile.AttemptState(
                    run_id=self.handle.run_id,
                    attempt=self.handle.attempt,
                    pid=self.handle.pid,
                    start_ticks=stat.start_ticks,
                    started_at=self.handle.started_at,
                    deadline=self.deadline,
                    kill_grace=self.kill_grace,
                    output_cap=self.pump.cap,
                    spool=self.paths.spool,
                    script=self.paths.script,
                ),
            )
        finally:
            os.close(fd)

    def trio_time(self, instant: float) -> float:
        """A wall-clock instant on trio's clock."""
        return trio.current_time() + (instant - self.wall())

    async def enforce(self) -> None:
        """Wait for the deadline or a kill request, then stop the whole group."""
        if self.stop is None:
            deadline = math.inf if self.deadline is None else self.trio_time(self.deadline)
            with trio.move_on_at(deadline):
                await self.stop_requested.wait()
            if self.stop is None:
                self.stop = Outcome.TIMED_OUT
        if self.stop_at is None:
            self.stop_at = self.wall()
            _statefile.append_stop(self.paths.state, self.stop.value, self.stop_at)
        _procfs.terminate_group(self.pgid)
        self.kill_at = self.trio_time(self.stop_at + self.kill_grace)
        await self._term_late_start(self.kill_at)
        await trio.sleep_until(self.kill_at)
        self.sigkilled = True
        _procfs.signal_group(self.pgid, signal.SIGKILL)

    async def _term_late_start(self, until: float) -> None:
        """SIGTERM again if the job was started just after the first one (see ``_spawn``)."""
        while True:
            order = _statefile.started_after_stop(self.paths.state)
            if order is not None:
                if order:
                    _procfs.terminate_group(self.pgid)
                return
            if trio.current_time() >= until:
                return
            await trio.sleep(GROUP_POLL)

    def leftovers(self) -> bool:
        """Processes of the attempt's group are still running."""
        if not _procfs.signal_group(self.pgid, 0):
            return False
        members = _procfs.live_members(self.pgid)
        if self.popen is None:
            # not our child: its pid number may be free again; trust only our session
            members = [p for p in members if (s := _procfs.read_stat(p)) and s.session == self.pgid]
        return bool(members)

    async def wait_gone(self, until: float) -> bool:
        """Poll until nothing of the group runs (True) or ``until`` passes (False)."""
        while True:
            if not self.leftovers():
                return True
            if trio.current_time() >= until:
                return False
            await trio.sleep(GROUP_POLL)

    async def clean_group(self) -> None:
        """SIGTERM what the job left behind, SIGKILL it after the grace."""
        if not self.leftovers():
            return
        if self.kill_at is None:
            _procfs.terminate_group(self.pgid)
            self.kill_at = trio.current_time() + self.kill_grace
        if await self.wait_gone(self.kill_at):
            return
        _procfs.signal_group(self.pgid, signal.SIGKILL)
        await self.wait_gone(trio.current_time() + KILL_WAIT)
