"""``dcrond``: the daemon every host runs.

Today it runs one Raft member (a one-voter cluster unless configured
otherwise) and serves the RPC surface ``dcronctl`` uses. The job table,
scheduler and runner plug into the same node as they land.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import socket
import sys
from typing import Any, final

import trio

from dcrond import __version__
from dcrond.config import Config, load_config, parse_address
from dcrond.errors import ConfigError
from dcrond.raft._node import RaftNode, open_node
from dcrond.raft._storage import LogStorage
from dcrond.raft._transport import RaftTransport
from dcrond.raft._types import Config as RaftCoreConfig
from dcrond.raft._types import ConfState, Entry
from dcrond.rpc import RpcServer

log = logging.getLogger("dcrond")

EX_CONFIG = 78


@final
class AppliedIndex:
    """The replicated state before the job table exists: it only counts applied entries."""

    def __init__(self) -> None:
        self._applied = 0

    def apply(self, entry: Entry) -> object:
        self._applied = entry.index
        return None

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes, index: int) -> None:
        self._applied = index

    @property
    def applied_index(self) -> int:
        return self._applied


@final
class JournalFormatter(logging.Formatter):
    """Plain lines with sd-daemon priority prefixes (``<3>``…``<7>``) for journald."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.ERROR:
            prio = 3
        elif record.levelno >= logging.WARNING:
            prio = 4
        elif record.levelno >= logging.INFO:
            prio = 6
        else:
            prio = 7
        return f"<{prio}>{super().format(record)}"


def notify(state: str) -> None:
    """Tell systemd (``Type=notify``) about our state; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), addr)
        except OSError as exc:
            log.warning("sd_notify_failed reason=%r", str(exc))


def _handlers(node: RaftNode, config: Config) -> dict[str, Any]:
    async def cluster_status(params: dict[str, Any]) -> Any:
        st = node.statistics()
        return {
            "cluster": config.cluster.name,
            "node": st.node_id,
            "role": st.role.name.lower(),
            "leader": st.leader,
            "term": st.term,
            "commit_index": st.commit_index,
            "applied_index": st.applied_index,
            "last_index": st.last_index,
            "voters": list(st.voters),
            "learners": list(st.learners),
            "version": __version__,
        }

    async def node_list(params: dict[str, Any]) -> Any:
        st = node.statistics()
        return [
            {
                "name": member,
                "state": "alive" if member == st.node_id else "unknown",
                "raft_role": (
                    st.role.name.lower()
                    if member == st.node_id
                    else ("leader" if member == st.leader else "voter")
                ),
                "version": __version__ if member == st.node_id else None,
            }
            for member in sorted({*st.voters, *st.learners, st.node_id})
        ]

    return {"cluster.status": cluster_status, "node.list": node_list}


async def serve(config: Config) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    data = config.data_path
    data.mkdir(parents=True, exist_ok=True)
    name = config.node.name
    storage = LogStorage.open(data / "raft.db", sync=config.raft.fsync)
    transport = RaftTransport(
        name, config.cluster.name, parse_address(config.raft.listen, "raft.listen"), {}
    )
    node = open_node(
        name,
        storage,
        transport,
        AppliedIndex(),
        bootstrap=ConfState(voters=frozenset([name])),
        config=RaftCoreConfig(election_ticks=config.raft.election_ticks, send_appends_early=True),
        rng=random.Random(),
        tick_seconds=config.raft.tick_ms / 1000,
        snapshot_entries=config.raft.snapshot_entries,
    )
    server = RpcServer(_handlers(node, config))
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                if node.core.conf.voters == {name}:
                    await node.campaign()
                host, port = parse_address(config.api.listen, "api.listen")
                bound = await nursery.start(server.serve_tcp, host, port)
                log.info(
                    "dcrond_started node=%s api=%s:%d data=%s config=%s",
                    name,
                    bound[0],
                    bound[1],
                    data,
                    config.source,
                )
                notify(f"READY=1\nSTATUS=serving on {bound[0]}:{bound[1]}")
                async for signum in signals:
                    log.info("dcrond_stopping signal=%s", signal.Signals(signum).name)
                    notify("STOPPING=1")
                    nursery.cancel_scope.cancel()
                    break
    finally:
        storage.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dcrond``."""
    ap = argparse.ArgumentParser(prog="dcrond", description="distributed cron daemon")
    ap.add_argument(
        "--config", help="config file (default: $DCROND_CONFIG, /etc/dcrond/dcrond.toml)"
    )
    ap.add_argument("--data-dir", help="override node.data_dir")
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--version", action="version", version=f"dcrond {__version__}")
    args = ap.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JournalFormatter()
        if os.environ.get("JOURNAL_STREAM")
        else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    try:
        config = load_config(args.config, data_dir=args.data_dir)
    except ConfigError as exc:
        print(f"dcrond: error: invalid config: {exc}", file=sys.stderr)
        return EX_CONFIG
    trio.run(serve, config)
    return 0
