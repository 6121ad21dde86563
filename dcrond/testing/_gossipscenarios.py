"""Scripted gossip simulations: the randomized property run and the measurements.

- :func:`property_run`: a cluster built by joins, then a random mix of
  crashes, restarts, graceful leaves, new members, partitions, loss bursts,
  degraded and paused members and metadata changes, all drawn from one seed;
  then every fault heals and the cluster must converge (``disagreement`` is
  None) within ``converge_seconds``. The checker watches every event
  throughout.
- :func:`measure_join` / :func:`measure_death`: in a running simulation,
  how long a join or a crash takes to reach every member.
- :func:`measure_false_positives`: a converged cluster with a few degraded
  members (slow receive path); how often healthy members get suspected or
  declared dead.

Every function takes its seed; the same seed gives the same figures.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Final

from dcrond.gossip._types import EventKind, GossipConfig, MemberEvent
from dcrond.testing._gossipsim import GossipSim

__all__ = [
    "DeathTimes",
    "FalsePositives",
    "PropertyResult",
    "converged_sim",
    "measure_death",
    "measure_false_positives",
    "measure_join",
    "names",
    "property_run",
]

PROPERTY_REPLAY: Final = "pytest tests/gossip/test_sim.py --gossip-seeds={seed}:1 -x"
_S: Final = 1_000_000


def names(n: int, start: int = 0) -> list[str]:
    """Member names ``m000``, ``m001``, ... (sortable)."""
    return [f"m{i:03d}" for i in range(start, start + n)]


def _us(seconds: float) -> int:
    return int(seconds * _S)


# --- the randomized property run ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class PropertyResult:
    """What one property run did."""

    seed: int
    members: int
    loss: float
    lifeguard: bool
    events: int
    checked: int  #: membership events the checker saw
    faults: dict[str, int] = field(default_factory=dict)
    converge_s: float = 0.0  #: from the last fault healing to full agreement
    trace_hash: str | None = None  #: with ``record_trace``: equal runs, equal hashes


def property_run(
    seed: int,
    *,
    seconds: float = 30.0,
    converge_seconds: float = 240.0,
    members: int | None = None,
    config: GossipConfig | None = None,
    replay: str = PROPERTY_REPLAY,
    record_trace: bool = False,
) -> PropertyResult:
    """One randomized run (see the module docstring); raises GossipSimFailure."""
    pick = random.Random(seed)
    n = members or pick.choice((4, 8, 16, 24))
    loss = pick.choice((0.0, 0.01, 0.05))
    cfg = config or pick.choice(
        (GossipConfig(), GossipConfig.memberlist(), GossipConfig(lifeguard=False))
    )
    sim = GossipSim(seed, cfg, loss=loss, replay=replay, record_trace=record_trace)
    nem = random.Random(sim.rng.getrandbits(64))
    faults: dict[str, int] = {}
    pool = names(n)
    # The join list names two stable hosts: they may be cut off, paused or slowed
    # down, but never crash or leave (with every seed gone for good, two groups
    # that never met could not find each other; discovery is another layer).
    seeds = pool[:2]
    sim.start(pool[0])
    starts = sorted(nem.randrange(0, _us(2.0)) for _ in pool[1:])
    for name, at in zip(pool[1:], starts, strict=True):
        sim.call_at(at, partial(sim.start, name, seeds=seeds))
    next_name = n

    def running() -> list[str]:
        return [m.name for m in sim.running() if not m.core or not m.core.leaving]

    def fault() -> None:
        nonlocal next_name
        up = running()
        mortal = [x for x in up if x not in seeds]
        down = [m.name for m in sim.members.values() if m.core is None]
        kinds = ["partition", "loss", "degrade", "pause", "meta", "join"]
        if len(up) > max(3, n // 2) and mortal:
            kinds += ["crash", "leave"]
        if down:
            kinds.append("restart")
        kind = nem.choice(kinds)
        if kind != "restart" and not up:
            return
        faults[kind] = faults.get(kind, 0) + 1
        if kind == "crash":
            sim.crash(nem.choice(mortal))
        elif kind == "leave":
            sim.leave(nem.choice(mortal))
        elif kind == "restart":
            sim.start(nem.choice(down), seeds=seeds)
        elif kind == "join":
            name = names(1, next_name)[0]
            next_name += 1
            sim.start(name, seeds=seeds)
        elif kind == "partition" and not sim.net.partitioned():
            side = [x for x in sorted(sim.members) if nem.random() < 0.5]
            sim.partition([side])
            sim.call_at(sim.now + nem.randrange(_us(1), _us(20)), sim.heal)
        elif kind == "loss":
            sim.net.loss = 0.1 + 0.3 * nem.random()
            sim.call_at(sim.now + nem.randrange(_us(0.5), _us(5)), lambda: _set_loss(sim, loss))
        elif kind == "degrade":
            victim = nem.choice(up)
            sim.degrade(victim, 0.2 + 2.8 * nem.random())
            sim.call_at(sim.now + nem.randrange(_us(2), _us(20)), lambda: sim.degrade(victim, 0))
        elif kind == "pause":
            sim.pause(nem.choice(up), 0.1 + 6 * nem.random())
        elif kind == "meta":
            sim.update_meta(nem.choice(up))

    t = _us(3.0)
    while t < _us(3.0 + seconds):
        sim.call_at(t, fault)
        t += nem.randrange(_us(0.5), _us(3.0))
    sim.run_until(_us(3.0 + seconds))
    # Heal everything; scheduled heals still fire but change nothing now.
    sim.heal()
    _set_loss(sim, loss)
    for m in sim.members.values():
        m.lag_us = 0
    healed = sim.now
    deadline = healed + _us(converge_seconds)
    while True:
        sim.run_until(sim.now + _S)
        why = sim.disagreement()
        if why is None:
            break
        if sim.now >= deadline:
            raise sim.fail(f"no convergence {converge_seconds:g}s after healing: {why}")
    return PropertyResult(
        seed=seed,
        members=len(sim.members),
        loss=loss,
        lifeguard=cfg.lifeguard,
        events=sim.events,
        checked=sim.checker.events,
        faults=faults,
        converge_s=(sim.now - healed) / _S,
        trace_hash=sim.trace_hash(),
    )


def _set_loss(sim: GossipSim, loss: float) -> None:
    sim.net.loss = loss


# --- measurements ---------------------------------------------------------------------


def converged_sim(
    seed: int, n: int, config: GossipConfig, *, loss: float = 0.0, settle_s: float = 5.0
) -> GossipSim:
    """A simulation of ``n`` members that already know each other, run for ``settle_s``."""
    sim = GossipSim(seed, config, loss=loss)
    sim.start_converged(names(n))
    sim.run_until(_us(settle_s))
    return sim


def _watch(sim: GossipSim, fn: Callable[[str, MemberEvent, int], None]) -> Callable[[], None]:
    sim.watchers.append(fn)
    return lambda: sim.watchers.remove(fn)


def measure_join(
    sim: GossipSim, name: str, seed_name: str, timeout_s: float = 60.0
) -> float | None:
    """Start ``name`` joining through ``seed_name``; seconds until every running member
    sees it alive (None if not within ``timeout_s``)."""
    remaining = {m.name for m in sim.running()}
    t0 = sim.now

    def watch(observer: str, ev: MemberEvent, t: int) -> None:
        if ev.member.name == name and ev.kind == EventKind.JOIN:
            remaining.discard(observer)

    unwatch = _watch(sim, watch)
    sim.start(name, seeds=[seed_name])
    done = sim.run_until(t0 + _us(timeout_s), stop=lambda: not remaining)
    unwatch()
    return (sim.now - t0) / _S if done else None


@dataclass(frozen=True, slots=True)
class DeathTimes:
    """Seconds from a crash to the first suspicion, first and last dead verdict."""

    first_suspect_s: float | None
    first_dead_s: float | None
    all_dead_s: float | None  #: None: some member did not notice within the timeout


def measure_death(sim: GossipSim, victim: str, timeout_s: float = 120.0) -> DeathTimes:
    """Crash ``victim``; how long until every running member declares it dead."""
    remaining = {m.name for m in sim.running() if m.name != victim}
    t0 = sim.now
    first: dict[EventKind, int] = {}

    def watch(observer: str, ev: MemberEvent, t: int) -> None:
        if ev.member.name != victim:
            return
        first.setdefault(ev.kind, t)
        if ev.kind in (EventKind.DEAD, EventKind.LEFT):
            remaining.discard(observer)

    unwatch = _watch(sim, watch)
    sim.crash(victim)
    done = sim.run_until(t0 + _us(timeout_s), stop=lambda: not remaining)
    unwatch()

    def since(kind: EventKind) -> float | None:
        return (first[kind] - t0) / _S if kind in first else None

    return DeathTimes(
        since(EventKind.SUSPECT), since(EventKind.DEAD), (sim.now - t0) / _S if done else None
    )


@dataclass(frozen=True, slots=True)
class FalsePositives:
    """Suspicions and death verdicts about healthy members during one run.

    An *episode* is one (member, incarnation) suspected or declared dead,
    however many members reported it; *events* count every member's report.
    """

    members: int
    degraded: int
    seconds: float
    suspicions: int  #: suspicion episodes about healthy members
    deaths: int  #: death episodes about healthy members
    suspect_events: int
    dead_events: int
    accused: int  #: distinct healthy members suspected at least once

    def per_member_hour(self, count: int) -> float:
        """``count`` normalized to events per healthy member per hour."""
        healthy = self.members - self.degraded
        return count * 3600.0 / (healthy * self.seconds) if healthy and self.seconds else 0.0


def measure_false_positives(
    seed: int,
    n: int,
    config: GossipConfig,
    *,
    loss: float = 0.0,
    seconds: float = 120.0,
    degraded: int = 0,
    lag_s: float = 2.0,
) -> FalsePositives:
    """Run a converged cluster with ``degraded`` slow members; count false accusations."""
    sim = converged_sim(seed, n, config, loss=loss)
    pool = sorted(sim.members)
    slow = set(random.Random(seed).sample(pool, degraded))
    for name in pool:
        if name in slow:
            sim.degrade(name, lag_s)
    events = {EventKind.SUSPECT: 0, EventKind.DEAD: 0}
    episodes: dict[EventKind, set[tuple[str, int]]] = {
        EventKind.SUSPECT: set(),
        EventKind.DEAD: set(),
    }

    def watch(observer: str, ev: MemberEvent, t: int) -> None:
        if ev.member.name in slow or ev.kind not in events:
            return
        events[ev.kind] += 1
        episodes[ev.kind].add((ev.member.name, ev.member.incarnation))

    t0 = sim.now
    unwatch = _watch(sim, watch)
    sim.run_until(t0 + _us(seconds))
    unwatch()
    return FalsePositives(
        members=n,
        degraded=degraded,
        seconds=seconds,
        suspicions=len(episodes[EventKind.SUSPECT]),
        deaths=len(episodes[EventKind.DEAD]),
        suspect_events=events[EventKind.SUSPECT],
        dead_events=events[EventKind.DEAD],
        accused=len({name for name, _ in episodes[EventKind.SUSPECT]}),
    )


def median(values: list[float | None]) -> float | None:
    """Median of the values that are not None (None if there are none)."""
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None
