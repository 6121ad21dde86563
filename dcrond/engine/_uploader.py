"""``LogUploader``: attempts' logs into object storage, in order, across outages and restarts.

Theory of operation
-------------------
When an attempt ends, its spool file (in the runner's work dir) must reach
object storage under ``logs/<job>/<run>/<attempt>.log`` -- the key the
attempt's ``RunFinished`` records. Storage may be down at that moment (an S3
outage, a full or read-only disk), and the daemon may stop before it comes
back, so the upload is a *task in a durable queue* (a ``Journal``): ``put``
writes the task to disk and returns; ``run`` works through the queue in
order, oldest first, and removes a task (and the spool file) only once the
object is stored. A failure is retried with exponential backoff (from
``retry_min`` to ``retry_max`` seconds) without end: nothing is dropped
except a task whose source file is gone (reported as an error). Deleting
logs (retention) goes through the same queue, so a log pruned while its
upload is still pending is uploaded first and then deleted, never the other
way round.

Until its upload is done a log is *pending*: ``pending_source(key)`` gives
the local file, and the engine reads the log from there -- a reader never
sees a gap.

Pieces while an attempt runs (``follow``/``unfollow``, called by the worker
when an attempt starts or is re-adopted, and when it ends): so that other
hosts and the web page can read most of a long run's log before it ends,
the spool is uploaded in *pieces*, ``<key>.parts/<start offset>``, each
holding the bytes from its start offset to where the spool had got. A piece
goes once ``chunk_bytes`` new bytes are spooled, or ``chunk_every`` seconds
after the last piece if there is anything new; each new piece starts where
the last one ended, so the pieces tile the log from byte 0 (a restarted
daemon re-sends from 0: overlapping pieces hold the same bytes). Pieces are
immutable and never read by this host (it has the spool); a failed piece is
tried again at the next ``chunk_every``. They are a convenience, not the
record: the whole log is still uploaded from the spool when the attempt
ends (the queued task above), and only then are the pieces deleted (the
task carries ``parts`` so a restart deletes them too). A crash mid-way loses
nothing: the spool and the queue are on disk; stray pieces of a crashed
attempt go with its log when retention deletes it. ``chunk_every`` 0 turns
pieces off; storage without them (a test's fake) is simply not followed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

import trio

from dcrond.engine._journal import Journal
from dcrond.errors import StorageError
from dcrond.store._blobs import BlobStore, LogPartStore

log = logging.getLogger("dcrond.engine")

#: the most bytes one piece of a running attempt's log holds (one PUT, held in memory)
MAX_PIECE: Final = 8 * 1024 * 1024


@dataclass(slots=True)
class _Followed:
    """A running attempt whose spool is uploaded in pieces."""

    source: Path
    sent: int = 0  #: bytes of the spool stored as pieces (they tile [0, sent))
    last: float = -math.inf  #: trio time of the last piece (or failed try)
    failing: bool = False  #: the last try failed (logged once per outage)


@final
@dataclass(frozen=True, slots=True)
class UploaderStatistics:
    """Counters of one uploader (``/metrics`` shows them)."""

    pending: int  #: tasks in the queue (uploads and deletes)
    uploaded: int
    pieces: int  #: pieces of running attempts' logs stored
    following: int  #: running attempts whose logs go up in pieces
    deleted: int
    failures: int  #: tries that failed (each retried later)
    dropped: int  #: uploads whose source file had vanished
    last_error: str | None
    retrying: bool  #: the head of the queue is waiting to be tried again


@final
class LogUploader:
    """A durable, ordered queue of log uploads and deletions; see the module doc."""

    def __init__(
        self,
        blobs: BlobStore,
        folder: Path,
        *,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
        chunk_every: float = 0.0,
        chunk_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._blobs = blobs
        self._parts = blobs if chunk_every > 0 and isinstance(blobs, LogPartStore) else None
        self._chunk_every = chunk_every
        self._chunk_bytes = max(1, chunk_bytes)
        self._followed: dict[str, _Followed] = {}
        self._sent_pieces: set[str] = set()  #: keys that may have pieces in storage
        self._in_flight: dict[str, trio.Event] = {}  #: key -> set once its piece landed
        self._pieces = 0
        self._journal = Journal(folder)
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._pending: dict[str, Path] = {}
        for _seq, rec in self._journal.items():
            if rec.get("op") == "put":
                self._pending[str(rec["key"])] = Path(str(rec["source"]))
        self._wake = trio.Event()
        self._idle = trio.Event()
        self._uploaded = 0
        self._deleted = 0
        self._failures = 0
        self._dropped = 0
        self._last_error: str | None = None
        self._retrying = False

    # --- the queue ---------------------------------------------------------------

    def put(self, key: str, source: Path, *, remove_source: bool = True) -> None:
        """Queue the upload of the local file ``source`` to ``key`` (on disk at return).

        Stops uploading pieces of it (``unfollow``); pieces already stored are
        deleted once the whole log is.
        """
        self.unfollow(key)
        record: dict[str, object] = {
            "op": "put",
            "key": key,
            "source": str(source),
            "remove": remove_source,
        }
        if key in self._sent_pieces:
            record["parts"] = True
        self._journal.add(record)
        self._pending[key] = Path(source)
        self._kick()

    def follow(self, key: str, source: Path) -> None:
        """Upload the growing spool ``source`` of a running attempt in pieces under ``key``.

        A no-op when pieces are off or the storage keeps none.
        """
        if self._parts is not None and key not in self._followed:
            self._followed[key] = _Followed(Path(source))

    def unfollow(self, key: str) -> None:
        """Stop uploading pieces of ``key`` (its attempt ended)."""
        self._followed.pop(key, None)

    def delete(self, keys: list[str]) -> None:
        """Queue the deletion of stored logs (after any upload queued before)."""
        if keys:
            self._journal.add({"op": "delete", "keys": list(keys)})
            self._kick()

    def pending_source(self, key: str) -> Path | None:
        """The local file of a log whose upload is still queued, else None."""
        return self._pending.get(key)

    def pending(self) -> int:
        """Tasks in the queue."""
        return len(self._journal)

    def statistics(self) -> UploaderStatistics:
        """Counters since this uploader was created."""
        return UploaderStatistics(
            pending=len(self._journal),
            uploaded=self._uploaded,
            pieces=self._pieces,
            following=len(self._followed),
            deleted=self._deleted,
            failures=self._failures,
            dropped=self._dropped,
            last_error=self._last_error,
            retrying=self._retrying,
        )

    def _kick(self) -> None:
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._wake.set()

    async def wait_idle(self) -> None:
        """Return once the queue is empty."""
        while len(self._journal):
            await self._idle.wait()

    # --- the worker --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Work through the queue, and upload pieces, until cancelled (the queue stays on disk)."""
        async with trio.open_nursery() as nursery:
            if self._parts is not None:
                nursery.start_soon(self._pieces_loop, self._parts)
            task_status.started()
            await self._queue_loop()

    async def _queue_loop(self) -> None:
        delay = self._retry_min
        while True:
            head = self._journal.first()
            if head is None:
                self._idle.set()
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            seq, rec = head
            try:
                await self._do(rec)
            except (StorageError, OSError) as exc:
                self._failures += 1
                self._last_error = str(exc)
                self._retrying = True
                log.warning(
                    "log_upload_failed retry_in=%.1fs pending=%d error=%r",
                    delay,
                    len(self._journal),
                    str(exc),
                )
                await trio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            self._retrying = False
            delay = self._retry_min
            self._journal.remove(seq)
            if rec.get("op") == "put":
                key = str(rec["key"])
                if self._pending.get(key) == Path(str(rec["source"])):
                    del self._pending[key]
                if rec.get("remove", True):
                    with contextlib.suppress(OSError):
                        os.unlink(str(rec["source"]))

    async def _do(self, rec: dict[str, object]) -> None:
        op = rec.get("op")
        if op == "put":
            key = str(rec["key"])
            source = Path(str(rec["source"]))
            if not _exists(source):
                self._dropped += 1
                log.error("log_upload_source_missing key=%s source=%s", key, source)
                return  # its pieces, if any, stay: the only copy of that output
            await self._blobs.put_log(key, source)
            self._uploaded += 1
            if rec.get("parts") and isinstance(self._blobs, LogPartStore):
                in_flight = self._in_flight.get(key)
                if in_flight is not None:  # a piece sent just before the end: let it land first
                    await in_flight.wait()
                await self._blobs.delete_log_parts(key)
                self._sent_pieces.discard(key)
        elif op == "delete":
            keys = rec.get("keys")
            assert isinstance(keys, list)
            await self._blobs.delete([str(k) for k in keys])
            if isinstance(self._blobs, LogPartStore):
                for k in keys:  # pieces a crashed attempt left behind
                    await self._blobs.delete_log_parts(str(k))
            self._deleted += len(keys)
        else:
            log.error("log_upload_unknown_task record=%r", rec)

    # --- pieces of running attempts' logs -----------------------------------------------

    async def _pieces_loop(self, parts: LogPartStore) -> None:
        """Look at the followed spools a few times per ``chunk_every``; send what is due."""
        tick = min(1.0, self._chunk_every / 4)
        while True:
            await trio.sleep(tick)
            for key, followed in list(self._followed.items()):
                await self._send_pieces(parts, key, followed)

    async def _send_pieces(self, parts: LogPartStore, key: str, f: _Followed) -> None:
        size = _size(f.source)
        now = trio.current_time()
        if size is None or size <= f.sent:
            return
        if size - f.sent < self._chunk_bytes and now - f.last < self._chunk_every:
            return
        done = self._in_flight[key] = trio.Event()
        try:
            while f.sent < size and self._followed.get(key) is f:
                data = _read_at(f.source, f.sent, min(size - f.sent, MAX_PIECE))
                if not data:
                    return
                self._sent_pieces.add(key)  # before the call: it may land and still fail
                await parts.put_log_part(key, f.sent, data)
                f.sent += len(data)
                self._pieces += 1
                if f.failing:
                    log.info("log_piece_upload_resumed key=%s", key)
                f.failing = False
        except (StorageError, OSError) as exc:
            if not f.failing:
                log.warning("log_piece_upload_failed key=%s error=%r", key, str(exc))
            f.failing = True
        finally:
            f.last = trio.current_time()
            del self._in_flight[key]
            done.set()


def _size(path: Path) -> int | None:
    """A local file's size, or None if it is gone."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _read_at(path: Path, offset: int, size: int) -> bytes:
    """``size`` bytes of a local file from ``offset`` (fewer at its end; none if it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def _exists(path: Path) -> bool:
    """A local stat (microseconds: no need for a thread)."""
    return os.path.exists(path)
