"""Which hosts vote: the leader turns gossip's view of the hosts into Raft membership changes.

Theory of operation
-------------------
Gossip only *proposes*; the log decides. The leader looks at the membership
it has applied (``ConfState``), what gossip says about every host (alive,
suspect, dead, left) and how far each follower's log has come (its
``match`` index), and ``plan`` returns **at most one** single-server change
at a time; the driver proposes it, waits until it is applied, and asks again.
The rules, in order:

1. **Add** every alive host of this cluster that is not a member yet, as a
   *learner*: it gets a full copy of the job table without affecting quorum.
2. **Remove** a host that *left* (it said goodbye through gossip), voter or
   learner — a voter only when it is not this leader (a leaving leader hands
   over leadership first) and the remaining voters keep a quorum of alive
   hosts.
3. **Grow** to the target number of voters — 3, or 5 once at least 7 hosts
   are members and not *gone* (left, or dead for longer than ``dead_grace``)
   (5 voters and still 2 spare learners to replace one that dies: with
   exactly 5 hosts, 3 voters and 2 learners survive more) — by promoting the
   healthiest caught-up learner (alive, and at most ``max_lag`` entries
   behind the leader's last index) while fewer voters than that answer
   (alive or suspect: a suspect host is slow, not gone).
4. **Replace** a voter that is dead (gossip's DEAD, or gone from the member
   list): first a caught-up learner is promoted (rule 3 does not count it),
   then the dead voter is removed once it has been dead for longer than
   ``dead_grace`` and the voter set is above target. A voter that is only
   suspect, or dead for less than the grace, keeps the target where it was:
   under load a daemon's event loop can be held up for seconds, and a
   3-host cluster removed and re-added a voter every few seconds when a
   suspect host lowered the target to 2.
5. **Shrink** back to the target when there are more voters than it (after a
   replacement, or when the cluster got smaller): remove a dead voter first,
   else a suspect one, else none — a healthy voter is never removed just to
   shrink.
6. Remove a *learner* that has been dead beyond ``dead_grace`` (it is
   re-added as a fresh learner when it comes back alive).

**Never a change that could lose quorum**: before any removal, the alive
voters of the new set must still be a majority of it; a promotion only adds a
caught-up, alive voter (quorum size can grow by one, and the new voter can
already acknowledge). A one-voter cluster grows 1 → 2 → 3 voters this way;
the two-voter moment is the usual single-server-change risk, taken only with
a caught-up, alive second voter.

``plan`` is pure (no clock, no I/O): ``now`` and the dead-since times come
from the caller, so tests drive it with hypothesis.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import final

from dcrond.raft import ConfChange, ConfChangeType, ConfState


class Health(enum.IntEnum):
    """What gossip says of a host (``LEFT``: it announced a graceful leave)."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@final
@dataclass(frozen=True, slots=True)
class HostView:
    """One host as the leader sees it when planning."""

    health: Health
    since: float  #: when it entered that health (the caller's clock)
    match: int = 0  #: highest log index known to be on it (the leader's progress)


@final
@dataclass(frozen=True, slots=True)
class Policy:
    """The knobs of ``plan``."""

    small: int = 3  #: voters to keep
    large: int = 5  #: voters to keep once ``large_at`` healthy hosts are members
    large_at: int = 7  #: 5 voters plus 2 spare learners
    dead_grace: float = 30.0  #: seconds a voter may be dead before it is replaced
    max_lag: int = 100  #: entries behind the leader a learner may be and still be promoted


def target_voters(healthy_members: int, policy: Policy) -> int:
    """How many voters to keep with this many healthy member hosts."""
    if healthy_members >= policy.large_at:
        return policy.large
    return min(policy.small, max(1, healthy_members))


def quorum_kept(voters: frozenset[str], alive: frozenset[str]) -> bool:
    """True when the alive hosts among ``voters`` are a strict majority of them."""
    return len(voters & alive) * 2 > len(voters)


def plan(
    me: str,
    conf: ConfState,
    hosts: Mapping[str, HostView],
    last_index: int,
    now: float,
    *,
    policy: Policy = Policy(),
) -> ConfChange | None:
    """The one membership change to make now, or None (see the module doc)."""
    members = conf.voters | conf.learners
    view = dict(hosts)
    view[me] = HostView(Health.ALIVE, now, last_index)  # the leader is alive and up to date

    def health(node: str) -> Health:
        h = view.get(node)
        return h.health if h is not None else Health.DEAD

    def dead_for(node: str) -> float:
        h = view.get(node)
        if h is None:
            return float("inf")  # not even known to gossip any more
        return now - h.since if h.health in (Health.DEAD, Health.LEFT) else 0.0

    alive = frozenset(n for n in view if view[n].health is Health.ALIVE)

    def caught_up(node: str) -> bool:
        h = view.get(node)
        return h is not None and h.health is Health.ALIVE and last_index - h.match <= policy.max_lag

    # 1. add alive newcomers as learners
    for node in sorted(view):
        if node not in members and view[node].health is Health.ALIVE:
            return ConfChange(ConfChangeType.ADD_LEARNER, node)

    # 2. remove hosts that left
    for node in sorted(members):
        if health(node) is not Health.LEFT or node == me:
            continue
        if node in conf.learners:
            return ConfChange(ConfChangeType.REMOVE_NODE, node)
        if quorum_kept(conf.voters - {node}, alive):
            return ConfChange(ConfChangeType.REMOVE_NODE, node)

    # (rules 3-5) the target counts every member not gone: see rule 4 in the module doc
    present = [
        n for n in members if health(n) is not Health.LEFT and dead_for(n) <= policy.dead_grace
    ]
    target = target_voters(len(present), policy)
    healthy_voters = [v for v in conf.voters if health(v) is Health.ALIVE]
    steady_voters = [v for v in conf.voters if health(v) in (Health.ALIVE, Health.SUSPECT)]

    # 3./4. promote a caught-up learner while the voters that answer are below target
    if len(steady_voters) < target:
        candidates = sorted((last_index - view[n].match, n) for n in conf.learners if caught_up(n))
        if candidates:
            return ConfChange(ConfChangeType.PROMOTE_LEARNER, candidates[0][1])

    # 5. shrink: remove a voter dead beyond the grace (or, over target, a suspect one)
    replaceable = sorted(
        (v for v in conf.voters if v != me and dead_for(v) > policy.dead_grace),
        key=lambda v: (-dead_for(v), v),
    )
    for node in replaceable:
        smaller = conf.voters - {node}
        if len(conf.voters) > target and quorum_kept(smaller, alive):
            return ConfChange(ConfChangeType.REMOVE_NODE, node)
    if len(conf.voters) > target:
        for node in sorted(conf.voters):
            if node != me and health(node) is Health.SUSPECT:
                smaller = conf.voters - {node}
                if len(healthy_voters) >= target and quorum_kept(smaller, alive):
                    return ConfChange(ConfChangeType.REMOVE_NODE, node)

    # 6. forget learners dead beyond the grace
    for node in sorted(conf.learners):
        if dead_for(node) > policy.dead_grace:
            return ConfChange(ConfChangeType.REMOVE_NODE, node)
    return None


def apply_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The membership after ``cc`` (for tests and for planning ahead)."""
    voters, learners = set(conf.voters), set(conf.learners)
    if cc.type is ConfChangeType.ADD_LEARNER:
        learners.add(cc.node)
    elif cc.type is ConfChangeType.PROMOTE_LEARNER:
        learners.discard(cc.node)
        voters.add(cc.node)
    elif cc.type is ConfChangeType.ADD_VOTER:
        voters.add(cc.node)
    else:
        voters.discard(cc.node)
        learners.discard(cc.node)
    return ConfState(frozenset(voters), frozenset(learners))
