"""Many small proposals, one log entry: the engine's run commands travel in batches.

Theory of operation
-------------------
Each run costs the log three commands (claimed, started, ended), and a
crowd of runs due at one instant makes hundreds at once. Proposed one by
one, every command pays for a log entry, a forward from a worker to the
leader, a waiter, and on every replica a decode and the session table's
bookkeeping. ``Batcher.propose`` instead queues the command; the batcher's
task lets every task that is ready now add its own (one scheduler pass,
``trio.lowlevel.checkpoint``), then proposes what is queued as one
``Batch`` entry (up to ``MAX_COMMANDS`` commands or ``MAX_BYTES`` bytes)
and hands each caller its own command's result. A command alone in the
queue goes as itself: a quiet cluster pays nothing for batching. Batches
do not wait for each other: under load one is sent per pass while the
previous ones commit.

Each command keeps its own session and request number, so everything a
caller relies on with ``Replica.propose`` holds: the store applies,
refuses or answers a command in a batch exactly as alone, in queue order;
an error (no leader, a timeout) reaches every caller of that batch, and a
caller that proposes its command again (``Context.propose``) is answered
once, whatever batch carries it. As with ``Replica.propose(retrying=True)``
a command stays outstanding in its session until it is answered or its
caller releases it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final, final

import trio

from dcrond.errors import DcronError, ProtocolError, Unavailable
from dcrond.replica import Replica
from dcrond.store import Applied, Command, Rejected, Result
from dcrond.store._commands import Batch
from dcrond.store._results import result_from_wire

log = logging.getLogger("dcrond.engine")

#: the most commands in one batch
MAX_COMMANDS: Final = 256
#: the most bytes of commands in one batch (a log entry may hold 1 MiB)
MAX_BYTES: Final = 256 * 1024


@dataclass(slots=True)
class _Pending:
    cmd: Command
    data: bytes
    done: trio.Event = field(default_factory=trio.Event)
    result: Result | None = None
    error: DcronError | None = None


@final
class Batcher:
    """Queues commands and proposes them in batches (see the module doc)."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self._queue: list[_Pending] = []
        self._wake = trio.Event()
        self._running = False
        self.batches = 0  #: entries proposed
        self.commands = 0  #: commands they carried

    @property
    def running(self) -> bool:
        """The batcher's task runs: ``propose`` will be answered."""
        return self._running

    async def propose(self, cmd: Command) -> Result:
        """Commit ``cmd`` in the next batch; its result, or the batch's DcronError."""
        pending = _Pending(cmd, cmd.encode())
        self._queue.append(pending)
        self._wake.set()
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send what is queued, a batch per scheduler pass, until cancelled."""
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    if not self._queue:
                        self._wake = trio.Event()
                        await self._wake.wait()
                    await trio.lowlevel.checkpoint()  # let every task ready now add its own
                    nursery.start_soon(self._send, self._take())
        finally:
            self._running = False
            for pending in self._queue:  # nobody will send them: their callers try again
                pending.error = Unavailable("the engine is stopping")
                pending.done.set()
            self._queue = []

    def _take(self) -> list[_Pending]:
        queue = self._queue
        size, n = 0, 0
        while n < len(queue) and n < MAX_COMMANDS:
            size += len(queue[n].data)
            if n and size > MAX_BYTES:
                break
            n += 1
        batch, self._queue = queue[:n], queue[n:]
        return batch

    async def _send(self, batch: list[_Pending]) -> None:
        replica = self._replica
        try:
            if len(batch) == 1:
                results = [await replica.propose_encoded(batch[0].data, what=batch[0].cmd)]
            else:
                data = Batch(tuple(p.data for p in batch)).encode()
                results = _unbatch(await replica.propose_encoded(data), len(batch))
        except DcronError as exc:
            for pending in batch:  # still outstanding: the callers retry or release them
                pending.error = exc
                pending.done.set()
            return
        except BaseException:
            for pending in batch:
                pending.error = Unavailable("the batch was not sent")
                pending.done.set()
            raise
        self.batches += 1
        self.commands += len(batch)
        for pending, result in zip(batch, results, strict=True):
            replica.release(pending.cmd)  # answered
            pending.result = result
            pending.done.set()


def _unbatch(result: Result, n: int) -> list[Result]:
    """One result per command from a batch entry's result."""
    if isinstance(result, Rejected):  # the whole batch refused (it should not be)
        return [result] * n
    items = result.value.get("results") if isinstance(result, Applied) else None
    if not isinstance(items, list) or len(items) != n:
        raise ProtocolError(f"a batch of {n} commands was answered with {result!r:.100}")
    return [result_from_wire(item) for item in items]
