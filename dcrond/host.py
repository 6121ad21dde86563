"""One dcrond host, assembled: what ``dcrond`` runs, and what cluster tests run in-process.

Theory of operation
-------------------
``Host.run`` opens, in this order:

1. the **job table** (``jobs.db``) and the **Raft log** (``raft.db``) in the
   data folder;
2. the **gossip** member on ``[cluster] gossip_listen``, which joins the seeds
   (``join`` list, zeroconf) and announces this host's ports;
3. the **cluster identity** (``dcrond.cluster.settle_identity``): the stored
   id, or — for a fresh folder — found a new cluster or adopt the one gossip
   shows, after ``bootstrap_wait_s``; with no seeds at all there is nobody to
   wait for and a fresh host founds a one-host cluster at once (the
   single-host default of ``make run``);
4. the **Raft node** (a one-voter log when founding, an empty membership when
   joining: the leader adds it as a learner), its transport (the handshake
   carries the cluster name *and* id) and the **cluster runtime** that keeps
   peers, gossip meta and — on the leader — the membership in step;
5. the **engine** (scheduler on the leader, runner everywhere) and the **RPC
   server** (``Service``); writes on a follower are forwarded to the leader.

``Host.stop`` is the graceful path (SIGTERM): the engine stops scheduling and
leaves running jobs to the next start, a leader hands leadership over, and
the gossip member announces that it leaves.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from typing import final

import trio

from dcrond import __version__
from dcrond.cluster import (
    ClusterRuntime,
    new_cluster_id,
    read_cluster_id,
    settle_identity,
    write_cluster_id,
)
from dcrond.config import Config, parse_address
from dcrond.discovery import Discovery
from dcrond.engine import Engine, LeaseTimes
from dcrond.errors import ConfigError, InvalidRequest, StorageError
from dcrond.forward import Forwarder
from dcrond.gossip import PLAINTEXT, GossipNode, NodeMeta, Sealer
from dcrond.gossip._aead import AeadSealer
from dcrond.membership import Policy
from dcrond.placement import hosts_from_cluster
from dcrond.raft import Config as RaftCoreConfig
from dcrond.raft import ConfState, LogStorage, RaftNode, RaftTransport, open_node
from dcrond.replica import Replica, ReplicatedTable
from dcrond.rpc import RpcServer
from dcrond.runner import LocalProcessRunner
from dcrond.service import Service
from dcrond.store import JobStore
from dcrond.store._blobs import Blobs
from dcrond.tls import node_tls_for

log = logging.getLogger("dcrond")

Address = tuple[str, int]


def _without_systemd(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "NOTIFY_SOCKET" and not k.startswith("WATCHDOG_")}


@final
class Host:
    """Everything one dcrond host runs (see the module doc)."""

    def __init__(self, config: Config, *, seeds: Sequence[Address] = ()) -> None:
        self.config = config
        self.name = config.node.name
        self.seeds = list(seeds)
        self.api_address: Address | None = None
        self.cluster_id = ""
        self.node: RaftNode | None = None
        self.replica: Replica | None = None
        self.engine: Engine | None = None
        self.gossip: GossipNode | None = None
        self.runtime: ClusterRuntime | None = None
        self.transport: RaftTransport | None = None
        self._stopping = False
        self.discovery: Discovery | None = None
        self.storage_error: str | None = None  #: what the start-up check of storage said

    async def run(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; reports the RPC address once it listens."""
        config = self.config
        data = config.data_path
        data.mkdir(parents=True, exist_ok=True)
        name = self.name
        store = JobStore.open(data / "jobs.db")
        storage = LogStorage.open(data / "raft.db", sync=config.raft.fsync)
        runner: LocalProcessRunner | None = None
        try:
            api_host, api_port = parse_address(config.api.listen, "api.listen")
            raft_listen = parse_address(config.raft.listen, "raft.listen")
            g_host, g_port = parse_address(config.cluster.gossip_listen, "cluster.gossip_listen")
            advertise = (
                parse_address(config.cluster.advertise, "cluster.advertise")
                if config.cluster.advertise
                else None
            )
            node_tls = node_tls_for(config)  # None if TLS is off; ConfigError before listening
            has_log = storage.statistics().last_index > 0
            cluster_id = read_cluster_id(data)
            if not cluster_id and has_log:
                cluster_id = new_cluster_id()  # a log from before cluster ids: it founded
                write_cluster_id(data, cluster_id)
            meta = NodeMeta(
                api_port=api_port,
                raft_port=raft_listen[1],
                tags=config.node.tags,  # every host sees them: placement matches jobs on them
                version=__version__,
                cluster_id=cluster_id,
            )
            sealer: Sealer = PLAINTEXT
            if config.cluster.secret:
                try:
                    sealer = AeadSealer(config.cluster.secret, config.cluster.name)
                except InvalidRequest as exc:
                    raise ConfigError(f"cluster.secret: {exc}") from None
            gossip = GossipNode(
                name, meta, host=g_host, port=g_port, advertise=advertise, sealer=sealer
            )
            self.gossip = gossip
            async with trio.open_nursery() as nursery:
                await nursery.start(gossip.serve)
                disc = Discovery(
                    name=name,
                    cluster=config.cluster.name,
                    secret=config.cluster.secret.encode(),
                    gossip=gossip.address,
                    zeroconf=config.discovery.zeroconf,
                    join=config.discovery.join,
                    interface=config.discovery.interface or None,
                )
                # announced for as long as the host runs (not just while starting)
                await nursery.start(disc.run)
                self.discovery = disc
                nursery.start_soon(self._feed_seeds, gossip, disc)
                looking = (
                    bool(self.seeds) or disc.statistics().zeroconf or bool(config.discovery.join)
                )
                wait = config.cluster.bootstrap_wait_s if looking else 0.0
                cluster_id, founding = await settle_identity(data, gossip, name, wait=wait)
                self.cluster_id = cluster_id
                bootstrap = (
                    ConfState(voters=frozenset([name])) if founding or has_log else ConfState()
                )
                transport = RaftTransport(
                    name, f"{config.cluster.name}/{cluster_id}", raft_listen, {}, tls=node_tls
                )
                self.transport = transport
                table = ReplicatedTable(store)
                node = open_node(
                    name,
                    storage,
                    transport,
                    table,
                    bootstrap=bootstrap,
                    config=RaftCoreConfig(
                        election_ticks=config.raft.election_ticks, send_appends_early=True
                    ),
                    rng=random.Random(),
                    tick_seconds=config.raft.tick_ms / 1000,
                    snapshot_entries=config.raft.snapshot_entries,
                )
                self.node = node
                runner = LocalProcessRunner(
                    data / "runs",
                    daemon_env=_without_systemd(dict(os.environ)),
                    spares=config.runner.slots,  # a start at each slot renames, never creates
                )
                runtime = ClusterRuntime(
                    node,
                    gossip,
                    cluster_id=cluster_id,
                    meta=meta,
                    policy=Policy(dead_grace=config.cluster.dead_grace_s),
                    free_slots=lambda: max(0, config.runner.slots - len(runner.running())),
                )
                self.runtime = runtime
                forwarder = Forwarder(
                    runtime.rpc_address, ssl_context=node_tls.client if node_tls else None
                )
                replica = Replica(node, table, name=name, forward=forwarder)
                self.replica = replica
                blobs = Blobs(
                    config.storage_url, cache_dir=config.cache_path, **config.storage_options
                )
                try:
                    await blobs.check()
                except StorageError as exc:
                    # runs still go on: logs wait in the upload queue until storage is back
                    self.storage_error = str(exc)
                    log.error("storage_unavailable url=%s error=%r", config.storage_url, str(exc))
                engine = Engine(
                    replica,
                    runner,
                    blobs,
                    config,
                    host=name,
                    lease=LeaseTimes(
                        heartbeat=config.cluster.heartbeat_s,
                        lease=config.cluster.lease_s,
                        kill_grace=config.runner.kill_grace_s,
                    ),
                    peer_call=forwarder.call,
                    hosts=lambda: hosts_from_cluster(
                        gossip.members(),
                        cluster_id=cluster_id,
                        voters=node.applied_conf.voters,
                        learners=node.applied_conf.learners,
                        behind=node.follower_lag(),
                    ),
                )
                self.engine = engine
                service = Service(
                    replica,
                    engine,
                    blobs,
                    config,
                    cluster=runtime,
                    storage_error=self._storage_error,
                )
                server = RpcServer(
                    service.handlers(), ssl_context=node_tls.server if node_tls else None
                )

                await nursery.start(node.run)
                if node.core.conf.voters == {name}:
                    await node.campaign()  # the only voter: no need to wait for a timeout
                await nursery.start(forwarder.run)
                await nursery.start(runtime.run)
                await nursery.start(engine.run)
                bound = await nursery.start(server.serve_tcp, api_host, api_port)
                self.api_address = bound
                log.info(
                    "dcrond_started node=%s api=%s:%d gossip=%s:%d cluster_id=%s data=%s "
                    "storage=%s config=%s",
                    name,
                    bound[0],
                    bound[1],
                    *gossip.address,
                    cluster_id,
                    data,
                    config.storage_url,
                    config.source,
                )
                task_status.started(bound)
        finally:
            if runner is not None:
                runner.close()  # its spawner exits once the jobs still running have ended
            storage.close()
            store.close()

    async def _feed_seeds(self, gossip: GossipNode, disc: Discovery) -> None:
        """Join every seed as it appears (given ones, ``join`` entries, zeroconf)."""
        joined: set[Address] = set()
        while True:
            new = [a for a in (*self.seeds, *disc.addresses()) if a not in joined]
            if new:
                joined.update(new)
                log.info("gossip_join seeds=%s", ",".join(f"{h}:{p}" for h, p in new))
                await gossip.join(new)
            await disc.wait_changed()

    def _storage_error(self) -> str | None:
        return self.storage_error

    async def stop(self, grace: float = 30.0) -> None:
        """The graceful part of a stop; cancel ``run`` afterwards."""
        if self._stopping:
            return
        self._stopping = True
        with trio.move_on_after(grace):
            if self.engine is not None:
                await self.engine.shutdown()
            if self.runtime is not None:
                await self.runtime.hand_over()
            gossip = self.gossip
            if gossip is not None and any(m.name != self.name for m in gossip.members()):
                await gossip.leave()
