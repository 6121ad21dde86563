"""Five real hosts with no peer list become one cluster (issue 4, item 8; needs root).

One ``dcrond`` per network namespace, each configured with its own addresses
only: ``[discovery] zeroconf = true``, no ``join``, mutual TLS from one CA.
The test then checks, through ``dcronctl`` run inside the namespaces:

1. the hosts find each other and form 3 voters and 2 learners, and every
   host reports the same leader and membership;
2. a job created on a learner (forwarded to the leader) is visible on every
   host, and each host's own copy (``--stale``) has it;
3. ``kill -9`` of a follower voter: a learner takes its place, with no one
   telling the cluster anything;
4. the leader cut off at the bridge: the others elect a new leader and take
   writes, the old leader steps down on its own (CheckQuorum), and after the
   cut heals every host's job table is the same;
5. the killed host, started again, gets the whole job table.

``test_running_hosts_keep_announcing_themselves`` checks that a host
starting later still finds the running ones through zeroconf.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dcrond.testing._netns import NetnsLab
from tests.cluster._harness import API, GOSSIP, DaemonLab, Probe, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

DEAD_GRACE_S = 4.0
SECRET = "five-hosts-test-secret"


class Cluster(DaemonLab):
    """The five daemons, their files, and dcronctl inside the namespaces."""

    def sections(self, name: str) -> str:
        host = self.hosts[name]
        return f"""
[cluster]
name = "five"
secret = "{SECRET}"
gossip_listen = "{host.address}:{GOSSIP}"
dead_grace_s = {DEAD_GRACE_S}

[discovery]
zeroconf = true
join = []
"""

    def ctl(self, name: str, *args: str, stale: bool = False) -> Any:
        """``dcronctl -o json ARGS`` against ``name``'s API, run in ``name``'s namespace;
        None if it failed (unreachable, no leader yet ...). ``stale`` reads ``name``'s
        own copy of the job table instead of a linearizable read through the leader."""
        host = self.hosts[name]
        argv = [sys.executable, "-m", "dcrond.ctl", "--endpoint", f"{host.address}:{API}"]
        if stale:
            argv.append("--stale")
        proc = self.lab.run(
            host,
            [*argv, *self.tls_args, "-o", "json", *args],
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout) if proc.stdout.strip() else {}

    def status(self, name: str) -> dict[str, Any] | None:
        st = self.ctl(name, "cluster", "status")
        return st if isinstance(st, dict) else None

    @contextlib.contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        """Add the tail of every daemon's log to an assertion that fails inside."""
        try:
            yield
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None


def until(what: str, seconds: float, check: Callable[[], Any]) -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError naming ``what``."""
    end = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"not true after {seconds} s: {what}")
        time.sleep(0.3)


@pytest.fixture
def cluster(make_lab: Callable[[int], NetnsLab], tmp_path: Path) -> Iterator[Cluster]:
    lab = make_lab(5)
    c = Cluster(lab, tmp_path)
    for name in c.hosts:
        c.start(name)
    yield c
    lab.close()  # stop the daemons before tmp_path goes


def test_running_hosts_keep_announcing_themselves(
    make_lab: Callable[[int], NetnsLab], tmp_path: Path
) -> None:
    lab = make_lab(3)
    c = Cluster(lab, tmp_path)
    with c.logs_on_failure():
        c.start("h1")
        c.start("h2")

        def two_hosts() -> bool:
            shape = _shape(c.status("h1"))
            return shape is not None and shape[1] | shape[2] == {"h1", "h2"}

        until("h1 and h2 in one cluster", 30, two_hosts)
        # a host that starts now, long after the others finished starting
        probe = Probe(lab, c.hosts["h3"], "h3", "--cluster", "five", "--secret", SECRET)
        wait_for([probe], lambda: probe.peer_names() == {"h1", "h2"}, timeout=10)


def _shape(st: dict[str, Any] | None) -> tuple[str, frozenset[str], frozenset[str]] | None:
    if st is None or not st.get("leader"):
        return None
    return st["leader"], frozenset(st["voters"]), frozenset(st["learners"])


def test_five_hosts_with_no_peer_list_become_one_cluster_and_survive_failures(
    cluster: Cluster,
) -> None:
    c = cluster
    with c.logs_on_failure():
        names = set(c.hosts)
        started = time.monotonic()

        # 1. three voters and two learners, found through zeroconf alone
        def formed() -> tuple[str, frozenset[str], frozenset[str]] | None:
            shape = _shape(c.status("h1"))
            if shape and len(shape[1]) == 3 and len(shape[2]) == 2 and shape[1] | shape[2] == names:
                return shape
            return None

        leader, voters, learners = until("3 voters + 2 learners", 60, formed)
        print(f"\nfive hosts formed 3 voters + 2 learners in {time.monotonic() - started:.1f} s")
        for name in sorted(names):  # any host answers, and they agree

            def agrees(name: str = name) -> bool:
                return _shape(c.status(name)) == (leader, voters, learners)

            until(f"{name} agrees on leader and membership", 15, agrees)

        # 2. a job written through a learner reaches every host
        learner = sorted(learners)[0]
        created = c.ctl(learner, "job", "create", "nightly", "--schedule", "0 3 * * *",
                        "--command", "true")  # fmt: skip
        assert created is not None and created["name"] == "nightly"
        for name in sorted(names):
            job = c.ctl(name, "job", "get", "nightly")
            assert job is not None and job["schedule"] == "0 3 * * *", name

            def local_copy(name: str = name) -> bool:
                return c.ctl(name, "job", "get", "nightly", stale=True) is not None

            until(f"{name} holds the job in its own table", 10, local_copy)

        # 3. kill -9 a follower voter: a learner replaces it
        victim = sorted(voters - {leader})[0]
        c.procs[victim].kill()
        c.procs[victim].wait(timeout=10)
        killed_at = time.monotonic()

        def replaced() -> tuple[str, frozenset[str], frozenset[str]] | None:
            shape = _shape(c.status(leader))
            if shape and len(shape[1]) == 3 and victim not in shape[1]:
                return shape
            return None

        leader, voters, learners = until(f"{victim} replaced as voter", DEAD_GRACE_S + 30, replaced)
        print(f"dead voter replaced {time.monotonic() - killed_at:.1f} s after kill -9")
        alive = names - {victim}

        # 4. cut the leader off: the rest elect a new one, the old one steps down
        old_leader = leader
        old_term = c.status(old_leader)["term"]  # type: ignore[index]
        c.lab.cut(c.hosts[old_leader])
        cut_at = time.monotonic()
        majority = sorted(alive - {old_leader})

        def new_leader() -> str | None:
            st = c.status(majority[0])
            if st and st.get("leader") and st["leader"] != old_leader and st["term"] > old_term:
                return str(st["leader"])
            return None

        leader = until("a new leader on the majority side", 30, new_leader)
        print(f"new leader {leader} {time.monotonic() - cut_at:.1f} s after the cut")

        def stepped_down() -> bool:
            st = c.status(old_leader)  # asked from inside its own namespace
            return st is not None and st["role"] != "leader"

        until(f"{old_leader} steps down", 30, stepped_down)
        assert c.ctl(majority[1], "job", "create", "during-cut", "--schedule", "@hourly",
                     "--command", "true") is not None  # fmt: skip

        c.lab.heal()

        def tables() -> dict[str, tuple[str, ...]] | None:
            seen = {}
            for name in sorted(alive):
                jobs = c.ctl(name, "job", "list", stale=True)
                if jobs is None:
                    return None
                seen[name] = tuple(sorted(j["name"] for j in jobs))
            return seen if len(set(seen.values())) == 1 else None

        equal = until("every job table equal after healing", 30, tables)
        assert set(equal.values()) == {("during-cut", "nightly")}

        # 5. the killed host, started again, catches up
        c.start(victim)

        def back() -> bool:
            jobs = c.ctl(victim, "job", "list", stale=True)
            return jobs is not None and {j["name"] for j in jobs} == {"during-cut", "nightly"}

        until(f"{victim} back with the whole job table", 45, back)
