"""Downtime and restarts: catch-up by policy, runs in flight re-adopted or lost, never stuck."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path

import trio

from dcrond.engine._table import iso_ms
from dcrond.runner._statefile import read as read_state
from tests.engine.conftest import Wall, start_node

DOWNTIME = 30.0


async def test_catch_up_after_downtime_follows_each_jobs_policy(node_dir: Path, wall: Wall) -> None:
    async with start_node(node_dir, wall, jobs={"catch_up_cap": 5}) as node:
        await node.create("none", catch_up="none")
        await node.create("latest", catch_up="latest")
        await node.create("all", catch_up="all", catch_up_limit=3)
        await node.until(
            lambda: all(node.runs(job, "succeeded") for job in ("none", "latest", "all")),
            timeout=5,
        )
        down_at = wall()
    wall.offset += DOWNTIME  # the daemon was down for 30 s
    async with start_node(node_dir, wall, jobs={"catch_up_cap": 5}) as node:
        back_at = wall()
        await trio.sleep(1.6)
        for job in ("none", "latest", "all"):
            instants = [iso_ms(r["scheduled_at"]) for r in node.runs(job)]
            assert len(instants) == len(set(instants)), f"{job}: an instant ran twice"
        caught_up = {
            job: [iso_ms(r["scheduled_at"]) for r in node.runs(job) if r["reason"] == "catch-up"]
            for job in ("none", "latest", "all")
        }
        assert caught_up["none"] == []
        assert len(caught_up["latest"]) == 1
        assert len(caught_up["all"]) == 3  # its own cap (3) is below the cluster's (5)
        # the newest missed instants (older than the 5 s grace), oldest first, a second apart
        assert caught_up["all"][-1] == caught_up["latest"][0]
        assert [b - a for a, b in itertools.pairwise(caught_up["all"])] == [1000, 1000]
        grace_edge = (back_at - 5) * 1000
        assert down_at * 1000 < caught_up["all"][0] and grace_edge - 2000 < caught_up["latest"][0]
        assert caught_up["latest"][0] < grace_edge
        for job in ("none", "latest", "all"):  # and on schedule again
            assert [r for r in node.runs(job) if iso_ms(r["scheduled_at"]) > back_at * 1000]
        # a claim made just before the stop and not started then is a missed instant too
        for r in node.runs("none"):
            if r["state"] == "skipped":
                assert "catch_up is none" in r["message"]
                assert iso_ms(r["scheduled_at"]) < back_at * 1000


async def test_a_run_in_flight_across_a_restart_is_readopted_and_ends_with_its_real_status(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        await node.create("long", schedule="@yearly", command="echo begun; sleep 1.5; echo ended")
        run = await node.engine.trigger("long", actor="alice")
        await node.until(lambda: node.run(run["id"])["state"] == "running")
    # the engine is gone (SIGTERM), the process is not
    async with start_node(node_dir, wall) as node:
        assert node.run(run["id"])["state"] == "running"
        assert node.engine.statistics().adopted == 1
        data, _ = await node.engine.read_log(run["id"], 0)
        assert data.startswith(b"begun\n")  # live after the restart too
        ended = await node.until_final(run["id"], timeout=5)
        assert ended["state"] == "succeeded" and ended["exit_code"] == 0
        assert await node.log(run["id"]) == b"begun\nended\n"


async def test_a_run_whose_process_died_with_the_daemon_is_lost_and_retried_not_stuck(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        await node.create("victim", schedule="@yearly", command="sleep 30", retries=1, backoff=0)
        run = await node.engine.trigger("victim", actor="alice")
        await node.until(lambda: node.run(run["id"])["state"] == "running")
        await trio.sleep(0.05)  # the runner records the attempt 10 ms after the start
    # KillMode=mixed: the service manager SIGKILLs every process of the unit (the
    # runner's spawner first, so that it cannot record the job's end)
    for name in os.listdir(node_dir / "work" / "live"):
        if name.endswith(".state"):
            st = read_state(str(node_dir / "work" / "live" / name))
            assert st.holder is not None
            os.kill(st.holder, signal.SIGKILL)
            os.killpg(st.pid, signal.SIGKILL)
    await trio.sleep(0.1)
    async with start_node(node_dir, wall) as node:
        first = await node.until(
            lambda: (a := node.run(run["id"])["attempts"][0])["state"] != "running" and a
        )
        assert first["state"] == "lost"
        retried = await node.until(lambda: (r := node.run(run["id"]))["attempt"] == 2 and r)
        assert retried["attempts"][1]["state"] in ("scheduled", "running")
        assert (await node.engine.kill(run["id"], actor="test"))["state"] == "killed"


async def test_a_run_the_table_says_is_running_with_no_trace_here_is_lost(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        await node.create("ghost", schedule="@yearly", command="echo hi; sleep 30")
        run = await node.engine.trigger("ghost", actor="alice")
        await node.until(lambda: node.run(run["id"])["state"] == "running")
        await trio.sleep(0.05)
    # a crash so early that the runner's state file never got its record: no trace
    for name in os.listdir(node_dir / "work" / "live"):
        if name.endswith(".state"):
            path = node_dir / "work" / "live" / name
            os.killpg(read_state(str(path)).pid, signal.SIGKILL)
            path.unlink()
    async with start_node(node_dir, wall) as node:
        ended = await node.until_final(run["id"])
        assert ended["state"] == "lost"
        assert ended["attempts"][0]["log_path"] is not None  # what output there was is kept
        log = await node.log(run["id"])
        assert log.startswith(b"hi\n") and b"found no process" in log
