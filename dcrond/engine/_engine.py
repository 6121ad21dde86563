"""``Engine``: the replicated job table turned into running processes on this host.

See the package docstring for the theory of operation; this module wires the
parts together (leader, worker, uploader), dispatches what the replica
applies to them, and serves what the RPC handlers ask: trigger, kill, logs,
upcoming instants, statistics.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import trio

from dcrond.config import Config
from dcrond.engine import _table
from dcrond.engine._clock import WallClock
from dcrond.engine._context import Context, HostsView, PeerCall, wait_any
from dcrond.engine._leader import Leader
from dcrond.engine._lease import LeaseTimes
from dcrond.engine._table import Claim
from dcrond.engine._uploader import LogUploader, UploaderStatistics
from dcrond.engine._worker import Worker
from dcrond.errors import (
    AlreadyExists,
    BlobNotFound,
    DcronError,
    InvalidRequest,
    NotFound,
    NotLeader,
    Unavailable,
)
from dcrond.replica import Replica
from dcrond.runner import ProcessRunner
from dcrond.schedule import parse
from dcrond.store import (
    FINAL_STATES,
    JOB_COMMANDS,
    RUN_COMMANDS,
    Applied,
    Command,
    CreateJob,
    Result,
    RunFinished,
    RunLost,
    RunPlaced,
    RunRefused,
    RunScheduled,
    RunSkipped,
    make_run_id,
    unwrap,
)
from dcrond.store._blobs import BlobStore, LogPartStore, log_key

log = logging.getLogger("dcrond.engine")

#: bytes of log one ``read_log`` call returns at most
LOG_CHUNK: Final = 256 * 1024
#: how often a read waiting for pieces of a log from another host looks at storage again
PIECE_POLL: Final = 1.0
#: the most instants ``upcoming`` lists
MAX_UPCOMING: Final = 1000
#: how long ``kill`` waits for the run to end beyond the kill grace, before answering anyway
KILL_SLACK: Final = 30.0
#: how long a call to another host's engine may take (a log read, say)
PEER_TIMEOUT: Final = 5.0
_ENDED_ATTEMPT: Final = frozenset({"succeeded", "failed", "timed_out", "killed", "lost", "skipped"})


@final
@dataclass(frozen=True, slots=True)
class EngineStatistics:
    """What the engine did since it was created (``/metrics``, ``cluster status``)."""

    leading: bool  #: this node schedules
    jobs: int  #: jobs in the scheduler's timer heap (0 when not leading)
    load_seconds: float | None  #: how long the last load of the heap from the table took
    armed: int  #: claimed attempts waiting for their instant (or a rule) here
    running: int  #: attempts running here
    unreported: int  #: ended attempts whose report is not committed yet
    claimed: int
    triggered: int
    retries: int
    dependents: int
    started: int
    adopted: int
    finished: int
    skipped: int
    lost: int
    pruned: int
    fire_lag_p50_ms: float | None  #: process start (runner's stamp) after its instant
    fire_lag_max_ms: float | None
    uploads: UploaderStatistics


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@final
class Engine:
    """Schedules (when leading) and runs (always) the jobs of the replicated table.

    ``host`` names this host in run records; ``wall_clock`` is the clock
    instants are read from (tests move it). ``lead_time`` is how long before
    its instant a run is claimed; ``grace`` (seconds) how late a run may be
    before catch-up rules apply; ``prune_interval`` how often retention
    runs; ``state_dir`` (default ``<data>/engine``) holds the upload queue
    and the reports not yet committed. ``lease`` turns on heartbeats and
    leases between hosts (``_lease``; needed as soon as there is a second
    host) and ``peer_call`` is how this host reaches the others (the
    leader for heartbeats, a run's host to kill it or read its log);
    ``hosts`` is the cluster's hosts as placement sees them (None: this
    host runs everything).
    """

    def __init__(
        self,
        replica: Replica,
        runner: ProcessRunner,
        blobs: BlobStore,
        config: Config,
        *,
        host: str,
        wall_clock: Callable[[], float] = time.time,
        lead_time: float = 0.05,
        grace: int = 5,
        prune_interval: float = 60.0,
        state_dir: Path | None = None,
        upload_retry: tuple[float, float] = (0.5, 30.0),
        lease: LeaseTimes | None = None,
        peer_call: PeerCall | None = None,
        hosts: HostsView | None = None,
    ) -> None:
        folder = Path(state_dir) if state_dir is not None else config.data_path / "engine"
        self.clock = WallClock(wall_clock)
        self.uploader = LogUploader(
            blobs,
            folder / "uploads",
            retry_min=upload_retry[0],
            retry_max=upload_retry[1],
            chunk_every=config.storage.log_chunk_interval_s,
            chunk_bytes=config.storage.log_chunk_bytes,
        )
        self._ctx = Context(
            replica=replica,
            runner=runner,
            blobs=blobs,
            uploader=self.uploader,
            config=config,
            host=host,
            clock=self.clock,
            lead_time=lead_time,
            grace=grace,
            lease=lease,
            peer_call=peer_call,
            hosts=hosts,
        )
        self._worker = Worker(self._ctx, folder)
        self._leader = Leader(self._ctx, prune_interval=prune_interval)
        self._replica = replica
        self._host = host
        self._watching = False
        self._running = False
        self._scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None

    # --- life cycle ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover what a previous daemon left, then schedule and run until cancelled.

        ``task_status.started()`` comes once recovery is under way and the
        engine reacts to the log. Run it once per ``Engine``.
        """
        if self._stopped is not None:
            raise RuntimeError("an Engine runs once; make a new one to start again")
        self._stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.uploader.run)
                    await nursery.start(self._ctx.batcher.run)
                    self._worker.bind(nursery)
                    if not self._watching:
                        self._replica.watch(self._on_applied)
                        self._watching = True
                    self._running = True
                    self._worker.recover()
                    nursery.start_soon(self._leader.run)
                    if self._ctx.lease is not None:
                        nursery.start_soon(self._heartbeats, self._ctx.lease)
                        nursery.start_soon(self._worker.fence)
                    log.info("engine_started host=%s", self._host)
                    task_status.started()
        finally:
            self._running = False
            self._worker.unbind()
            self._stopped.set()
            log.info("engine_stopped host=%s", self._host)

    async def shutdown(self) -> None:
        """Stop (the SIGTERM path): no new claims or starts; running attempts stay running.

        Processes are detached, not killed: the next daemon re-adopts them
        (``KillMode=process``) or, if the service manager killed them, finds
        them ended and reports them (docs/runs.md). Claims not yet started
        stay in the table and are started (or skipped by catch-up policy)
        after the restart; reports not yet committed are kept on disk and
        sent then; the log upload queue is on disk too.
        """
        if self._scope is not None:
            self._scope.cancel()
        if self._stopped is not None:
            await self._stopped.wait()
        else:
            await trio.lowlevel.checkpoint()

    # --- leases (see _lease) ---------------------------------------------------------------

    async def _heartbeats(self, times: LeaseTimes) -> None:
        """Tell the leader this host is alive every ``times.heartbeat``; renew the lease."""
        while True:
            sent = trio.current_time()
            if await self._heartbeat_once(times):
                self._worker.lease_renewed(sent)
            await trio.sleep_until(sent + times.heartbeat)

    async def _heartbeat_once(self, times: LeaseTimes) -> bool:
        leader = self._replica.leader
        if leader is None:
            return False
        if leader == self._host:
            return self._leader.heard(self._host)
        call = self._ctx.peer_call
        if call is None:
            return False
        params = {"host": self._host, "running": self._worker.running}
        try:
            # a slow answer still renews the lease from the time it was sent; cutting the
            # call at one heartbeat could cancel every (re)connection on a busy host, and
            # the leader would never hear from it
            with trio.move_on_after(times.lease / 2) as scope:
                await call(leader, "engine.heartbeat", params)
        except DcronError as exc:
            log.debug("heartbeat_failed leader=%s error=%r", leader, str(exc))
            return False
        return not scope.cancelled_caught

    def heartbeat(self, host: str) -> dict[str, Any]:
        """A host's heartbeat arrived (``engine.heartbeat``); NotLeader unless this node leads."""
        if not self._leader.heard(host):
            raise NotLeader(
                "this node does not lead: send heartbeats to the leader", self._replica.leader
            )
        lease = self._ctx.lease
        return {"lease_s": None if lease is None else lease.lease}

    # --- the replica's watch (quick; never blocks) -------------------------------------------

    def _on_applied(self, cmd: Command | None, result: Result | None) -> None:
        if not self._running:
            return
        if cmd is None:  # a snapshot replaced the table
            self._ctx.all_changed()
            self._leader.restored()
            self._worker.recover_claims()
            return
        if isinstance(cmd, RUN_COMMANDS):
            self._ctx.run_changed(cmd.run_id)
            if not isinstance(result, Applied):
                return
            run = result.value
            if isinstance(cmd, RunScheduled | RunRefused | RunPlaced):
                claim = Claim(
                    cmd.run_id,
                    str(run["job"]),
                    int(run["job_version"]),
                    int(run["scheduled_at_ms"]),
                    str(run["reason"]),
                    cmd.attempt,
                    None if isinstance(cmd, RunRefused) else cmd.host,
                )
                if claim.host == self._host:
                    self._worker.arm(claim)
                elif claim.host is None:  # nobody could take it, or its host refused it
                    claimed_at = int(run["claimed_at_ms"])
                    refused_by = cmd.host if isinstance(cmd, RunRefused) else None
                    self._leader.unplaced(claim, claimed_at, refused_by)
            elif isinstance(cmd, RunFinished | RunLost | RunSkipped):
                self._worker.reported(cmd.run_id, getattr(cmd, "attempt", None))
                if isinstance(cmd, RunLost):
                    self._worker.superseded(cmd.run_id, cmd.attempt)
                self._leader.run_ended(run)
        elif isinstance(cmd, JOB_COMMANDS):
            self._leader.job_changed(cmd.job.name if isinstance(cmd, CreateJob) else cmd.name)

    # --- what dcronctl asks -------------------------------------------------------------------

    async def trigger(self, name: str, *, actor: str) -> dict[str, Any]:
        """Run a job now (even a paused one); returns the new run's JSON.

        A job that runs on several hosts (``on`` all or N) gets one run per
        host; the JSON is the first one's, and ``runs`` lists every run id
        (one for other jobs). NotFound for an unknown job; InvalidRequest
        when no host can run it now; NotLeader when this node cannot commit
        (the caller forwards to the leader).
        """
        ctx = self._ctx
        for _ in range(5):
            found = _table.job_spec(ctx.store, name)
            if found is None:
                raise NotFound(f"no job named {name!r}")
            now = ctx.clock.now_ms()
            where = ctx.place(name)
            if not where.hosts:
                # the cluster is reachable and says no: a refusal (exit 1), not "unreachable"
                raise InvalidRequest(f"no host can run {name!r} now: {where.why}")
            hosts = where.hosts if where.per_host else where.hosts[:1]
            runs: list[dict[str, Any]] = []
            try:
                for host in hosts:
                    cmd = RunScheduled(
                        **ctx.replica.stamp(actor),  # type: ignore[arg-type]
                        run_id=make_run_id(name, now, host if where.per_host else None),
                        job=name,
                        job_version=found[0],
                        scheduled_at=now,
                        host=host,
                        reason="trigger",
                    )
                    runs.append(unwrap(await ctx.replica.propose(cmd)))  # (its summary)
            except AlreadyExists:  # a run for this very millisecond exists: take the next one
                if runs:
                    raise
                await trio.sleep(0.001)
                continue
            except InvalidRequest as exc:
                if "job_version" in str(exc) and not runs:  # edited meanwhile: the new version
                    continue
                raise
            ctx.counters.triggered += len(runs)
            ids = [str(r["id"]) for r in runs]
            log.info("run_triggered runs=%s actor=%s", ",".join(ids), actor)
            return {**await self._applied_run(ids[0]), "runs": ids}
        raise Unavailable(f"could not trigger {name!r}: the job keeps changing; try again")

    async def _applied_run(self, run_id: str) -> dict[str, Any]:
        """The JSON of a run just committed (read after a barrier if a forward made it)."""
        store = self._ctx.store
        try:
            return store.get_run(run_id)
        except NotFound:  # the leader applied it; this follower may not have yet
            await self._ctx.replica.read_barrier()
            return store.get_run(run_id)

    async def kill(self, run_id: str, *, actor: str, forward: bool = True) -> dict[str, Any]:
        """Stop a run; returns its JSON once it has ended (at once if it already had).

        A running attempt gets SIGTERM, then SIGKILL after the kill grace,
        and ends ``killed``. A claimed attempt that has not started ends
        ``killed`` without starting. A run waiting for its retry is
        ``skipped`` (the retry is cancelled). NotFound for an unknown run.
        An attempt placed on another host is stopped by that host: the call
        is passed on to it (``forward``), and Unavailable says when it cannot
        be reached.
        """
        ctx, store = self._ctx, self._ctx.store
        run = store.get_run(run_id)
        if run["state"] in FINAL_STATES:
            return run
        elsewhere = self._placed_elsewhere(run_id)
        if elsewhere is not None and forward and not self._worker.is_live(run_id):
            answer = await self._on_host(
                elsewhere,
                "engine.kill",
                {"id": run_id, "actor": actor},
                timeout=ctx.config.runner.kill_grace_s + KILL_SLACK + PEER_TIMEOUT,
            )
            log.info("run_kill run=%s actor=%s via=%s", run_id, actor, elsewhere)
            return dict(answer)
        give_up = trio.current_time() + ctx.config.runner.kill_grace_s + KILL_SLACK
        if self._worker.is_live(run_id):
            ctx.runner.kill(run_id)
            log.info("run_kill run=%s actor=%s", run_id, actor)
        else:
            current = _table.current_attempt(store, run_id)
            assert current is not None
            run_state, attempt, attempt_state, host = current
            if attempt_state == "scheduled":
                if host not in (None, self._host):
                    raise Unavailable(f"run {run_id} is placed on host {host}; ask that host")
                self._worker.cancel(run_id)
                await self._propose_quietly(
                    RunFinished(
                        **ctx.replica.stamp(actor),  # type: ignore[arg-type]
                        run_id=run_id,
                        attempt=attempt,
                        state="killed",
                        finished_at=ctx.clock.now_ms(),
                    )
                )
            elif run_state == "scheduled" and attempt_state in _ENDED_ATTEMPT:
                await self._propose_quietly(
                    RunSkipped(
                        **ctx.replica.stamp(actor),  # type: ignore[arg-type]
                        run_id=run_id,
                        reason=f"killed by {actor} while waiting for a retry",
                    )
                )
            elif host not in (None, self._host):
                raise Unavailable(f"run {run_id} runs on host {host}; ask that host")
            # else: it is ending right now; its report is on the way
        while True:
            event = ctx.run_event(run_id)
            run = store.get_run(run_id)
            if run["state"] in FINAL_STATES:
                return run
            if trio.current_time() >= give_up:
                return run
            if self._worker.is_live(run_id):
                ctx.runner.kill(run_id)  # a retry started meanwhile: stop it too
            await wait_any([event], max(0.0, give_up - trio.current_time()))

    def _placed_elsewhere(self, run_id: str) -> str | None:
        """The other host the run's current attempt is placed on or runs on, if any."""
        current = _table.current_attempt(self._ctx.store, run_id)
        if current is None:
            return None
        _run_state, _attempt, attempt_state, host = current
        if attempt_state in ("scheduled", "running") and host not in (None, self._host):
            return host
        return None

    async def _on_host(
        self, host: str, method: str, params: dict[str, Any], *, timeout: float = PEER_TIMEOUT
    ) -> Any:
        """Call ``method`` on ``host``'s engine; Unavailable when it cannot be reached in time."""
        call = self._ctx.peer_call
        if call is None:
            raise Unavailable(f"the run is on host {host}; ask that host")
        try:
            with trio.fail_after(timeout):
                return await call(host, method, params)
        except trio.TooSlowError:
            raise Unavailable(f"the run is on host {host}, which did not answer") from None
        except Unavailable as exc:
            raise Unavailable(
                f"the run is on host {host}, which cannot be reached: {exc}"
            ) from None

    async def _propose_quietly(self, cmd: Command) -> None:
        # refused only if the run moved on meanwhile (then the wait below sees it)
        await self._ctx.replica.propose(cmd)

    async def read_log(
        self, run_id: str, offset: int, *, wait: float = 0.0, attempt: int | None = None
    ) -> tuple[bytes, bool]:
        """The log of a run's attempt from byte ``offset``: (data, done).

        The attempt is the run's current one unless ``attempt`` says which.
        While it runs here, the bytes come from its spool, and an empty read
        waits up to ``wait`` seconds for more. While it runs on another host,
        they come from the pieces that host uploads as it goes (see
        ``LogUploader``): most of the log, a little behind. Once it ended,
        from object storage (from the local file while its upload is pending
        here; from the pieces while it is pending on another host). ``done``
        is True when the attempt has ended and the data reaches the end of
        its log. NotFound for an unknown run or attempt; InvalidRequest for
        a negative offset; Unavailable when the attempt runs on another host
        and storage keeps no pieces.
        """
        if offset < 0:
            raise InvalidRequest(f"offset: {offset} is not allowed; give a byte offset >= 0")
        ctx, store = self._ctx, self._ctx.store
        deadline = trio.current_time() + max(0.0, wait)
        while True:
            event = ctx.run_event(run_id)
            run = store.get_run(run_id)
            number = attempt if attempt is not None else int(run["attempt"])
            if not 1 <= number <= len(run["attempts"]):
                raise NotFound(f"run {run_id} has no attempt {number}")
            att = run["attempts"][number - 1]
            spool = self._worker.live_spool(run_id, number)
            if spool is not None:
                data = _pread(spool, offset) or b""
                if data or trio.current_time() >= deadline:
                    return data, False
                await self._wait_output(run_id, number, offset, deadline)
                continue
            parts = ctx.blobs if isinstance(ctx.blobs, LogPartStore) else None
            if att["state"] in _ENDED_ATTEMPT:
                key = att["log_path"]
                if key is None:
                    return b"", True
                local = ctx.uploader.pending_source(key)
                pending = _pread(local, offset) if local is not None else None
                if pending is not None:
                    return pending, len(pending) < LOG_CHUNK
                if parts is None:
                    data = await ctx.blobs.read(key, offset, LOG_CHUNK)  # stored (or just now)
                    return data, len(data) < LOG_CHUNK
                # stored; or, while its upload is pending on the host that ran it, its pieces
                data, whole = await parts.read_log(key, offset, LOG_CHUNK)
                if whole:
                    return data, len(data) < LOG_CHUNK
                if data or trio.current_time() >= deadline:
                    return data, False
                await wait_any([event], min(PIECE_POLL, deadline - trio.current_time()))
                continue
            if att["state"] == "running" and att["host"] not in (None, self._host):
                if parts is None:
                    raise Unavailable(f"attempt {number} of {run_id} runs on host {att['host']}")
                try:
                    data, _whole = await parts.read_log(
                        log_key(run["job"], run_id, number), offset, LOG_CHUNK
                    )
                except BlobNotFound:
                    data = b""  # no piece yet
                if data or trio.current_time() >= deadline:
                    return data, False
                await wait_any([event], min(PIECE_POLL, deadline - trio.current_time()))
                continue
            if trio.current_time() >= deadline:
                return b"", False
            await wait_any([event], deadline - trio.current_time())

    async def read_log_anywhere(
        self, run_id: str, offset: int, *, wait: float = 0.0, attempt: int | None = None
    ) -> tuple[bytes, bool]:
        """``read_log`` from whichever host has the bytes: (data, done).

        An attempt running (or about to) on another host is read from that
        host's spool. An ended one is read through the host that ran it (which
        has the whole log while its upload is pending, and reads storage
        after), or straight from object storage when that host cannot be
        reached.
        """
        run = self._ctx.store.get_run(run_id)
        number = attempt if attempt is not None else int(run["attempt"])
        if 1 <= number <= len(run["attempts"]):
            att = run["attempts"][number - 1]
            host = att.get("host")
            if host not in (None, self._host):
                params = {"id": run_id, "offset": offset, "wait": wait, "attempt": number}
                if att["state"] in ("scheduled", "running"):
                    return await self._remote_log(host, params)
                try:  # its host has the whole log even while the upload is pending
                    return await self._remote_log(host, params)
                except Unavailable:  # gone: storage has the log (or the pieces sent so far)
                    pass
        return await self.read_log(run_id, offset, wait=wait, attempt=attempt)

    async def _remote_log(self, host: str, params: dict[str, Any]) -> tuple[bytes, bool]:
        answer = await self._on_host(host, "engine.logs", params)
        data, done = answer["data"], answer["done"]
        if not isinstance(data, bytes) or not isinstance(done, bool):
            raise Unavailable(f"host {host} answered a log read with {answer!r:.80}")
        return data, done

    async def _wait_output(self, run_id: str, attempt: int, offset: int, deadline: float) -> None:
        """Wait (until ``deadline``) for output past ``offset`` or the attempt's end."""
        try:
            follower = self._ctx.runner.follow(run_id, attempt, offset)
        except NotFound:
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_at(deadline):
            async for _chunk in follower:
                break

    def upcoming(self, name: str, n: int) -> list[int]:
        """The job's next ``n`` fire instants (epoch ms) after now; none while it is paused."""
        if not 1 <= n <= MAX_UPCOMING:
            raise InvalidRequest(f"n: {n} is not allowed; give 1 to {MAX_UPCOMING}")
        row = _table.schedule_row(self._ctx.store, name)
        if row is None:
            raise NotFound(f"no job named {name!r}")
        if row.paused:
            return []
        schedule = parse(row.schedule, row.timezone)
        now = math.floor(self.clock.now())
        return [i * 1000 for i in schedule.iter_after(now, n)]

    def annotate(self, run: dict[str, Any]) -> dict[str, Any]:
        """Add ``log_pending`` to each attempt of a run's JSON: its log is not in storage yet."""
        for att in run.get("attempts", []):
            key = att.get("log_path")
            att["log_pending"] = key is not None and self.uploader.pending_source(key) is not None
        return run

    def statistics(self) -> EngineStatistics:
        """Counters since this engine was created."""
        c = self._ctx.counters
        return EngineStatistics(
            leading=self._leader.leading,
            jobs=self._leader.jobs,
            load_seconds=self._leader.load_seconds,
            armed=self._worker.armed,
            running=self._worker.running,
            unreported=self._worker.unreported,
            claimed=c.claimed,
            triggered=c.triggered,
            retries=c.retries,
            dependents=c.dependents,
            started=c.started,
            adopted=c.adopted,
            finished=c.finished,
            skipped=c.skipped,
            lost=c.lost,
            pruned=c.pruned,
            fire_lag_p50_ms=_quantile(c.fire_lags_ms, 0.5),
            fire_lag_max_ms=max(c.fire_lags_ms) if c.fire_lags_ms else None,
            uploads=self.uploader.statistics(),
        )


def _pread(path: Path, offset: int) -> bytes | None:
    """Up to ``LOG_CHUNK`` bytes of a local file from ``offset``; None if it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.pread(fd, LOG_CHUNK, offset)
    finally:
        os.close(fd)
