"""What the scheduler (leader) and the worker share: the seams, the clock, events per run.

And the two seams between hosts:

* ``place(job)`` -- which host a claimed attempt goes to. On one host it is
  this host; a cluster's leader chooses by the job's tags and the hosts'
  free slots (``dcrond.placement``), leaving out hosts whose heartbeats it
  missed (``_lease``).
* ``propose(cmd)`` -- how this node gets a command committed: the replica,
  which forwards to the leader from a follower. It retries "no leader" and
  "outcome unknown" with backoff for as long as the caller's ``patience``
  (the command keeps its request number, so a retry is applied once).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Final, final

import trio

from dcrond.config import Config
from dcrond.engine import _table
from dcrond.engine._batcher import Batcher
from dcrond.engine._clock import WallClock
from dcrond.engine._lease import LeaderLeases, LeaseTimes
from dcrond.engine._uploader import LogUploader
from dcrond.errors import DcronError, NotLeader, Unavailable
from dcrond.placement import HostView, Requirements, place
from dcrond.replica import Replica
from dcrond.runner import ProcessRunner
from dcrond.store import Command, JobStore, Result
from dcrond.store._blobs import BlobStore

log = logging.getLogger("dcrond.engine")

#: first and longest wait between tries of a proposal nobody could take
RETRY_MIN: Final = 0.05
RETRY_MAX: Final = 2.0

#: how long the leader trusts its own count of free slots over gossip's (s)
SLOTS_REFRESH: Final = 1.0

#: the hosts of the cluster as placement sees them (``dcrond.placement.hosts_from_cluster``)
HostsView = Callable[[], tuple[HostView, ...]]

#: call a method on another host: (host, method, params) -> its answer (``Forwarder.call``)
PeerCall = Callable[[str, str, dict[str, Any]], Awaitable[Any]]


@dataclass(slots=True)
class Counters:
    """Running totals behind ``Engine.statistics()``."""

    claimed: int = 0  #: runs the scheduler claimed (schedule and catch-up)
    triggered: int = 0
    retries: int = 0  #: retry attempts claimed
    dependents: int = 0  #: runs claimed because an upstream run ended
    started: int = 0  #: attempts started on this host
    adopted: int = 0  #: attempts re-adopted after a restart
    finished: int = 0  #: attempts whose end this host reported
    skipped: int = 0  #: runs this host skipped (policy)
    lost: int = 0  #: attempts reported lost
    pruned: int = 0  #: runs deleted by retention
    fire_lags_ms: list[float] = field(default_factory=list)  #: newest start lags (bounded)

    def lag(self, ms: float) -> None:
        """Remember one start lag (the newest 1,000 are kept)."""
        self.fire_lags_ms.append(ms)
        if len(self.fire_lags_ms) > 1000:
            del self.fire_lags_ms[:500]


@final
@dataclass(frozen=True, slots=True)
class Where:
    """Where the runs of one instant go (``Context.place``)."""

    hosts: tuple[str, ...]  #: in the order to use; empty: nowhere
    why: str  #: why fewer hosts than wanted (or none) can take it; "" when enough
    per_host: bool  #: one run per host (``on`` all or N: run ids ``job@instant~host``)

    @property
    def host(self) -> str | None:
        """The one host of a one-host-per-instant job (None: nowhere)."""
        return self.hosts[0] if self.hosts else None


@final
class Context:
    """The engine's shared parts (see the module doc)."""

    def __init__(
        self,
        *,
        replica: Replica,
        runner: ProcessRunner,
        blobs: BlobStore,
        uploader: LogUploader,
        config: Config,
        host: str,
        clock: WallClock,
        lead_time: float,
        grace: int,
        lease: LeaseTimes | None = None,
        peer_call: PeerCall | None = None,
        hosts: HostsView | None = None,
    ) -> None:
        self.replica = replica
        self.runner = runner
        self.blobs = blobs
        self.uploader = uploader
        self.config = config
        self.host = host
        self.clock = clock
        self.lead_time = lead_time
        self.grace = grace  #: seconds: a run due this recently is "due", not "missed"
        #: heartbeats and leases between hosts (``_lease``); None: one host, no leases
        self.lease = lease
        #: how this host reaches another (None: it cannot)
        self.peer_call = peer_call
        #: the cluster's hosts for placement (None: one host, this one)
        self.hosts = hosts
        #: the leader's view of heartbeats, while this node leads with leases on
        self.leader_leases: LeaderLeases | None = None
        self._cursor = 0
        #: job -> {run id: host} of the claims this leader proposed that are not applied yet
        self._inflight: dict[str, dict[str, str]] = {}
        self._slots: dict[str, int] = {}
        self._slots_at = -math.inf
        self.counters = Counters()
        self._run_events: dict[str, trio.Event] = {}
        #: the engine's proposals go in batches while its task runs (``_batcher``)
        self.batcher = Batcher(replica)

    @property
    def store(self) -> JobStore:
        """This node's copy of the job table."""
        return self.replica.store

    # --- placement and proposals (the seams of issue 5) ----------------------------

    def place(
        self,
        job: str,
        *,
        avoid: str | None = None,
        only: str | None = None,
        refused: Collection[str] = (),
    ) -> Where:
        """The hosts new runs (or the next attempt) of ``job`` go to, or why there are none.

        One host (no ``hosts`` view): this host. In a cluster the job's tags,
        its ``on`` and the hosts' free slots decide (``dcrond.placement``);
        hosts whose heartbeats the leader missed for over a lease are left
        out. A one-host-per-instant job whose concurrency is ``forbid`` or
        ``replace`` stays on the host of its unfinished attempt, where that
        host's worker sees the overlap and applies the policy; while that
        host cannot be asked (silent, dead, refusing) the run waits unplaced. ``avoid``
        (the host of a failed attempt) is left out when another host can
        take the run; ``only`` restricts the choice to one host (the next
        attempt of a per-host run); ``refused`` are hosts that just refused
        this run (no free slot).
        """
        found = _table.job_spec(self.store, job)
        on: Any = "any" if found is None else found[1].get("on", "any")
        per_host = on != "any"
        if self.hosts is None or found is None:
            # one host; or deleted: the worker skips it, wherever it is
            fits = only is None or only == self.host
            return Where((self.host,) if fits else (), "" if fits else f"{only} is gone", per_host)
        spec = found[1]
        views = self._views()
        exclude: dict[str, str] = {}
        leases = self.leader_leases
        if leases is not None:
            now = trio.current_time()
            exclude = {
                v.name: "missed its heartbeats"
                if leases.confirmed(v.name)
                else "has not reached this leader yet"
                for v in views
                if v.name != self.host
                and (leases.quiet(v.name, now) or not leases.confirmed(v.name))
            }
        if only is not None:
            exclude.update({v.name: "is not this run's host" for v in views if v.name != only})
        exclude.update(dict.fromkeys(refused, "refused it (no free slot)"))
        req = Requirements(tags=spec.get("tags") or {}, on=on)
        if spec["concurrency"] != "allow" and not per_host:
            # claims still on their way into the log count too: both commit, then both run
            active = [*reversed(self._inflight.get(job, {}).values())]
            active += _table.active_hosts_of(self.store, job)
            if active:
                # the run goes where the job's unfinished one is, whose worker applies the
                # policy; while that host cannot be asked it waits, so that the two never
                # overlap (the old attempt ends, or is declared lost once its host stopped it)
                other = active[0]
                alone = {v.name: "" for v in views if v.name != other}
                if other not in exclude and place(req, views, exclude=alone).chosen:
                    return Where((other,), "", per_host)
                why = (
                    f"concurrency {spec['concurrency']}: waiting for its unfinished run on "
                    f"{other}, which cannot be asked now"
                )
                return Where((), why, per_host)
        self._cursor += 1
        chosen = None
        if avoid is not None:
            chosen = place(req, views, cursor=self._cursor, exclude={**exclude, avoid: "failed it"})
        if chosen is None or not chosen.chosen:
            chosen = place(req, views, cursor=self._cursor, exclude=exclude)
        for host in chosen.chosen:
            self._slots[host] = self._slots.get(host, 0) - 1
        return Where(chosen.chosen, chosen.reason, per_host)

    def claiming(self, job: str, run_id: str, host: str | None) -> None:
        """The leader is proposing a claim of ``run_id`` on ``host`` (placement sees it)."""
        if host is not None:
            self._inflight.setdefault(job, {})[run_id] = host

    def claimed(self, job: str, run_id: str) -> None:
        """That claim was applied, refused or given up: the table speaks for it now."""
        runs = self._inflight.get(job)
        if runs is not None:
            runs.pop(run_id, None)
            if not runs:
                del self._inflight[job]

    def _views(self) -> tuple[HostView, ...]:
        """The hosts, with free slots counted down by what was placed since gossip said."""
        assert self.hosts is not None
        views = self.hosts()
        now = trio.current_time()
        if now - self._slots_at >= SLOTS_REFRESH:
            self._slots = {v.name: v.free_slots for v in views}
            self._slots_at = now
        return tuple(
            dataclasses.replace(v, free_slots=self._slots.get(v.name, v.free_slots)) for v in views
        )

    async def propose(self, cmd: Command, *, patience: float = math.inf) -> Result | None:
        """Commit ``cmd``; None if no leader took it within ``patience`` seconds.

        Any other error on the way (a forward the leader's RPC layer refused,
        a protocol error) is logged and retried the same way: the engine's
        own proposals must never stop the engine, and a report kept in the
        outbox would meet the same error again at every restart.
        """
        give_up = trio.current_time() + patience
        delay = RETRY_MIN
        while True:
            try:
                if self.batcher.running:
                    return await self.batcher.propose(cmd)
                return await self.replica.propose(cmd, retrying=True)
            except DcronError as exc:
                if not isinstance(exc, NotLeader | Unavailable):
                    log.error(
                        "proposal_failed kind=%s actor=%s error=%s: %r",
                        cmd.KIND,
                        cmd.actor,
                        type(exc).__name__,
                        str(exc),
                    )
                if trio.current_time() + delay > give_up:
                    log.warning(
                        "proposal_abandoned kind=%s actor=%s error=%r",
                        cmd.KIND,
                        cmd.actor,
                        str(exc),
                    )
                    self.replica.release(cmd)
                    return None
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    # --- "this run changed" ----------------------------------------------------------

    def run_event(self, run_id: str) -> trio.Event:
        """An event set the next time a command about ``run_id`` is applied here."""
        event = self._run_events.get(run_id)
        if event is None:
            event = self._run_events[run_id] = trio.Event()
        return event

    def run_changed(self, run_id: str) -> None:
        """A command about ``run_id`` was applied: wake whoever waits on it."""
        event = self._run_events.pop(run_id, None)
        if event is not None:
            event.set()

    def all_changed(self) -> None:
        """The table was replaced (a snapshot): wake every waiter."""
        events, self._run_events = self._run_events, {}
        for event in events.values():
            event.set()


async def wait_any(events: list[trio.Event], timeout: float = math.inf) -> None:
    """Return when one of ``events`` is set, or after ``timeout`` seconds."""
    if any(e.is_set() for e in events):
        await trio.lowlevel.checkpoint()
        return
    with trio.move_on_after(timeout):
        async with trio.open_nursery() as nursery:

            async def one(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            for event in events:
                nursery.start_soon(one, event)
