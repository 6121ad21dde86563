"""The real ``ProcessRunner``: runs attempts as process groups on this host, under trio.

Theory of operation
-------------------

Each runner starts one long-lived **spawner** process (``_spawner``, a
small standalone program) and asks it to start every job (``_client``).
``run(spec)`` does its part synchronously, on the calling task, with no
checkpoint: it builds the environment, makes a pipe for the output and
sends the spawner a request carrying the pipe's ends (``SCM_RIGHTS``) and
the attempt's record for its state file (``_statefile``). The spawner forks
and execs the job (vfork: the cheapest start Python has), writes the record
and replies with the pid; only then does ``run`` report a ``RunHandle``
through ``task_status.started``. The daemon never forks a job, so a daemon
holding a large job table pays nothing for the job's size, and the job's
start does not wait for the daemon's loop. Then it supervises:

1. the output pump copies the pipe into the capped spool (``_output``);
2. the attempt waits for the spawner's "exited" reply (which comes after
   the exact exit code or signal is in the state file), enforcing the
   deadline and ``kill()`` meanwhile: either one records the stop in the
   state file, sends SIGTERM (and SIGCONT) to the whole group, and SIGKILL
   after the grace (``_attempt``);
3. once the job has exited, whatever is left in the group (jobs'
   background children) gets SIGTERM, then SIGKILL after the grace — the
   systemd ``KillMode=control-group`` rule: nothing an attempt started
   outlives it, unless it left the session with ``setsid``;
4. the pump drains the pipe, the spool gets its trailer, the files of the
   attempt are removed (the spool stays) and a ``RunResult`` is returned.

**Spare state files.** Creating a file is the dearest part of a start on
some file systems (0.5-0.8 ms of CPU on the root ext4 of the machines we
measure on, where renaming one takes 16 us), and a crowd of starts pays it
once per job on the spawner's core. So the state file of an ended attempt
is not removed but emptied and kept as a *spare* (``live/spare.N``, up to
``spares``), spares are made up to that number when the runner is
created, and a start renames a spare to its state file's name; the spawner
then only appends to it. With no spare left the spawner creates the file
as before. A spare holds nothing, and recovery never reads one.

A daemon that restarts while the job runs finds its state file
(``recover``): the job's pid and start time name it, the spawner (which
outlives the daemon until its last job ends) holds the pipe's read end, so
the new daemon reopens the pipe through ``/proc/<spawner>/fd/<n>``, watches
the job through a pidfd, and reads its real status from the state file.
If the spawner itself dies, its jobs are watched the same way; they end
``lost`` unless a status was recorded first, and the next ``run`` starts a
new spawner. Cancelling ``run`` or ``supervise`` *detaches*: the process
keeps running and its state file stays, for the next daemon to recover;
stopping a run is ``kill``'s job. ``close()`` lets the spawner go (it exits
when its last job has ended).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, final

import trio

from dcrond.errors import InvalidRequest, NotFound
from dcrond.runner import _procfs, _statefile
from dcrond.runner._attempt import DRAIN_WAIT, REAP_POLL, REAP_WAIT, Attempt, Paths
from dcrond.runner._attempt import key as attempt_key
from dcrond.runner._client import SpawnerClient
from dcrond.runner._output import Follower, OutputPump
from dcrond.runner._spawn import (
    build_env,
    own_identity,
    raise_fd_limit,
    remove_quietly,
    remove_script,
    resolve_identity,
    spawn_request,
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

#: spare state files a runner keeps ready by default (see the module doc)
DEFAULT_SPARES: Final = 64


@final
class LocalProcessRunner:
    """Runs attempts as real processes on this host; see the module's theory of operation.

    ``work_dir`` holds ``live/`` (the state file of each running attempt),
    ``spool/`` (one ``.log`` per attempt, kept until the caller
    removes it) and ``scripts/``. ``wall_clock`` stamps results;
    ``daemon_env`` is the environment the few passed-through variables
    (``PATH``, ``LANG``) come from. Creating one raises the process's soft
    open-files limit to the hard limit (jobs get the original back) and
    starts its spawner; ``close()`` it when done.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        wall_clock: Callable[[], float] = time.time,
        daemon_env: Mapping[str, str] | None = None,
        spares: int = DEFAULT_SPARES,
    ) -> None:
        self._dir = Path(work_dir)
        self._live_dir = self._dir / "live"
        self._spool_dir = self._dir / "spool"
        self._script_dir = self._dir / "scripts"
        self._live_str, self._spool_str = str(self._live_dir), str(self._spool_dir)
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
        self._spares_max = max(0, spares)
        self._spares: deque[str] = deque()  #: empty files in live/ to rename into place
        names = [n for n in os.listdir(self._live_dir) if n.startswith("spare.")]
        numbers = [int(n[6:]) for n in names if n[6:].isdigit()]
        self._spare_names = itertools.count(max(numbers, default=0) + 1)
        for name in sorted(names):  # kept by an earlier runner: empty them, keep what we may
            self._keep_spare(str(self._live_dir / name))
        self._make_spares()
        self._client: SpawnerClient | None = SpawnerClient()
        self._live: dict[str, Attempt] = {}
        self._started = 0
        self._adopted = 0
        self._finished: dict[Outcome, int] = dict.fromkeys(Outcome, 0)

    # --- public API ----------------------------------------------------------

    def close(self) -> None:
        """Let the spawner go: it takes no more jobs and exits once its last one has ended.

        Running jobs keep running (a later runner re-adopts them through
        ``recover``); ``run`` after ``close`` starts a new spawner.
        """
        client, self._client = self._client, None
        if client is not None:
            client.close()

    @property
    def spawner_pid(self) -> int | None:
        """The pid of the current spawner (None when there is none)."""
        return None if self._client is None else self._client.pid

    def spool_path(self, run_id: str, attempt: int) -> Path:
        """Where the output of an attempt is (or was) spooled (no file: it printed nothing)."""
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
        try:
            await att.started.wait()
        except BaseException:
            if att.failure is None:
                self._detach(att)
            raise
        if att.failure is not None:
            self._unstarted(att)
            raise OSError(f"could not start attempt {spec.attempt} of {spec.run_id}: {att.failure}")
        self._started += 1
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
                att.request_stop(Outcome.KILLED)
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
        """Handles of the attempts running now (those whose process exists)."""
        return [a.handle for a in self._live.values() if a.handle.pid]

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
                if st.status is None:  # a job that just exited: wait for its status
                    st = _wait_reaped(path, st)
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

    # --- spare state files (see the module doc) ---------------------------------

    def _keep_spare(self, path: str) -> None:
        if len(self._spares) >= self._spares_max:
            remove_quietly(path)
            return
        try:
            os.truncate(path, 0)
        except OSError:
            remove_quietly(path)
            return
        self._spares.append(path)

    def _next_spare(self) -> str:
        return f"{self._live_str}/spare.{next(self._spare_names)}"

    def _make_spares(self) -> None:
        """Make spares up to ``spares``, once, when the runner is made (before any start).

        ~10 ms of the daemon's start at the default 16 slots (~0.6 ms a file here).
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        while len(self._spares) < self._spares_max:
            path = self._next_spare()
            try:
                os.close(os.open(path, flags, 0o600))
            except OSError:
                return  # the folder is gone, or full: starts create their own files
            self._spares.append(path)

    def _place_state_file(self, path: str) -> None:
        """Rename a spare to ``path`` if there is one (else the spawner creates it)."""
        while self._spares:
            spare = self._spares.pop()
            try:
                os.rename(spare, path)
                return
            except OSError:
                continue

    def _retire_state_file(self, path: str) -> None:
        """An attempt's state file is done with: empty it and keep it as a spare, or remove it."""
        if len(self._spares) < self._spares_max:
            spare = self._next_spare()
            try:
                os.truncate(path, 0)
                os.rename(path, spare)
                self._spares.append(spare)
                return
            except OSError:
                pass
        remove_quietly(path)

    # --- starting --------------------------------------------------------------

    def _paths(self, key: str) -> Paths:
        return Paths(
            state=f"{self._live_str}/{key}.state", spool=f"{self._spool_str}/{key}.log", script=None
        )

    def _spawner(self) -> SpawnerClient:
        """The spawner, started anew if there is none (closed, or it died)."""
        client = self._client
        if client is None or not client.alive:
            if client is not None:
                client.close()
            client = self._client = SpawnerClient()
        return client

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
        client = self._spawner()
        started_at = self._wall()
        deadline = None if spec.timeout is None else started_at + spec.timeout
        read_fd, write_fd = os.pipe()
        record = _statefile.record_prefix(
            run_id=spec.run_id,
            attempt=spec.attempt,
            started_at=started_at,
            deadline=deadline,
            kill_grace=spec.kill_grace,
            output_cap=spec.output_cap,
            spool=paths.spool,
            script=paths.script,
            pipe_ino=os.fstat(read_fd).st_ino,
        )
        self._place_state_file(paths.state)
        request = spawn_request(
            argv=argv,
            env=env,
            cwd=cwd,
            who=who,
            nofile=self._nofile,
            state_path=paths.state,
            record=record,
        )
        handle = RunHandle(spec.run_id, spec.attempt, 0, started_at, Path(paths.spool))
        att = Attempt(
            handle=handle,
            paths=paths,
            wall=self._wall,
            pump=OutputPump(read_fd, paths.spool, spec.output_cap),
            deadline=deadline,
            kill_grace=spec.kill_grace,
        )
        # the spawner gets both ends (it holds the read end while the job runs)
        rid = client.spawn(att, request, [write_fd, read_fd], close=[write_fd])
        att.release = functools.partial(client.forget, rid)
        os.set_blocking(read_fd, False)
        self._live[key] = att
        return att

    def _unstarted(self, att: Attempt) -> None:
        """Undo the start of an attempt whose process could not be created."""
        att.pump.detach()
        self._retire_state_file(att.paths.state)
        remove_quietly(att.paths.spool)
        if att.paths.script is not None:
            remove_script(att.paths.script)
        self._live.pop(att.key, None)

    # --- supervising -------------------------------------------------------------

    async def _supervise(self, att: Attempt) -> RunResult:
        att.supervised = True
        key = att.key
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(att.pump.run)
                await att.wait_end(nursery)
                finished_at = self._wall()
                await att.clean_group()
                with trio.move_on_after(DRAIN_WAIT):
                    await att.pump.eof.wait()
                att.pump.drain_nowait()
                nursery.cancel_scope.cancel()
        except BaseException:
            self._detach(att)
            raise
        exit_code, sig = att.status if att.status is not None else (None, None)
        if att.status is None and att.sigkilled:
            sig = signal.SIGKILL  # the status is unknown, but we know what we sent
        if att.stop is not None:
            state = att.stop
        elif att.status is None:
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

    def _detach(self, att: Attempt) -> None:
        """Stop watching an attempt that keeps running (its state file stays)."""
        att.pump.detach()
        if att.release is not None:
            att.release()
        self._live.pop(att.key, None)

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
        self._retire_state_file(paths.state)  # last: until now a restart can find the attempt
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

    def _adopt(self, st: _statefile.AttemptState) -> RunHandle:
        """Take over a still-running attempt (watched by pidfd: it is not our spawner's child)."""
        paths = self._paths_of(st)
        kept = _size(st.spool)
        handle = RunHandle(st.run_id, st.attempt, st.pid, st.started_at, Path(st.spool), True)
        att = Attempt(
            handle=handle,
            paths=paths,
            wall=self._wall,
            pump=OutputPump(_reopen_pipe(st), st.spool, st.output_cap, kept=kept, fresh=False),
            deadline=st.deadline,
            kill_grace=st.kill_grace,
            start_ticks=st.start_ticks,
            stop=None if st.stop is None else Outcome(st.stop),
            stop_at=st.stop_at,
        )
        att.started.set()
        att.by_pidfd = True
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
            # the status line was the last write to the state file: the job
            # ended that long ago (measured on the system clock, applied to ours)
            with contextlib.suppress(OSError):
                ago = max(0.0, time.time() - os.stat(paths.state).st_mtime)
                finished_at = max(st.started_at, finished_at - ago)
        exit_code, sig = status if status is not None else (None, None)
        if st.stop is not None:
            state = Outcome(st.stop)
        elif status is None:
            state = Outcome.LOST
        else:
            state = Outcome.SUCCEEDED if exit_code == 0 else Outcome.FAILED
        pump = OutputPump(None, st.spool, st.output_cap, kept=_size(st.spool), fresh=False)
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


def _size(path: str) -> int:
    """A spool's size (0 when the job printed nothing, so there is none)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _reopen_pipe(st: _statefile.AttemptState) -> int | None:
    """Open an adopted attempt's output pipe again, through the process holding its read end."""
    holder = st.pid if st.holder is None else st.holder
    try:
        fd = os.open(f"/proc/{holder}/fd/{st.holder_fd}", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None  # watched without its output (the holder, a spawner, is gone)
    if st.pipe_ino is not None and os.fstat(fd).st_ino != st.pipe_ino:
        os.close(fd)  # the holder's pid names another process now
        return None
    return fd


def _wait_reaped(path: str, st: _statefile.AttemptState) -> _statefile.AttemptState:
    """Re-read a state file once its exited job is reaped (its spawner writes the status first).

    Only a job that has exited but is not reaped yet (a zombie) is waited
    for, at most ``REAP_WAIT`` seconds; this runs once, at start-up.
    """
    give_up = time.monotonic() + REAP_WAIT
    while time.monotonic() < give_up:
        proc = _procfs.read_stat(st.pid)
        if proc is None or proc.start_ticks != st.start_ticks or not proc.exited:
            break
        time.sleep(REAP_POLL)
    return _statefile.read(path)
