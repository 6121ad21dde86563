"""One node's handle on the replicated job table: propose commands, read the local copy.

Theory of operation
-------------------
Every change to jobs and runs is a ``dcrond.store`` command that goes through
the Raft log; every node applies the same commands in the same order to its
own ``JobStore``. ``Replica`` is the one place that turns a command into a
log entry and waits for its result, so the RPC handlers, the scheduler and
the runner share one write path.

* **Times travel inside commands**: ``now_ms()`` reads this host's wall clock
  *before* proposing; ``apply`` never reads a clock.
* **Exactly-once proposals**: each ``Replica`` has its own client session (a
  random id per process) and numbers its requests. A proposal whose outcome
  is unknown (a timeout) is retried with the *same* session and number, and
  the store answers a retry with the first answer instead of applying it
  twice. ``acked`` tells the store which answers it may forget: everything
  below the oldest request still outstanding.
* **Watching the table**: the engine (scheduler and runner) must react to
  applied commands — a new job, a run assigned to this host. ``watch``
  registers a callback that runs right after each command is applied, on
  every node, with the command and its result; a snapshot restore (the table
  replaced wholesale) calls it with ``None`` so the watcher reloads.
  Callbacks run inside the Raft driver's apply step: they must be quick and
  must not block (start a task or set an event instead).
"""

from __future__ import annotations

import heapq
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import final

import trio

from dcrond.errors import NotLeader, Unavailable
from dcrond.raft._node import RaftNode
from dcrond.raft._types import Entry, Role
from dcrond.store import Applied, Command, JobStore, Rejected, Result
from dcrond.store._results import decode_result, encode_result
from dcrond.store._snapshot import PinnedImage

log = logging.getLogger("dcrond.replica")

#: send an encoded command to the named leader; its encoded result (``dcrond.forward``)
Forward = Callable[[str, bytes], Awaitable[bytes]]

#: ``watch`` callback: the applied command and its result, or (None, None) after a restore
Watcher = Callable[[Command | None, Result | None], None]


@final
class ReplicatedTable:
    """The Raft state machine: the job table plus the watchers of what is applied."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.watchers: list[Watcher] = []

    def apply_many(self, entries: Sequence[Entry]) -> list[object]:
        """Apply a batch of committed entries (one transaction), then tell the watchers."""
        results, done = self.store.apply_commands(entries)
        if self.watchers:
            for cmd, result in done:
                if not isinstance(result, Applied):
                    continue
                for watcher in self.watchers:
                    try:
                        watcher(cmd, result)
                    except Exception:  # a watcher's bug must not stop the log
                        log.exception("watcher failed on %s", type(cmd).__name__)
        return list(results)

    def snapshot(self) -> bytes:
        return self.store.snapshot()

    def snapshot_begin(self) -> PinnedImage | None:
        """The table's image pinned now, to read in a worker thread (``RaftNode``'s option)."""
        return self.store.snapshot_begin()

    def restore(self, data: bytes, index: int) -> None:
        self.store.restore(data, index)
        for watcher in self.watchers:
            try:
                watcher(None, None)
            except Exception:
                log.exception("watcher failed on restore")

    @property
    def applied_index(self) -> int:
        return self.store.applied_index


@final
class Replica:
    """Propose commands to the log and read this node's copy of the job table."""

    def __init__(
        self,
        node: RaftNode,
        table: ReplicatedTable,
        *,
        name: str,
        wall_clock: Callable[[], float] = time.time,
        propose_timeout: float = 10.0,
        forward: Forward | None = None,
    ) -> None:
        self.node = node
        self.table = table
        self.name = name
        self._wall_clock = wall_clock
        self._timeout = propose_timeout
        self._forward = forward
        self.session = f"{name}/{os.urandom(6).hex()}"
        self._seq = 0
        self._outstanding: set[int] = set()
        #: the outstanding numbers as a heap, with numbers no longer outstanding left in it
        #: until they reach the top: the lowest one in O(log n), not min() over the set
        #: (which, with thousands in flight on an overloaded leader, took 2/3 of its time)
        self._lowest: list[int] = []

    @property
    def store(self) -> JobStore:
        """This node's copy of the job table (read it; never write it directly)."""
        return self.table.store

    def now_ms(self) -> int:
        """This host's wall clock in integer milliseconds (what commands carry)."""
        return int(self._wall_clock() * 1000)

    def next_request(self) -> tuple[str, int, int]:
        """A new (session, seq, acked) for a command; pass them to the command's constructor."""
        self._seq += 1
        seq = self._seq
        lowest, outstanding = self._lowest, self._outstanding
        while lowest and lowest[0] not in outstanding:
            heapq.heappop(lowest)
        acked = (lowest[0] if lowest else seq) - 1
        outstanding.add(seq)
        heapq.heappush(lowest, seq)
        return self.session, seq, acked

    def stamp(self, actor: str) -> dict[str, object]:
        """The common command fields: ``Cmd(**replica.stamp(actor), ...)``."""
        session, seq, acked = self.next_request()
        return {
            "now": self.now_ms(),
            "actor": actor,
            "session": session,
            "seq": seq,
            "acked": acked,
        }

    async def propose(self, cmd: Command, *, attempts: int = 5, retrying: bool = False) -> Result:
        """Commit ``cmd`` and return the store's result (``unwrap`` it for the user).

        On a follower the command is forwarded to the leader (when this
        replica has a forwarder). A timeout, a lost leader or a failed forward
        is retried with the same request number (so it is applied once at
        most); the last error is raised when ``attempts`` run out.

        Until the call ends the request counts as outstanding: later commands
        of this session do not acknowledge it. ``retrying``: the caller will
        propose the same command again after an error, so it stays
        outstanding then too (until ``release``) -- otherwise the store would
        refuse the retry as an already answered request.
        """
        answered = False
        try:
            result = await self.propose_encoded(cmd.encode(), attempts=attempts, what=cmd)
            answered = True
            return result
        finally:
            if cmd.session == self.session and (answered or not retrying):
                self._outstanding.discard(cmd.seq)

    async def propose_encoded(
        self, data: bytes, *, attempts: int = 5, what: Command | None = None
    ) -> Result:
        """Commit an encoded command or batch, forwarded to the leader when this node is not it.

        ``propose`` without the bookkeeping of the session's outstanding
        requests (the caller's: a ``Batch`` carries several requests).
        ``what`` names the request in the log when it is retried.
        """
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                return await self.propose_data(data)
            except NotLeader as exc:
                if self._forward is None or last:
                    raise
                leader = exc.leader or self.leader
                if leader is None or leader == self.name:
                    await self._wait_for_leader()
                    continue
                try:
                    return decode_result(await self._forward(leader, data))
                except (NotLeader, Unavailable) as fwd:
                    if last:
                        raise
                    log.info("forward_retry to=%s reason=%r", leader, str(fwd))
                    await self._wait_for_leader(changed_from=leader)
            except Unavailable:
                if last:
                    raise
                name = "a batch" if what is None else f"request {what.session}/{what.seq}"
                log.warning("%s timed out; retrying", name)
        raise Unavailable("unreachable")  # pragma: no cover

    def release(self, cmd: Command) -> None:
        """The caller gave up on ``cmd`` (proposed with ``retrying``): it no longer counts."""
        if cmd.session == self.session:
            self._outstanding.discard(cmd.seq)

    async def propose_data(self, data: bytes) -> Result:
        """Commit an encoded command on this node (NotLeader unless it leads)."""
        result = await self.node.propose(data, timeout=self._timeout)
        if result is None:  # re-delivered entry: the answer is unknown here
            raise Unavailable("outcome unknown; retry")
        if not isinstance(result, Applied | Rejected):
            raise TypeError(f"the state machine answered {result!r}")
        return result

    async def propose_forwarded(self, data: bytes) -> bytes:
        """What ``raft.propose`` runs on the leader: commit and encode the result."""
        return encode_result(await self.propose_data(data))

    async def _wait_for_leader(self, changed_from: str | None = None) -> None:
        with trio.move_on_after(2.0):
            while self.leader is None or self.leader == changed_from:
                await self.node.wait_changed()
        await trio.sleep(0.05)

    def watch(self, watcher: Watcher) -> None:
        """Call ``watcher`` after every applied command on this node (see module doc)."""
        self.table.watchers.append(watcher)

    def is_leader(self) -> bool:
        """True while this node leads the log (and so runs the scheduler)."""
        return self.node.core.role == Role.LEADER

    @property
    def leader(self) -> str | None:
        """The leader this node knows of, if any."""
        return self.node.core.leader

    @property
    def term(self) -> int:
        """The current Raft term (a new term means a new leader)."""
        return self.node.core.term

    async def wait_role_change(self) -> None:
        """Return after the next round of Raft processing that changed role or term."""
        role, term = self.node.core.role, self.node.core.term
        while (self.node.core.role, self.node.core.term) == (role, term):
            await self.node.wait_changed()

    async def read_barrier(self, *, patience: float = 5.0) -> None:
        """Wait until this node's copy reflects every write committed before the call.

        While there is no leader (an election, a restart) it keeps asking for
        up to ``patience`` seconds; then NotLeader.
        """
        deadline = trio.current_time() + patience
        while True:
            try:
                await self.node.read_barrier()
                return
            except NotLeader:
                if trio.current_time() >= deadline:
                    raise
                with trio.move_on_at(deadline):
                    await self.node.wait_changed()
