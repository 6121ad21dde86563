"""Runs across real hosts on 127.0.0.1: placement by tags, kill and logs from any host, leases.

Three real hosts (gossip, Raft, SQLite, the real runner) in one process. What
a user sees through the RPC API of *any* host:

* a job tagged ``role=db`` runs only on the host carrying that tag; a job
  whose tags no host carries gets runs that end ``skipped`` with the reason;
* a run on one host can be followed (``run.logs``) and killed (``run.kill``)
  through another host;
* when the host running an attempt stops reporting, the leader declares the
  attempt ``lost`` after ``lease + kill grace + 2 heartbeats`` and, as the
  job allows one retry, runs it again on another host; the daemon of the
  first host, started again, stops the superseded process it finds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from dcrond.config import (
    ApiConfig,
    ClusterConfig,
    Config,
    NodeConfig,
    RaftConfig,
    RunnerConfig,
)
from dcrond.host import Host
from dcrond.rpc import RpcClient
from dcrond.testing._cluster import free_ports

TAGS = {"h1": {"role": "web"}, "h2": {"role": "db"}, "h3": {"role": "web"}}
HEARTBEAT, LEASE, KILL_GRACE = 0.2, 1.0, 1.0


def _config(tmp: Path, name: str) -> Config:
    api, raft, gossip = free_ports(3)
    return dataclasses.replace(
        Config(),
        node=NodeConfig(name=name, data_dir=str(tmp / name), tags=tuple(TAGS[name].items())),
        api=ApiConfig(listen=f"127.0.0.1:{api}"),
        raft=RaftConfig(listen=f"127.0.0.1:{raft}", tick_ms=50, fsync=False),
        cluster=ClusterConfig(
            gossip_listen=f"127.0.0.1:{gossip}",
            bootstrap_wait_s=1.0,
            secret="a-lab-secret-of-32-characters-ok",
            heartbeat_s=HEARTBEAT,
            lease_s=LEASE,
        ),
        runner=RunnerConfig(kill_grace_s=KILL_GRACE),
    )


async def _call(host: Host, method: str, params: dict[str, Any]) -> Any:
    assert host.api_address is not None
    client = await RpcClient.connect(*host.api_address)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            try:
                return await client.call(method, params)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await client.aclose()


async def _until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = trio.current_time() + seconds
    while not await check():  # polling state that many tasks change; no single event to wait on
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await trio.sleep(0.1)


def _kill_group(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return not f.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return False


async def test_runs_follow_tags_are_reachable_from_any_host_and_survive_a_silent_host(
    tmp_path: Path,
) -> None:
    configs = {n: _config(tmp_path, n) for n in TAGS}
    seed = configs["h1"].cluster.gossip_listen.split(":")
    hosts = {n: Host(configs[n], seeds=[(seed[0], int(seed[1]))]) for n in TAGS}
    scopes: dict[str, trio.CancelScope] = {}
    orphans: list[int] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:

            async def run(name: str) -> None:
                with trio.CancelScope() as scope:
                    scopes[name] = scope
                    await hosts[name].run()

            for n in TAGS:
                nursery.start_soon(run, n)

            async def three_voters() -> bool:
                return any(
                    h.node is not None and len(h.node.statistics().voters) == 3
                    for h in hosts.values()
                )

            await _until(three_voters, 30, "3 voters")
            h1, h3 = hosts["h1"], hosts["h3"]

            async def job(name: str, **spec: Any) -> None:
                await _call(h1, "job.create", {"name": name, "spec": spec})

            # 1. tags decide the host; no matching host -> skipped with the reason
            await job("pinned", schedule="@every 1s", command="echo ok", tags={"role": "db"})
            await job("nowhere", schedule="@every 1s", command="echo ok", tags={"role": "gpu"})

            async def runs_of(job_name: str, via: Host = h3) -> list[dict[str, Any]]:
                runs: list[dict[str, Any]] = await _call(
                    via, "run.list", {"job": job_name, "limit": 100}
                )
                return runs

            async def three_final(job_name: str) -> bool:
                return (
                    sum(r["state"] in ("succeeded", "skipped") for r in await runs_of(job_name))
                    >= 3
                )

            await _until(lambda: three_final("pinned"), 20, "3 runs of the pinned job")
            await _until(lambda: three_final("nowhere"), 20, "3 runs of the unplaceable job")
            pinned = [r for r in await runs_of("pinned") if r["state"] == "succeeded"]
            assert {r["host"] for r in pinned} == {"h2"}, pinned
            skipped = [r for r in await runs_of("nowhere") if r["state"] != "scheduled"]
            assert all(r["state"] == "skipped" for r in skipped), skipped
            assert "no alive host carries role=gpu" in skipped[0]["message"], skipped[0]
            await _call(h1, "job.pause", {"name": "pinned"})
            await _call(h1, "job.pause", {"name": "nowhere"})

            # 2. a run on h2, followed and killed through the other hosts
            await job(
                "long",
                schedule="@yearly",
                command="echo started; sleep 300",
                tags={"role": "db"},
            )
            triggered = await _call(h1, "job.trigger", {"name": "long"})
            run_id = triggered["id"]

            async def started_on_h2() -> bool:
                got = await _call(h3, "run.get", {"id": run_id})
                return bool(got["state"] == "running" and got["host"] == "h2")

            await _until(started_on_h2, 20, "the long run is running on h2")
            orphans.append((await _call(h1, "run.get", {"id": run_id}))["attempts"][0]["pid"])
            data = b""
            offset = 0
            for _ in range(50):
                answer = await _call(h1, "run.logs", {"id": run_id, "offset": offset})
                data += answer["data"]
                offset = answer["offset"]
                if b"started" in data:
                    break
            assert data.startswith(b"started\n"), data
            killed = await _call(h3, "run.kill", {"id": run_id})
            assert killed["state"] == "killed", killed

            # 3. a silent host: its attempt is declared lost, retried elsewhere, and the
            #    superseded process is stopped when its daemon comes back
            await job(
                "survivor",
                schedule="@yearly",
                command="sleep 300",
                retries=1,
                backoff=0,
            )
            leader = next(n for n, h in hosts.items() if h.replica and h.replica.is_leader())
            first_host = ""
            survivor_id = ""
            # trigger until the first attempt lands on a host that does not lead
            for _ in range(10):
                survivor = await _call(hosts[leader], "job.trigger", {"name": "survivor"})

                async def survivor_running(rid: str = survivor["id"]) -> bool:
                    got = await _call(hosts[leader], "run.get", {"id": rid})
                    return bool(got["state"] == "running")

                await _until(survivor_running, 20, "the survivor run is running")
                got = await _call(hosts[leader], "run.get", {"id": survivor["id"]})
                orphans.append(got["attempts"][0]["pid"])
                if got["host"] != leader:
                    first_host, survivor_id = got["host"], survivor["id"]
                    break
                await _call(hosts[leader], "run.kill", {"id": survivor["id"]})
            assert first_host, "every trigger landed on the leader"
            silent_at = trio.current_time()
            scopes[first_host].cancel()  # the daemon stops; its process runs on

            async def retried_elsewhere() -> bool:
                got = await _call(hosts[leader], "run.get", {"id": survivor_id})
                atts = got["attempts"]
                return (
                    len(atts) == 2
                    and atts[0]["state"] == "lost"
                    and atts[1]["state"] == "running"
                    and atts[1]["host"] not in (None, first_host)
                )

            await _until(retried_elsewhere, 30, "attempt 1 lost and attempt 2 running elsewhere")
            # the last heartbeat left at most one interval before the daemon stopped
            lost_after = LEASE + KILL_GRACE + 2 * HEARTBEAT
            assert trio.current_time() - silent_at >= lost_after - HEARTBEAT
            got = await _call(hosts[leader], "run.get", {"id": survivor_id})
            assert f"host {first_host} was not heard from" in got["attempts"][0]["message"], got
            orphans.append(got["attempts"][1]["pid"])
            old_pid = got["attempts"][0]["pid"]
            assert _alive(old_pid), "the first attempt's process runs on"

            # the first host's daemon comes back: it stops the superseded process
            async def again() -> None:
                with trio.CancelScope() as scope:
                    scopes[first_host] = scope
                    await Host(configs[first_host], seeds=[(seed[0], int(seed[1]))]).run()

            nursery.start_soon(again)

            async def old_gone() -> bool:
                return not _alive(old_pid)

            await _until(old_gone, 30, "the superseded process stopped")
            got = await _call(hosts[leader], "run.get", {"id": survivor_id})
            assert got["state"] == "running" and got["attempt"] == 2, got
            await _call(hosts[leader], "run.kill", {"id": survivor_id})
            nursery.cancel_scope.cancel()
    for pid in orphans:
        _kill_group(pid)
