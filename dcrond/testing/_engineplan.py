"""What the engine simulator does to the cluster: the job mix and the faults, drawn from a seed.

Both plans are pure data made before the run starts, so a report can print
them and a replay makes the same ones.

**Jobs** (created through a replica as users do; names say their kind):

* ``tick`` -- every second, short runs: there is always a claim to commit, so
  a second without a commit means no working leader (the catch-up checker
  relies on it);
* ``bN`` -- every 2-5 s, runs of 0.1-1 s, catch-up ``none``, ``latest`` or
  ``all``;
* ``forbidN`` -- ``concurrency=forbid``, every 2 s, runs of 2.5-4.5 s: most
  instants find the previous run still running;
* ``retryN`` -- ``retries=2`` with a 1 s backoff; attempts fail (exit 1)
  at random;
* ``slowN`` -- ``timeout=1``; runs last 0.5 or 2 s, so some time out; one retry;
* ``dbN`` -- tagged ``role=db``: only the hosts carrying that tag may run them;
* ``afterN`` -- ``after=[bN]`` with the same schedule as its upstream.

Some jobs are created in the middle of the window, two are edited (their
description), one is paused and resumed. **Faults** (from 3 s until 3 s
before the window ends, one every 2-6 s): crash a host or the leader for 1-10
s, partition (a minority from the majority, or isolate the leader), one-way
cuts, lossy/slow/duplicating links, and stalls (a host's traffic held, then
delivered in a burst).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Final, final

#: process behaviour of a job kind: (min, max) run seconds, chance of exit 1 per attempt
DURATIONS: Final = {
    "tick": (0.05, 0.3),
    "b": (0.1, 1.0),
    "forbid": (2.5, 4.5),
    "retry": (0.1, 0.5),
    "slow": (0.5, 2.0),
    "db": (0.1, 1.5),
    "after": (0.1, 0.8),
}
FAIL_CHANCE: Final = {"retry": 0.5, "b": 0.05, "db": 0.05}


@final
@dataclass(frozen=True, slots=True)
class JobPlan:
    """One job the workload creates at ``at`` (true seconds)."""

    at: float
    name: str
    kind: str
    fields: dict[str, Any] = field(hash=False)


@final
@dataclass(frozen=True, slots=True)
class Op:
    """A later write to a job: ``update`` (description), ``pause`` or ``resume``."""

    at: float
    kind: str
    job: str


@final
@dataclass(frozen=True, slots=True)
class Fault:
    """One nemesis action at ``at`` lasting ``length`` seconds."""

    at: float
    kind: str  #: crash, crash_leader, partition, isolate_leader, one_way, stall, degrade
    length: float
    hosts: tuple[str, ...] = ()  #: the hosts it picks (crash, stall, minority, one-way pair)
    quality: tuple[float, ...] = ()  #: degrade: drop, max delay, spike, duplicate

    def describe(self) -> str:
        """One line for reports."""
        who = ",".join(self.hosts)
        extra = f" quality={self.quality}" if self.quality else ""
        return f"{self.at:7.2f}s {self.kind}({who}) for {self.length:.2f}s{extra}"


def job_kind(name: str) -> str:
    """The kind of a job from its name (``forbid2`` -> ``forbid``)."""
    return name.rstrip("0123456789")


def plan_jobs(rng: random.Random, window: float) -> tuple[list[JobPlan], list[Op]]:
    """The jobs to create and the edits, pauses and resumes to make."""
    jobs: list[JobPlan] = [JobPlan(0.5, "tick", "tick", {"schedule": "* * * * * *"})]
    t = 0.6
    for i in range(rng.randint(2, 3)):
        period = rng.choice((2, 3, 4, 5))
        catch_up = rng.choice(("none", "latest", "all"))
        jobs.append(
            JobPlan(t, f"b{i}", "b", {"schedule": f"*/{period} * * * * *", "catch_up": catch_up})
        )
        t += 0.1
    for i in range(rng.randint(1, 2)):
        fields = {"schedule": "*/2 * * * * *", "concurrency": "forbid"}
        jobs.append(JobPlan(t, f"forbid{i}", "forbid", fields))
        t += 0.1
    jobs.append(
        JobPlan(
            t,
            "retry0",
            "retry",
            {"schedule": "*/3 * * * * *", "retries": 2, "backoff": 1, "backoff_multiplier": 1},
        )
    )
    t += 0.1
    jobs.append(
        JobPlan(
            t,
            "slow0",
            "slow",
            {"schedule": "*/4 * * * * *", "timeout": 1, "retries": 1, "backoff": 1},
        )
    )
    t += 0.1
    for i in range(rng.randint(1, 2)):
        jobs.append(
            JobPlan(
                t,
                f"db{i}",
                "db",
                {"schedule": f"*/{rng.choice((2, 3))} * * * * *", "tags": {"role": "db"}},
            )
        )
        t += 0.1
    upstream = jobs[1]  # b0
    jobs.append(
        JobPlan(t, "after0", "after", {"schedule": upstream.fields["schedule"], "after": ["b0"]})
    )
    # created while faults go on
    late = rng.uniform(window * 0.3, window * 0.6)
    jobs.append(JobPlan(late, "b9", "b", {"schedule": "*/2 * * * * *"}))
    jobs.append(
        JobPlan(
            late + 0.3,
            "forbid9",
            "forbid",
            {"schedule": "*/3 * * * * *", "concurrency": "forbid", "catch_up": "none"},
        )
    )
    ops: list[Op] = []
    for name in rng.sample(["tick", "b1", "retry0", "db0"], 2):
        ops.append(Op(rng.uniform(5, window - 10), "update", name))
    paused = "b1"
    p = rng.uniform(10, window - 20)
    ops.append(Op(p, "pause", paused))
    ops.append(Op(p + rng.uniform(3, 10), "resume", paused))
    ops.sort(key=lambda o: (o.at, o.kind, o.job))
    return jobs, ops


def plan_faults(rng: random.Random, hosts: list[str], window: float) -> list[Fault]:
    """The nemesis's actions during the window."""
    faults: list[Fault] = []
    t = 3.0 + rng.uniform(0, 2)
    minority = (len(hosts) - 1) // 2
    while t < window - 3.0:
        kind = rng.choices(
            ("crash", "crash_leader", "partition", "isolate_leader", "one_way", "stall", "degrade"),
            weights=(3, 3, 2, 2, 1, 1, 2),
        )[0]
        length = rng.uniform(1.0, 10.0) if kind.startswith("crash") else rng.uniform(1.0, 8.0)
        picked: tuple[str, ...] = ()
        quality: tuple[float, ...] = ()
        if kind in {"crash", "stall"}:
            picked = (rng.choice(hosts),)
            if kind == "stall":
                length = rng.uniform(0.3, 3.0)
        elif kind == "partition":
            picked = tuple(sorted(rng.sample(hosts, rng.randint(1, minority))))
        elif kind == "one_way":
            picked = tuple(rng.sample(hosts, 2))
        elif kind == "degrade":
            quality = (
                round(rng.uniform(0.02, 0.2), 3),
                round(rng.uniform(0.005, 0.05), 4),
                round(rng.uniform(0.0, 0.05), 3),
                round(rng.uniform(0.0, 0.05), 3),
            )
        faults.append(Fault(round(t, 3), kind, round(min(length, window - t), 3), picked, quality))
        t += rng.uniform(2.0, 6.0)
    return faults
