"""One live attempt: its book-keeping, how its end is learnt, and how it is stopped.

An attempt started here learns its pid, and later its exit status, from the
spawner's replies (``_client``): no process is watched and no task runs
for it besides its own and its output pump. When the spawner is gone (or
the attempt was re-adopted after a restart, so another spawner is its
job's parent) the job is watched through a pidfd instead, and its status
read from the state file — which the spawner writes before it reaps the
job, so the watcher waits for the status or the reap, whichever is first.

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
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
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
#: how long an exited job watched by pidfd may stay unreaped before its status
#: is taken as unknown (its parent, a spawner, reaps it within milliseconds)
REAP_WAIT = 2.0
#: how often the state file is looked at meanwhile
REAP_POLL = 0.005


_UNSAFE = re.compile(r"[^A-Za-z0-9@+\-_.~]")


def key(run_id: str, attempt: int) -> str:
    """The file-name-safe key of an attempt (``job@instant.N``, percent-escaped)."""
    if _UNSAFE.search(run_id) is None:  # the usual case, without quote()'s cost
        return f"{run_id}.{attempt}"
    return f"{quote(run_id, safe='@+-_.~')}.{attempt}"


@final
@dataclass(slots=True)
class Paths:
    """An attempt's files."""

    state: str
    spool: str
    script: str | None


def recorded_status(path: str) -> _statefile.Status | None:
    """The status in a state file, if one was written."""
    try:
        return _statefile.read(path).status
    except (OSError, ValueError):
        return None


def _settled(pid: int, start_ticks: int) -> bool:
    """The job's process is gone (reaped), or the pid names another process now."""
    st = _procfs.read_stat(pid)
    return st is None or st.start_ticks != start_ticks


@final
class Attempt:
    """One live attempt: its process, its files, and the rules for stopping it.

    Created before its process exists (``pid`` is 0 until ``spawned``).
    """

    def __init__(
        self,
        *,
        handle: RunHandle,
        paths: Paths,
        wall: Callable[[], float],
        pump: OutputPump,
        deadline: float | None,
        kill_grace: float,
        start_ticks: int | None = None,
        stop: Outcome | None = None,
        stop_at: float | None = None,
    ) -> None:
        self.handle = handle
        self.key = key(handle.run_id, handle.attempt)
        self.paths = paths
        self.wall = wall
        self.pump = pump
        self.deadline = deadline  #: wall clock
        self.kill_grace = kill_grace
        self.start_ticks = start_ticks  #: known for adopted attempts
        self.stop = stop
        self.stop_at = stop_at  #: wall clock
        self.kill_at: float | None = None  #: trio clock: when SIGKILL is due
        self.sigkilled = False  #: dcrond sent SIGKILL to the group
        self.supervised = False
        self.release: Callable[[], None] | None = None  #: tells the spawner's client to forget it
        self.started = trio.Event()  #: pid known, or the start failed
        self.failure: str | None = None  #: why nothing was started
        self.status: _statefile.Status | None = None  #: how the job ended, once known
        self.ended = False  #: the job has ended (``status`` None: unknown)
        self.by_pidfd = False  #: watched through a pidfd, not the spawner's replies
        self._watching = False
        self._wake = trio.Event()

    @property
    def pgid(self) -> int:
        """The process group (and session) of everything the attempt started."""
        return self.handle.pid

    # --- the spawner's replies (``_client.Waiter``) -------------------------------------

    def spawned(self, pid: int) -> None:
        """The job runs as ``pid``."""
        self.handle = replace(self.handle, pid=pid)
        self.started.set()

    def spawn_failed(self, text: str) -> None:
        """The spawner could not start a process."""
        self.failure = text
        self.started.set()

    def exited(self, code: int | None, sig: int | None) -> None:
        """The job ended; the spawner recorded how and reaped it."""
        if not self.ended:
            self.status = (code, sig)
            self.ended = True
            self._wake.set()

    def spawner_lost(self) -> None:
        """The spawner is gone: watch the job by pidfd (or learn that it never started)."""
        try:
            st: _statefile.AttemptState | None = _statefile.read(self.paths.state)
        except (OSError, ValueError):
            st = None
        if not self.started.is_set():
            if st is None:
                self.spawn_failed("the spawner exited before it started the job")
                return
            self.spawned(st.pid)
        if st is not None and st.pid == self.pgid:
            self.start_ticks = st.start_ticks
        self.by_pidfd = True
        self._wake.set()

    def request_stop(self, outcome: Outcome) -> None:
        """Stop the attempt (the first reason given wins)."""
        if self.stop is None:
            self.stop = outcome
        self._wake.set()

    # --- waiting for the end ---------------------------------------------------------------

    def trio_time(self, instant: float) -> float:
        """A wall-clock instant on trio's clock."""
        return trio.current_time() + (instant - self.wall())

    async def wait_end(self, nursery: trio.Nursery) -> None:
        """Return once the job has ended, enforcing the deadline and stop requests meanwhile."""
        while not self.ended:
            if self.by_pidfd and not self._watching:
                self._watching = True
                nursery.start_soon(self._watch_pidfd)
            if self.stop is None and self.deadline is not None and self.wall() >= self.deadline:
                self.stop = Outcome.TIMED_OUT
            if self.stop is not None and self.kill_at is None:
                self._begin_stop()
            due = self.kill_at is not None and trio.current_time() >= self.kill_at
            if due and not self.sigkilled:
                self.sigkilled = True
                _procfs.signal_group(self.pgid, signal.SIGKILL)
            timer = math.inf
            if self.kill_at is not None and not self.sigkilled:
                timer = self.kill_at
            elif self.stop is None and self.deadline is not None:
                timer = self.trio_time(self.deadline)
            with trio.move_on_at(timer):
                await self._wake.wait()
            self._wake = trio.Event()

    def _begin_stop(self) -> None:
        assert self.stop is not None
        if self.stop_at is None:
            self.stop_at = self.wall()
            _statefile.append_stop(self.paths.state, self.stop.value, self.stop_at)
        _procfs.terminate_group(self.pgid)
        self.kill_at = self.trio_time(self.stop_at + self.kill_grace)

    async def _watch_pidfd(self) -> None:
        """Wait for the job to exit, then for its status (or its reap) — no spawner tells us."""
        pid = self.pgid
        ticks = self.start_ticks
        if ticks is None:  # (no record was read): a live job leads its own session
            st = _procfs.read_stat(pid)
            ticks = st.start_ticks if st is not None and st.session == pid else -1
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            pidfd = None
        if pidfd is not None and _settled(pid, ticks):
            os.close(pidfd)  # the number names another process now: ours is gone
            pidfd = None
        if pidfd is not None:
            try:
                await trio.lowlevel.wait_readable(pidfd)
            finally:
                trio.lowlevel.notify_closing(pidfd)
                os.close(pidfd)
        give_up = trio.current_time() + REAP_WAIT
        status = recorded_status(self.paths.state)
        while status is None and trio.current_time() < give_up:
            if _settled(pid, ticks):
                status = recorded_status(self.paths.state)
                break
            await trio.sleep(REAP_POLL)
            status = recorded_status(self.paths.state)
        if not self.ended:
            self.status = status
            self.ended = True
            self._wake.set()

    # --- what the job left behind ---------------------------------------------------------

    def leftovers(self) -> bool:
        """Processes of the attempt's group are still running."""
        if not _procfs.signal_group(self.pgid, 0):
            return False
        # the job is not our child: trust only members of its session
        members = _procfs.live_members(self.pgid)
        return any((s := _procfs.read_stat(p)) and s.session == self.pgid for p in members)

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
