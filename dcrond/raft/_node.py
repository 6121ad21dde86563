"""The trio driver that runs a pure ``RaftCore`` against real storage and a network.

Theory of operation
-------------------
The core (``_core.py``) never does I/O. This driver owns everything that does:

* a **tick task** calls ``core.tick()`` every ``tick_seconds`` on trio's clock;
* a **receive task** feeds every message from the transport to ``core.step``;
* callers (``propose``, ``read_barrier``, ``change_membership``…) call into the
  core;
* every one of those marks the node *dirty*; the **ready task** wakes, yields
  once so that everything else that is runnable gets to add its input (this is
  what batches 64 concurrent proposals into one fsync), then drains
  ``core.ready()`` in the order its docstring states: send the early messages,
  persist (one SQLite transaction, fsync'd), send, apply, advance.

The fsync runs in a worker thread (when the storage syncs at all), so that
while the leader's own disk write is in progress the transport tasks put its
AppendEntries on the wire and the followers write theirs: the two fsyncs
overlap instead of adding up (``Config.send_appends_early``). The core is not
thread-safe and its contract is one Ready at a time, so every task that
touches the core holds ``_core_lock``; input that arrives during an fsync
waits in the transport's channel and in the lock's queue, and is handled — in
one batch — right after.

A proposal is answered when its entry is *applied*, with the state machine's
result; if another entry won that index (leadership changed), the proposer is
told with ``NotLeader`` so it can retry — with the same client session and
sequence number, which the state machine uses to apply a retried command once.

The state machine takes a snapshot every ``snapshot_entries`` applied entries;
the driver stores it (``LogStorage.compact``) and hands it to the core so that
lagging followers are caught up with InstallSnapshot. A state machine that
can pin an image of itself (the job table) is copied and written in worker
threads while the node goes on applying, one snapshot at a time; only the
pinning and a short install transaction stay on the loop (``_snapjob``).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, final

import trio

from dcrond.errors import InvalidRequest, NotLeader, Unavailable
from dcrond.raft._core import RaftCore, decode_conf_change
from dcrond.raft._snapjob import PinsSnapshots, SnapshotJob
from dcrond.raft._storage import LogStorage
from dcrond.raft._types import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryKind,
    Message,
    NodeId,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)

log = logging.getLogger("dcrond.raft")
#: ticks dropped because the loop was held up are logged at most this often (seconds)
LATE_LOG_EVERY: Final = 10.0


class StateMachine(Protocol):
    """What the driver applies committed entries to.

    ``apply_many`` must be deterministic (no clock reads, no randomness) and
    is given every committed entry (NOOP and CONFIG too, so it can record
    its applied index), consecutive and in log order, exactly once per index
    since the last ``restore``; it returns one result per entry (the
    proposer's result for NORMAL entries). The driver hands it everything
    one Ready committed at once, so a machine on disk can make the whole
    batch durable with one transaction instead of one per entry.
    ``applied_index`` is the last index it has durably applied (a state
    machine kept in memory returns what it last saw). A state machine may
    also offer ``snapshot_begin`` (``PinsSnapshots``), to be snapshotted in
    a worker thread.
    """

    def apply_many(self, entries: Sequence[Entry]) -> Sequence[object]: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes, index: int) -> None: ...

    @property
    def applied_index(self) -> int: ...


class Transport(Protocol):
    """What the driver needs of a network: ``RaftTransport`` (TCP), or an in-memory fake.

    ``serve`` runs until cancelled and calls ``task_status.started()`` once
    messages can flow; ``send_nowait`` never blocks and drops what it cannot
    send (Raft retries); received messages come out of ``receive_channel``.
    ``update_peers`` tells it where the peers are (the cluster runtime calls
    it through ``RaftNode.transport``; a fixed simulated network ignores it).
    """

    @property
    def receive_channel(self) -> trio.MemoryReceiveChannel[Message]: ...

    async def serve(self, *, task_status: trio.TaskStatus[Any] = ...) -> None: ...

    def send_nowait(self, msg: Message) -> None: ...

    def update_peers(self, peers: Mapping[NodeId, tuple[str, int]]) -> None: ...


@final
@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """Counters of one running node (what ``cluster status`` and metrics show)."""

    node_id: NodeId
    role: Role
    term: int
    leader: NodeId | None
    commit_index: int
    applied_index: int
    last_index: int
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]
    readies: int
    persisted_batches: int
    persisted_entries: int
    snapshots: int
    snapshots_discarded: int  #: given up half-way: a snapshot was restored meanwhile
    snapshot_in_flight: bool  #: one is being copied and written in worker threads now
    #: ticks not fired because the event loop was held up past them (see ``_tick_loop``)
    ticks_dropped: int


@dataclass(slots=True)
class _Waiter:
    term: int
    event: trio.Event
    result: object = None
    error: BaseException | None = None


@final
class RaftNode:
    """One Raft member running under trio.

    Use ``await nursery.start(node.run)``; then ``propose``, ``read_barrier``
    and ``change_membership`` from any task of the same trio run.
    """

    def __init__(
        self,
        core: RaftCore,
        storage: LogStorage,
        transport: Transport,
        state_machine: StateMachine,
        *,
        conf: ConfState,
        applied_term: int = 0,
        tick_seconds: float = 0.1,
        snapshot_entries: int = 10_000,
        snapshot_in_thread: bool = True,
        on_conf_change: Callable[[ConfState], None] | None = None,
    ) -> None:
        self.core = core
        self.storage = storage
        self.transport = transport
        self.sm = state_machine
        self.tick_seconds = tick_seconds
        self.snapshot_entries = snapshot_entries
        self._snapshot_in_thread = snapshot_in_thread
        self._snapshot_job: SnapshotJob | None = None
        self._nursery: trio.Nursery | None = None
        self._on_conf_change = on_conf_change
        self._applied_conf = conf  # membership as of the applied index
        self._applied_index = core.applied_index
        self._applied_term = applied_term
        self._snapshot_index = core.applied_index
        self._dirty = trio.Event()
        self._applied_changed = trio.Event()
        self._changed = trio.Event()  # set after every round of Ready handling
        self._waiters: dict[int, _Waiter] = {}
        self._reads: dict[bytes, ReadState | None] = {}
        self._read_events: dict[bytes, trio.Event] = {}
        self._read_ids = itertools.count(1)
        self._read_prefix = os.urandom(8)
        self._readies = 0
        self._batches = 0
        self._entries = 0
        self._snapshots = 0
        self._snapshots_discarded = 0
        self._closed = False
        self._ticks_dropped = 0
        self._core_lock = trio.Lock()
        self._persist_in_thread = storage.statistics().sync

    # --- running --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled: transport, ticks, incoming messages, Ready handling."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.transport.serve)
                nursery.start_soon(self._tick_loop)
                nursery.start_soon(self._receive_loop)
                nursery.start_soon(self._ready_loop)
                self._process_ready()
                task_status.started()
        finally:
            self._closed = True
            self._fail_waiters(Unavailable("this node is shutting down"))

    async def _tick_loop(self) -> None:
        next_tick = trio.current_time()
        late_since, worst, dropped = next_tick, 0.0, 0
        while True:
            next_tick += self.tick_seconds
            await trio.sleep_until(next_tick)
            now = trio.current_time()
            late = now - next_tick
            if late >= self.tick_seconds:
                # The loop was held up (CPU starved, the core lock held through a long
                # fsync): drop the ticks missed, as etcd's ticker does, instead of firing
                # them back to back. Fired in a burst, they made the election timeout and
                # CheckQuorum's window pass in a few milliseconds, before the messages
                # waiting behind the same hold-up were stepped: under load, leaders
                # stepped down and followers campaigned every few seconds.
                missed = int(late / self.tick_seconds + 1e-9)
                dropped += missed
                self._ticks_dropped += missed
                worst = max(worst, late)
                next_tick = now
                if now - late_since >= LATE_LOG_EVERY:
                    log.warning(
                        "raft_ticks_late node=%s dropped=%d worst_ms=%.0f seconds=%.0f",
                        self.core.id,
                        dropped,
                        worst * 1000,
                        now - late_since,
                    )
                    late_since, worst, dropped = now, 0.0, 0
            async with self._core_lock:
                role, term = self.core.role, self.core.term
                self.core.tick()
                if self.core.role is not role:
                    self._role_changed(role, term, "tick")
            self._dirty.set()

    def _role_changed(self, was: Role, term: int, why: str) -> None:
        core = self.core
        if was is Role.LEADER:
            reason = "check_quorum" if why == "tick" else "newer term"
        elif why == "tick":
            reason = "election timeout"
        else:
            reason = "message"
        log.info(
            "raft_role node=%s role=%s term=%d was=%s term_was=%d reason=%r leader=%s",
            core.id,
            core.role.name.lower(),
            core.term,
            was.name.lower(),
            term,
            reason,
            core.leader,
        )

    async def _receive_loop(self) -> None:
        channel = self.transport.receive_channel
        core = self.core
        step = core.step
        async for msg in channel:
            async with self._core_lock:
                role, term = core.role, core.term
                step(msg)
                # Drain whatever else already arrived before handing control back.
                while True:
                    try:
                        more: Message = channel.receive_nowait()
                    except trio.WouldBlock:
                        break
                    step(more)
                if core.role is not role:
                    self._role_changed(role, term, "message")
            self._dirty.set()

    async def _ready_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            # Let every other runnable task add its input first: this is the
            # batching point (one fsync for everything queued right now).
            await trio.lowlevel.cancel_shielded_checkpoint()
            async with self._core_lock:
                await self._handle_readies()

    async def _handle_readies(self) -> None:
        # Shielded: once a Ready is taken it must be carried out to the end
        # (a half-handled Ready would leave the core and the disk disagreeing).
        with trio.CancelScope(shield=True):
            core = self.core
            send = self.transport.send_nowait
            while core.has_ready():
                rd = core.ready()
                self._readies += 1
                for msg in rd.early_messages:
                    send(msg)
                if rd.snapshot is not None or rd.entries or rd.hard_state is not None:
                    if self._persist_in_thread and rd.must_sync:
                        await trio.to_thread.run_sync(self._persist, rd)
                    else:
                        self._persist(rd)
                for msg in rd.messages:
                    send(msg)
                self._apply(rd)
                core.advance(rd)
            self._maybe_snapshot()
        self._changed.set()
        self._changed = trio.Event()

    def _process_ready(self) -> None:
        # Start-up only (no other task runs yet): persist on this thread.
        core = self.core
        while core.has_ready():
            rd = core.ready()
            self._readies += 1
            for msg in rd.early_messages:
                self.transport.send_nowait(msg)
            self._persist(rd)
            for msg in rd.messages:
                self.transport.send_nowait(msg)
            self._apply(rd)
            core.advance(rd)
        self._maybe_snapshot()

    def _persist(self, rd: Ready) -> None:
        if rd.snapshot is None and not rd.entries and rd.hard_state is None:
            return
        self.storage.save(
            hard_state=rd.hard_state, entries=rd.entries, snapshot=rd.snapshot, sync=rd.must_sync
        )
        self._batches += 1
        self._entries += len(rd.entries)

    def _apply(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            self.sm.restore(rd.snapshot.data, meta.index)
            self._applied_index, self._applied_term = meta.index, meta.term
            self._snapshot_index = meta.index
            self._set_conf(meta.conf)
            for index in [i for i in self._waiters if i <= meta.index]:
                self._finish(index, error=NotLeader("outcome unknown: replaced by a snapshot"))
        results = self.sm.apply_many(rd.committed) if rd.committed else ()
        for entry, result in zip(rd.committed, results, strict=True):
            if entry.kind == EntryKind.CONFIG:
                self._set_conf(
                    _apply_conf_change(self._applied_conf, decode_conf_change(entry.data))
                )
            self._applied_index, self._applied_term = entry.index, entry.term
            waiter = self._waiters.get(entry.index)
            if waiter is not None:
                if waiter.term == entry.term:
                    self._finish(entry.index, result=result)
                else:
                    self._finish(
                        entry.index,
                        error=NotLeader("leadership changed before the entry committed", None),
                    )
        for rs in rd.read_states:
            if rs.request_id in self._read_events:
                self._reads[rs.request_id] = rs
                self._read_events[rs.request_id].set()
        if rd.committed or rd.snapshot is not None:
            self._applied_changed.set()
            self._applied_changed = trio.Event()

    def _set_conf(self, conf: ConfState) -> None:
        if conf != self._applied_conf:
            self._applied_conf = conf
            if self._on_conf_change is not None:
                self._on_conf_change(conf)

    def _maybe_snapshot(self) -> None:
        job = self._snapshot_job
        if job is not None and not job.discarded and self._snapshot_index != job.base:
            self._discard_snapshot(job)  # a snapshot was restored: the image is of the old table
        if job is not None or self._applied_index - self._snapshot_index < self.snapshot_entries:
            return
        meta = SnapshotMeta(self._applied_index, self._applied_term, self._applied_conf)
        image = None
        if (
            self._snapshot_in_thread
            and self._nursery is not None
            and isinstance(self.sm, PinsSnapshots)
        ):
            image = self.sm.snapshot_begin()
        if image is None:  # the whole snapshot on this thread
            snap = Snapshot(meta, self.sm.snapshot())
            self.storage.compact(snap)
            self._compacted(snap)
            return
        if image.index != meta.index:
            image.close()
            raise RuntimeError(f"snapshot pinned at {image.index}, the driver applied {meta.index}")
        job = self._snapshot_job = SnapshotJob(meta, self._snapshot_index, image)
        assert self._nursery is not None
        self._nursery.start_soon(self._snapshot_in_background, job)

    async def _snapshot_in_background(self, job: SnapshotJob) -> None:
        try:
            done = await job.write(self.storage)
            if done is None:
                return
            snap, written = done
            async with self._core_lock:
                # Shielded: once the file is installed the core must drop the same entries.
                with trio.CancelScope(shield=True):
                    if job.discarded or self._snapshot_index != job.base:
                        self._discard_snapshot(job)
                        return
                    if self._persist_in_thread:
                        await trio.to_thread.run_sync(self.storage.compact, snap, written)
                    else:
                        self.storage.compact(snap, written)
                    job.installed()
                    self._compacted(snap)
        finally:
            job.close(self.storage)
            if self._snapshot_job is job:
                self._snapshot_job = None

    def _discard_snapshot(self, job: SnapshotJob) -> None:
        if not job.discarded:
            job.discard()
            self._snapshots_discarded += 1
            log.info("raft_snapshot_discarded node=%s index=%d", self.core.id, job.meta.index)

    def _compacted(self, snap: Snapshot) -> None:
        self.core.compact(snap)
        self._snapshot_index = snap.meta.index
        self._snapshots += 1
        log.info(
            "raft_snapshot node=%s index=%d bytes=%d", self.core.id, snap.meta.index, len(snap.data)
        )

    def _finish(
        self, index: int, *, result: object = None, error: BaseException | None = None
    ) -> None:
        waiter = self._waiters.pop(index)
        waiter.result, waiter.error = result, error
        waiter.event.set()

    def _fail_waiters(self, error: BaseException) -> None:
        for index in list(self._waiters):
            self._finish(index, error=error)
        for rid, event in self._read_events.items():
            self._reads[rid] = None
            event.set()

    # --- what callers use -----------------------------------------------------

    async def propose(self, data: bytes, *, timeout: float = 10.0) -> object:
        """Append ``data`` to the log and return the state machine's result once applied.

        Raises NotLeader (with a hint) when this node does not lead or lost
        leadership before the entry committed; Unavailable on timeout (the
        outcome is then unknown: retry with the same session and sequence).
        """
        self._check_open()
        async with self._core_lock:
            index = self.core.propose(data)
        return await self._wait_applied(index, timeout)

    async def change_membership(self, change: ConfChange, *, timeout: float = 10.0) -> None:
        """Propose one membership change and wait until it is applied here."""
        self._check_open()
        async with self._core_lock:
            index = self.core.propose_conf_change(change)
        await self._wait_applied(index, timeout)

    async def _wait_applied(self, index: int, timeout: float) -> object:
        waiter = _Waiter(self.core.term, trio.Event())
        self._waiters[index] = waiter
        self._dirty.set()
        with trio.move_on_after(timeout):
            await waiter.event.wait()
        if not waiter.event.is_set():
            self._waiters.pop(index, None)
            raise Unavailable(f"entry {index} not applied within {timeout:g}s; outcome unknown")
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    async def read_barrier(self, *, timeout: float = 5.0) -> int:
        """Wait until this node may serve a linearizable read; return the read index.

        Uses ReadIndex (no log write). Every call uses a new request id, so a
        retry can never be answered with an older round's index.
        """
        self._check_open()
        rid = self._read_prefix + next(self._read_ids).to_bytes(8, "big")
        event = trio.Event()
        self._read_events[rid] = event
        try:
            async with self._core_lock:
                self.core.read_index(rid)
            self._dirty.set()
            with trio.move_on_after(timeout):
                await event.wait()
                rs = self._reads.get(rid)
                if rs is None or rs.index == 0:
                    raise NotLeader("read refused: no leader right now", self.core.leader)
                await self.wait_applied(rs.index)
                return rs.index
            raise Unavailable(f"read not confirmed within {timeout:g}s")
        finally:
            self._read_events.pop(rid, None)
            self._reads.pop(rid, None)

    async def wait_applied(self, index: int) -> None:
        """Wait until the state machine has applied ``index``."""
        while self._applied_index < index:
            await self._applied_changed.wait()

    async def transfer_leadership(self, to: NodeId, *, timeout: float = 5.0) -> None:
        """Hand leadership to ``to`` and wait until some other node leads."""
        self._check_open()
        async with self._core_lock:
            self.core.transfer_leadership(to)
        self._dirty.set()
        with trio.fail_after(timeout):
            while self.core.role == Role.LEADER:
                await self._changed.wait()

    async def wait_leader(self, *, timeout: float = 10.0) -> NodeId:
        """Wait until this node knows a leader and return its id."""
        with trio.fail_after(timeout):
            while self.core.leader is None:
                await self._changed.wait()
        leader = self.core.leader
        assert leader is not None
        return leader

    async def wait_changed(self) -> None:
        """Return after the next round of Ready handling (role, term, commit may have moved)."""
        await self._changed.wait()

    async def campaign(self) -> None:
        """Start an election now (bootstrap of a one-node cluster, tests)."""
        async with self._core_lock:
            self.core.campaign()
        self._dirty.set()

    def follower_lag(self) -> dict[NodeId, int]:
        """Entries each follower's log lacks, as this node knows (empty unless it leads)."""
        core = self.core
        last = core.last_index
        return {p.node: max(0, last - p.match) for p in core.status().progress}

    def statistics(self) -> NodeStatistics:
        """A frozen record of this node's state and counters."""
        core = self.core
        conf = core.conf
        return NodeStatistics(
            node_id=core.id,
            role=core.role,
            term=core.term,
            leader=core.leader,
            commit_index=core.commit_index,
            applied_index=self._applied_index,
            last_index=core.last_index,
            voters=tuple(sorted(conf.voters)),
            learners=tuple(sorted(conf.learners)),
            readies=self._readies,
            persisted_batches=self._batches,
            persisted_entries=self._entries,
            snapshots=self._snapshots,
            snapshots_discarded=self._snapshots_discarded,
            ticks_dropped=self._ticks_dropped,
            snapshot_in_flight=self._snapshot_job is not None,
        )

    @property
    def applied_conf(self) -> ConfState:
        """The membership as of the applied index."""
        return self._applied_conf

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("this node is shut down")


def _apply_conf_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The membership after ``cc`` (the driver's view as of the applied index)."""
    voters, learners = set(conf.voters), set(conf.learners)
    if cc.type in (ConfChangeType.ADD_VOTER, ConfChangeType.PROMOTE_LEARNER):
        learners.discard(cc.node)
        voters.add(cc.node)
    elif cc.type == ConfChangeType.ADD_LEARNER:
        voters.discard(cc.node)
        learners.add(cc.node)
    elif cc.type == ConfChangeType.REMOVE_NODE:
        voters.discard(cc.node)
        learners.discard(cc.node)
    else:  # pragma: no cover - exhaustive
        raise InvalidRequest(f"unknown membership change {cc.type!r}")
    return ConfState(frozenset(voters), frozenset(learners))


def open_node(
    node_id: NodeId,
    storage: LogStorage,
    transport: Transport,
    state_machine: StateMachine,
    *,
    bootstrap: ConfState,
    config: Config | None = None,
    rng: random.Random | None = None,
    tick_seconds: float = 0.1,
    snapshot_entries: int = 10_000,
    snapshot_in_thread: bool = True,
    on_conf_change: Callable[[ConfState], None] | None = None,
) -> RaftNode:
    """Recover a node from ``storage`` (or bootstrap a new one) and wrap it in a driver.

    The state machine is restored from the stored snapshot when it is behind
    it; committed entries after its applied index are handed out again by the
    core, so an in-memory state machine rebuilds itself from the log.
    ``snapshot_in_thread=False`` keeps snapshots on the event loop even for
    a state machine that could take them in a thread (the deterministic
    simulators want no threads).
    """
    loaded = storage.load()
    snap = loaded.snapshot
    applied = state_machine.applied_index
    applied_term = 0
    conf = bootstrap
    if snap is not None:
        conf = snap.meta.conf
        if applied < snap.meta.index:
            state_machine.restore(snap.data, snap.meta.index)
            applied = snap.meta.index
        applied_term = snap.meta.term
    # Replay membership changes up to the applied index so the driver's view
    # of the applied configuration is right after a restart.
    for entry in loaded.entries:
        if entry.index > applied:
            break
        applied_term = entry.term
        if entry.kind == EntryKind.CONFIG:
            conf = _apply_conf_change(conf, decode_conf_change(entry.data))
    core = RaftCore(
        node_id,
        config if config is not None else Config(),
        rng if rng is not None else random.Random(),
        hard_state=loaded.hard_state,
        snapshot=snap,
        entries=loaded.entries,
        conf=bootstrap,
        applied=applied,
    )
    return RaftNode(
        core,
        storage,
        transport,
        state_machine,
        conf=conf,
        applied_term=applied_term,
        tick_seconds=tick_seconds,
        snapshot_entries=snapshot_entries,
        snapshot_in_thread=snapshot_in_thread,
        on_conf_change=on_conf_change,
    )
