"""Carrying out a core's Ready in the simulator: persist, send, apply, advance.

Theory of operation: ``drain`` loops while the core has a Ready and does
exactly what ``Ready``'s docstring orders — persist (write, then sync, to the
simulated disk), send, restore a received snapshot, apply committed entries
to the key-value machine (each apply durably recording the applied index),
hand out read states, ``advance`` — and then compacts when the log grew long.
A crash armed by the nemesis (``_simnode.CRASH_*``) strikes between two of
those steps; the checker sees every persist, apply, restore and compaction.
This is a mixin of ``Simulation``, kept apart only to keep modules small.
"""

from __future__ import annotations

import abc
import heapq
import random
from operator import attrgetter
from typing import Any

from dcrond.raft._core import decode_conf_change
from dcrond.raft._types import (
    ConfChangeType,
    EntryKind,
    Message,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    VoteResponse,
)
from dcrond.testing._checkers import InvariantViolation, SafetyChecker
from dcrond.testing._kv import KVStateMachine
from dcrond.testing._nemesis import Nemesis
from dcrond.testing._simclient import Request, Response, Status
from dcrond.testing._simconfig import CLIENT_RESPONSE, DELIVER
from dcrond.testing._simnet import SimNetwork
from dcrond.testing._simnode import (
    CRASH_AFTER_SEND,
    CRASH_AFTER_VOTE,
    CRASH_AFTER_WRITE,
    CRASH_BEFORE_ADVANCE,
    CRASH_MID_APPLY,
    SimNode,
)
from dcrond.testing._simtrace import Trace

_LEADER = Role.LEADER
_to = attrgetter("to")


class ReadyDriver(abc.ABC):
    """The Ready-handling half of ``Simulation`` (see the module docstring)."""

    # provided by Simulation
    now: int
    rng: random.Random
    net: SimNetwork
    checker: SafetyChecker
    trace: Trace
    nemesis: Nemesis
    compact_every: int
    _queue: list[tuple[int, int, int, Any, Any]]
    _seq: int
    _net_rng: random.Random
    _probe_done_at: int | None

    @abc.abstractmethod
    def schedule(self, delay_us: int, kind: int, a: Any = None, b: Any = None) -> None:
        """Queue an event ``delay_us`` from now (the simulation's event queue)."""

    @abc.abstractmethod
    def crash(self, node: SimNode, why: str, restart_us: int | None = None) -> None:
        """Crash a node now (the simulation decides what a crash loses)."""

    def _send_all(self, msgs: tuple[Message, ...]) -> None:
        if len(msgs) > 1:
            msgs = tuple(sorted(msgs, key=_to))  # independent of set iteration order
        route = self.net.route
        queue = self._queue
        now = self.now
        for m in msgs:
            for delay in route(m.frm, m.to):
                self._seq += 1
                heapq.heappush(queue, (now + delay, self._seq, DELIVER, m, None))

    def send(self, msg: Message) -> None:
        """Put one message on the network."""
        for delay in self.net.route(msg.frm, msg.to):
            self.schedule(delay, DELIVER, msg)

    def drain(self, node: SimNode, *, has_ready: bool = False) -> None:
        """Handle Ready after Ready in the documented order, with any armed crash.

        ``has_ready`` says the caller just saw ``core.has_ready()`` return True.
        """
        core = node.core
        assert core is not None
        checker = self.checker
        disk = node.disk
        nid = node.id
        if core.role == _LEADER:
            checker.observe_role(nid, core.term, _LEADER, disk)
        while has_ready or core.has_ready():
            has_ready = False
            rd = core.ready()
            crash_at = node.crash_at
            early = rd.early_messages
            if early:
                self._send_all(early)  # step 0: the core allows these before the fsync
            if not rd.must_sync and rd.hard_state is not None:
                disk.write_unsynced(rd.hard_state)  # only a new commit index
            elif rd.hard_state is not None or rd.entries or rd.snapshot is not None:
                checker.before_persist(nid, disk, rd)
                disk.write(rd.snapshot, rd.entries, rd.hard_state)
                if crash_at == CRASH_AFTER_WRITE:
                    self.crash(node, "between write and sync")
                    return
                disk.sync()
                checker.after_persist(nid, disk, rd)
            msgs = rd.messages
            if msgs:
                self._send_all(msgs)
            if crash_at == CRASH_AFTER_SEND:
                self.crash(node, "after send, before apply")
                return
            if crash_at == CRASH_AFTER_VOTE and any(
                type(m) is VoteResponse and m.granted and not m.prevote for m in msgs
            ):
                # back before a rival's request (>= 200 us away) can arrive
                self.crash(node, "right after voting", self.rng.randrange(20, 150))
                return
            if rd.snapshot is not None:
                self._restore(node, rd.snapshot)
            if rd.committed and self._apply(node, rd, crash_at == CRASH_MID_APPLY):
                return
            if rd.read_states:
                self._read_states(node, rd)
            if node.waiting_reads:
                self._serve_reads(node)
            if crash_at == CRASH_BEFORE_ADVANCE:
                self.crash(node, "before advance")
                return
            core.advance(rd)
            if rd.role != node.last_role:
                self.trace.add(self.now, nid, f"now {rd.role.name} of term {core.term}")
                node.last_role = rd.role
            if rd.committed and node.kv.applied - disk.snap_index >= self.compact_every:
                self._compact(node)

    def _restore(self, node: SimNode, snap: Snapshot) -> None:
        self.checker.on_restore(node.id, snap)
        node.kv = KVStateMachine.restore(snap.data)
        node.applied_conf = snap.meta.conf
        node.disk.record_applied(snap.meta.index)
        self.trace.add(self.now, node.id, f"restored snapshot at {snap.meta.index}")
        idx = snap.meta.index
        for i in [i for i in node.pending_props if i <= idx]:
            req, _ = node.pending_props.pop(i)
            self._reply(node, req, Response(req.attempt, Status.RETRY))

    def _apply(self, node: SimNode, rd: Ready, crash_mid: bool) -> bool:
        """Apply committed entries; True when an armed crash struck midway."""
        kv = node.kv
        disk = node.disk
        checker = self.checker
        pending = node.pending_props
        nid = node.id
        assert node.core is not None
        term = node.core.term
        for e in rd.committed:
            if e.index > disk.last_index or (
                e.index > disk.snap_index and disk.entry(e.index) != e
            ):
                raise InvariantViolation(
                    "commit only what is durable",
                    f"{nid} was told to apply ({e.index}, term {e.term}) which its disk "
                    f"does not hold (durable log ends at {disk.last_index})",
                )
            checker.on_apply(nid, e, term)
            result = kv.apply(e)
            disk.record_applied(e.index)
            if e.kind == EntryKind.CONFIG:
                node.apply_conf(e)
                cc = decode_conf_change(e.data)
                self.trace.add(self.now, nid, f"applied {cc.type.name} {cc.node} at {e.index}")
                if cc.type == ConfChangeType.REMOVE_NODE:
                    self.nemesis.removed(cc.node)
            if pending:
                p = pending.pop(e.index, None)
                if p is not None:
                    req, data = p
                    if e.data == data:
                        checker.on_ack(nid, e)
                        if req.client < 0:
                            self._probe_done_at = self.now
                        else:
                            self._reply(node, req, Response(req.attempt, Status.OK, result))
                    elif req.client >= 0:
                        self._reply(node, req, Response(req.attempt, Status.RETRY))
            if crash_mid:
                self.crash(node, f"after applying {e.index}")
                return True
        return False

    def _read_states(self, node: SimNode, rd: Ready) -> None:
        for rs in rd.read_states:
            req = node.pending_reads.pop(rs.request_id, None)
            if req is None:
                continue
            if rs.index == 0:
                self._reply(node, req, Response(req.attempt, Status.RETRY))
            else:
                node.waiting_reads.append((rs.index, req))

    def _serve_reads(self, node: SimNode) -> None:
        applied = node.kv.applied
        still = []
        for idx, req in node.waiting_reads:
            if idx <= applied:
                value = node.kv.get(req.command.key)
                self._reply(node, req, Response(req.attempt, Status.OK, value))
            else:
                still.append((idx, req))
        node.waiting_reads = still

    def _compact(self, node: SimNode) -> None:
        kv = node.kv
        assert node.core is not None
        meta = node.core.snapshot_meta(kv.applied)
        if meta != SnapshotMeta(kv.applied, kv.applied_term, node.applied_conf):
            raise InvariantViolation(
                "snapshot metadata",
                f"{node.id}: the core says the snapshot at {kv.applied} is {meta}, but the state "
                f"machine applied term {kv.applied_term} with membership {node.applied_conf}",
            )
        snap = Snapshot(meta, kv.snapshot())
        self.checker.on_snapshot_created(node.id, snap)
        node.disk.compact(snap)
        node.core.compact(snap)
        self.trace.add(self.now, node.id, f"compacted to {kv.applied}")

    def _reply(self, node: SimNode, req: Request, resp: Response) -> None:
        if req.client >= 0:
            self.schedule(self._net_rng.randrange(100, 2_000), CLIENT_RESPONSE, req.client, resp)
