"""At 100 and 500 members, at 0, 1 and 5 % loss: joins and deaths reach every member in time,
and Lifeguard keeps slow members from accusing healthy ones.

Each run starts from a converged cluster (every member knows every other),
then has a new member join through one seed and measures until *every*
member sees it alive, then crashes a member and measures until *every*
member declares it dead. Bounds come from the configuration: a death must
be known everywhere within the minimum suspicion timeout plus a few probe
periods (Lifeguard's confirmations shrink the timeout from its maximum to its
minimum when several members independently suspect). The runs are
deterministic, so the bounds hold or fail the same way every time;
bench/gossip.py prints the medians over more runs.
"""

from __future__ import annotations

import pytest

from dcrond.gossip import GossipConfig
from dcrond.gossip._health import suspicion_bounds
from dcrond.testing._gossipscenarios import (
    converged_sim,
    measure_death,
    measure_false_positives,
    measure_join,
)

CFG = GossipConfig()


@pytest.mark.parametrize("loss", [0.0, 0.01, 0.05])
@pytest.mark.parametrize(("n", "trials"), [(100, 2), (500, 1)])
def test_joins_and_deaths_reach_every_member(n: int, trials: int, loss: float) -> None:
    sim = converged_sim(n + int(loss * 1000), n, CFG, loss=loss)
    lo, _ = suspicion_bounds(CFG.suspicion_mult, CFG.suspicion_max_mult, n, CFG.probe_interval)
    for i in range(trials):
        joined = measure_join(sim, f"new{i}", f"m{i:03d}")
        assert joined is not None and joined < 3.0, f"join took {joined}s"
        d = measure_death(sim, f"m{100 - 1 - i:03d}")
        assert d.all_dead_s is not None, "some member never noticed the crash"
        # SWIM: the victim is probed about once a period, so a first suspicion comes soon.
        assert d.first_suspect_s is not None and d.first_suspect_s < 10 * CFG.probe_interval
        # Confirmations brought the suspicion down to its minimum: dead ~lo after suspected.
        assert d.all_dead_s < d.first_suspect_s + lo + 4 * CFG.probe_interval, d
    # And the views agree again once the dust settles (anti-entropy mends what gossip missed).
    deadline = sim.now + 120_000_000
    while sim.disagreement() is not None and sim.now < deadline:
        sim.run_until(sim.now + 1_000_000)
    assert sim.disagreement() is None


def test_lifeguard_stops_slow_members_from_accusing_healthy_ones() -> None:
    """5 of 100 members handle packets up to 2 s late (a CPU-starved receive path)."""
    kw = dict(loss=0.01, seconds=60.0, degraded=5, lag_s=2.0)
    with_lg = measure_false_positives(11, 100, GossipConfig.memberlist(), **kw)  # type: ignore[arg-type]
    without = measure_false_positives(
        11,
        100,
        GossipConfig.memberlist(lifeguard=False),
        **kw,  # type: ignore[arg-type]
    )
    assert with_lg.deaths == 0
    assert without.suspicions >= 10 * max(1, with_lg.suspicions), (with_lg, without)
    assert without.accused > 3 * max(1, with_lg.accused), (with_lg, without)


def test_a_healthy_cluster_at_5_percent_loss_declares_nobody_dead() -> None:
    fp = measure_false_positives(12, 100, CFG, loss=0.05, seconds=60.0)
    assert fp.deaths == 0, fp
