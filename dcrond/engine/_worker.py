"""The worker: starts the attempts placed on this host at their instant and reports their end.

Theory of operation
-------------------
Every node runs a worker. It learns of an attempt placed on its host from
the applied ``RunScheduled`` (``arm``), or, after a restart, from the table
(``recover``). One task per attempt then:

1. reads the job **as of the claimed version** and prepares the ``RunSpec``
   (fetching a script by sha256 through the blobs cache) *before* the
   instant, so nothing slow is left for the instant itself;
2. sleeps until ``SPIN`` before the instant (a first attempt starts at its
   scheduled instant; a retry, trigger or catch-up run at once), checks
   that the claim still stands (not killed, skipped or superseded), the
   job's pause, a stale claim's catch-up policy, its dependencies, its
   concurrency policy and a free slot (``[runner] slots``) -- waiting where
   the rules say wait -- then busy-waits to the instant and starts the
   process with no checkpoint in between (``LocalProcessRunner.run`` spawns
   before its first checkpoint);
3. proposes ``RunStarted`` in the background, supervises the attempt, and
   when it ends writes its report (``RunFinished``: state, exit code or
   signal, log key, truncation) to the durable *outbox*, queues the log's
   upload, and proposes the report; the outbox record goes once committed.

Every step is safe to cut off by a shutdown or crash: a claim not yet
started stays ``scheduled`` in the table and is armed again; a running
process is detached and re-adopted by the next daemon; a report not yet
committed is proposed again from the outbox (``_reports``), and its log is
uploaded from the queue. On start, ``recover`` closes what no process backs any more: a
run the table says is running here with no process and no report is
``lost`` (with whatever output its spool holds).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, final

import trio

from dcrond.engine import _table
from dcrond.engine._context import Context, wait_any
from dcrond.engine._lease import WorkerLease
from dcrond.engine._policy import concurrency, stale_claim, upstream_gate
from dcrond.engine._reports import Reporter
from dcrond.engine._table import Claim
from dcrond.errors import InvalidRequest, StorageError
from dcrond.runner import RunHandle, RunSpec
from dcrond.store import RunRefused, make_run_id, run_host, run_job
from dcrond.store._blobs import log_key

log = logging.getLogger("dcrond.engine")

#: how long ``replace`` waits for the runs it stops before it looks again
REPLACE_POLL = 1.0
#: attempt states in which the table still expects the attempt to run
_UNFINISHED = ("scheduled", "running")


@final
class _Started(trio.TaskStatus[RunHandle]):
    """Receives the runner's ``task_status.started(handle)`` on the attempt's own task."""

    def __init__(self, on_started: Callable[[RunHandle], None]) -> None:
        self._on_started = on_started

    def started(self, value: RunHandle | None = None) -> None:
        assert value is not None
        self._on_started(value)


@final
class _Slots:
    """``[runner] slots``: how many attempts run at once here, first come first served."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.used = 0
        self._freed = trio.Event()

    def try_take(self) -> bool:
        if self.used >= self.total:
            return False
        self.used += 1
        return True

    def force_take(self) -> None:
        """Count a re-adopted attempt even beyond the limit (it runs already)."""
        self.used += 1

    def give(self) -> None:
        self.used -= 1
        self._freed.set()
        self._freed = trio.Event()

    def freed(self) -> trio.Event:
        return self._freed


@dataclass(slots=True)
class _Pending:
    claim: Claim
    cancelled: bool = False
    starting: bool = False  #: woken at its instant, counted in Worker._starting


@dataclass(slots=True)
class _Live:
    handle: RunHandle
    job: str
    reported: trio.Event = field(default_factory=trio.Event)  #: RunStarted settled
    fenced: bool = False  #: stopped because this host was cut off


@final
class Worker:
    """Runs the attempts placed on this host (see the module doc)."""

    def __init__(self, ctx: Context, state_dir: Path) -> None:
        self._ctx = ctx
        self._reports = Reporter(ctx, state_dir, settle=self.starts_settled)
        self._slots = _Slots(ctx.config.runner.slots)
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._live: dict[tuple[str, int], _Live] = {}
        self._live_by_job: dict[str, set[str]] = {}  #: job -> runs with a live attempt here
        self._live_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        #: attempts between their wake-up at the instant and their start: while there
        #: are any, reports wait (a crowd due at one instant starts first, reports after)
        self._starting = 0
        self._starts_done = trio.Event()
        #: attempts that ran here (or were recovered) and whose end is not in the table yet:
        #: a claim replayed from the log, or re-read after a snapshot, must not start them again
        self._ended: set[tuple[str, int]] = set()
        #: this host's lease from the leader (None: leases are off)
        self._lease = None if ctx.lease is None else WorkerLease(ctx.lease, trio.current_time())
        self._renewed = trio.Event()

    # --- wiring -----------------------------------------------------------------

    def bind(self, nursery: trio.Nursery) -> None:
        """Run attempts and reports in ``nursery`` from now on."""
        self._nursery = nursery

    def unbind(self) -> None:
        """Stop accepting work (the engine is stopping)."""
        self._nursery = None
        self._pending.clear()
        self._live.clear()
        self._live_by_job.clear()

    def _spawn(self, fn: Callable[..., Any], *args: object) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    # --- what the engine asks ------------------------------------------------------

    def arm(self, claim: Claim) -> None:
        """Start the task that runs a claimed attempt placed on this host (idempotent)."""
        key = (claim.run_id, claim.attempt)
        if self._nursery is None or key in self._pending or key in self._live:
            return
        if key in self._ended:  # it ran already; its report is on the way
            return
        self._pending[key] = _Pending(claim)
        self._spawn(self._attempt, claim)

    def reported(self, run_id: str, attempt: int | None = None) -> None:
        """The end of an attempt (``None``: of every attempt of the run) is in the table."""
        if attempt is not None:
            self._ended.discard((run_id, attempt))
        else:
            self._ended = {k for k in self._ended if k[0] != run_id}
        self._reports.seen(run_id, attempt)

    def cancel(self, run_id: str) -> bool:
        """Make sure a claimed attempt of ``run_id`` that has not started never starts."""
        found = False
        for (rid, _attempt), pending in self._pending.items():
            if rid == run_id:
                pending.cancelled = True
                found = True
        return found

    def is_live(self, run_id: str) -> bool:
        """An attempt of ``run_id`` runs on this host now."""
        return run_id in self._live_by_job.get(run_job(run_id), ())

    def live_spool(self, run_id: str, attempt: int) -> Path | None:
        """The spool of a running attempt (its output so far), or None."""
        live = self._live.get((run_id, attempt))
        return None if live is None else live.handle.spool_path

    def live_runs_of(self, job: str) -> list[str]:
        """Runs of ``job`` with an attempt running on this host."""
        return sorted(self._live_by_job.get(job, ()))

    def _add_live(self, live: _Live) -> None:
        self._live[(live.handle.run_id, live.handle.attempt)] = live
        self._live_by_job.setdefault(live.job, set()).add(live.handle.run_id)
        self._live_touched()
        key = log_key(live.job, live.handle.run_id, live.handle.attempt)
        self._ctx.uploader.follow(key, live.handle.spool_path)  # its log goes up in pieces

    def _drop_live(self, run_id: str, attempt: int) -> None:
        live = self._live.pop((run_id, attempt), None)
        if live is None:
            return
        self._ctx.uploader.unfollow(log_key(live.job, run_id, attempt))
        runs = self._live_by_job.get(live.job)
        if runs is not None:  # one attempt of a run is live at a time
            runs.discard(run_id)
            if not runs:
                del self._live_by_job[live.job]
        self._live_touched()

    @property
    def armed(self) -> int:
        """Claimed attempts waiting to start."""
        return len(self._pending)

    @property
    def running(self) -> int:
        """Attempts running on this host."""
        return len(self._live)

    @property
    def unreported(self) -> int:
        """Reports of ended attempts not yet committed (the outbox)."""
        return self._reports.unreported

    # --- the lease (see _lease) ----------------------------------------------------------

    def lease_valid(self) -> bool:
        """This host may start attempts (its lease from the leader holds, or leases are off)."""
        return self._lease is None or self._lease.valid(trio.current_time())

    def lease_renewed(self, sent_at: float) -> None:
        """The leader answered the heartbeat sent at ``sent_at``."""
        if self._lease is not None:
            self._lease.renewed(sent_at)
            self._renewed.set()
            self._renewed = trio.Event()

    async def fence(self) -> None:
        """Forever: when the lease runs out, stop the attempts that could run twice."""
        lease = self._lease
        assert lease is not None
        while True:
            if lease.valid(trio.current_time()):
                await trio.sleep_until(lease.expires_at() + 0.001)
                continue
            stopping = [
                live for live in self._live.values() if not live.fenced and self._fenceable(live)
            ]
            if stopping:
                log.warning(
                    "host_cut_off silent_s=%.1f stopping=%s",
                    trio.current_time() - lease.renewed_at,
                    ",".join(f"{live.handle.run_id}#{live.handle.attempt}" for live in stopping),
                )
            for live in stopping:
                live.fenced = True
                self._ctx.runner.kill(live.handle.run_id)
            await wait_any([self._renewed, self._live_changed], lease.times.heartbeat)

    def superseded(self, run_id: str, attempt: int) -> None:
        """The leader declared this attempt lost: if it runs here after all, stop it.

        That happens when this daemon was away longer than the lease while
        its process ran on: the run may already have another attempt
        elsewhere. The stopped attempt's report lands on the attempt.
        """
        live = self._live.get((run_id, attempt))
        if live is None or live.fenced:
            return
        log.warning("run_superseded run=%s attempt=%d: stopping it", run_id, attempt)
        live.fenced = True
        self._ctx.runner.kill(run_id)

    def _fenceable(self, live: _Live) -> bool:
        """Could this attempt's run get another attempt elsewhere, or its job overlap?"""
        found = _table.job_spec(self._ctx.store, live.job)
        if found is None:
            return True
        spec = found[1]
        return spec["concurrency"] != "allow" or live.handle.attempt <= int(spec["retries"])

    # --- one attempt ---------------------------------------------------------------

    async def starts_settled(self, patience: float) -> None:
        """Wait until no attempt is on its way to start (at most ``patience`` seconds)."""
        with trio.move_on_after(patience):
            while self._starting:
                await self._starts_done.wait()

    def _start_begins(self) -> None:
        if self._starting == 0:
            self._starts_done = trio.Event()
        self._starting += 1

    def _start_ends(self) -> None:
        self._starting -= 1
        if self._starting == 0:
            self._starts_done.set()

    async def _attempt(self, claim: Claim) -> None:
        key = (claim.run_id, claim.attempt)
        pending = self._pending.get(key)
        if pending is None:  # the engine stopped before this task began
            return
        try:
            await self._attempt_inner(claim, pending)
        finally:
            self._pending.pop(key, None)
            if pending.starting:
                self._start_ends()

    async def _attempt_inner(self, claim: Claim, pending: _Pending) -> None:
        ctx, store = self._ctx, self._ctx.store
        spec = self._claimed_spec(claim)
        if spec is None:
            await self._reports.skip(claim, f"job {claim.job!r} was deleted")
            return
        prepared: RunSpec | str
        try:
            prepared = await self._prepare(claim, spec)
        except (InvalidRequest, StorageError, OSError) as exc:
            prepared = f"could not prepare the attempt: {exc}"
        start_at = claim.scheduled_at / 1000 if claim.attempt == 1 else 0.0
        first_look = True
        prepared_again = False
        while True:
            await ctx.clock.wake_before(start_at)
            if not pending.starting:
                pending.starting = True
                self._start_begins()
            own = ctx.run_event(claim.run_id)
            current = _table.current_attempt(store, claim.run_id)
            if pending.cancelled or current != ("scheduled", claim.attempt, "scheduled", ctx.host):
                return  # killed, skipped, lost or superseded meanwhile
            job_now = _table.job_spec(store, claim.job)
            if job_now is None:
                await self._reports.skip(claim, f"job {claim.job!r} was deleted")
                return
            if job_now[1]["paused"] and claim.reason in ("schedule", "catch-up"):
                await self._reports.skip(claim, f"job {claim.job!r} is paused")
                return
            if isinstance(prepared, str) and not prepared_again:
                prepared_again = True  # storage may have been down a moment ago: try again
                try:
                    prepared = await self._prepare(claim, spec)
                except (InvalidRequest, StorageError, OSError) as exc:
                    prepared = f"could not prepare the attempt: {exc}"
                continue  # and look at the claim again after that wait
            if first_look:
                first_look = False
                stale = stale_claim(
                    catch_up=spec["catch_up"],
                    reason=claim.reason,
                    attempt=claim.attempt,
                    scheduled_at=claim.scheduled_at,
                    now=ctx.clock.now_ms(),
                    grace_ms=ctx.grace * 1000,
                )
                if stale is not None:
                    await self._reports.skip(claim, stale)
                    return
            if spec["after"]:
                ups: dict[str, str | None] = {}
                for upstream in spec["after"]:  # (a per-host upstream has a run per host)
                    at_t = _table.runs_at(store, upstream, claim.scheduled_at)
                    ups.update(at_t)
                    if not at_t:
                        ups[make_run_id(upstream, claim.scheduled_at)] = None
                gate = upstream_gate(ups)
                if gate.verdict == "skip":
                    await self._reports.skip(claim, gate.reason)
                    return
                if gate.verdict == "wait":
                    await wait_any([own, *(ctx.run_event(r) for r in gate.runs)])
                    continue
            others = set(self.live_runs_of(claim.job))
            if spec["concurrency"] != "allow":  # elsewhere too, unless each host has its runs
                per_host = spec.get("on", "any") != "any"
                others.update(
                    r
                    for r, host in _table.running_of(store, claim.job)
                    if not per_host or host == ctx.host
                )
            rule = concurrency(spec["concurrency"], claim.run_id, sorted(others))
            if rule.verdict == "skip":
                await self._reports.skip(claim, rule.reason)
                return
            if rule.verdict == "replace":
                log.info("run_replacing run=%s stopping=%s", claim.run_id, ",".join(rule.runs))
                for other in rule.runs:
                    ctx.runner.kill(other)
                changed = self._live_changed
                await wait_any([own, changed, *(ctx.run_event(r) for r in rule.runs)], REPLACE_POLL)
                continue
            if not self.lease_valid():
                # cut off from the leader: it will declare this claim lost, or renew us
                await wait_any([own, self._renewed])
                continue
            if not self._slots.try_take():
                if self._may_refuse(claim):  # another host may have a slot: the leader asks it
                    await self._refuse(claim)
                    return
                await wait_any([own, self._slots.freed()])
                continue
            if not ctx.clock.spin_until(start_at):
                self._slots.give()
                continue
            break
        self._pending.pop((claim.run_id, claim.attempt), None)  # from here on it is live
        pending.starting = False
        self._start_ends()  # (the process is started before _run's first checkpoint)
        await self._run(claim, prepared)

    def _may_refuse(self, claim: Claim) -> bool:
        """A full host refuses a run when another host might take it (not a per-host run)."""
        ctx = self._ctx
        if ctx.hosts is None or run_host(claim.run_id) is not None:
            return False
        return any(v.name != ctx.host and v.state == "alive" and v.in_raft for v in ctx.hosts())

    async def _refuse(self, claim: Claim) -> None:
        """Tell the leader (through the log) this host will not start the claim; never start it."""
        ctx = self._ctx
        reason = f"no free slot ({self._slots.used} of {self._slots.total} running)"
        log.info("run_refused run=%s attempt=%d reason=%r", claim.run_id, claim.attempt, reason)
        cmd = RunRefused(
            **ctx.replica.stamp(f"runner@{ctx.host}"),  # type: ignore[arg-type]
            run_id=claim.run_id,
            attempt=claim.attempt,
            host=ctx.host,
            reason=reason,
        )
        await ctx.propose(cmd)

    def _claimed_spec(self, claim: Claim) -> dict[str, Any] | None:
        """The job's spec at the claimed version (None: the job is gone)."""
        store = self._ctx.store
        current = _table.job_spec(store, claim.job)
        if current is None:
            return None
        version, spec = current
        if version == claim.job_version:
            return spec
        return _table.version_spec(store, claim.job, claim.job_version) or spec

    async def _prepare(self, claim: Claim, spec: dict[str, Any]) -> RunSpec:
        """The RunSpec of the attempt; fetches the script (cached by sha256)."""
        user = spec.get("user")
        default_user = self._ctx.config.runner.default_user
        if user is None and default_user and os.geteuid() == 0:
            user = default_user
        script: bytes | Path | None = None
        if spec.get("script"):
            sha = str(spec["script"]["sha256"])
            data = await self._ctx.blobs.get_script(sha)  # fetched (and cached) by its hash
            script = self._script_source(sha, data, user)
        runner_cfg = self._ctx.config.runner
        return RunSpec(
            run_id=claim.run_id,
            attempt=claim.attempt,
            command=spec.get("command"),
            script=script,
            interpreter=spec.get("interpreter") or "sh",
            args=tuple(spec.get("args") or ()),
            env=dict(spec.get("env") or {}),
            working_dir=spec.get("working_dir"),
            user=user,
            timeout=spec.get("timeout"),
            kill_grace=runner_cfg.kill_grace_s,
            output_cap=runner_cfg.output_cap_bytes,
        )

    def _script_source(self, sha: str, data: bytes, user: str | None) -> bytes | Path:
        """The cached script file itself (no copy at the start), unless another user must
        read it: then its bytes, which the runner writes where that user can."""
        cached = getattr(self._ctx.blobs, "cached_script_path", None)
        if cached is None or (user is not None and os.geteuid() == 0):
            return data
        path = cached(sha)
        return data if path is None else Path(os.path.abspath(path))

    async def _run(self, claim: Claim, prepared: RunSpec | str) -> None:
        """Start the attempt now (a slot is taken), supervise it, report its end."""
        ctx = self._ctx
        key = (claim.run_id, claim.attempt)
        if isinstance(prepared, str):
            self._slots.give()
            self._ended.add(key)
            await self._reports.fail_unstarted(claim, prepared)
            return
        live: _Live | None = None

        def on_started(handle: RunHandle) -> None:
            nonlocal live
            live = _Live(handle, claim.job)
            self._add_live(live)
            ctx.counters.started += 1
            ctx.counters.lag((handle.started_at - claim.scheduled_at / 1000) * 1000)
            self._spawn(self._reports.started, claim.run_id, claim.attempt, handle, live.reported)

        try:
            result = await ctx.runner.run(prepared, task_status=_Started(on_started))
        except (InvalidRequest, OSError) as exc:  # nothing started (an unknown user, say)
            self._ended.add(key)
            await self._reports.fail_unstarted(claim, str(exc))
            return
        finally:
            self._slots.give()
            self._drop_live(*key)
        self._ended.add(key)
        reported = live.reported if live is not None else None
        await self._reports.end(claim.job, result, reported)

    def _live_touched(self) -> None:
        self._live_changed.set()
        self._live_changed = trio.Event()

    # --- restart recovery ---------------------------------------------------------------

    def recover(self) -> None:
        """Pick up what a previous daemon left: reports, processes, claims (see module doc)."""
        ctx, store = self._ctx, self._ctx.store
        done: set[tuple[str, int]] = set()
        for seq, record in self._reports.outbox.items():
            key = (str(record["run_id"]), int(record["attempt"]))
            done.add(key)
            spool, log_path = record.get("spool"), record.get("log_path")
            if (
                spool
                and log_path
                and ctx.uploader.pending_source(log_path) is None
                and os.path.exists(spool)
            ):  # the upload was not queued before the stop
                ctx.uploader.put(log_path, Path(spool))
            self._spawn(self._reports.send, seq, record)
        for found in ctx.runner.recover():
            key = (found.run_id, found.attempt)
            done.add(key)
            job = run_job(found.run_id)
            if found.handle is not None:
                self._adopt(job, found.handle)
            elif found.result is not None:
                self._spawn(self._reports.end, job, found.result, None)
        for run_id, attempt in _table.running_on(store, ctx.host):
            if (run_id, attempt) not in done:
                done.add((run_id, attempt))
                self._spawn(self._reports.lost, run_id, attempt)
        self._ended.update(k for k in done if k not in self._live)
        for claim in _table.claims_on(store, ctx.host):
            if (claim.run_id, claim.attempt) not in done:
                self.arm(claim)

    def recover_claims(self) -> None:
        """Arm every claim placed here that is not armed yet (after a snapshot restore)."""
        for claim in _table.claims_on(self._ctx.store, self._ctx.host):
            self.arm(claim)

    def _adopt(self, job: str, handle: RunHandle) -> None:
        live = _Live(handle, job)
        self._add_live(live)
        self._slots.force_take()
        self._ctx.counters.adopted += 1
        log.info("run_adopted run=%s attempt=%d pid=%d", handle.run_id, handle.attempt, handle.pid)
        current = _table.current_attempt(self._ctx.store, handle.run_id)
        if current is not None and current[1] == handle.attempt and current[2] == "scheduled":
            self._spawn(self._reports.started, handle.run_id, handle.attempt, handle, live.reported)
        else:
            live.reported.set()
        if current is None or current[1] != handle.attempt or current[2] not in _UNFINISHED:
            # declared lost (and maybe retried elsewhere) while this daemon was down:
            # another attempt may run, so this one stops; its report lands on the attempt
            log.warning(
                "run_adopted_superseded run=%s attempt=%d: stopping it",
                handle.run_id,
                handle.attempt,
            )
            live.fenced = True
            self._ctx.runner.kill(handle.run_id)
        self._spawn(self._watch_adopted, job, live)

    async def _watch_adopted(self, job: str, live: _Live) -> None:
        try:
            result = await self._ctx.runner.supervise(live.handle)
        finally:
            self._slots.give()
            self._drop_live(live.handle.run_id, live.handle.attempt)
        self._ended.add((live.handle.run_id, live.handle.attempt))
        await self._reports.end(job, result, live.reported)
