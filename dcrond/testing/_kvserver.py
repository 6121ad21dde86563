"""A Raft-replicated key-value server in one OS process, for real-process tests and bench/.

Run ``python -m dcrond.testing._kvserver --id n1 --data DIR --raft 127.0.0.1:7001
--client 127.0.0.1:7101 --peer n2=127.0.0.1:7002 --peer n3=127.0.0.1:7003``.
Every node named (itself and its peers) is a voter of the bootstrap
configuration. It prints one line ``ready`` on stdout once listening.

RPC methods (``dcrond.rpc``): ``kv.put {key, value, session, seq}``,
``kv.get {key}`` (linearizable, through ReadIndex), ``status {}``,
``log {lo, hi}`` (the stored entries, for comparing logs).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections.abc import Sequence
from typing import Any, final

import trio

from dcrond.errors import NotLeader
from dcrond.raft._node import RaftNode, open_node
from dcrond.raft._storage import LogStorage
from dcrond.raft._transport import RaftTransport
from dcrond.raft._types import Config, ConfState, Entry
from dcrond.rpc import RpcServer
from dcrond.testing._kv import Command, KVStateMachine, Op


@final
class _KV:
    """Adapts the simulator's KV machine to the driver's StateMachine protocol."""

    def __init__(self) -> None:
        self.kv = KVStateMachine()

    def apply_many(self, entries: Sequence[Entry]) -> list[object]:
        return [self.kv.apply(entry) for entry in entries]

    def snapshot(self) -> bytes:
        return self.kv.snapshot()

    def restore(self, data: bytes, index: int) -> None:
        self.kv = KVStateMachine.restore(data)

    @property
    def applied_index(self) -> int:
        return self.kv.applied


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _handlers(node: RaftNode, kv: _KV) -> dict[str, Any]:
    async def put(p: dict[str, Any]) -> Any:
        cmd = Command(Op.PUT, str(p["session"]), int(p["seq"]), str(p["key"]), str(p["value"]))
        return await node.propose(cmd.encode())

    async def get(p: dict[str, Any]) -> Any:
        if node.core.leader != node.core.id:
            raise NotLeader("reads are served by the leader", node.core.leader)
        await node.read_barrier()
        return kv.kv.get(str(p["key"]))

    async def status(p: dict[str, Any]) -> Any:
        st = node.statistics()
        return {
            "id": st.node_id,
            "role": st.role.name.lower(),
            "term": st.term,
            "leader": st.leader,
            "commit": st.commit_index,
            "applied": st.applied_index,
            "last_index": st.last_index,
            "batches": st.persisted_batches,
            "entries": st.persisted_entries,
            "digest": kv.kv.digest,
        }

    async def entries(p: dict[str, Any]) -> Any:
        lo, hi = int(p["lo"]), int(p["hi"])
        return [[e.term, e.index, int(e.kind), e.data] for e in node.storage.entries(lo, hi)]

    return {"kv.put": put, "kv.get": get, "status": status, "log": entries}


async def serve(args: argparse.Namespace) -> None:
    """Run one node until cancelled."""
    peers = dict(p.split("=", 1) for p in args.peer)
    addrs = {node: _addr(a) for node, a in peers.items()}
    storage = LogStorage.open(f"{args.data}/raft.db", sync=not args.no_sync)
    transport = RaftTransport(args.id, "kvtest", _addr(args.raft), addrs)
    kv = _KV()
    node = open_node(
        args.id,
        storage,
        transport,
        kv,
        bootstrap=ConfState(voters=frozenset([args.id, *peers])),
        config=Config(
            election_ticks=args.election_ticks, heartbeat_ticks=1, send_appends_early=True
        ),
        rng=random.Random(),
        tick_seconds=args.tick,
        snapshot_entries=args.snapshot_entries,
    )
    server = RpcServer(_handlers(node, kv))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        host, port = _addr(args.client)
        await nursery.start(server.serve_tcp, host, port)
        print("ready", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve."""
    ap = argparse.ArgumentParser(prog="kvserver")
    ap.add_argument("--id", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--raft", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--peer", action="append", default=[])
    ap.add_argument("--tick", type=float, default=0.05)
    ap.add_argument("--election-ticks", type=int, default=10)
    ap.add_argument("--snapshot-entries", type=int, default=10_000)
    ap.add_argument("--no-sync", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        trio.run(serve, args)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
