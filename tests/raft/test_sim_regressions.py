"""Bugs the simulator found in the Raft core, each replayed as a fixed scenario.

A random seed stops reproducing a bug as soon as the simulator or the core
changes what it draws, so each finding is kept here as a short *scripted*
run: the nemesis is off and the script injects exactly the faults that broke
the core (plus the original seed, for the record). The findings themselves
are written up in ``.coord/findings.md`` under the ids used below.
"""

from __future__ import annotations

from dcrond.errors import DcronError
from dcrond.raft import ConfChange, ConfChangeType, Config
from dcrond.testing import SimConfig, Simulation, simulate


def _leader_id(sim: Simulation) -> str:
    lead = sim.leader()
    assert lead is not None, "the scenario needs a leader here"
    return lead.id


def _propose_change(sim: Simulation, cc: ConfChange) -> str:
    lead = sim.leader()
    assert lead is not None and lead.core is not None
    try:
        lead.core.propose_conf_change(cc)
    except DcronError as exc:
        return f"{cc.type.name} {cc.node} refused: {exc}"
    if cc.node not in sim.nodes:
        sim.add_node(cc.node, joining=True)
    sim.drain(lead)
    return f"{lead.id} proposes {cc.type.name} {cc.node}"


def _isolate_leader(sim: Simulation) -> str:
    lead = _leader_id(sim)
    others = [n for n in sim.node_ids if n != lead]
    sim.net.partition([[lead], others])
    return f"isolate {lead}"


def _heal(sim: Simulation) -> str:
    sim.net.heal()
    return "heal"


def test_sim1_a_joining_node_with_no_membership_never_elects_itself_alone() -> None:
    """SIM-1 (seed 1 with ``join_empty``): a node that joined with an empty membership
    replayed ``add-learner n4`` and ``promote-learner n4`` onto nothing, believed it was
    the only voter, and led and committed alone while the others elected their own leader.
    """

    def add_learner(sim: Simulation) -> str:
        return _propose_change(sim, ConfChange(ConfChangeType.ADD_LEARNER, "n4"))

    def promote(sim: Simulation) -> str:
        return _propose_change(sim, ConfChange(ConfChangeType.PROMOTE_LEARNER, "n4"))

    result = simulate(
        SimConfig(
            seed=1,
            nodes=3,
            seconds=8.0,
            faults=False,
            join_empty=True,
            compact_every=1_000_000,  # n4 must get the log from index 1, not a snapshot
            script=((1.0, add_learner), (2.0, promote), (3.0, _isolate_leader), (6.0, _heal)),
            replay="pytest tests/raft/test_sim_regressions.py -k sim1 -x",
        )
    )
    assert result.linearizability.ok


def test_sim2_a_follower_catches_up_after_its_whole_inflight_window_was_lost() -> None:
    """SIM-2 (seed 2): once ``max_inflight`` AppendEntries to a follower in REPLICATE
    were lost, the leader sent it nothing but heartbeats forever.
    """
    cut: list[tuple[str, str]] = []

    def cut_leader_to_a_follower(sim: Simulation) -> str:
        lead = _leader_id(sim)
        follower = next(n for n in sim.node_ids if n != lead)
        sim.net.cut(lead, follower)
        cut.append((lead, follower))
        return f"cut {lead}->{follower}"

    result = simulate(
        SimConfig(
            seed=2,
            nodes=3,
            seconds=5.0,
            faults=False,
            raft=Config(election_ticks=10, heartbeat_ticks=2, max_inflight=2),
            compact_every=1_000_000,  # no snapshot may paper over the lost batches
            script=((1.0, cut_leader_to_a_follower), (2.5, _heal)),
            replay="pytest tests/raft/test_sim_regressions.py -k sim2 -x",
        )
    )
    assert cut, "the script did not run"
    assert result.ops_ok > 0
