"""``dcrond``: the daemon every host runs.

It runs one Raft member (a one-voter cluster until the cluster issue lands)
whose state machine is the job table (``ReplicatedTable`` over ``JobStore``),
the engine (scheduler on the leader, runner on every node) on top of it,
and the RPC server ``dcronctl`` talks to (``Service``). With no config it
keeps everything in a local data folder and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import socket
import sys
from typing import final

import trio

from dcrond import __version__
from dcrond.config import Config, load_config, parse_address
from dcrond.engine import Engine
from dcrond.errors import ConfigError, StorageError
from dcrond.raft import Config as RaftCoreConfig
from dcrond.raft import ConfState, LogStorage, RaftTransport, open_node
from dcrond.replica import Replica, ReplicatedTable
from dcrond.rpc import RpcServer
from dcrond.runner import LocalProcessRunner
from dcrond.service import Service
from dcrond.store import JobStore
from dcrond.store._blobs import Blobs

log = logging.getLogger("dcrond")

EX_CONFIG = 78


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


async def serve(config: Config) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    data = config.data_path
    data.mkdir(parents=True, exist_ok=True)
    name = config.node.name
    store = JobStore.open(data / "jobs.db")
    storage = LogStorage.open(data / "raft.db", sync=config.raft.fsync)
    try:
        table = ReplicatedTable(store)
        transport = RaftTransport(
            name, config.cluster.name, parse_address(config.raft.listen, "raft.listen"), {}
        )
        node = open_node(
            name,
            storage,
            transport,
            table,
            bootstrap=ConfState(voters=frozenset([name])),
            config=RaftCoreConfig(
                election_ticks=config.raft.election_ticks, send_appends_early=True
            ),
            rng=random.Random(),
            tick_seconds=config.raft.tick_ms / 1000,
            snapshot_entries=config.raft.snapshot_entries,
        )
        replica = Replica(node, table, name=name)
        blobs = Blobs(config.storage_url, cache_dir=config.cache_path)
        try:
            await blobs.check()
        except StorageError as exc:
            log.error("storage_unavailable url=%s error=%r", config.storage_url, str(exc))
        runner = LocalProcessRunner(data / "runs", daemon_env=dict(os.environ))
        engine = Engine(replica, runner, blobs, config, host=name)
        service = Service(replica, engine, blobs, config)
        server = RpcServer(service.handlers())
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                if node.core.conf.voters == {name}:
                    await node.campaign()
                await nursery.start(engine.run)
                host, port = parse_address(config.api.listen, "api.listen")
                bound = await nursery.start(server.serve_tcp, host, port)
                log.info(
                    "dcrond_started node=%s api=%s:%d data=%s storage=%s config=%s",
                    name,
                    bound[0],
                    bound[1],
                    data,
                    config.storage_url,
                    config.source,
                )
                notify(f"READY=1\nSTATUS=serving on {bound[0]}:{bound[1]}")
                async for signum in signals:
                    log.info("dcrond_stopping signal=%s", signal.Signals(signum).name)
                    notify("STOPPING=1")
                    with trio.move_on_after(30):
                        await engine.shutdown()
                    nursery.cancel_scope.cancel()
                    break
    finally:
        storage.close()
        store.close()


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
