"""The nemesis: the faults the simulator injects while clients run.

Every few hundred simulated milliseconds the simulator asks the nemesis to
act once. It picks, with fixed weights, one of:

- crash a node now, or arm a crash that lands inside the node's next Ready
  (between write and sync, after sending, in the middle of applying, or just
  before ``advance``); the node restarts from its disk later;
- pause a node (a long GC pause or a frozen VM: it wakes up believing what it
  believed before, e.g. that it still leads);
- cut the network: a random symmetric split, the leader alone, one direction
  of some links, or the 2020 Cloudflare shape (A-B and B-C up, A-C down,
  with A the leader); or heal everything;
- change how the network behaves (loss, duplication, latency, spikes);
- change membership: add a fresh node as a learner (or straight as a voter),
  promote a learner, remove a voter or a learner — keeping at least as many
  voters as the cluster started with, so it can always make progress once
  everyone is back;
- transfer leadership, or make a follower campaign.

Nodes whose removal was applied are shut down for good a little later (as an
operator would); node ids are never reused.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, final

from dcrond.errors import DcronError
from dcrond.raft._types import ConfChange, ConfChangeType, ConfState, NodeId
from dcrond.testing._simnet import NetworkQuality
from dcrond.testing._simnode import (
    CRASH_AFTER_SEND,
    CRASH_AFTER_VOTE,
    CRASH_AFTER_WRITE,
    CRASH_BEFORE_ADVANCE,
    CRASH_MID_APPLY,
    SimNode,
)

if TYPE_CHECKING:
    from dcrond.testing._sim import Simulation

_QUALITIES = (
    NetworkQuality(),
    NetworkQuality(drop=0.01, duplicate=0.01, min_delay_us=100, max_delay_us=2_000),
    NetworkQuality(drop=0.05, duplicate=0.05, max_delay_us=10_000, spike=0.02),
    NetworkQuality(drop=0.2, duplicate=0.1, min_delay_us=1_000, max_delay_us=30_000, spike=0.05),
    NetworkQuality(drop=0.02, duplicate=0.02, max_delay_us=80_000, spike=0.1),
)

#: how many fresh nodes one run may add (each addition creates a new node id)
_MAX_ADDITIONS = 4


@final
class Nemesis:
    """Chooses and applies faults for one simulation."""

    def __init__(self, sim: Simulation, rng: random.Random) -> None:
        self.sim = sim
        self.rng = rng
        self.counts: Counter[str] = Counter()
        self._additions = 0
        self._actions = [
            (self.crash, 12),
            (self.crash_inside_ready, 8),
            (self.pause, 4),
            (self.skew_clock, 4),
            (self.split, 6),
            (self.isolate_leader, 5),
            (self.isolate_slow_leader, 3),
            (self.one_way, 4),
            (self.bridge, 4),
            (self.heal, 10),
            (self.weather, 6),
            (self.membership, 9),
            (self.transfer, 5),
            (self.campaign, 2),
            (self.rival_campaigns, 3),
        ]
        self._weights = [w for _, w in self._actions]

    def act(self) -> None:
        """Inject one fault."""
        ((action, _),) = self.rng.choices(self._actions, self._weights)
        what = action()
        if what:
            self.counts[action.__name__] += 1
            self.sim.trace.add(self.sim.now, "nem", what)

    # --- helpers --------------------------------------------------------------

    def _live(self) -> list[SimNode]:
        sim = self.sim
        return [sim.nodes[n] for n in sim.node_ids if sim.nodes[n].up]

    def _members(self) -> list[NodeId]:
        sim = self.sim
        return [n for n in sim.node_ids if not sim.nodes[n].decommissioned]

    def removed(self, node: NodeId) -> None:
        """A node's removal was applied somewhere: shut it down a little later."""
        sim = self.sim
        target = sim.nodes.get(node)
        if target is not None and not target.decommissioned and not sim.faults_over:
            sim.decommission_later(target, self.rng.randrange(500_000, 3_000_000))

    # --- faults ---------------------------------------------------------------

    def crash(self) -> str | None:
        live = self._live()
        if not live:
            return None
        node = self.rng.choice(live)
        # from a supervisor restarting it at once to an operator arriving later
        delay = self.rng.choice((10_000, 50_000, 300_000, 1_000_000, 3_000_000))
        self.sim.crash(node, "by nemesis", self.rng.randrange(delay // 2, delay))
        return f"crash {node.id}"

    def crash_inside_ready(self) -> str | None:
        live = [n for n in self._live() if not n.crash_at]
        if not live:
            return None
        node = self.rng.choice(live)
        node.crash_at = self.rng.choice(
            (
                CRASH_AFTER_WRITE,
                CRASH_AFTER_SEND,
                CRASH_MID_APPLY,
                CRASH_BEFORE_ADVANCE,
                CRASH_AFTER_VOTE,
            )
        )
        return f"arm crash {node.crash_at} in {node.id}'s next Ready"

    def pause(self) -> str | None:
        live = [n for n in self._live() if not n.paused]
        if not live:
            return None
        node = self.rng.choice(live)
        longest = self.rng.choice((200_000, 2_000_000))
        self.sim.pause(node, self.rng.randrange(longest // 10, longest))
        return f"pause {node.id}"

    def skew_clock(self) -> str | None:
        live = self._live()
        if not live:
            return None
        node = self.rng.choice(live)
        factor = self.rng.choice((0.3, 0.6, 2.0, 4.0))
        node.tick_us = int(node.base_tick_us * factor)

        def restore(sim: Simulation) -> str:
            node.tick_us = node.base_tick_us
            return f"{node.id}'s clock back to normal"

        self.sim.at(self.rng.randrange(200_000, 3_000_000), restore)
        return f"{node.id}'s clock runs x{1 / factor:.2g} fast"

    def split(self) -> str | None:
        members = self._members()
        self.rng.shuffle(members)
        cut = self.rng.randrange(1, max(2, len(members)))
        self.sim.net.partition([members[:cut], members[cut:]])
        return f"partition {sorted(members[:cut])} | {sorted(members[cut:])}"

    def isolate_leader(self) -> str | None:
        lead = self.sim.leader()
        if lead is None:
            return None
        others = [n for n in self._members() if n != lead.id]
        self.sim.net.partition([[lead.id], others])
        return f"isolate leader {lead.id}"

    def isolate_slow_leader(self) -> str | None:
        """Cut the leader off *and* slow its clock: it notices last, after a new leader
        already serves (the window in which lease-style shortcuts return stale reads)."""
        lead = self.sim.leader()
        if lead is None:
            return None
        lead.tick_us = lead.base_tick_us * 4
        others = [n for n in self._members() if n != lead.id]
        self.sim.net.partition([[lead.id], others])

        def restore(sim: Simulation) -> str:
            lead.tick_us = lead.base_tick_us
            return f"{lead.id}'s clock back to normal"

        self.sim.at(self.rng.randrange(300_000, 1_500_000), restore)
        return f"isolate leader {lead.id} and slow its clock x4"

    def rival_campaigns(self) -> str | None:
        """A split vote in one term: restart the leader at once (no one leads, leases run
        out), then start two campaigns at the same instant with every other voter armed
        to crash right after it votes and come back before the rival's request arrives:
        a vote that was not durable would be given twice."""
        sim = self.sim
        lead = sim.leader()
        if lead is None or lead.core is None:
            return None
        voters = sorted(lead.core.conf.voters)
        sim.crash(lead, "by nemesis (rival campaigns)", self.rng.randrange(2_000, 10_000))
        candidates = [v for v in voters if v != lead.id]
        if len(candidates) < 2:
            return f"crash leader {lead.id}"
        rivals = self.rng.sample(candidates, 2)

        def campaign_both(sim: Simulation) -> str:
            for v in voters:
                node = sim.nodes[v]
                if v not in rivals and node.up:
                    node.crash_at = CRASH_AFTER_VOTE
            started = []
            for v in rivals:
                node = sim.nodes[v]
                if node.core is not None and not node.paused:
                    node.core.campaign()
                    sim.drain(node)
                    started.append(v)
            return f"rivals {started} campaign at once"

        # once the followers' leader lease has run out, so that pre-votes pass
        slowest = max(sim.nodes[v].tick_us for v in voters)
        sim.at(2 * sim.raft_config.election_ticks * slowest, campaign_both)
        return f"restart leader {lead.id}; rivals {rivals} will campaign"

    def one_way(self) -> str | None:
        members = self._members()
        lead = self.sim.leader()
        cuts = []
        for _ in range(self.rng.randrange(1, 3)):
            a, b = self.rng.sample(members, 2)
            if lead is not None and self.rng.random() < 0.5:
                a = lead.id
                b = self.rng.choice([m for m in members if m != a])
            self.sim.net.cut(a, b)
            cuts.append(f"{a}->{b}")
        return "one-way cut " + " ".join(cuts)

    def bridge(self) -> str | None:
        members = self._members()
        if len(members) < 3:
            return None
        lead = self.sim.leader()
        a = lead.id if lead is not None else self.rng.choice(members)
        b, c = self.rng.sample([m for m in members if m != a], 2)
        self.sim.net.bridge(a, b, c)
        return f"bridge: {a}-{b} and {b}-{c} up, {a}-{c} down"

    def heal(self) -> str | None:
        self.sim.net.heal()
        return "heal network"

    def weather(self) -> str | None:
        q = self.rng.choice(_QUALITIES)
        self.sim.net.quality = q
        return f"network now {q}"

    def transfer(self) -> str | None:
        lead = self.sim.leader()
        if lead is None or lead.core is None:
            return None
        voters = sorted(v for v in lead.core.conf.voters if v != lead.id)
        if not voters:
            return None
        to = self.rng.choice(voters)
        try:
            lead.core.transfer_leadership(to)
        except DcronError as exc:
            return f"transfer {lead.id}->{to} refused: {exc}"
        self.sim.drain(lead)
        return f"transfer leadership {lead.id}->{to}"

    def campaign(self) -> str | None:
        live = [n for n in self._live() if not n.paused and n.core is not None]
        if not live:
            return None
        node = self.rng.choice(live)
        assert node.core is not None
        node.core.campaign()
        self.sim.drain(node)
        return f"{node.id} campaigns"

    def membership(self) -> str | None:
        sim = self.sim
        lead = sim.leader()
        if lead is None or lead.core is None:
            return None
        conf: ConfState = lead.core.conf
        voters, learners = sorted(conf.voters), sorted(conf.learners)
        options: list[ConfChange] = []
        fresh = f"n{len(sim.node_ids) + 1}"
        if self._additions < _MAX_ADDITIONS and not learners:
            options.append(ConfChange(ConfChangeType.ADD_LEARNER, fresh))
            if len(voters) <= sim.cfg.nodes and self.rng.random() < 0.3:
                options.append(ConfChange(ConfChangeType.ADD_VOTER, fresh))
        if learners and len(voters) <= sim.cfg.nodes:
            options.append(ConfChange(ConfChangeType.PROMOTE_LEARNER, self.rng.choice(learners)))
        if len(voters) > sim.cfg.nodes:
            options.append(ConfChange(ConfChangeType.REMOVE_NODE, self.rng.choice(voters)))
        if learners:
            options.append(ConfChange(ConfChangeType.REMOVE_NODE, self.rng.choice(learners)))
        if not options:
            return None
        cc = self.rng.choice(options)
        try:
            lead.core.propose_conf_change(cc)
        except DcronError as exc:
            return f"{cc.type.name} {cc.node} refused: {type(exc).__name__}: {exc}"
        if cc.node == fresh:
            self._additions += 1
            sim.add_node(fresh, joining=True)
        sim.drain(lead)
        return f"propose {cc.type.name} {cc.node} at {lead.id}"
