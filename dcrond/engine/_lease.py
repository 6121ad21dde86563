"""Leases: a host runs attempts only while the leader hears from it.

Theory of operation
-------------------
Across hosts the leader cannot see processes; it sees heartbeats. Every
host's engine sends ``engine.heartbeat`` to the leader every
``heartbeat`` seconds (the leader's own host counts itself heard). Two
clocks then run, each on its own host's monotonic clock, and the protocol
only relies on their *rates* being alike, never on their offsets:

* **The host** holds a lease until ``lease`` seconds after it *sent* the
  newest heartbeat the leader answered. A host whose lease ran out is cut
  off: it starts nothing, and it stops (SIGTERM, SIGKILL after the kill
  grace) every running attempt that could otherwise run twice -- one whose
  run may get another attempt (retries left) or whose job forbids or
  replaces overlapping runs. Other attempts run on: nobody starts them
  again, and their late report is recorded on the attempt.
* **The leader** declares the current attempts on a host *lost* once it
  has not *received* a heartbeat from that host for ``lost_after`` =
  ``lease + kill grace + 2 x heartbeat``. Receipt is later than sending, so
  by then the cut-off host has stopped those attempts for at least the
  kill grace. A new leader counts every host as heard when it took over,
  so a change of leader never declares anything lost by itself; but it
  places new runs only on hosts whose heartbeat it has received (a
  second, usually), never on one it has not heard from at all.

A lost attempt is retried on another host when the job's retry policy
allows (``dcrond.store``: lost is retryable), and the old attempt's report,
if it ever arrives, is recorded on that attempt without changing the run.
Together: no two attempts of one run run at once, and a ``forbid`` job
never has two attempts running anywhere, as long as the hosts' monotonic
clocks run at about the same rate (the margin of two heartbeats covers a
drift of several percent).

``WorkerLease`` and ``LeaderLeases`` are pure book-keeping on numbers the
caller passes (instants on trio's clock); the engine runs the loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import final


@final
@dataclass(frozen=True, slots=True)
class LeaseTimes:
    """How often hosts report and how long silence is tolerated (seconds)."""

    heartbeat: float = 1.0  #: a host sends a heartbeat this often
    lease: float = 10.0  #: a host stops its attempts this long after its last answered one
    kill_grace: float = 10.0  #: SIGTERM to SIGKILL, the runner's ``kill_grace_s``

    @property
    def lost_after(self) -> float:
        """How long the leader waits, after a host's newest heartbeat, to call its attempts lost."""
        return self.lease + self.kill_grace + 2 * self.heartbeat


@final
class WorkerLease:
    """One host's lease: valid until ``lease`` seconds after the newest answered heartbeat."""

    def __init__(self, times: LeaseTimes, now: float) -> None:
        self.times = times
        #: a host that just started may run what it was given for one lease
        self.renewed_at = now

    def renewed(self, sent_at: float) -> None:
        """The leader answered the heartbeat sent at ``sent_at``."""
        self.renewed_at = max(self.renewed_at, sent_at)

    def valid(self, now: float) -> bool:
        """This host may start and keep running attempts."""
        return now - self.renewed_at <= self.times.lease

    def expires_at(self) -> float:
        """When the lease runs out unless renewed."""
        return self.renewed_at + self.times.lease


@final
class LeaderLeases:
    """The leader's view: when it last heard from each host (reset when it takes over)."""

    def __init__(self, times: LeaseTimes, began: float) -> None:
        self.times = times
        self._began = began
        self._heard: dict[str, float] = {}

    def heard(self, host: str, now: float) -> None:
        """A heartbeat from ``host`` arrived at ``now``."""
        self._heard[host] = max(now, self._heard.get(host, now))

    def last_heard(self, host: str) -> float:
        """When ``host`` was last heard (the takeover time for a host not heard since)."""
        return self._heard.get(host, self._began)

    def silent(self, host: str, now: float) -> bool:
        """``host``'s attempts are to be declared lost: not heard for ``lost_after``."""
        return now - self.last_heard(host) > self.times.lost_after

    def quiet(self, host: str, now: float) -> bool:
        """``host`` missed heartbeats for longer than a lease: place nothing new on it."""
        return now - self.last_heard(host) > self.times.lease

    def confirmed(self, host: str) -> bool:
        """A heartbeat from ``host`` reached this leader since it took over.

        Until then nothing new is placed on the host (it may be down, or
        unable to reach this leader); its running attempts are not called
        lost before ``lost_after`` from the takeover either.
        """
        return host in self._heard
