"""The simulator is worth trusting: it catches deliberately broken Rafts.

Each test breaks one thing Raft's safety depends on — in the core, in the
disk, or in the driver — and asserts the simulator reports the right broken
invariant within a few short seeds. If a checker or the nemesis silently lost
its teeth, these would fail while the real suite stayed green.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

from dcrond.raft import HardState, Role
from dcrond.raft._raftlog import RaftLog
from dcrond.testing import SimConfig, SimDisk, Simulation, SimulationFailure, config_for_seed
from dcrond.testing._simclient import Request, Response, Status
from dcrond.testing._simnode import SimNode

_SEEDS = range(20)


def _first_failure(configs: Iterable[SimConfig]) -> str:
    for cfg in configs:
        try:
            Simulation(cfg).run()
        except SimulationFailure as exc:
            return str(exc)
    pytest.fail("the simulator did not notice the injected bug")


def _repeat(
    every_s: float, times: int, fn: Callable[[Simulation], object]
) -> tuple[tuple[float, Callable[[Simulation], object]], ...]:
    return tuple((1.0 + k * every_s, fn) for k in range(times))


def test_votes_for_candidates_with_stale_logs_lose_committed_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)
    msg = _first_failure(config_for_seed(s, 10.0) for s in _SEEDS)
    assert "leader completeness" in msg or "state machine safety" in msg


def test_a_vote_that_is_not_durable_elects_two_leaders_in_one_term(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_sync = SimDisk.sync

    def sync_forgetting_the_vote(self: SimDisk) -> None:
        real_sync(self)
        hs = self.hard_state
        self.hard_state = HardState(hs.term, None, hs.commit)

    monkeypatch.setattr(SimDisk, "sync", sync_forgetting_the_vote)

    def rivals(sim: Simulation) -> object:
        return sim.nemesis.rival_campaigns()

    configs = (
        SimConfig(seed=s, nodes=3, seconds=10.0, faults=False, script=_repeat(0.8, 10, rivals))
        for s in _SEEDS
    )
    assert "election safety" in _first_failure(configs)


def test_a_disk_that_acknowledges_before_it_syncs_loses_committed_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fsync lies: a crash takes back the last write that ``sync`` reported durable."""
    before_last_sync: dict[int, tuple[object, ...]] = {}
    real_sync, real_crash = SimDisk.sync, SimDisk.crash

    def sync(self: SimDisk) -> None:
        before_last_sync[id(self)] = (self.hard_state, self.snapshot, list(self._log))
        real_sync(self)

    def crash(self: SimDisk) -> None:
        real_crash(self)
        saved = before_last_sync.pop(id(self), None)
        if saved is not None:
            self.hard_state, self.snapshot, self._log = saved  # type: ignore[assignment]

    monkeypatch.setattr(SimDisk, "sync", sync)
    monkeypatch.setattr(SimDisk, "crash", crash)
    msg = _first_failure(config_for_seed(s, 10.0) for s in _SEEDS)
    assert any(
        what in msg
        for what in (
            "leader completeness",
            "state machine safety",
            "committed entries",
            "apply in order",  # the state machine is ahead of the log it forgot
            "but the durable log holds only",  # found at the restart instead
        )
    ), msg.splitlines()[0]


def test_a_driver_that_serves_reads_locally_while_it_thinks_it_leads_reads_stale_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lease-read shortcut design.md forbids: no ReadIndex round when 'leader'."""
    real_on_request = Simulation._on_request

    def on_request(self: Simulation, node: SimNode, req: Request) -> None:
        core = node.core
        if req.read_index and core is not None and not node.paused and core.role == Role.LEADER:
            value = node.kv.get(req.command.key)
            self._reply(node, req, Response(req.attempt, Status.OK, value))
            return
        real_on_request(self, node, req)

    monkeypatch.setattr(Simulation, "_on_request", on_request)

    def slow_isolated_leader(sim: Simulation) -> object:
        return sim.nemesis.isolate_slow_leader()

    def heal(sim: Simulation) -> object:
        sim.net.heal()
        return "heal"

    script = _repeat(1.0, 8, slow_isolated_leader) + tuple((1.7 + k, heal) for k in range(8))
    configs = (
        SimConfig(seed=s, nodes=3, seconds=10.0, faults=False, script=script) for s in _SEEDS
    )
    assert "linearizability" in _first_failure(configs)
