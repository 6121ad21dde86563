"""Runs across real hosts on 127.0.0.1: placement by tags, kill and logs from any host, leases.

Three real hosts (gossip, Raft, SQLite, the real runner) in one process. What
a user sees through the RPC API of *any* host:

* a job tagged ``role=db`` runs only on the host carrying that tag; a job
  whose tags no host carries gets runs that wait ``placement_wait_s`` for a
  host and then end ``skipped`` with the reason;
* a host with no free slot refuses a run, and the leader places it on the
  next host that has one;
* a run on one host can be followed (``run.logs``) and killed (``run.kill``)
  through another host;
* when the host running an attempt stops reporting, the leader declares the
  attempt ``lost`` after ``lease + kill grace + 2 heartbeats`` and, as the
  job allows one retry, runs it again on another host; the daemon of the
  first host, started again, stops the superseded process it finds.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from dcrond.config import Config, RunnerConfig
from dcrond.engine._table import iso_ms
from dcrond.errors import DcronError, InvalidRequest
from dcrond.host import Host
from dcrond.rpc import RpcClient
from tests.cluster_local._lab import loopback_config, until

TAGS = {
    "h1": {"role": "web", "id": "h1"},
    "h2": {"role": "db", "id": "h2"},
    "h3": {"role": "web", "id": "h3"},
}
HEARTBEAT, LEASE, KILL_GRACE = 0.2, 1.0, 1.0


def _config(tmp: Path, name: str, *, slots: int = 16, placement_wait: float = 1.0) -> Config:
    return loopback_config(
        tmp,
        name,
        tags=TAGS[name],
        runner=RunnerConfig(kill_grace_s=KILL_GRACE, slots=slots),
        heartbeat_s=HEARTBEAT,
        lease_s=LEASE,
        placement_wait_s=placement_wait,
    )


def _hosts(
    tmp: Path, **config: Any
) -> tuple[dict[str, Config], list[tuple[str, int]], dict[str, Host]]:
    """The three hosts' configs, the seed every host joins, and the (not yet running) hosts."""
    configs = {n: _config(tmp, n, **config) for n in TAGS}
    host, port = configs["h1"].cluster.gossip_listen.split(":")
    seeds = [(host, int(port))]
    return configs, seeds, {n: Host(configs[n], seeds=seeds) for n in TAGS}


async def _three_voters(hosts: dict[str, Host]) -> None:
    async def formed() -> bool:
        return any(
            h.node is not None and len(h.node.statistics().voters) == 3 for h in hosts.values()
        )

    await until(formed, 30, "3 voters")


async def _call(host: Host, method: str, params: dict[str, Any]) -> Any:
    assert host.api_address is not None
    client = await RpcClient.connect(*host.api_address)
    outcome: list[Any] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            try:
                outcome.append(await client.call(method, params))
            except DcronError as exc:  # raised below, outside the nursery's exception group
                outcome.append(exc)
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()
    if isinstance(outcome[0], DcronError):
        raise outcome[0]
    return outcome[0]


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
    configs, seeds, hosts = _hosts(tmp_path)
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

            await _three_voters(hosts)
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

            await until(lambda: three_final("pinned"), 20, "3 runs of the pinned job")
            await until(lambda: three_final("nowhere"), 20, "3 runs of the unplaceable job")
            pinned = [r for r in await runs_of("pinned") if r["state"] == "succeeded"]
            assert {r["host"] for r in pinned} == {"h2"}, pinned
            skipped = [r for r in await runs_of("nowhere") if r["state"] != "scheduled"]
            assert all(r["state"] == "skipped" for r in skipped), skipped
            assert "no alive host carries role=gpu" in skipped[0]["message"], skipped[0]
            await _call(h1, "job.pause", {"name": "pinned"})
            await _call(h1, "job.pause", {"name": "nowhere"})
            # a trigger nobody can take is refused with the reason (exit 1), nothing created
            with pytest.raises(InvalidRequest, match="no host can run 'nowhere' now: no alive"):
                await _call(h3, "job.trigger", {"name": "nowhere"})

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

            await until(started_on_h2, 20, "the long run is running on h2")
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

                await until(survivor_running, 20, "the survivor run is running")
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

            await until(retried_elsewhere, 30, "attempt 1 lost and attempt 2 running elsewhere")
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
                    await Host(configs[first_host], seeds=seeds).run()

            nursery.start_soon(again)

            async def old_gone() -> bool:
                return not _alive(old_pid)

            await until(old_gone, 30, "the superseded process stopped")
            got = await _call(hosts[leader], "run.get", {"id": survivor_id})
            assert got["state"] == "running" and got["attempt"] == 2, got
            await _call(hosts[leader], "run.kill", {"id": survivor_id})
            nursery.cancel_scope.cancel()
    for pid in orphans:
        _kill_group(pid)


async def test_a_job_on_several_hosts_runs_once_per_host_and_its_dependents_wait_for_all(
    tmp_path: Path,
) -> None:
    """``on = all`` and ``on = 2``: one run per chosen host per instant (``job@T~host``),
    and a job ``after`` an all-hosts job runs once per instant, after every host's run."""
    _configs, _seeds, hosts = _hosts(tmp_path)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for h in hosts.values():
                nursery.start_soon(h.run)

            await _three_voters(hosts)
            h1 = hosts["h1"]

            async def job(name: str, **spec: Any) -> None:
                await _call(h1, "job.create", {"name": name, "spec": spec})

            await job("everywhere", schedule="@every 1s", command="true", on="all")
            await job("two-web", schedule="@every 1s", command="true", on=2, tags={"role": "web"})
            await job("after-all", schedule="@yearly", command="true", after=["everywhere"])

            async def runs_of(name: str) -> list[dict[str, Any]]:
                got: list[dict[str, Any]] = await _call(
                    hosts["h2"], "run.list", {"job": name, "limit": 500}
                )
                return got

            def by_instant(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
                out: dict[str, list[dict[str, Any]]] = {}
                for r in runs:
                    out.setdefault(r["scheduled_at"], []).append(r)
                return out

            async def settled() -> bool:
                full = [
                    t
                    for t, rs in by_instant(await runs_of("everywhere")).items()
                    if len(rs) == 3 and all(r["state"] == "succeeded" for r in rs)
                ]
                deps = {r["scheduled_at"]: r for r in await runs_of("after-all")}
                return len(full) >= 3 and all(
                    deps.get(t, {}).get("state") == "succeeded" for t in full
                )

            await until(settled, 30, "3 instants of the all-hosts job and their dependents")
            await _call(h1, "job.pause", {"name": "everywhere"})
            await _call(h1, "job.pause", {"name": "two-web"})

            every = by_instant(await runs_of("everywhere"))
            assert every, "no runs"
            for t, rs in every.items():
                assert len(rs) <= 3, rs
                for r in rs:  # the run names its host, and ran there
                    assert r["id"] == f"everywhere@{t}~{r['attempts'][0]['host']}", r
                assert len({r["attempts"][0]["host"] for r in rs}) == len(rs), rs
            full = {t: rs for t, rs in every.items() if len(rs) == 3}
            deps = {r["scheduled_at"]: r for r in await runs_of("after-all")}
            for t, rs in full.items():
                if all(r["state"] == "succeeded" for r in rs) and t in deps:
                    dep = deps[t]
                    assert dep["id"] == f"after-all@{t}", dep  # one run, not one per host
                    last_upstream = max(iso_ms(r["finished_at"]) for r in rs)
                    assert iso_ms(dep["started_at"]) >= last_upstream, (dep, rs)
            for rs in by_instant(await runs_of("two-web")).values():
                assert {r["host"] for r in rs if r["host"]} <= {"h1", "h3"}, rs
                assert len(rs) <= 2, rs
            assert any(len(rs) == 2 for rs in by_instant(await runs_of("two-web")).values())

            triggered = await _call(hosts["h3"], "job.trigger", {"name": "everywhere"})
            assert sorted(r.rpartition("~")[2] for r in triggered["runs"]) == ["h1", "h2", "h3"]
            nursery.cancel_scope.cancel()


async def test_a_full_host_refuses_a_run_and_the_leader_places_it_where_a_slot_frees(
    tmp_path: Path,
) -> None:
    """One slot per host, both web hosts busy: the run is refused, waits, and goes to the
    host whose slot frees first (here h3, once its job is killed)."""
    _configs, _seeds, hosts = _hosts(tmp_path, slots=1, placement_wait=30.0)
    pids: list[int] = []
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for h in hosts.values():
                nursery.start_soon(h.run)

            await _three_voters(hosts)
            h2 = hosts["h2"]

            async def job(name: str, **spec: Any) -> None:
                await _call(h2, "job.create", {"name": name, "spec": spec})

            async def running(run_id: str, on: str | None = None) -> bool:
                got = await _call(h2, "run.get", {"id": run_id})
                return bool(got["state"] == "running" and (on is None or got["host"] == on))

            fillers: dict[str, str] = {}
            for name in ("h1", "h3"):
                await job(f"fill-{name}", schedule="@yearly", command="sleep 60", tags={"id": name})
                fillers[name] = (await _call(h2, "job.trigger", {"name": f"fill-{name}"}))["id"]
            for name, run_id in fillers.items():
                await until(functools.partial(running, run_id, name), 20, f"{name} busy")
                pids.append((await _call(h2, "run.get", {"id": run_id}))["attempts"][0]["pid"])

            await job("web", schedule="@yearly", command="sleep 60", tags={"role": "web"})
            web = (await _call(h2, "job.trigger", {"name": "web"}))["id"]

            async def refused() -> bool:
                got = await _call(h2, "run.get", {"id": web})
                message = got["attempts"][0]["message"] or ""
                return bool(got["state"] == "scheduled" and "refused it: no free slot" in message)

            await until(refused, 20, "a full web host refused the run")
            await _call(h2, "run.kill", {"id": fillers["h3"]})
            await until(
                functools.partial(running, web, "h3"), 20, "the run placed on h3 once it had a slot"
            )
            pids.append((await _call(h2, "run.get", {"id": web}))["attempts"][0]["pid"])
            for run_id in (web, fillers["h1"]):
                await _call(h2, "run.kill", {"id": run_id})
            nursery.cancel_scope.cancel()
    for pid in pids:
        _kill_group(pid)
