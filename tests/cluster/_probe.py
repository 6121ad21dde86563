"""A discovery probe for the namespace tests: ``python -m tests.cluster._probe``.

Runs one ``Discovery`` with the options given and prints a JSON line on
stdout when it starts and whenever something changes:
``{"t": seconds since start, "peers": [[name, host, port, source], ...],
"stats": {...}, "members": [...]}``. With ``--gossip-run`` it also runs a
``GossipNode`` on the gossip address and joins every seed discovery yields;
``members`` then lists the names gossip holds alive. Ends on SIGTERM or
SIGINT, withdrawing its announcement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable

import trio

from dcrond.discovery import Discovery
from dcrond.gossip import GossipNode, MemberState, NodeMeta


def _emit(start: float, d: Discovery, node: GossipNode | None) -> None:
    peers = [[s.name, s.address[0], s.address[1], s.source] for s in d.peers()]
    members = (
        sorted(m.name for m in node.members() if m.state is MemberState.ALIVE)
        if node is not None
        else []
    )
    line = json.dumps(
        {
            "t": round(time.monotonic() - start, 3),
            "peers": peers,
            "stats": dataclasses.asdict(d.statistics()),
            "members": members,
        }
    )
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _main(args: argparse.Namespace, start: float) -> None:
    host, _, port = args.gossip.rpartition(":")
    gossip = (host, int(port))
    node = GossipNode(args.name, NodeMeta(), host=host, port=gossip[1]) if args.gossip_run else None
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with (
            Discovery(
                name=args.name,
                cluster=args.cluster,
                secret=args.secret.encode(),
                gossip=gossip,
                zeroconf=not args.no_zeroconf,
                join=args.join,
                resolve_interval=1.0,
            ) as d,
            trio.open_nursery() as nursery,
        ):
            changed = trio.Event()

            async def watch(wait: Callable[[], Awaitable[None]]) -> None:
                while True:
                    await wait()
                    changed.set()

            async def join_seeds(n: GossipNode) -> None:
                async for seed in d.seeds():
                    nursery.start_soon(n.join, [seed.address])

            if node is not None:
                await nursery.start(node.serve)
                nursery.start_soon(watch, node.wait_changed)
                nursery.start_soon(join_seeds, node)
            nursery.start_soon(watch, d.wait_changed)

            async def report() -> None:
                nonlocal changed
                while True:
                    _emit(start, d, node)
                    await changed.wait()
                    changed = trio.Event()

            nursery.start_soon(report)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main() -> None:
    start = time.monotonic()
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--gossip", required=True, help="host:port")
    parser.add_argument("--cluster", default="dcrond")
    parser.add_argument("--secret", default="s3cret")
    parser.add_argument("--join", action="append", default=[])
    parser.add_argument("--no-zeroconf", action="store_true")
    parser.add_argument("--gossip-run", action="store_true")
    trio.run(_main, parser.parse_args(), start)


if __name__ == "__main__":
    main()
