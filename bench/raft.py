"""Raft throughput and latency: dcrond's Raft against etcd 3.4, in the same run.

    .venv/bin/python bench/raft.py [--seconds 10] [--runs 3] [--skip-etcd]

Three nodes on 127.0.0.1 in separate processes, fsync on, 256-byte values;
one client process (this one) keeps 1, then 64, proposals outstanding for
``--seconds`` each and measures commits/s and p50/p99 latency. Then three
etcd members (Debian's ``etcd``, installed by ``make bench``) get the same
load through etcd's HTTP/JSON gateway from the same kind of client, and the
ratios are printed. Each figure is the median over ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from _etcd import EtcdCluster, Http  # bench/ is on sys.path when a bench script runs

from dcrond.errors import DcronError
from dcrond.rpc import RpcClient
from dcrond.testing._cluster import KVCluster

VALUE = "x" * 256
Put = Callable[[int, int], Awaitable[None]]


async def _drive(put: Put, outstanding: int, seconds: float) -> dict[str, float]:
    """Keep ``outstanding`` puts in flight for ``seconds``; return rate and latency."""
    latencies: list[float] = []
    deadline = trio.current_time() + seconds

    async def worker(w: int) -> None:
        seq = 0
        while trio.current_time() < deadline:
            seq += 1
            t0 = time.perf_counter()
            await put(w, seq)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for w in range(outstanding):
            nursery.start_soon(worker, w)
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "commits_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


async def bench_dcrond(root: Path, seconds: float) -> dict[int, dict[str, float]]:
    """Our three-process cluster under 1 and 64 outstanding proposals."""
    cluster = KVCluster(root, 3)
    results: dict[int, dict[str, float]] = {}
    try:
        async with trio.open_nursery() as nursery:
            await cluster.start(nursery)
            leader = await cluster.find_leader()
            client = await RpcClient.connect("127.0.0.1", leader.client_port)
            nursery.start_soon(client.run)
            run_id = time.monotonic_ns()

            async def put(w: int, seq: int) -> None:
                await client.call(
                    "kv.put",
                    {"session": f"b{run_id}-{w}", "seq": seq, "key": f"k{w}", "value": VALUE},
                )

            await _drive(put, 8, 1.0)  # warm up
            for outstanding in (1, 64):
                run_id = time.monotonic_ns()
                results[outstanding] = await _drive(put, outstanding, seconds)
            await client.aclose()
            nursery.cancel_scope.cancel()
    finally:
        await cluster.aclose()
    return results


async def bench_etcd(root: Path, seconds: float) -> dict[int, dict[str, float]]:
    """Three etcd members on loopback under the same load."""
    cluster = EtcdCluster(root, 3)
    try:
        await cluster.start()
        leader = await cluster.leader()
        conns = [await Http.connect(leader.client_port) for _ in range(64)]
        value = base64.b64encode(VALUE.encode()).decode()

        async def put(w: int, seq: int) -> None:
            key = base64.b64encode(f"k{w}".encode()).decode()
            await conns[w].post("/v3/kv/put", {"key": key, "value": value})

        await _drive(put, 8, 1.0)
        results = {c: await _drive(put, c, seconds) for c in (1, 64)}
        for conn in conns:
            await conn.aclose()
        return results
    finally:
        await cluster.aclose()


def _median(runs: list[dict[int, dict[str, float]]]) -> dict[int, dict[str, float]]:
    return {c: {k: statistics.median(r[c][k] for r in runs) for k in runs[0][c]} for c in runs[0]}


def _rows(name: str, res: dict[int, dict[str, float]]) -> None:
    for c in (1, 64):
        r = res[c]
        print(
            f"{name:<7} {c:>3} outstanding      {r['commits_per_s']:>10.0f}"
            f" {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
        )


async def main_async(args: argparse.Namespace) -> None:
    ours: list[dict[int, dict[str, float]]] = []
    theirs: list[dict[int, dict[str, float]]] = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            ours.append(await bench_dcrond(Path(tmp), args.seconds))
        if not args.skip_etcd:
            with tempfile.TemporaryDirectory() as tmp:
                theirs.append(await bench_etcd(Path(tmp), args.seconds))
    a = _median(ours)
    print(f"{'':28} {'commits/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    _rows("dcrond", a)
    if theirs:
        b = _median(theirs)
        _rows("etcd", b)
        rate = a[64]["commits_per_s"] / b[64]["commits_per_s"]
        p50 = a[1]["p50_ms"] / b[1]["p50_ms"]
        print(
            f"ratio dcrond/etcd: commits/s at 64 = {rate:.2f} (goal >= 1.0);"
            f" p50 at 1 = {p50:.2f} (goal <= 1.5)"
        )
    print(json.dumps({"dcrond": a, "etcd": _median(theirs) if theirs else None}))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-etcd", action="store_true")
    args = ap.parse_args()
    if not args.skip_etcd and shutil.which("etcd") is None:
        print(
            "bench/raft.py: etcd is not installed (make bench installs etcd-server)",
            file=sys.stderr,
        )
        return 2
    try:
        trio.run(main_async, args)
    except DcronError as exc:
        print(f"bench/raft.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
