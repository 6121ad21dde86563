"""What the scheduler (leader) and the worker share: the seams, the clock, events per run.

Also the two seams issue 5 (runs across the cluster) will widen:

* ``place(job)`` -- which host a claimed attempt goes to. On one host it is
  this host; a cluster's leader will choose by tags and free slots.
* ``propose(cmd)`` -- how this node gets a command committed. Here it is the
  local replica (which leads a one-voter log); a cluster's worker will
  forward to the leader. It retries "no leader" and "outcome unknown" with
  backoff for as long as the caller's ``patience`` (the command keeps its
  request number, so a retry is applied once).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Final, final

import trio

from dcrond.config import Config
from dcrond.engine._clock import WallClock
from dcrond.engine._uploader import LogUploader
from dcrond.errors import NotLeader, Unavailable
from dcrond.replica import Replica
from dcrond.runner import ProcessRunner
from dcrond.store import Command, JobStore, Result
from dcrond.store._blobs import BlobStore

log = logging.getLogger("dcrond.engine")

#: first and longest wait between tries of a proposal nobody could take
RETRY_MIN: Final = 0.05
RETRY_MAX: Final = 2.0


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
        self.counters = Counters()
        self._run_events: dict[str, trio.Event] = {}

    @property
    def store(self) -> JobStore:
        """This node's copy of the job table."""
        return self.replica.store

    # --- placement and proposals (the seams of issue 5) ----------------------------

    def place(self, job: str) -> str:
        """The host a new attempt of ``job`` goes to (this host, on a one-host cluster)."""
        return self.host

    async def propose(self, cmd: Command, *, patience: float = math.inf) -> Result | None:
        """Commit ``cmd``; None if no leader took it within ``patience`` seconds."""
        give_up = trio.current_time() + patience
        delay = RETRY_MIN
        while True:
            try:
                return await self.replica.propose(cmd)
            except (NotLeader, Unavailable) as exc:
                if trio.current_time() + delay > give_up:
                    log.warning(
                        "proposal_abandoned kind=%s actor=%s error=%r",
                        cmd.KIND,
                        cmd.actor,
                        str(exc),
                    )
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
