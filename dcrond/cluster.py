"""Many hosts, one log: gossip feeds Raft's peers and membership, and who bootstraps.

Theory of operation
-------------------
Every host runs a gossip member (``dcrond.gossip``) that announces its RPC
and Raft ports, its Raft role, free run slots, version and **cluster id** —
the identity of the Raft log it belongs to, kept in ``<data>/cluster.id``.

**Joining or founding** (``decide``): a host whose data folder has a log
keeps its id. A fresh host waits ``bootstrap_wait`` seconds for gossip to
show it the others, then

* adopts the id that alive members already announce (the one most of them
  have, ties broken by name), starts Raft with an *empty* membership and waits
  for the leader to add it — it never votes before it holds the log;
* or, when nobody has an id yet, the host with the smallest name among the
  alive fresh hosts founds the cluster: a new random id and a one-voter
  log; the others adopt that id as soon as it is announced.

Two fresh hosts that cannot see each other during the wait both found a
cluster; their ids differ, so they never share a log (the Raft transport's
handshake includes the id). ``dcronctl node list`` shows such hosts as of
another cluster; remove one's data folder to make it join.

**Peers**: the Raft transport and the write forwarder learn each member's
addresses from gossip; the leader's **membership manager** turns gossip's
view into one safe Raft change at a time (``dcrond.membership.plan``) and
waits for each to apply before the next.

**Leaving**: on SIGTERM a leader first hands leadership to its most
caught-up voter, then the host gossips a graceful leave; the new leader sees
``left`` and removes it from the membership.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import final

import trio

from dcrond import __version__
from dcrond.errors import DcronError
from dcrond.gossip import GossipNode, Member, MemberState, NodeMeta
from dcrond.membership import Health, HostView, Policy, plan
from dcrond.raft import ConfChangeType, RaftNode, Role

log = logging.getLogger("dcrond.cluster")

_HEALTH = {
    MemberState.ALIVE: Health.ALIVE,
    MemberState.SUSPECT: Health.SUSPECT,
    MemberState.DEAD: Health.DEAD,
    MemberState.LEFT: Health.LEFT,
}


def read_cluster_id(data: Path) -> str:
    """The id stored in the data folder, or "" for a fresh host."""
    try:
        return (data / "cluster.id").read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return ""


def write_cluster_id(data: Path, cluster_id: str) -> None:
    """Store the id durably (before the first Raft write that depends on it)."""
    tmp = data / "cluster.id.tmp"
    with tmp.open("w", encoding="ascii") as f:
        f.write(cluster_id + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(data / "cluster.id")


def new_cluster_id() -> str:
    """A fresh, random cluster id."""
    return uuid.uuid4().hex


def decide(me: str, members: tuple[Member, ...]) -> tuple[str, str] | None:
    """After the bootstrap wait: ``("adopt", id)``, ``("found", "")`` or None (keep waiting).

    ``members`` includes this host; only alive ones count.
    """
    alive = [m for m in members if m.state == MemberState.ALIVE]
    ids = Counter(m.meta.cluster_id for m in alive if m.meta.cluster_id)
    if ids:
        best = max(ids.items(), key=lambda kv: (kv[1], kv[0]))[0]
        return ("adopt", best)
    fresh = sorted(m.name for m in alive)
    if fresh and fresh[0] == me:
        return ("found", "")
    return None


async def settle_identity(
    data: Path, gossip: GossipNode, me: str, *, wait: float, poll: float = 0.2
) -> tuple[str, bool]:
    """This host's cluster id, deciding it if the folder is fresh; and whether it founds.

    ``wait`` seconds of gossip first (skipped when the id is already stored).
    """
    stored = read_cluster_id(data)
    if stored:
        return stored, False
    await trio.sleep(wait)
    while True:
        choice = decide(me, gossip.members())
        if choice is not None:
            how, cid = choice
            found = how == "found"
            cid = new_cluster_id() if found else cid
            write_cluster_id(data, cid)
            log.info("cluster_identity how=%s cluster_id=%s", how, cid)
            return cid, found
        await trio.sleep(poll)


@final
class ClusterRuntime:
    """Keeps Raft's peers, this host's gossip meta and (on the leader) the membership in step."""

    def __init__(
        self,
        node: RaftNode,
        gossip: GossipNode,
        *,
        cluster_id: str,
        meta: NodeMeta,
        policy: Policy | None = None,
        free_slots: Callable[[], int] = lambda: 0,
        interval: float = 1.0,
    ) -> None:
        self.node = node
        self.gossip = gossip
        self.cluster_id = cluster_id
        self._meta = meta
        self._policy = policy or Policy()
        self._free_slots = free_slots
        self._interval = interval
        self.changes = 0

    # --- what the rest of the daemon asks ------------------------------------------

    def peers(self) -> list[Member]:
        """Members of this cluster (same id), this host excluded."""
        return [
            m
            for m in self.gossip.members()
            if m.name != self.gossip.name and m.meta.cluster_id == self.cluster_id
        ]

    def rpc_address(self, name: str) -> tuple[str, int] | None:
        """Where a member's RPC listener is (for write forwarding)."""
        m = self.gossip.member(name)
        if m is None or not m.meta.api_port:
            return None
        return (m.address[0], m.meta.api_port)

    # --- running -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Until cancelled: sync peers and meta, and manage membership while leading."""
        self._sync_peers()
        self._announce()
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._on_gossip)
            nursery.start_soon(self._on_raft)
            nursery.start_soon(self._manage)

    async def _on_gossip(self) -> None:
        while True:
            await self.gossip.wait_changed()
            self._sync_peers()

    async def _on_raft(self) -> None:
        while True:
            with trio.move_on_after(self._interval):
                await self.node.wait_changed()
            self._announce()

    def _sync_peers(self) -> None:
        # A member gossip declares dead keeps its address: Raft's own timers decide
        # whether it answers. A daemon held up for a few seconds under load is declared
        # dead by gossip and comes back; cut off from the log meanwhile, it campaigned.
        peers = {
            m.name: (m.address[0], m.meta.raft_port)
            for m in self.peers()
            if m.meta.raft_port and m.state is not MemberState.LEFT
        }
        self.node.transport.update_peers(peers)

    def _role(self) -> str:
        st = self.node.statistics()
        if st.role == Role.LEADER:
            return "leader"
        if st.node_id in st.voters:
            return "voter"
        if st.node_id in st.learners:
            return "learner"
        return ""

    def _announce(self) -> None:
        meta = NodeMeta(
            api_port=self._meta.api_port,
            raft_port=self._meta.raft_port,
            tags=self._meta.tags,
            free_slots=self._free_slots(),
            version=__version__,
            raft_role=self._role(),
            cluster_id=self.cluster_id,
        )
        if meta != self._meta:
            self._meta = meta
            try:
                self.gossip.update_meta(meta)
            except DcronError as exc:
                log.warning("gossip_meta_refused reason=%r", str(exc))

    async def _manage(self) -> None:
        while True:
            with trio.move_on_after(self._interval):
                await self.gossip.wait_changed()
            if self.node.core.role != Role.LEADER:
                continue
            try:
                await self.manage_once()
            except DcronError as exc:
                log.warning("membership_change_failed reason=%r", str(exc))
                await trio.sleep(self._interval)

    def host_views(self) -> dict[str, HostView]:
        """Gossip's view of this cluster's hosts, with the leader's progress of each."""
        progress = {p.node: p.match for p in self.node.core.status().progress}
        now = trio.current_time()
        views: dict[str, HostView] = {}
        for m in self.peers():
            views[m.name] = HostView(
                _HEALTH[m.state], m.since if m.since <= now else now, progress.get(m.name, 0)
            )
        return views

    async def manage_once(self) -> bool:
        """Make the one change the policy asks for now, if any; True if one was made."""
        node = self.node
        st = node.statistics()
        if st.role != Role.LEADER:
            return False
        cc = plan(
            st.node_id,
            node.applied_conf,
            self.host_views(),
            st.last_index,
            trio.current_time(),
            policy=self._policy,
        )
        if cc is None:
            return False
        log.info("membership_change type=%s node=%s", cc.type.name.lower(), cc.node)
        await node.change_membership(cc)
        self.changes += 1
        if cc.type is ConfChangeType.ADD_LEARNER:
            self._sync_peers()
        return True

    async def hand_over(self, timeout: float = 5.0) -> None:
        """Before leaving: if this host leads, hand leadership to its most caught-up voter."""
        node = self.node
        if node.core.role != Role.LEADER:
            return
        progress = {p.node: p.match for p in node.core.status().progress}
        voters = [v for v in node.applied_conf.voters if v != node.core.id]
        if not voters:
            return
        best = max(voters, key=lambda v: (progress.get(v, 0), v))
        log.info("leadership_handover to=%s", best)
        try:
            await node.transfer_leadership(best, timeout=timeout)
        except (DcronError, trio.TooSlowError) as exc:
            log.warning("leadership_handover_failed to=%s reason=%r", best, str(exc))
