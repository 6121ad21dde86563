"""Several real hosts in one process on 127.0.0.1: real gossip (UDP/TCP), real Raft, real SQLite.

They find each other from one seed, found one cluster, grow it to three
voters with the rest as learners, take writes on any host, and replace a
voter that died. The namespace tests (tests/cluster/) repeat this with one
dcrond process per network namespace and zeroconf.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import trio

from dcrond.config import ApiConfig, ClusterConfig, Config, NodeConfig, RaftConfig
from dcrond.host import Host
from dcrond.store import CreateJob, JobSpec, unwrap
from dcrond.testing._cluster import free_ports


def _config(tmp: Path, name: str) -> Config:
    api, raft, gossip = free_ports(3)
    return dataclasses.replace(
        Config(),
        node=NodeConfig(name=name, data_dir=str(tmp / name)),
        api=ApiConfig(listen=f"127.0.0.1:{api}"),
        raft=RaftConfig(listen=f"127.0.0.1:{raft}", tick_ms=50, fsync=False),
        cluster=ClusterConfig(
            gossip_listen=f"127.0.0.1:{gossip}",
            bootstrap_wait_s=1.0,
            dead_grace_s=2.0,
            secret="a-lab-secret-of-32-characters-ok",
        ),
    )


async def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = trio.current_time() + seconds
    while not check():  # polling state that many tasks change; no single event to wait on
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await trio.sleep(0.05)


def _conf(host: Host) -> tuple[set[str], set[str]]:
    assert host.node is not None
    st = host.node.statistics()
    return set(st.voters), set(st.learners)


async def test_four_hosts_form_one_cluster_take_writes_anywhere_and_replace_a_dead_voter(
    tmp_path: Path,
) -> None:
    names = ["h1", "h2", "h3", "h4"]
    configs = {n: _config(tmp_path, n) for n in names}
    seed = configs["h1"].cluster.gossip_listen.split(":")
    seeds = [(seed[0], int(seed[1]))]
    hosts = {n: Host(configs[n], seeds=seeds) for n in names}
    async with trio.open_nursery() as nursery:
        scopes: dict[str, trio.CancelScope] = {}

        async def run(name: str) -> None:
            with trio.CancelScope() as scope:
                scopes[name] = scope
                await hosts[name].run()

        for n in names:
            nursery.start_soon(run, n)
        await _until(lambda: all(h.api_address is not None for h in hosts.values()), 20, "all up")
        ids = {h.cluster_id for h in hosts.values()}
        assert len(ids) == 1, f"more than one cluster founded: {ids}"

        await _until(
            lambda: any(len(_conf(h)[0]) == 3 and len(_conf(h)[1]) == 1 for h in hosts.values()),
            20,
            "3 voters and 1 learner",
        )
        # a write on every host, forwarded to the leader where needed
        for n, h in hosts.items():
            assert h.replica is not None
            cmd = CreateJob(
                **h.replica.stamp("test"),  # type: ignore[arg-type]
                job=JobSpec(name=f"job-{n}", schedule="@yearly", command="true"),
            )
            assert unwrap(await h.replica.propose(cmd))["name"] == f"job-{n}"
        await _until(
            lambda: all(
                h.replica is not None and len(h.replica.store.list_jobs()) == 4
                for h in hosts.values()
            ),
            10,
            "every host holds every job",
        )

        # kill a voter that does not lead: after the grace a learner replaces it
        leader = next(
            h for h in hosts.values() if h.node and h.node.statistics().role.name == "LEADER"
        )
        voters, _ = _conf(leader)
        victim = sorted(voters - {leader.name})[0]
        scopes[victim].cancel()
        await _until(
            lambda: victim not in _conf(leader)[0] and len(_conf(leader)[0]) == 3,
            30,
            f"{victim} replaced",
        )
        nursery.cancel_scope.cancel()
