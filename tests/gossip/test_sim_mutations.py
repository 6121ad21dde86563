"""Is the gossip simulator strong enough? Break the core on purpose; the property runs must fail.

Each test plants one bug that a plausible implementation could have and
runs the first seeds of tests/gossip/test_sim.py until one fails. A
mutation nobody catches would mean the checks prove less than they claim.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest

from dcrond.gossip import Alive, GossipConfig, GossipCore, MemberState, StateEntry
from dcrond.testing._gossipscenarios import property_run
from dcrond.testing._gossipsim import GossipSimFailure

SEEDS = range(20)


def _caught(config: GossipConfig | None = None) -> str:
    for seed in SEEDS:
        try:
            property_run(seed, config=config)
        except GossipSimFailure as exc:
            return str(exc).splitlines()[0]
    raise AssertionError(f"no seed in {SEEDS} caught the mutation")


def test_a_member_that_never_refutes_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GossipCore, "_refute", lambda self, incarnation: None)
    assert "no convergence" in _caught()


def test_reviving_a_member_without_a_new_incarnation_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = GossipCore._on_alive

    def accept_equal(self: GossipCore, now: float, a: Alive) -> None:
        m = self._members.get(a.name)
        if m is not None and m.state != MemberState.ALIVE and a.incarnation == m.incarnation:
            m.incarnation -= 1  # i.e. take "equal" for "newer"
        original(self, now, a)

    monkeypatch.setattr(GossipCore, "_on_alive", accept_equal)
    assert "without a new incarnation" in _caught()


def test_taking_a_remote_death_for_a_leave_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    original = GossipCore.merge_state

    def dead_means_left(
        self: GossipCore, now: float, entries: Iterable[StateEntry], *, join: bool = False
    ) -> None:
        fixed = [
            StateEntry(e.name, e.address, e.meta, e.incarnation, MemberState.LEFT)
            if e.state == MemberState.DEAD
            else e
            for e in entries
        ]
        original(self, now, fixed, join=join)

    monkeypatch.setattr(GossipCore, "merge_state", dead_means_left)
    assert "never left" in _caught()


def test_without_reconnects_a_healed_partition_stays_split() -> None:
    assert "no convergence" in _caught(GossipConfig(reconnect_interval=math.inf))
