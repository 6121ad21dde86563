"""The deterministic Raft simulator: whole clusters of pure cores, driven from one seed.

Theory of operation
-------------------
Nothing here runs concurrently. One ``random.Random(seed)`` feeds everything
(derived generators for the network, each core, each client and the nemesis)
and one event queue — a heap of ``(time, sequence, kind, a, b)`` in simulated
microseconds — decides what happens next: a node's clock ticks (every ~10 ms,
with a per-node skew and per-tick jitter), a message arrives, a client sends a
request or gives up waiting, the nemesis injects a fault. The sequence number
breaks ties, so the same seed replays the same run event for event. (trio
deliberately randomizes task order, which is why this is not built on trio.)

After every event that touched a core the driver handles its Ready exactly as
the core documents: persist to the simulated disk (write, then sync), send
the messages, restore the snapshot and apply committed entries to the
key-value state machine, answer reads, then ``advance``. An armed crash can
land between any two of those steps (``_simnode.CRASH_*``). The safety
checker (``_checkers``) runs its incremental checks after every step.

The run has two phases. Until ``seconds`` of simulated time the nemesis
(``_nemesis``) crashes, pauses and restarts nodes, partitions and degrades the
network, changes membership, transfers leadership and compacts logs, while
clients run put/get/cas operations. Then faults stop: the network heals,
every node comes back, and the run must show liveness — a leader is elected,
a proposal commits, every member converges to the same state — within
``liveness_seconds``. Finally the clients' history is checked for
linearizability.

A failure raises ``SimulationFailure`` whose message holds the seed, the one
command that replays it, and the last events.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from typing import Any, final

from dcrond.errors import DcronError, NotLeader
from dcrond.raft._core import RaftCore
from dcrond.raft._types import (
    Config,
    ConfState,
    Message,
    NodeId,
    Role,
)
from dcrond.testing._checkers import InvariantViolation, SafetyChecker
from dcrond.testing._kv import Command, Op
from dcrond.testing._linearizability import Operation, check_history
from dcrond.testing._nemesis import Nemesis
from dcrond.testing._simclient import Request, Response, SimClient, Status
from dcrond.testing._simconfig import (
    CALL,
    CLIENT_INVOKE,
    CLIENT_REQUEST,
    CLIENT_RESPONSE,
    CLIENT_TIMEOUT,
    DECOMMISSION,
    DELIVER,
    FAULTS_END,
    NEMESIS,
    PROBE,
    RESTART,
    RESUME,
    TICK,
    SimConfig,
    SimResult,
    SimulationFailure,
    config_for_seed,
)
from dcrond.testing._simnet import NetworkQuality, SimNetwork
from dcrond.testing._simnode import SimNode, node_rng
from dcrond.testing._simready import ReadyDriver
from dcrond.testing._simtrace import Trace

_LEADER = Role.LEADER
_CALM = NetworkQuality(drop=0.0, duplicate=0.0, min_delay_us=200, max_delay_us=3_000)
_PROBE_SESSION = "__probe__"


def simulate(cfg: SimConfig) -> SimResult:
    """Run one simulation; raises SimulationFailure with a replay command on any failure."""
    return Simulation(cfg).run()


@final
class Simulation(ReadyDriver):
    """One simulated cluster, its clients and its nemesis, stepped from one event queue."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        rng = self.rng
        self.now = 0
        self._queue: list[tuple[int, int, int, Any, Any]] = []
        self._seq = 0
        self.events = 0
        self.net = SimNetwork(random.Random(rng.getrandbits(64)))
        self._net_rng = random.Random(rng.getrandbits(64))
        self._core_rng = random.Random(rng.getrandbits(64))
        self.raft_config = Config(
            election_ticks=10,
            heartbeat_ticks=rng.choice((2, 3, 5)),
            max_inflight=rng.choice((1, 2, 4)),
            max_entries_bytes=rng.choice((64, 512, 1 << 20)),
            snapshot_chunk_bytes=rng.choice((64, 512, 1 << 20)),
            send_appends_early=rng.random() < 0.5,
        )
        self.compact_every = rng.choice((8, 30, 100, 400))
        if cfg.raft is not None:
            self.raft_config = cfg.raft
        if cfg.compact_every is not None:
            self.compact_every = cfg.compact_every
        self.checker = SafetyChecker()
        self.trace = Trace(cfg.trace_events, cfg.record_trace)
        self.nodes: dict[NodeId, SimNode] = {}
        self.node_ids: list[NodeId] = []  # every node ever created, in creation order
        voters = frozenset(f"n{i + 1}" for i in range(cfg.nodes))
        self.bootstrap = ConfState(voters=voters)
        self._founders = sorted(voters)  # started by run(), where failures are reported
        self.clients = [
            SimClient(i, random.Random(rng.getrandbits(64)), cfg.keys, give_up_us=5_000_000)
            for i in range(cfg.clients)
        ]
        self.nemesis = Nemesis(self, random.Random(rng.getrandbits(64)))
        self.faults_over = False
        self.crashes = 0
        self._next_rid = 0
        self._probe: tuple[NodeId, int, int] | None = None  # (leader, term, when)
        self._probe_seq = 0
        self._probe_done_at: int | None = None
        self._faults_end_at = int(cfg.seconds * 1_000_000)
        self._deadline = self._faults_end_at + int(cfg.liveness_seconds * 1_000_000)
        self._converged = False
        self._done = False

    # --- plumbing -----------------------------------------------------------

    def schedule(self, delay_us: int, kind: int, a: Any = None, b: Any = None) -> None:
        """Queue an event ``delay_us`` from now."""
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay_us, self._seq, kind, a, b))

    def add_node(self, nid: NodeId, *, joining: bool = False) -> SimNode:
        """Create a node with an empty disk and start it."""
        skew = 1.0 + self.rng.uniform(-0.1, 0.1)
        conf = ConfState() if joining and self.cfg.join_empty else self.bootstrap
        node = SimNode(nid, conf, int(self.cfg.tick_us * skew))
        self.nodes[nid] = node
        self.node_ids.append(nid)
        self._start(node)
        return node

    def _start(self, node: SimNode) -> None:
        rebuilt = node.rebuild()
        if node.crash_digest is not None:
            applied, digest = node.crash_digest
            if applied == rebuilt.applied and digest != rebuilt.kv.digest:
                raise InvariantViolation(
                    "durable state",
                    f"{node.id} rebuilt a state machine at {applied} that differs from the "
                    "one it had applied before the crash",
                )
        node.kv = rebuilt.kv
        node.applied_conf = rebuilt.conf
        disk = node.disk
        snap = disk.snapshot
        node.core = RaftCore(
            node.id,
            self.raft_config,
            node_rng(self._core_rng),
            hard_state=disk.hard_state,
            snapshot=snap,
            entries=tuple(disk.entries()),
            conf=snap.meta.conf if snap is not None else disk.bootstrap_conf,
            applied=rebuilt.applied,
        )
        node.last_role = Role.FOLLOWER
        self.checker.on_restart(node.id, rebuilt.applied)
        self.trace.add(self.now, node.id, f"start (applied {rebuilt.applied})")
        self._start_ticking(node)
        self.drain(node)

    def _start_ticking(self, node: SimNode) -> None:
        node.tick_epoch += 1
        self.schedule(self.rng.randrange(node.tick_us), TICK, node, node.tick_epoch)

    def crash(self, node: SimNode, why: str, restart_us: int | None = None) -> None:
        """Crash a node now (it loses unsynced writes and all memory); restart it later."""
        if node.core is None:
            return
        self.crashes += 1
        node.lose_volatile_state()
        self.trace.add(self.now, node.id, f"CRASH {why}")
        if restart_us is None:
            longest = self.rng.choice((20_000, 300_000, 2_000_000))
            restart_us = self.rng.randrange(longest // 4, longest)
        if restart_us > 0:
            self.schedule(restart_us, RESTART, node, node.incarnation)

    def restart(self, node: SimNode) -> None:
        """Bring a crashed node back from its disk."""
        if node.core is not None or node.decommissioned:
            return
        node.restarts += 1
        self._start(node)

    def leader(self) -> SimNode | None:
        """The up node that leads the highest term, if any."""
        best: SimNode | None = None
        for nid in self.node_ids:
            node = self.nodes[nid]
            core = node.core
            if (
                core is not None
                and not node.paused
                and core.role == _LEADER
                and (best is None or core.term > best.core.term)  # type: ignore[union-attr]
            ):
                best = node
        return best

    def at(self, delay_us: int, fn: Callable[[Simulation], object]) -> None:
        """Call ``fn(self)`` after ``delay_us`` (scripts and timed faults)."""
        self.schedule(delay_us, CALL, fn)

    def decommission_later(self, node: SimNode, delay_us: int) -> None:
        """Shut a removed node down for good after ``delay_us``."""
        self.schedule(delay_us, DECOMMISSION, node)

    # --- the event loop -----------------------------------------------------

    def run(self) -> SimResult:
        """Run to the end; raises SimulationFailure on any violation."""
        try:
            self._run()
            return self._finish()
        except SimulationFailure:
            raise
        except (InvariantViolation, AssertionError, DcronError, Exception) as exc:
            raise SimulationFailure(self.report(exc)) from exc

    def _run(self) -> None:
        for nid in self._founders:
            self.add_node(nid)
        for c in self.clients:
            self.schedule(self.rng.randrange(50_000), CLIENT_INVOKE, c)
        if self.cfg.faults:
            self.schedule(self.rng.randrange(100_000, 1_000_000), NEMESIS)
        self.schedule(self._faults_end_at, FAULTS_END)
        for when, fn in self.cfg.script:
            self.at(int(when * 1_000_000), fn)
        queue = self._queue
        pop = heapq.heappop
        trace = self.trace
        deadline = self._deadline
        while queue and not self._done:
            t, _, kind, a, b = pop(queue)
            if t > deadline:
                self._fail_liveness()
            self.now = t
            self.events += 1
            if kind == TICK:
                self._on_tick(a, b)
            elif kind == DELIVER:
                self._on_deliver(a)
            elif kind == CLIENT_REQUEST:
                self._on_request(self.nodes[a], b)
            elif kind == CLIENT_RESPONSE:
                c = self.clients[a]
                if c.busy and b.attempt == c.attempt:
                    trace.add(t, c.name, f"<- {b}")
                    # straight to a named leader; otherwise back off a little before retrying
                    backoff = 0 if b.leader is not None else self._net_rng.randrange(5_000, 30_000)
                    self._client_send(c, c.on_response(t, b), backoff)
                    if not c.busy:
                        self._after_op(c)
            elif kind == CLIENT_TIMEOUT:
                c = self.clients[a]
                if c.busy and b == c.attempt:
                    self._client_send(c, c.on_timeout(t, b))
                    if not c.busy:
                        self._after_op(c)
            elif kind == CLIENT_INVOKE:
                if not self.faults_over and not a.busy:
                    req = a.invoke(t)
                    trace.add(t, a.name, f"invoke {req.command}")
                    self._client_send(a, req)
            elif kind == NEMESIS:
                if not self.faults_over:
                    self.nemesis.act()
                    self.schedule(self.rng.randrange(100_000, 1_500_000), NEMESIS)
            elif kind == RESTART:
                if not a.up and a.incarnation == b:
                    self.restart(a)
            elif kind == RESUME:
                self.resume(a)
            elif kind == DECOMMISSION:
                self.crash(a, "decommissioned", restart_us=0)
                a.decommissioned = True
            elif kind == FAULTS_END:
                self._end_faults()
            elif kind == PROBE:
                self._on_probe()
            elif kind == CALL:
                what = a(self)
                trace.add(t, "call", str(what if what is not None else a.__name__))

    # --- nodes --------------------------------------------------------------

    def _on_tick(self, node: SimNode, epoch: int) -> None:
        core = node.core
        if core is None or node.tick_epoch != epoch:
            return
        core.tick()
        if core.has_ready():
            self.trace.add(self.now, node.id, "tick")
            self.drain(node, has_ready=True)
        elif core.role == _LEADER:
            self.checker.observe_role(node.id, core.term, _LEADER, node.disk)
        if node.tick_epoch == epoch:
            period = node.tick_us
            jitter = int((self.rng.random() - 0.5) * period * 0.1)  # +-5% per tick
            self._seq += 1
            heapq.heappush(self._queue, (self.now + period + jitter, self._seq, TICK, node, epoch))

    def _on_deliver(self, msg: Message) -> None:
        node = self.nodes.get(msg.to)
        if node is None or node.core is None:
            return
        if node.paused:
            node.backlog.append(msg)
            return
        if not self.net.link_up(msg.frm, msg.to):
            return
        self.trace.add(self.now, msg.to, msg)
        core = node.core
        core.step(msg)
        if core.role == _LEADER:
            self.checker.observe_role(node.id, core.term, _LEADER, node.disk)
        self.drain(node)

    def pause(self, node: SimNode, us: int) -> None:
        """Freeze a node (a long GC pause or a stopped VM): it handles nothing until resumed."""
        if node.core is None or node.paused:
            return
        node.paused = True
        node.tick_epoch += 1  # its clock stops
        self.trace.add(self.now, node.id, f"pause {us / 1000:.0f}ms")
        self.schedule(us, RESUME, node)

    def resume(self, node: SimNode) -> None:
        """Unfreeze a node: it handles what arrived meanwhile, and its clock ticks again."""
        if node.core is None or not node.paused:
            return
        node.paused = False
        self.trace.add(self.now, node.id, "resume")
        backlog, node.backlog = node.backlog, []
        # a process waking up reads its sockets in no particular order
        self.rng.shuffle(backlog)
        for item in backlog:
            if isinstance(item, Request):
                self.schedule(0, CLIENT_REQUEST, node.id, item)
            else:
                self.schedule(0, DELIVER, item)
        self._start_ticking(node)

    # --- clients ------------------------------------------------------------

    def _client_send(self, client: SimClient, req: Request | None, delay_us: int = 0) -> None:
        if req is None:
            return
        targets = [n for n in self.node_ids if not self.nodes[n].decommissioned]
        to = client.target(targets)
        rng = self._net_rng
        self.schedule(delay_us + rng.randrange(100, 2_000), CLIENT_REQUEST, to, req)
        timeout = delay_us + rng.randrange(client.timeout_us // 2, client.timeout_us * 3 // 2)
        self.schedule(timeout, CLIENT_TIMEOUT, client.index, req.attempt)

    def _after_op(self, client: SimClient) -> None:
        if not self.faults_over:
            self.schedule(self._net_rng.randrange(0, 100_000), CLIENT_INVOKE, client)

    def _on_request(self, node: SimNode, req: Request) -> None:
        core = node.core
        if core is None:
            return
        if node.paused:
            node.backlog.append(req)
            return
        self.trace.add(self.now, node.id, f"request {req.command} attempt {req.attempt}")
        if req.read_index:
            self._next_rid += 1
            rid = b"r%d" % self._next_rid
            try:
                core.read_index(rid)
            except NotLeader as exc:
                self._reply(node, req, Response(req.attempt, Status.NOT_LEADER, None, exc.leader))
                return
            node.pending_reads[rid] = req
        else:
            data = req.command.encode()
            try:
                idx = core.propose(data)
            except NotLeader as exc:
                self._reply(node, req, Response(req.attempt, Status.NOT_LEADER, None, exc.leader))
                return
            node.pending_props[idx] = (req, data)
        if core.role == _LEADER:
            self.checker.observe_role(node.id, core.term, _LEADER, node.disk)
        self.drain(node)

    # --- the end: liveness, convergence, linearizability --------------------

    def _end_faults(self) -> None:
        self.faults_over = True
        self.net.heal()
        self.net.quality = _CALM
        self.trace.add(self.now, "sim", "faults end: network healed, everyone restarted")
        for nid in self.node_ids:
            node = self.nodes[nid]
            node.crash_at = 0
            if node.paused:
                self.resume(node)
            if not node.up and not node.decommissioned:
                self.restart(node)
        self.schedule(10_000, PROBE)

    def _on_probe(self) -> None:
        leader = self.leader()
        if self._probe_done_at is None:
            if leader is not None and leader.core is not None and self._probe_due(leader):
                self._probe_seq += 1
                cmd = Command(Op.PUT, _PROBE_SESSION, self._probe_seq, "__probe__", "alive")
                data = cmd.encode()
                try:
                    idx = leader.core.propose(data)
                except NotLeader:
                    pass
                else:
                    self._probe = (leader.id, leader.core.term, self.now)
                    leader.pending_props[idx] = (Request(-1, 0, cmd, False), data)
                    self.drain(leader)
        elif not self._converged:
            self._converged = leader is not None and self._check_converged(leader)
        elif not any(c.busy for c in self.clients):
            self._done = True
        self.schedule(10_000, PROBE)

    def _probe_due(self, leader: SimNode) -> bool:
        p = self._probe
        assert leader.core is not None
        return (
            p is None
            or (p[0], p[1]) != (leader.id, leader.core.term)
            or self.now - p[2] > 1_000_000
        )

    def _check_converged(self, leader: SimNode) -> bool:
        core = leader.core
        assert core is not None
        members = sorted(core.conf.members())
        commit = core.commit_index
        nodes = [self.nodes[m] for m in members if m in self.nodes]
        if len(nodes) != len(members) or any(n.core is None for n in nodes):
            return False
        if any(n.kv.applied != commit for n in nodes):
            return False
        images = {n.id: n.kv.snapshot() for n in nodes}
        if len(set(images.values())) != 1:
            raise InvariantViolation(
                "state machine safety",
                f"members {members} applied up to {commit} but hold different states",
            )
        self.trace.add(self.now, "sim", f"converged: {members} at {commit}")
        return True

    def _fail_liveness(self) -> None:
        if self._probe_done_at is None:
            what = "no proposal committed"
        elif not self._converged:
            what = "the members did not converge to the same applied state"
        else:
            what = "client operations still had no answer"
        lead = self.leader()
        raise InvariantViolation(
            "liveness",
            f"{what} within {self.cfg.liveness_seconds:.0f}s after faults stopped "
            f"(leader now: {lead.id if lead else 'none'})",
        )

    def _finish(self) -> SimResult:
        if not self._done:
            self._fail_liveness()
        history: list[Operation] = []
        for c in self.clients:
            c.give_up()
            history.extend(c.history)
        lin = check_history(history)
        if not lin.ok:
            raise InvariantViolation("linearizability", lin.explanation)
        stats = self.checker.stats()
        lead = self.leader()
        assert lead is not None and lead.core is not None
        fp = hashlib.blake2b(digest_size=8)
        fp.update(repr((self.events, self.now, stats, lead.kv.digest)).encode())
        for nid in self.node_ids:
            n = self.nodes[nid]
            fp.update(repr((nid, n.disk.hard_state, n.disk.last_index, n.kv.digest)).encode())
        ok = sum(1 for o in history if o.complete is not None)
        return SimResult(
            seed=self.cfg.seed,
            nodes=self.cfg.nodes,
            events=self.events,
            sim_ms=self.now / 1000,
            fingerprint=fp.hexdigest(),
            trace_hash=self.trace.digest(),
            checker=stats,
            linearizability=lin,
            ops_ok=ok,
            ops_unknown=len(history) - ok,
            client_attempts=sum(c.attempts for c in self.clients),
            crashes=self.crashes,
            faults=dict(sorted(self.nemesis.counts.items())),
            max_term=lead.core.term,
            commit=lead.core.commit_index,
            liveness_ms=(self._probe_done_at or 0) / 1000 - self.cfg.seconds * 1000,
        )

    def report(self, exc: BaseException) -> str:
        """The failure message: what broke, the seed, the replay command, the last events."""
        cfg = self.cfg
        cmd = cfg.replay.format(seed=cfg.seed, seconds=cfg.seconds)
        if cfg.seconds != 60.0 and "--sim-seeds" in cfg.replay and "{seconds}" not in cfg.replay:
            cmd += f" --sim-seconds={cfg.seconds:g}"
        kind = "invariant broken" if isinstance(exc, InvariantViolation) else "crashed"
        lines = [
            f"Raft simulation {kind}: {type(exc).__name__}: {exc}",
            f"  seed {cfg.seed} ({cfg.nodes} nodes, {cfg.seconds:g} simulated s), "
            f"at t={self.now / 1000:.3f}ms after {self.events} events",
            f"  replay: {cmd}",
            f"  raft config: {self.raft_config}, compact every {self.compact_every} entries",
            f"  network: {self.net.describe()}",
            "  nodes: "
            + "; ".join(f"{nid}:{self._node_summary(self.nodes[nid])}" for nid in self.node_ids),
            f"  last {len(self.trace)} events:",
            *("    " + line for line in self.trace.lines()),
        ]
        return "\n".join(lines)

    def _node_summary(self, n: SimNode) -> str:
        if n.core is None:
            return "down" + (" (decommissioned)" if n.decommissioned else "")
        c = n.core
        return (
            f"{c.role.name} t{c.term} commit {c.commit_index} applied {n.kv.applied} "
            f"last {c.last_index}" + (" PAUSED" if n.paused else "")
        )


__all__ = [
    "SimConfig",
    "SimResult",
    "Simulation",
    "SimulationFailure",
    "config_for_seed",
    "simulate",
]
