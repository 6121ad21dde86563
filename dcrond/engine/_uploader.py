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
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import final

import trio

from dcrond.engine._journal import Journal
from dcrond.errors import StorageError
from dcrond.store._blobs import BlobStore

log = logging.getLogger("dcrond.engine")


@final
@dataclass(frozen=True, slots=True)
class UploaderStatistics:
    """Counters of one uploader (``/metrics`` shows them)."""

    pending: int  #: tasks in the queue (uploads and deletes)
    uploaded: int
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
    ) -> None:
        self._blobs = blobs
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
        """Queue the upload of the local file ``source`` to ``key`` (on disk at return)."""
        self._journal.add({"op": "put", "key": key, "source": str(source), "remove": remove_source})
        self._pending[key] = Path(source)
        self._kick()

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
        """Work through the queue until cancelled (the queue stays on disk)."""
        task_status.started()
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
            source = Path(str(rec["source"]))
            if not _exists(source):
                self._dropped += 1
                log.error("log_upload_source_missing key=%s source=%s", rec["key"], source)
                return
            await self._blobs.put_log(str(rec["key"]), source)
            self._uploaded += 1
        elif op == "delete":
            keys = rec.get("keys")
            assert isinstance(keys, list)
            await self._blobs.delete([str(k) for k in keys])
            self._deleted += len(keys)
        else:
            log.error("log_upload_unknown_task record=%r", rec)


def _exists(path: Path) -> bool:
    """A local stat (microseconds: no need for a thread)."""
    return os.path.exists(path)
