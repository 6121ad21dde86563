"""The real ``ProcessRunner``: runs attempts as process groups on this host, under trio.

Theory of operation
-------------------

``run(spec)`` does everything up to the exec synchronously, on the calling
task, with no checkpoint and no thread hop: it builds the environment, makes
a pipe for the output, opens the attempt's state file (``_statefile``,
which the supervisor inherits to write the exit status into; made empty
ahead of time and renamed after the start, since creating a file costs a
tenth of a millisecond) and starts the supervisor shell (see ``_spawn``) in
a new session. Only then does it open the spool and report a ``RunHandle``
through ``task_status.started``; the state file's record (which needs the
supervisor's start time from /proc, a read that stalls while the child is
still in ``execve`` and slows it) is written 10 ms later. Then it supervises:

1. the output pump copies the pipe into the capped spool (``_output``);
2. the attempt waits for its supervisor to exit (a pidfd becoming readable),
   while an enforcer waits for the deadline or a ``kill()``: either one
   records the stop in the state file, sends SIGTERM (and SIGCONT) to the
   whole group, and SIGKILL after the grace;
3. when the supervisor has exited, whatever is left in the group (jobs'
   background children) gets SIGTERM, then SIGKILL after the grace — the
   systemd ``KillMode=control-group`` rule: nothing an attempt started
   outlives it, unless it left the session with ``setsid``;
4. the pump drains the pipe, the spool gets its trailer, the files of the
   attempt are removed (the spool stays) and a ``RunResult`` is returned.

The job's status is what the supervisor exits with and also writes to the
state file, so an attempt re-adopted after a restart (``recover`` +
``supervise``, watched through a pidfd since it is no longer our child)
still ends with its real exit code. Cancelling ``run`` or ``supervise``
*detaches*: the process keeps running and its state file stays, for the
next daemon to recover; stopping a run is ``kill``'s job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import final

import trio

from dcrond.errors import InvalidRequest, NotFound
from dcrond.runner import _procfs, _statefile
from dcrond.runner._attempt import DRAIN_WAIT, Attempt, Paths, decode
from dcrond.runner._attempt import key as attempt_key
from dcrond.runner._output import Follower, OutputPump
from dcrond.runner._spawn import (
    build_env,
    own_identity,
    raise_fd_limit,
    remove_quietly,
    remove_script,
    resolve_identity,
    spawn,
    working_dir,
    write_script,
)
from dcrond.runner._spec import (
    Outcome,
    Recovered,
    RunHandle,
    RunnerStatistics,
    RunResult,
    RunSpec,
)

#: how long after the start the state file's record is written
_RECORD_DELAY = 0.01

#: supervisors we stopped watching while they still ran (``run`` was
#: cancelled); kept so that ``Popen`` never warns about them
_detached: list[subprocess.Popen[bytes]] = []


@final
class LocalProcessRunner:
    """Runs attempts as real processes on this host; see the module's theory of operation.

    ``work_dir`` holds ``live/`` (the state file of each running attempt),
    ``spool/`` (one ``.log`` per attempt, kept until the caller
    removes it) and ``scripts/``. ``wall_clock`` stamps results;
    ``daemon_env`` is the environment the few passed-through variables
    (``PATH``, ``LANG``) come from. Creating one raises the process's soft
    open-files limit to the hard limit (jobs get the original back).
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        wall_clock: Callable[[], float] = time.time,
        daemon_env: Mapping[str, str] | None = None,
    ) -> None:
        self._dir = Path(work_dir)
        self._live_dir = self._dir / "live"
        self._spool_dir = self._dir / "spool"
        self._script_dir = self._dir / "scripts"
        for d, mode in (
            (self._dir, 0o711),
            (self._live_dir, 0o700),
            (self._spool_dir, 0o700),
            (self._script_dir, 0o711),
        ):
            d.mkdir(mode=mode, parents=True, exist_ok=True)
            os.chmod(d, mode)
        self._wall = wall_clock
        self._env = dict(os.environ if daemon_env is None else daemon_env)
        self._own = own_identity()
        self._nofile = raise_fd_limit()
        for name in os.listdir(self._live_dir):
            if name.startswith("spare."):  # left by an earlier daemon: never used
                remove_quietly(str(self._live_dir / name))
        self._spares = 0
        self._spare: str | None = None
        self._live: dict[str, Attempt] = {}
        self._started = 0
        self._adopted = 0
        self._finished: dict[Outcome, int] = dict.fromkeys(Outcome, 0)

    # --- public API ----------------------------------------------------------

    def spool_path(self, run_id: str, attempt: int) -> Path:
        """Where the output of an attempt is (or was) spooled."""
        return self._spool_dir / f"{attempt_key(run_id, attempt)}.log"

    async def run(
        self,
        spec: RunSpec,
        *,
        task_status: trio.TaskStatus[RunHandle] = trio.TASK_STATUS_IGNORED,
    ) -> RunResult:
        """Run one attempt to its end and return how it ended.

        The process is created before the first checkpoint; ``task_status``
        receives its ``RunHandle`` right after. Raises ``InvalidRequest``
        (nothing started) when the user is unknown here or cannot be switched
        to, or when this attempt is already running.
        """
        att = self._start(spec)
        task_status.started(att.handle)
        return await self._supervise(att)

    async def supervise(self, handle: RunHandle) -> RunResult:
        """Watch a re-adopted attempt (from ``recover``) to its end."""
        att = self._live.get(attempt_key(handle.run_id, handle.attempt))
        if att is None or att.supervised:
            raise InvalidRequest(
                f"attempt {handle.attempt} of {handle.run_id} is not waiting to be supervised"
            )
        return await self._supervise(att)

    def kill(self, run_id: str) -> bool:
        """Stop every live attempt of ``run_id`` (SIGTERM, SIGKILL after the grace).

        Returns whether there was one; the attempt then ends as ``killed``.
        """
        found = False
        for att in self._live.values():
            if att.handle.run_id == run_id:
                found = True
                if att.stop is None:
                    att.stop = Outcome.KILLED
                att.stop_requested.set()
        return found

    def follow(self, run_id: str, attempt: int, offset: int = 0) -> Follower:
        """Iterate over an attempt's output from ``offset``, live until it ends.

        Raises ``NotFound`` when there is no such spool.
        """
        att = self._live.get(attempt_key(run_id, attempt))
        path = str(self.spool_path(run_id, attempt))
        if att is None and not os.path.exists(path):
            raise NotFound(f"no output for attempt {attempt} of {run_id}")
        return Follower(path, offset, None if att is None else att.pump)

    def running(self) -> list[RunHandle]:
        """Handles of the attempts running now."""
        return [a.handle for a in self._live.values()]

    def statistics(self) -> RunnerStatistics:
        """Counters since this runner was created."""
        f = self._finished
        return RunnerStatistics(
            running=len(self._live),
            started=self._started,
            adopted=self._adopted,
            succeeded=f[Outcome.SUCCEEDED],
            failed=f[Outcome.FAILED],
            timed_out=f[Outcome.TIMED_OUT],
            killed=f[Outcome.KILLED],
            lost=f[Outcome.LOST],
        )

    def recover(self) -> list[Recovered]:
        """Find the attempts a previous daemon left running in this work dir.

        Each is either re-adopted (still running: pass its ``handle`` to
        ``supervise``) or finished here and now with its real outcome — or
        ``lost`` when it ended without recording a status. A run the caller
        believes is running on this host but that is not returned here was
        lost before it could be recorded.
        """
        found: list[Recovered] = []
        for name in sorted(os.listdir(self._live_dir)):
            if not name.endswith(".state"):
                continue
            key = name.removesuffix(".state")
            if key in self._live:
                continue
            path = str(self._live_dir / name)
            try:
                st = _statefile.read(path)
            except (OSError, ValueError):
                # not ours to interpret: nothing can be said about it
                remove_quietly(path)
                continue
            if attempt_key(st.run_id, st.attempt) != key:
                remove_quietly(path)
                continue
            handle = self._adopt(st) if _procfs.is_running(st.pid, st.start_ticks) else None
            if handle is not None:
                found.append(Recovered(st.run_id, st.attempt, handle, None))
            else:
                found.append(Recovered(st.run_id, st.attempt, None, self._finish_offline(st)))
        return found

    # --- starting --------------------------------------------------------------

    def _paths(self, key: str) -> Paths:
        return Paths(
            state=str(self._live_dir / f"{key}.state"),
            spool=str(self._spool_dir / f"{key}.log"),
            script=None,
        )

    def _new_spare(self) -> str:
        self._spares += 1
        path = str(self._live_dir / f"spare.{self._spares}")
        os.close(_statefile.create(path))
        return path

    def _take_spare(self) -> tuple[str, int]:
        """A state file made ahead of time (creating one costs ~0.1 ms), renamed once used."""
        path = self._spare if self._spare is not None else self._new_spare()
        self._spare = None
        return path, _statefile.open_append(path)

    def _start(self, spec: RunSpec) -> Attempt:
        key = attempt_key(spec.run_id, spec.attempt)
        if key in self._live:
            raise InvalidRequest(f"attempt {spec.attempt} of {spec.run_id} is already running")
        who = resolve_identity(spec.user, self._own)
        env = build_env(spec, who, self._env)
        cwd = working_dir(spec, who)
        paths = self._paths(key)
        script: str | None = None
        if isinstance(spec.script, bytes):
            script = paths.script = write_script(str(self._script_dir), key, spec.script, who)
        elif spec.script is not None:
            script = str(spec.script)
        argv = spec.argv(script)
        read_fd, write_fd = os.pipe()
        spare, state_fd = self._take_spare()
        try:
            popen = spawn(
                spec,
                argv=argv,
                env=env,
                cwd=cwd,
                who=who,
                out_fd=write_fd,
                exit_fd=state_fd,
                keep_fd=read_fd,
                nofile=self._nofile,
            )
        except BaseException:
            for fd in (read_fd, write_fd, state_fd):
                os.close(fd)
            remove_quietly(spare)
            if paths.script is not None:
                remove_script(paths.script)
            raise
        # the job is on its way; what follows is off its critical path
        started_at = self._wall()
        os.rename(spare, paths.state)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        spool_fd = os.open(paths.spool, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        handle = RunHandle(spec.run_id, spec.attempt, popen.pid, started_at, Path(paths.spool))
        att = Attempt(
            handle=handle,
            paths=paths,
            pidfd=os.pidfd_open(popen.pid),
            popen=popen,
            wall=self._wall,
            state_fd=state_fd,
            start_ticks=None,
            pump=OutputPump(read_fd, spool_fd, spec.output_cap),
            deadline=None if spec.timeout is None else started_at + spec.timeout,
            kill_grace=spec.kill_grace,
        )
        self._live[key] = att
        self._started += 1
        return att

    # --- supervising -------------------------------------------------------------

    async def _supervise(self, att: Attempt) -> RunResult:
        att.supervised = True
        key = attempt_key(att.handle.run_id, att.handle.attempt)
        status: int | None = None
        leader_signal: int | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(att.pump.run)
                async with trio.open_nursery() as watch:
                    watch.start_soon(att.enforce)
                    if att.start_ticks is None:
                        watch.start_soon(self._record_soon, att)
                    assert att.pidfd is not None
                    await trio.lowlevel.wait_readable(att.pidfd)
                    watch.cancel_scope.cancel()
                finished_at = self._wall()
                self._record_now(att)  # (if not yet) while the supervisor is unreaped
                if att.popen is not None:
                    # the supervisor exits with the job's status
                    rc = att.popen.poll()
                    assert rc is not None
                    if rc < 0:
                        leader_signal = -rc
                    else:
                        status = rc
                else:
                    status = self._recorded_status(att)
                await att.clean_group()
                with trio.move_on_after(DRAIN_WAIT):
                    await att.pump.eof.wait()
                att.pump.drain_nowait()
                nursery.cancel_scope.cancel()
        except BaseException:
            self._record_now(att)
            self._detach(key, att)
            raise
        att.close_fds()
        exit_code, sig = decode(status)
        if status is None:
            # the supervisor itself was killed, so the job's status is unknown; for an
            # adopted one (not our child) we only know the SIGKILL if we sent it
            sig = leader_signal or (signal.SIGKILL if att.sigkilled else None)
        if att.stop is not None:
            state = att.stop
        elif status is None and sig is None:
            state = Outcome.LOST
        elif exit_code == 0:
            state = Outcome.SUCCEEDED
        else:
            state = Outcome.FAILED
        note = None
        if state is Outcome.LOST:
            note = "the attempt ended without recording an exit status"
        return self._finish(
            key,
            paths=att.paths,
            pump=att.pump,
            handle=att.handle,
            state=state,
            exit_code=exit_code,
            sig=sig,
            finished_at=finished_at,
            note=note,
        )

    async def _record_soon(self, att: Attempt) -> None:
        # reading /proc/<pid>/stat stalls while the child is in execve, and slows
        # it: wait until the job has surely started (a crash before this leaves a
        # state file without a record, and the run is then lost)
        await trio.sleep(_RECORD_DELAY)
        self._record_now(att)

    def _record_now(self, att: Attempt) -> None:
        if att.start_ticks is not None or att.state_fd is None:
            return
        with contextlib.suppress(OSError):  # a full disk: supervise on, unrecorded
            att.record()
            if self._spare is None:
                self._spare = self._new_spare()

    @staticmethod
    def _recorded_status(att: Attempt) -> int | None:
        try:
            return _statefile.read(att.paths.state).status
        except (OSError, ValueError):
            return None

    def _detach(self, key: str, att: Attempt) -> None:
        """Stop watching an attempt that keeps running (its state file stays)."""
        att.close_fds()
        att.pump.detach()
        if att.popen is not None and att.popen.returncode is None:
            _detached.append(att.popen)
        self._live.pop(key, None)

    def _finish(
        self,
        key: str,
        *,
        paths: Paths,
        pump: OutputPump,
        handle: RunHandle,
        state: Outcome,
        exit_code: int | None,
        sig: int | None,
        finished_at: float,
        note: str | None,
    ) -> RunResult:
        pump.seal(note)
        if paths.script is not None:
            remove_script(paths.script)
        remove_quietly(paths.state)  # last: until now a restart can still find the attempt
        self._live.pop(key, None)
        self._finished[state] += 1
        return RunResult(
            run_id=handle.run_id,
            attempt=handle.attempt,
            state=state,
            exit_code=exit_code,
            signal=sig,
            started_at=handle.started_at,
            finished_at=finished_at,
            output_bytes=pump.kept,
            discarded_bytes=pump.discarded,
            truncated=pump.truncated,
            spool_path=handle.spool_path,
            adopted=handle.adopted,
        )

    # --- recovery ------------------------------------------------------------------

    def _paths_of(self, st: _statefile.AttemptState) -> Paths:
        state = str(self._live_dir / f"{attempt_key(st.run_id, st.attempt)}.state")
        return Paths(state, st.spool, st.script)

    def _adopt(self, st: _statefile.AttemptState) -> RunHandle | None:
        """Take over a still-running attempt; None if it ended meanwhile."""
        try:
            pidfd = os.pidfd_open(st.pid)
        except ProcessLookupError:
            return None
        if not _procfs.is_running(st.pid, st.start_ticks):  # the pid was reused after all
            os.close(pidfd)
            return None
        paths = self._paths_of(st)
        # the supervisor holds the pipe's read end as its fd 4: open the same pipe through it
        read_fd: int | None
        try:
            read_fd = os.open(f"/proc/{st.pid}/fd/4", os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            read_fd = None  # watched without its output (which then waits in the pipe)
        spool_fd = os.open(st.spool, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        kept = os.fstat(spool_fd).st_size
        handle = RunHandle(st.run_id, st.attempt, st.pid, st.started_at, Path(st.spool), True)
        stop = None if st.stop is None else Outcome(st.stop)
        att = Attempt(
            handle=handle,
            paths=paths,
            pidfd=pidfd,
            popen=None,
            wall=self._wall,
            state_fd=None,
            start_ticks=st.start_ticks,
            pump=OutputPump(read_fd, spool_fd, st.output_cap, kept=kept),
            deadline=st.deadline,
            kill_grace=st.kill_grace,
            stop=stop,
            stop_at=st.stop_at,
        )
        if stop is not None:
            att.stop_requested.set()
        self._live[attempt_key(st.run_id, st.attempt)] = att
        self._adopted += 1
        return handle

    def _finish_offline(self, st: _statefile.AttemptState) -> RunResult:
        """Close an attempt that ended while no daemon watched it."""
        markers = [f"DCROND_RUN_ID={st.run_id}".encode(), f"DCROND_ATTEMPT={st.attempt}".encode()]
        _procfs.kill_orphans(st.pid, markers)
        status = st.status
        paths = self._paths_of(st)
        finished_at = self._wall()
        if status is not None:
            # the supervisor's status line was the last write to the state file: it
            # ended that long ago (measured on the system clock, applied to ours)
            with contextlib.suppress(OSError):
                ago = max(0.0, time.time() - os.stat(paths.state).st_mtime)
                finished_at = max(st.started_at, finished_at - ago)
        exit_code, sig = decode(status)
        if st.stop is not None:
            state = Outcome(st.stop)
        elif status is None:
            state = Outcome.LOST
        else:
            state = Outcome.SUCCEEDED if exit_code == 0 else Outcome.FAILED
        spool_fd = os.open(st.spool, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        kept = os.fstat(spool_fd).st_size
        pump = OutputPump(None, spool_fd, st.output_cap, kept=kept)
        if state is Outcome.LOST:
            note = "dcrond was not running when the attempt ended, and it left no exit status"
        else:
            note = "dcrond was not running when the attempt ended: late output may be missing"
        handle = RunHandle(st.run_id, st.attempt, st.pid, st.started_at, Path(st.spool), True)
        key = attempt_key(st.run_id, st.attempt)
        return self._finish(
            key,
            paths=paths,
            pump=pump,
            handle=handle,
            state=state,
            exit_code=exit_code,
            sig=sig,
            finished_at=finished_at,
            note=note,
        )
