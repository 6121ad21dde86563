"""The leader's half of the engine: claim runs at their instants, retries, dependents, retention.

Theory of operation
-------------------
Only the node that leads the log schedules. Each time it becomes leader
(and after a snapshot restore) it starts over from the table: the jobs go
into a fresh ``SchedulerCore`` (``_load``: the most frequent jobs first, with a
checkpoint every ``LOAD_SLICE``, so a 100,000-job load neither stalls the
event loop nor delays the next fire), the runs waiting for a retry into a
timer heap, and it looks for
dependents whose upstream ended while nobody was leading. It stops all of it
the moment it stops leading.

* **Claims.** A job's position is the newest instant in the table that its
  schedule (or a catch-up) claimed, or the time it was created, changed or
  resumed if later: from there the core computes what is due and what was
  missed (catch-up policy, ``grace``). ``lead_time`` seconds before an
  instant the leader proposes ``RunScheduled`` (run id ``job@instant``,
  placed on a host) -- earlier for a crowd due at the same instant
  (``CLAIM_COST`` per run, up to ``LOOKAHEAD``), so that every claim is
  committed before the instant; the worker on that host starts the process
  at the instant on its own timer. A claim is proposed again until it
  commits or this node stops leading (which cancels it), never given up
  while leading: an overloaded leader that gave up would leave an instant
  with no run at all. The claim is in the log before anything starts,
  so a restart or a new leader, which starts over from the table, neither
  skips nor repeats an instant; the store refuses a second claim of the same
  id in any case. A claim refused because the job was edited in between is
  made again for the new version if the instant is still on its schedule; a
  pause in between wins over the instants after it. An instant due *before*
  the pause still gets its run (the worker skips it as paused), also when
  the leader was so far behind that it had not handed it out yet: a due
  instant never goes without a run.
* **Job changes** (create, update, pause, resume, delete) reach the core
  through the replica's watch: the job is re-read from the table and its
  heap entry replaced (counting from the change: nothing is "caught up"
  because of an edit or a resume).
* **Retries.** A run whose attempt ended retryably goes back to
  ``scheduled`` with a ``retry_at``; at that time the leader claims the next
  attempt (``reason="retry"``).
* **Dependents.** When a run ``A@T`` ends, every job ``B`` with ``A`` in
  its ``after`` gets its run ``B@T`` (same instant) claimed if it has none;
  the worker then holds it until all of ``B``'s upstream runs at ``T``
  ended, and starts or skips it (``_policy.upstream_gate``).
* **Retention.** Every ``prune_interval`` the leader prunes the jobs that
  have more ended runs than ``[jobs] keep_runs`` or runs older than
  ``keep_days`` (``PruneRuns``), and queues the deletion of their logs.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import heapq
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Final, final

import trio

from dcrond._schedule_syntax import EverySpec, parse_spec
from dcrond.engine import _table
from dcrond.engine._context import Context, Where
from dcrond.engine._lease import LeaderLeases
from dcrond.engine._policy import prune_limits
from dcrond.engine._table import Claim, ScheduleRow
from dcrond.errors import DcronError, InvalidRequest
from dcrond.schedule import parse
from dcrond.scheduler import Due, JobTiming, SchedulerCore
from dcrond.store import (
    FINAL_STATES,
    Applied,
    PruneRuns,
    Rejected,
    Result,
    RunLost,
    RunPlaced,
    RunScheduled,
    RunSkipped,
    make_run_id,
    run_host,
)

log = logging.getLogger("dcrond.engine")

#: names read per query when the heap is loaded (and the most rows one query of the load reads)
KEYS_PAGE: Final = 1000
#: the fewest rows one query of the load asks for (it asks for about twice a slice's worth)
LOAD_ROWS_MIN: Final = 16
#: from this many jobs on, the loaded heap is kept out of the cyclic collector (gc.freeze)
FREEZE_AT: Final = 10_000
#: the longest the load holds the event loop between two checkpoints (s)
LOAD_SLICE: Final = 0.001
#: the longest the scheduler sleeps without looking at the wall clock again
MAX_NAP: Final = 1.0
#: how long before an instant its runs leave the heap (then wait for their claim time)
LOOKAHEAD: Final = 1.0
#: what one claim costs the log (apply, watch, arming), so a crowd is claimed in time
CLAIM_COST: Final = 0.0006
#: the most instants claimed for a job paused while the leader was behind (see _claim_before_pause)
PAUSE_CLAIMS: Final = 100
#: how often the leader tries again to place runs no host took
PLACE_RETRY: Final = 0.2
#: for how long a host that refused a run is not asked again for it (s)
REFUSAL_MEMORY: Final = 1.0


@final
@dataclass(frozen=True, slots=True, order=True)
class _RetryDue:
    retry_at: int  #: ms
    run_id: str
    next_attempt: int
    job: str
    job_version: int
    scheduled_at: int


@dataclass(slots=True)
class _Unplaced:
    """A claimed attempt waiting for a host, and who refused it lately."""

    claim: Claim
    deadline: int  #: ms: then it is skipped
    refused: dict[str, float]  #: host -> when it refused (trio clock)


@final
class Leader:
    """Schedules runs while this node leads the log (see the module doc)."""

    def __init__(self, ctx: Context, *, prune_interval: float) -> None:
        self._ctx = ctx
        self._prune_interval = prune_interval
        self._actor = f"scheduler@{ctx.host}"
        self._core: SchedulerCore | None = None
        self._loaded = False
        self._dirty: set[str] = set()
        self._wake = trio.Event()
        self._versions: dict[str, int] = {}
        self._claimed: dict[str, int] = {}  #: job -> newest instant handed out (s)
        self._retries: list[_RetryDue] = []
        self._retry_wake = trio.Event()
        self._ended: list[dict[str, Any]] = []
        self._ended_wake = trio.Event()
        self._prune: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._leases: LeaderLeases | None = None  #: while leading, with leases on
        #: claimed attempts with no host: run id -> (attempt, deadline ms, {host: refused at})
        self._unplaced: dict[str, _Unplaced] = {}
        self._unplaced_wake = trio.Event()
        self._declared: set[tuple[str, int]] = set()  #: attempts this term declared lost
        self.load_seconds: float | None = None  #: how long the last load of the heap took

    # --- what the engine tells us (from the replica's watch; must be quick) -------------

    @property
    def leading(self) -> bool:
        """This node schedules now."""
        return self._core is not None

    @property
    def jobs(self) -> int:
        """Jobs in the timer heap."""
        return 0 if self._core is None else len(self._core)

    def job_changed(self, name: str) -> None:
        """A job was created, changed, paused, resumed or deleted."""
        if self._core is not None:
            self._dirty.add(name)
            self._wake.set()

    def run_ended(self, run: dict[str, Any]) -> None:
        """An attempt ended or a run was skipped: maybe a retry, dependents, retention.

        ``run`` is the command's result, the run's summary (``run_summary`` in the store).
        """
        if self._core is None:
            return
        if run["state"] == "scheduled" and run["retry_at_ms"] is not None:
            self._push_retry(
                _RetryDue(
                    int(run["retry_at_ms"]),
                    run["id"],
                    int(run["attempt"]) + 1,
                    run["job"],
                    int(run["job_version"]),
                    int(run["scheduled_at_ms"]),
                )
            )
        elif run["state"] in FINAL_STATES:
            self._ended.append(run)
            self._ended_wake.set()
            self._prune.add(run["job"])

    def heard(self, host: str) -> bool:
        """A heartbeat from ``host`` arrived; False when this node does not lead."""
        if self._leases is None:
            return False
        self._leases.heard(host, trio.current_time())
        return True

    def unplaced(self, claim: Claim, claimed_at: int, refused_by: str | None = None) -> None:
        """A claimed attempt has no host (claimed so, or its host refused it): place it."""
        if self._core is None:
            return
        item = self._unplaced.get(claim.run_id)
        if item is None or item.claim.attempt != claim.attempt:
            wait_ms = int(self._ctx.config.cluster.placement_wait_s * 1000)
            deadline = max(claim.scheduled_at, claimed_at) + wait_ms
            item = self._unplaced[claim.run_id] = _Unplaced(claim, deadline, {})
        if refused_by is not None:
            item.refused[refused_by] = trio.current_time()
        self._unplaced_wake.set()

    def quiet(self, host: str) -> bool:
        """The leader has missed ``host``'s heartbeats for over a lease: place nothing there."""
        leases = self._leases
        return leases is not None and leases.quiet(host, trio.current_time())

    def restored(self) -> None:
        """The table was replaced by a snapshot: start over from it."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()  # the loop in run() begins again

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Schedule while leading, forever (cancel to stop)."""
        replica = self._ctx.replica
        while True:
            while not replica.is_leader():
                await replica.wait_role_change()
            term = replica.term
            try:
                # the table must hold every claim of the old leader before placing new ones
                await replica.read_barrier()
            except DcronError as exc:
                log.info("scheduler_waiting term=%d reason=%r", term, str(exc))
                continue
            if not replica.is_leader() or replica.term != term:
                continue
            log.info("scheduler_leading term=%d", term)
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._begin()
                    if self._ctx.lease is not None:
                        self._leases = LeaderLeases(self._ctx.lease, trio.current_time())
                        self._ctx.leader_leases = self._leases
                        self._declared = set()
                        nursery.start_soon(self._lease_loop)
                    nursery.start_soon(self._watch_leadership, term, nursery.cancel_scope)
                    nursery.start_soon(self._load)
                    nursery.start_soon(self._schedule_loop)
                    nursery.start_soon(self._retry_loop)
                    nursery.start_soon(self._dependents_loop)
                    nursery.start_soon(self._retention_loop)
                    nursery.start_soon(self._placement_loop)
            finally:
                self._nursery = None
                self._core = None
                self._leases = self._ctx.leader_leases = None
            log.info("scheduler_stopped term=%d", term)

    async def _watch_leadership(self, term: int, scope: trio.CancelScope) -> None:
        replica = self._ctx.replica
        while replica.is_leader() and replica.term == term:
            await replica.wait_role_change()
        scope.cancel()

    def _begin(self) -> None:
        store = self._ctx.store
        self._core = SchedulerCore(grace=self._ctx.grace)
        self._loaded = False
        self._dirty.clear()
        self._versions.clear()
        self._claimed.clear()
        self._retries = [
            _RetryDue(r.retry_at, r.run_id, r.next_attempt, r.job, r.job_version, r.scheduled_at)
            for r in _table.waiting_retries(store)
        ]
        heapq.heapify(self._retries)
        self._ended.clear()
        # dependents whose upstream ended while no leader claimed them
        for job, upstream, created_at in _table.all_deps(store):
            for run_id, at, state, reason in _table.newest_final_runs(store, upstream, 1):
                if at >= created_at and not _table.has_run_at(store, job, at):
                    self._ended.append(
                        {
                            "id": run_id,
                            "job": upstream,
                            "state": state,
                            "reason": reason,
                            "scheduled_at_ms": at,
                            "only": job,
                        }
                    )
        self._prune = set()
        self._unplaced = {}
        for claim, claimed_at in _table.unplaced_claims(store):
            wait_ms = int(self._ctx.config.cluster.placement_wait_s * 1000)
            deadline = max(claim.scheduled_at, claimed_at) + wait_ms
            self._unplaced[claim.run_id] = _Unplaced(claim, deadline, {})

    # --- claims on schedule ------------------------------------------------------------------

    def _timing(self, row: ScheduleRow, applied_at: int | None = None) -> JobTiming | None:
        """What the core needs of a job; None if its schedule cannot be read on this host.

        ``applied_at`` (s) is when this leader saw the change applied: a change
        whose commit came long after its stamp (a forward that waited out a
        partition) counts from then, less the grace -- the job did not exist,
        or was not changed, before the log said so.
        """
        try:
            schedule = parse(row.schedule, row.timezone)
        except InvalidRequest as exc:
            log.error("job_unschedulable job=%s error=%r", row.name, str(exc))
            return None
        since = math.ceil(row.updated_at / 1000)
        if applied_at is not None:
            since = max(since, applied_at - self._ctx.grace)
        last = since - 1 if row.last_instant is None else row.last_instant // 1000
        return JobTiming(
            row.name,
            schedule,
            paused=row.paused,
            catch_up=row.catch_up,  # type: ignore[arg-type]
            catch_up_cap=min(row.catch_up_limit, self._ctx.config.jobs.catch_up_cap),
            last_instant=max(last, self._claimed.get(row.name, last)),
            since=since,
        )

    def _upsert(self, row: ScheduleRow, now: int, *, changed: bool = False) -> None:
        core = self._core
        assert core is not None
        timing = self._timing(row, now if changed else None)
        self._versions[row.name] = row.version
        if timing is None:
            core.remove(row.name)
        else:
            core.upsert(timing, now)

    async def _load(self) -> None:
        """Fill the heap from the table without ever holding the event loop for long.

        First the jobs' names and schedules (pages of ``KEYS_PAGE``); then
        the jobs, those whose schedule fires most often first (a cheap proxy
        for "due soonest" that needs no next-instant computation; ties by
        name), yielding every ``LOAD_SLICE`` seconds. So a job every second
        is in the heap within moments of the start however big the table,
        and a daily one may start a few seconds late. Every job is judged
        against the time the load began: one due while the load ran is due,
        not missed.

        The rows come in one query per slice (``_table.schedule_rows``: a
        list of names, read lazily, each job's newest claimed instant from
        the ``runs_by_job`` index), not one query per job (a third of a new
        leader's time at 100,000 jobs). A slice upserts only rows it read
        itself and drops the rest of its query at the checkpoint, so a job
        changed while the heap loads is never put back as it was before;
        the next query starts after the last row upserted and asks for about
        twice what the last slice took.

        The cyclic garbage collector is off while it loads, and from
        ``FREEZE_AT`` jobs on what exists afterwards is frozen
        (``gc.freeze``): at 100,000 jobs each full collection had paused the
        event loop for 50-200 ms, and the heap's objects (acyclic, freed by
        reference counting) need no collector.
        """
        collecting = gc.isenabled()
        gc.disable()  # full collections over a growing heap paused the loop for 50-200 ms
        try:
            count = await self._load_jobs()
        finally:
            if collecting:
                gc.enable()
        if count >= FREEZE_AT:
            # the heap lives until the next load: keep it out of every later full collection
            gc.freeze()

    async def _load_jobs(self) -> int:
        store, clock = self._ctx.store, self._ctx.clock
        started = time.perf_counter()
        now = int(clock.now())
        # names by how often their schedule fires, each list by name (as the pages come)
        tiers: dict[float, list[str]] = {}
        rates: dict[str, float] = {}
        after: str | None = None
        slice_end = time.perf_counter() + LOAD_SLICE
        while True:
            keys = _table.schedule_keys(store, after, KEYS_PAGE)
            for name, expr, _zone in keys:
                rate = rates.get(expr)
                if rate is None:
                    rate = rates[expr] = fires_per_day(expr)
                tiers.setdefault(rate, []).append(name)
                if time.perf_counter() >= slice_end:
                    await trio.lowlevel.checkpoint()
                    slice_end = time.perf_counter() + LOAD_SLICE
            if len(keys) < KEYS_PAGE:
                break
            after = keys[-1][0]
        count = in_slice = 0
        want = LOAD_ROWS_MIN
        for rate in sorted(tiers, reverse=True):
            # by name within a tier: the queries walk the table's pages in order (grouped
            # by schedule, the same reads took 3 times as long, jumping from page to page)
            names = tiers[rate]
            at = 0
            while at < len(names):
                first, at = at, min(len(names), at + want)
                with contextlib.closing(_table.schedule_rows(store, names[first:at])) as rows:
                    for row in rows:  # (a job deleted meanwhile has none)
                        self._upsert(row, now)
                        count += 1
                        in_slice += 1
                        if time.perf_counter() >= slice_end:
                            # the rest of the query may be stale after the checkpoint: drop it
                            at = bisect.bisect_right(names, row.name, first, at)
                            break
                if time.perf_counter() < slice_end:
                    continue  # the slice goes on with the next query
                self._wake.set()
                await trio.lowlevel.checkpoint()
                slice_end = time.perf_counter() + LOAD_SLICE
                want = max(LOAD_ROWS_MIN, min(KEYS_PAGE, 2 * in_slice))
                in_slice = 0
        self._wake.set()
        self._loaded = True
        self.load_seconds = time.perf_counter() - started
        log.info("scheduler_loaded jobs=%d seconds=%.3f", count, self.load_seconds)
        return count

    def _refresh_dirty(self) -> None:
        if not self._dirty:
            return
        store, core = self._ctx.store, self._core
        assert core is not None
        now = int(self._ctx.clock.now())
        names, self._dirty = self._dirty, set()
        for name in sorted(names):
            row = _table.schedule_row(store, name)
            if row is None:
                core.remove(name)
                self._versions.pop(name, None)
                self._claimed.pop(name, None)
            else:
                if row.paused and core.active(name):
                    self._claim_before_pause(row, now)
                self._upsert(row, now, changed=True)

    def _claim_before_pause(self, row: ScheduleRow, now: int) -> None:
        """Claim the instants a job came due at before its pause and this leader had not
        handed out yet (it was behind): each gets a run, which the worker skips as paused.

        Only instants after the newest one handed out in this leadership, up to the
        pause, at most ``PAUSE_CLAIMS``; on time, there are none.
        """
        last = self._claimed.get(row.name)
        timing = self._timing(row)
        if last is None or timing is None or self._nursery is None:
            return
        until = min(row.updated_at // 1000, now)
        for instant in timing.schedule.iter_after(last, PAUSE_CLAIMS):
            if instant > until:
                break
            self._claimed[row.name] = instant
            log.info("run_claim_before_pause job=%s instant=%d", row.name, instant)
            self._nursery.start_soon(self._claim, Due(row.name, instant, "schedule"), row.version)

    async def _schedule_loop(self) -> None:
        clock = self._ctx.clock
        assert self._nursery is not None
        while True:
            self._refresh_dirty()
            core = self._core
            assert core is not None
            deadline = core.next_deadline()
            target = math.inf if deadline is None else deadline - LOOKAHEAD
            left = target - clock.now()
            if left > 0:
                wake = self._wake
                with trio.move_on_after(min(left, MAX_NAP)):
                    await wake.wait()
                if wake.is_set():
                    self._wake = trio.Event()
                continue
            assert deadline is not None
            # each run is claimed for the version its instant was computed from: a change
            # in between makes the store refuse it, and _claim looks again
            group = [(due, self._versions.get(due.job)) for due in core.due(deadline)]
            for due, _version in group:
                self._claimed[due.job] = max(due.instant, self._claimed.get(due.job, due.instant))
            # a few runs are claimed lead_time ahead; a crowd early enough for the log to
            # take every claim before the instant
            ahead = min(LOOKAHEAD, max(self._ctx.lead_time, len(group) * CLAIM_COST))
            self._nursery.start_soon(self._claim_group, group, deadline - ahead)
            await trio.lowlevel.checkpoint()

    async def _claim_group(self, group: list[tuple[Due, int | None]], at: float) -> None:
        await self._ctx.clock.sleep_until(at)
        assert self._nursery is not None
        for due, version in group:
            if version is not None:
                self._nursery.start_soon(self._claim, due, version)

    async def _claim(self, due: Due, version: int, *, again: bool = False) -> None:
        ctx = self._ctx
        where = ctx.place(due.job)
        results = await self._claim_instant(due.job, version, due.instant_ms, due.reason, where)
        stale_version = False
        for run_id, result in results:
            if isinstance(result, Applied):
                ctx.counters.claimed += 1
                if log.isEnabledFor(logging.DEBUG):
                    ahead = due.instant - ctx.clock.now()
                    log.debug("run_claimed run=%s ahead_ms=%.1f", run_id, ahead * 1000)
            elif isinstance(result, Rejected) and result.code != "already_exists":
                if result.code == "conflict" and "job_version" in result.message:
                    stale_version = True
                else:
                    log.info("run_claim_refused run=%s: %s", run_id, result.message)
        if stale_version and not again:
            # edited between our read and the claim: claim it for the new version if the
            # instant is still on the (new) schedule; a pause wins
            row = _table.schedule_row(ctx.store, due.job)
            # a pause wins over the instants after it; one before it still gets its run
            if row is not None and (not row.paused or due.instant_ms <= row.updated_at):
                try:
                    on_schedule = parse(row.schedule, row.timezone).next_after(due.instant - 1)
                except InvalidRequest:
                    return
                if on_schedule == due.instant:
                    log.debug("run_claim_again run=%s version=%d", due.run_id, row.version)
                    await self._claim(due, row.version, again=True)

    async def _claim_instant(
        self, job: str, version: int, at_ms: int, reason: str, where: Where
    ) -> list[tuple[str, Result | None]]:
        """Claim ``job``'s runs for one instant where ``place`` said; (run id, result) each.

        One run (``job@instant``) for a one-host job; one per host
        (``job@instant~host``) for ``on`` all or N. With no host at all, one
        run is claimed unplaced and skipped with the reason.
        """
        ctx = self._ctx
        targets: list[tuple[str, str | None]]
        if where.per_host and where.hosts:
            targets = [(make_run_id(job, at_ms, h), h) for h in where.hosts]
            if where.why:
                log.warning("run_fewer_hosts job=%s at=%d reason=%r", job, at_ms, where.why)
        else:
            targets = [(make_run_id(job, at_ms), where.host)]
        results: list[tuple[str, Result | None]] = []

        async def one(run_id: str, host: str | None) -> None:
            cmd = RunScheduled(
                **ctx.replica.stamp(self._actor),  # type: ignore[arg-type]
                run_id=run_id,
                job=job,
                job_version=version,
                scheduled_at=at_ms,
                host=host,
                reason=reason,
            )
            ctx.claiming(job, run_id, host)
            try:
                result = await ctx.propose(cmd)
            finally:
                ctx.claimed(job, run_id)
            if isinstance(result, Applied) and host is None:
                log.info("run_unplaced run=%s reason=%r", run_id, where.why)
            results.append((run_id, result))

        if len(targets) == 1:
            await one(*targets[0])
        else:
            async with trio.open_nursery() as nursery:
                for run_id, host in targets:
                    nursery.start_soon(one, run_id, host)
        return sorted(results, key=lambda r: r[0])

    # --- leases -----------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Declare lost the current attempts of every host silent for ``lost_after`` (_lease)."""
        ctx, leases = self._ctx, self._leases
        assert ctx.lease is not None and leases is not None and self._nursery is not None
        while True:
            await trio.sleep(ctx.lease.heartbeat)
            leases.heard(ctx.host, trio.current_time())
            now = trio.current_time()
            for run_id, attempt, host, _state in _table.active_attempts(ctx.store):
                if (run_id, attempt) in self._declared or not leases.silent(host, now):
                    continue
                self._declared.add((run_id, attempt))
                silent_for = now - leases.last_heard(host)
                self._nursery.start_soon(self._declare_lost, run_id, attempt, host, silent_for)

    async def _declare_lost(self, run_id: str, attempt: int, host: str, silent_for: float) -> None:
        ctx = self._ctx
        reason = f"host {host} was not heard from for {silent_for:.1f}s"
        cmd = RunLost(
            **ctx.replica.stamp(self._actor),  # type: ignore[arg-type]
            run_id=run_id,
            attempt=attempt,
            reason=reason,
        )
        result = await ctx.propose(cmd)
        if isinstance(result, Applied):
            ctx.counters.lost += 1
            log.warning(
                "run_lost run=%s attempt=%d host=%s reason=%r", run_id, attempt, host, reason
            )
        else:
            self._declared.discard((run_id, attempt))  # look again at the next round

    async def _placement_loop(self) -> None:
        """Place the claimed attempts that have no host; skip those past their deadline.

        A host that refused a run (no free slot) is not asked again for it
        for ``REFUSAL_MEMORY`` seconds; until the deadline (``[cluster]
        placement_wait_s`` after the instant or the claim) the leader keeps
        trying every ``PLACE_RETRY`` seconds, then skips the run with the
        placement's reason.
        """
        ctx = self._ctx
        while True:
            if not self._unplaced:
                self._unplaced_wake = trio.Event()
                await self._unplaced_wake.wait()
                continue
            now = trio.current_time()
            for run_id, item in sorted(self._unplaced.items()):
                current = _table.current_attempt(ctx.store, run_id)
                if current is None or current[1:] != (item.claim.attempt, "scheduled", None):
                    del self._unplaced[run_id]  # placed, ended or superseded meanwhile
                    continue
                recent = {h for h, at in item.refused.items() if now - at < REFUSAL_MEMORY}
                pinned = run_host(run_id)
                where = ctx.place(item.claim.job, only=pinned, refused=recent)
                if where.host is not None:
                    del self._unplaced[run_id]
                    cmd = RunPlaced(
                        **ctx.replica.stamp(self._actor),  # type: ignore[arg-type]
                        run_id=run_id,
                        attempt=item.claim.attempt,
                        host=where.host,
                    )
                    ctx.claiming(item.claim.job, run_id, where.host)
                    try:
                        result = await ctx.propose(cmd)
                    finally:
                        ctx.claimed(item.claim.job, run_id)
                    if isinstance(result, Applied):
                        log.info("run_placed run=%s host=%s", run_id, where.host)
                elif ctx.clock.now_ms() >= item.deadline:
                    del self._unplaced[run_id]
                    wait = ctx.config.cluster.placement_wait_s
                    why = where.why or "every host that could run it is busy"
                    await self._unplaceable(run_id, f"none within {wait:g}s: {why}")
            self._unplaced_wake = trio.Event()
            with trio.move_on_after(PLACE_RETRY):
                await self._unplaced_wake.wait()

    async def _unplaceable(self, run_id: str, why: str) -> None:
        """End a run claimed with no host: no host can run it (the reason says why)."""
        ctx = self._ctx
        reason = f"no host can run it: {why}"
        log.warning("run_unplaceable run=%s reason=%r", run_id, reason)
        cmd = RunSkipped(
            **ctx.replica.stamp(self._actor),  # type: ignore[arg-type]
            run_id=run_id,
            reason=reason[:1024],
        )
        await ctx.propose(cmd)

    # --- retries ------------------------------------------------------------------------------

    def _push_retry(self, item: _RetryDue) -> None:
        heapq.heappush(self._retries, item)
        self._retry_wake.set()

    async def _retry_loop(self) -> None:
        ctx = self._ctx
        assert self._nursery is not None
        while True:
            if not self._retries:
                self._retry_wake = trio.Event()
                await self._retry_wake.wait()
                continue
            head = self._retries[0]
            left = head.retry_at / 1000 - ctx.clock.now()
            if left > 0:
                wake = self._retry_wake = trio.Event()
                with trio.move_on_after(min(left, MAX_NAP)):
                    await wake.wait()
                continue
            heapq.heappop(self._retries)
            self._nursery.start_soon(self._claim_retry, head)

    async def _claim_retry(self, item: _RetryDue) -> None:
        ctx = self._ctx
        pinned = run_host(item.run_id)  # a per-host run retries on its host
        if pinned is not None:
            host = ctx.place(item.job, only=pinned).host
            why = f"its host {pinned} cannot take it now"
        else:
            current = _table.current_attempt(ctx.store, item.run_id)
            where = ctx.place(item.job, avoid=None if current is None else current[3])
            host, why = where.host, where.why
        cmd = RunScheduled(
            **ctx.replica.stamp(self._actor),  # type: ignore[arg-type]
            run_id=item.run_id,
            job=item.job,
            job_version=item.job_version,
            scheduled_at=item.scheduled_at,
            host=host,
            attempt=item.next_attempt,
            reason="retry",
        )
        ctx.claiming(item.job, item.run_id, host)
        try:
            result = await ctx.propose(cmd)
        finally:
            ctx.claimed(item.job, item.run_id)
        if isinstance(result, Applied) and host is None:
            log.info("run_unplaced run=%s reason=%r", item.run_id, why)
        if isinstance(result, Applied):
            ctx.counters.retries += 1
            log.info("run_retry_claimed run=%s attempt=%d", item.run_id, item.next_attempt)
        elif isinstance(result, Rejected):
            log.info("run_retry_refused run=%s: %s", item.run_id, result.message)

    # --- dependents ------------------------------------------------------------------------

    async def _dependents_loop(self) -> None:
        while True:
            if not self._ended:
                self._ended_wake = trio.Event()
                await self._ended_wake.wait()
                continue
            ended, self._ended = self._ended, []
            for run in ended:
                await self._claim_dependents(run)

    async def _claim_dependents(self, run: dict[str, Any]) -> None:
        ctx, store = self._ctx, self._ctx.store
        at = int(run["scheduled_at_ms"])
        reason = (
            run["reason"] if run["reason"] in ("schedule", "catch-up", "trigger") else "trigger"
        )
        jobs = [run["only"]] if "only" in run else _table.dependents(store, run["job"])
        for job in jobs:
            if _table.has_run_at(store, job, at):
                continue  # claimed already (by its own schedule, or another upstream)
            found = _table.job_spec(store, job)
            if found is None or found[1]["paused"]:
                continue
            results = await self._claim_instant(job, found[0], at, reason, ctx.place(job))
            for run_id, result in results:
                if isinstance(result, Applied):
                    ctx.counters.dependents += 1
                    log.info("run_dependent_claimed run=%s after=%s", run_id, run["id"])

    # --- retention -------------------------------------------------------------------------

    async def _retention_loop(self) -> None:
        ctx = self._ctx
        limits = prune_limits(ctx.config.jobs.keep_runs, ctx.config.jobs.keep_days)
        if limits is None:
            return
        keep, max_age = limits
        if keep is not None:
            await self._sweep_counts(keep)
        while True:
            await self.prune_once(keep, max_age)
            await trio.sleep(self._prune_interval)

    async def _sweep_counts(self, keep: int) -> None:
        """Find the jobs over ``keep`` ended runs (once per leadership), a slice at a time."""
        store = self._ctx.store
        after: str | None = None
        slice_end = time.perf_counter() + LOAD_SLICE
        while True:
            keys = _table.schedule_keys(store, after, KEYS_PAGE)
            for name, _expr, _zone in keys:
                if _table.ended_count(store, name) > keep:
                    self._prune.add(name)
                if time.perf_counter() >= slice_end:
                    await trio.lowlevel.checkpoint()
                    slice_end = time.perf_counter() + LOAD_SLICE
            if len(keys) < KEYS_PAGE:
                return
            after = keys[-1][0]

    async def prune_once(self, keep: int | None, max_age: int | None) -> None:
        """Prune every job over its limits now (a pass of the retention loop)."""
        ctx, store = self._ctx, self._ctx.store
        candidates: set[str] = set()
        dirty, self._prune = self._prune, set()
        if keep is not None:
            candidates.update(j for j in dirty if _table.ended_count(store, j) > keep)
        if max_age is not None:
            cutoff = ctx.clock.now_ms() - max_age * 1000
            candidates.update(_table.jobs_with_runs_before(store, cutoff))
        for job in sorted(candidates):
            more = True
            while more:
                cmd = PruneRuns(
                    **ctx.replica.stamp(self._actor),  # type: ignore[arg-type]
                    job=job,
                    keep_count=keep,
                    max_age=max_age,
                )
                result = await ctx.propose(cmd)
                if not isinstance(result, Applied):
                    break
                value = result.value
                more = bool(value["more"])
                if value["deleted"]:
                    ctx.counters.pruned += int(value["deleted"])
                    ctx.uploader.delete([str(p) for p in value["log_paths"]])
                    log.info("runs_pruned job=%s runs=%d", job, value["deleted"])


def fires_per_day(expr: str) -> float:
    """About how often a schedule fires in a day (0 if it cannot be read): the load order."""
    try:
        spec = parse_spec(expr.strip(" \t"))
    except InvalidRequest:
        return 0.0
    if isinstance(spec, EverySpec):
        return 86400 / spec.period
    return float(len(spec.seconds) * len(spec.minutes) * len(spec.hours))
