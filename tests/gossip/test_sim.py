"""Gossip membership stays correct under faults: the deterministic simulator, one run per seed.

Each seed builds a cluster of 4-24 members by joins through two seed hosts,
then for 30 simulated seconds crashes, restarts, adds and gracefully removes
members, partitions the network, raises loss to 10-40 %, pauses members and
slows their receive path, and changes metadata -- with loss 0, 1 or 5 % and
dcrond's, memberlist's or Lifeguard-less timings, all drawn from the seed.
Every membership event of every member is checked as it happens
(incarnations never go back; a member comes back from suspect, dead or left
only with a new incarnation, i.e. only by refuting; only members that left
are reported left). After the faults heal, every member must agree within
240 simulated seconds: every running member alive at its own incarnation and
metadata everywhere, every crashed or departed one dead, left or forgotten.
A failure prints the seed and the command that replays it.
"""

from __future__ import annotations

from dcrond.testing._gossipscenarios import property_run


def test_membership_converges_and_views_follow_the_rules_under_faults(gossip_seed: int) -> None:
    r = property_run(gossip_seed)
    assert r.checked > 0
    assert sum(r.faults.values()) >= 5, "the nemesis did almost nothing: the run proved little"
