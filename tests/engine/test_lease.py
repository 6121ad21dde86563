"""Lease arithmetic (``dcrond.engine._lease``): a cut-off host stops before it is called lost.

The real protocol runs between real hosts in
tests/cluster_local/test_runs_across_hosts.py; here the rule that makes it
safe is checked on numbers: whatever the delays, the leader declares a
host's attempts lost only after that host's own lease ran out and the kill
grace passed, as long as both clocks run at the same rate.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dcrond.engine._lease import LeaderLeases, LeaseTimes, WorkerLease

TIMES = LeaseTimes(heartbeat=1.0, lease=10.0, kill_grace=5.0)


def test_a_fresh_host_holds_a_lease_until_it_runs_out_unrenewed() -> None:
    lease = WorkerLease(TIMES, now=100.0)
    assert lease.valid(110.0)
    assert not lease.valid(110.01)
    lease.renewed(105.0)
    assert lease.valid(115.0) and not lease.valid(115.01)
    lease.renewed(101.0)  # an older answer arriving late never shortens the lease
    assert lease.expires_at() == 115.0


def test_a_new_leader_counts_every_host_as_heard_when_it_took_over() -> None:
    leases = LeaderLeases(TIMES, began=50.0)
    assert leases.last_heard("never-seen") == 50.0
    assert not leases.silent("never-seen", 50.0 + TIMES.lost_after)
    assert leases.silent("never-seen", 50.0 + TIMES.lost_after + 0.01)
    assert not leases.quiet("never-seen", 60.0) and leases.quiet("never-seen", 60.01)
    assert not leases.confirmed("h2")  # nothing new is placed on it yet
    leases.heard("h2", 70.0)
    assert leases.confirmed("h2")
    assert not leases.silent("h2", 70.0 + TIMES.lost_after)


@given(
    sent=st.floats(0, 1000),
    delay=st.floats(0, 30),  # network delay of the last answered heartbeat
    began=st.floats(0, 2000),  # when the current leader took over
)
def test_the_leader_calls_attempts_lost_only_after_the_host_stopped_them(
    sent: float, delay: float, began: float
) -> None:
    worker = WorkerLease(TIMES, now=0.0)
    worker.renewed(sent)
    leader = LeaderLeases(TIMES, began=min(began, sent + delay))
    leader.heard("h", sent + delay)
    declared = leader.last_heard("h") + TIMES.lost_after
    # the host stops its attempts when the lease runs out; SIGKILL after the grace
    stopped_by = worker.expires_at() + TIMES.kill_grace
    assert declared >= stopped_by + 2 * TIMES.heartbeat - 1e-9  # (float rounding)
    assert leader.silent("h", declared + 1e-6)
    assert not worker.valid(declared)
