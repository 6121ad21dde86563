"""A snapshot taken off the event loop: the image copied and its file written in worker threads.

Theory of operation
-------------------
Every ``snapshot_entries`` applied entries the driver snapshots the state
machine and compacts the log. For the job table at 100,000 jobs that is
~0.3 s to copy the table and ~0.4 s to store ~88 MB durably: done on the
event loop it stalled every timer of the daemon (and Raft's heartbeats) for
that long. So a state machine that can (:class:`PinsSnapshots`) pins an
image of itself at its applied index on the loop -- a cheap read
transaction -- and the driver hands the rest to a :class:`SnapshotJob`:

1. on the loop, at the end of a Ready batch: ``snapshot_begin()`` pins the
   image at the applied index; the job records the ``SnapshotMeta`` of that
   index (term and membership as the driver applied them);
2. in a worker thread: ``image.read()`` copies the pinned image to bytes,
   while the loop goes on applying entries to the state machine;
3. in a worker thread: ``LogStorage.write_snapshot`` writes them to their
   own file and fsyncs it, while the loop goes on saving entries to the log;
4. on the loop, holding the core lock (so no Ready is half-handled):
   ``LogStorage.compact`` installs the file with one short transaction and
   ``RaftCore.compact`` drops the entries from memory.

One job at a time. A job is *discarded* -- its threads told to stop at their
next step, its file deleted, nothing installed -- when a snapshot from the
leader is restored meanwhile (the image is then of a table that no longer
exists, and the log was replaced) and when the node shuts down (a cancelled
thread is abandoned; it stops on its own at its next step).

State machines without ``snapshot_begin`` (the simulator's, tests'
in-memory ones) and drivers told ``snapshot_in_thread=False`` (the
deterministic simulators: a thread would make a run depend on the OS
scheduler) snapshot synchronously, as before.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar, final, runtime_checkable

import trio

from dcrond.errors import StorageError
from dcrond.raft._storage import LogStorage
from dcrond.raft._storage_snapfile import SnapshotFile
from dcrond.raft._types import Snapshot, SnapshotMeta

T = TypeVar("T")


class SnapshotImage(Protocol):
    """A state machine's image pinned at one applied index, to be copied in another thread."""

    @property
    def index(self) -> int:
        """The applied index the image holds."""
        ...

    def read(self) -> bytes:
        """The image as ``snapshot()`` would have returned it at ``index``; once, any thread."""
        ...

    def close(self) -> None:
        """Let go of it (any thread); a ``read`` under way raises soon after."""
        ...


@runtime_checkable
class PinsSnapshots(Protocol):
    """What a state machine adds to be snapshotted off the event loop (optional)."""

    def snapshot_begin(self) -> SnapshotImage | None:
        """Pin the image at the applied index now; None: use ``snapshot()`` this time."""
        ...


@final
class SnapshotJob:
    """One snapshot under way (see the module doc); the driver installs what ``write`` returns."""

    def __init__(self, meta: SnapshotMeta, base: int, image: SnapshotImage) -> None:
        self.meta = meta
        #: the driver's snapshot index when the job began: a restore changes it
        self.base = base
        self.image = image
        self._stop = threading.Event()
        self._written: SnapshotFile | None = None
        self._installed = False

    @property
    def discarded(self) -> bool:
        """True once given up (by ``discard``, or by a cancellation)."""
        return self._stop.is_set()

    def discard(self) -> None:
        """Give the job up: its threads stop at their next step; nothing will be installed."""
        self._stop.set()
        self.image.close()

    async def write(self, storage: LogStorage) -> tuple[Snapshot, SnapshotFile] | None:
        """Copy the image and write its file, both in worker threads; None once discarded."""
        data = await self._in_thread(self.image.read)
        if data is None or self.discarded:
            return None
        snapshot = Snapshot(self.meta, data)
        write = functools.partial(storage.write_snapshot, snapshot, stop=self._stop.is_set)
        self._written = await self._in_thread(write)
        if self._written is None or self.discarded:
            return None  # ``close`` deletes a file written all the same
        return snapshot, self._written

    def installed(self) -> None:
        """The driver installed the file: ``close`` must leave it alone."""
        self._installed = True

    def close(self, storage: LogStorage) -> None:
        """Release the image, and delete the file unless it was installed."""
        self.image.close()
        if self._written is not None and not self._installed:
            storage.discard_snapshot(self._written)

    async def _in_thread(self, fn: Callable[[], T]) -> T | None:
        if self.discarded:
            return None
        try:
            result = await trio.to_thread.run_sync(fn, abandon_on_cancel=True)
        except trio.Cancelled:
            self.discard()  # the abandoned thread stops at its next step
            raise
        except StorageError:
            if self._stop.is_set():  # it stopped because we told it to
                return None
            raise
        return result
