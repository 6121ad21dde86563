"""Three Raft nodes in separate OS processes on 127.0.0.1, with kill -9 of the leader."""

from __future__ import annotations

from pathlib import Path

import trio

from dcrond.testing._cluster import KVCluster

ENTRIES = 10_000
WORKERS = 64


async def _write(cluster: KVCluster, start: int, stop: int) -> None:
    async def worker(w: int) -> None:
        for i in range(start + w, stop, WORKERS):
            await cluster.put(f"w{w}", i, f"k{i}", f"v{i}")

    async with trio.open_nursery() as nursery:
        for w in range(WORKERS):
            nursery.start_soon(worker, w)


async def test_three_processes_replicate_survive_leader_kill_and_end_identical(
    tmp_path: Path,
) -> None:
    cluster = KVCluster(tmp_path, 3, extra=["--snapshot-entries", "1000000"])
    try:
        with trio.fail_after(240):
            async with trio.open_nursery() as nursery:
                await cluster.start(nursery)
                first = await cluster.find_leader()

                await _write(cluster, 0, ENTRIES // 2)
                cluster.kill(first)
                second = await cluster.find_leader()
                assert second is not first
                await _write(cluster, ENTRIES // 2, ENTRIES)

                await cluster.start_node(first)
                # Every node catches up to the same commit and applied state.
                leader_status = await cluster.call(second, "status", {})
                target = leader_status["commit"]
                statuses = []
                for node in cluster.nodes:
                    while True:
                        st = await cluster.call(node, "status", {})
                        if st["applied"] >= target:
                            break
                        await trio.sleep(0.05)
                    statuses.append(st)
                logs = [
                    await cluster.call(node, "log", {"lo": 1, "hi": target + 1})
                    for node in cluster.nodes
                ]
                # Every write acknowledged is readable through the new leader.
                for i in (0, ENTRIES // 2 - 1, ENTRIES // 2, ENTRIES - 1):
                    assert await cluster.call(second, "kv.get", {"key": f"k{i}"}) == f"v{i}"
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await cluster.aclose()

    assert logs[0] == logs[1] == logs[2]
    assert len(logs[0]) == target
    normal = sum(1 for e in logs[0] if e[2] == 0)
    assert normal >= ENTRIES  # retried puts may appear twice; the state machine dedups them
    digests = {st["digest"] for st in statuses if st["applied"] == target}
    assert len(digests) == 1
