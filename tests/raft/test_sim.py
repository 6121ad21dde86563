"""Raft stays safe and live under faults: the deterministic simulator, one run per seed.

Each seed simulates a whole cluster (even seeds 3 nodes, odd seeds 5) for
``--sim-seconds`` of crashes, pauses, partitions, lossy links, membership
changes, leadership transfers and compactions while clients run put/get/cas.
Every step is checked against Raft's safety invariants; afterwards the cluster
must elect a leader, commit and converge, and the clients' history must be
linearizable. A failure prints the seed and the command that replays it.
"""

from __future__ import annotations

from dcrond.testing import config_for_seed, simulate


def test_cluster_is_safe_live_and_linearizable_under_faults(
    sim_seed: int, sim_seconds: float
) -> None:
    result = simulate(config_for_seed(sim_seed, sim_seconds))
    assert result.linearizability.ok
    assert result.checker.committed > 0
    if sim_seconds >= 5:
        assert result.ops_ok > 0, "clients completed nothing: the run proved little"
