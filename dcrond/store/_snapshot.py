"""Images of the job table: one pinned at an applied index on the loop, copied in a thread.

Theory of operation
-------------------
A snapshot is SQLite's backup API into an in-memory database, serialized to
bytes (:func:`image_of`). On the store's own connection that takes ~0.3 s for
100,000 jobs, and the connection -- so the Raft driver that applies entries
to it -- can do nothing else meanwhile; apsw also refuses to let two threads
use one connection at once.

So :func:`pin` opens a *second*, read-only connection to the same WAL file
and starts a read transaction on it, on the caller's thread, between two
applies. From then on that connection sees the table exactly as it was: a
WAL reader keeps its view while the writer commits more. Its ``meta`` row
says at which applied index, and ``pin`` checks that this is the index the
store says it applied. :meth:`PinnedImage.read` then copies that view in a
worker thread while the store's connection goes on applying on the loop:
each connection is only ever used by one thread at a time. The backup runs in
steps, and :meth:`PinnedImage.close` (from any thread) makes the next step
stop, so an image nobody wants any more costs at most one step.

In the thread the copy goes through a scratch file beside the table
(``<table>.image-<pid>-<n>``, deleted right after; a crash's leftover is
deleted when the table is next opened), not through an in-memory database:
apsw holds the GIL while it serializes one (~0.1-0.25 s for 100,000 jobs,
measured), which would stall the event loop as much as the copy it saves.
Writing the file and reading it back release the GIL throughout.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from typing import Final, final

import apsw

from dcrond.errors import StorageError

#: pages copied between two looks at ``close`` (4 MB with SQLite's default page size)
_STEP_PAGES: Final = 1024
#: what follows a table's file name in the name of a scratch file
SCRATCH_INFIX: Final = ".image-"
#: numbers the scratch files of this process (an abandoned copy may still write its own)
_scratch_serial = itertools.count(1)


def _copy(dest: apsw.Connection, conn: apsw.Connection, stop: threading.Event | None) -> None:
    with dest.backup("main", conn, "main") as backup:
        while not backup.done:
            if stop is not None and stop.is_set():
                raise StorageError("the snapshot was abandoned while it was copied")
            backup.step(_STEP_PAGES)


def image_of(conn: apsw.Connection) -> bytes:
    """The database of ``conn`` as bytes, through an in-memory copy (quick, holds the GIL)."""
    try:
        mem = apsw.Connection(":memory:")
        try:
            _copy(mem, conn, None)
            data = bytearray(mem.serialize("main") or b"")
        finally:
            mem.close()
    except apsw.Error as exc:
        raise StorageError(f"snapshot failed: {exc}") from exc
    # The image copies the file's header, which says "WAL"; an in-memory
    # database opened from it must read it as a rollback-journal file.
    data[18] = data[19] = 1
    return bytes(data)


def image_via_file(conn: apsw.Connection, scratch: str, stop: threading.Event) -> bytes:
    """``image_of``, through the file ``scratch``: the same bytes, the GIL released throughout.

    StorageError when ``stop`` is set before the copy is done, or the disk
    or SQLite fails. ``scratch`` is removed in every case.
    """
    try:
        dest = apsw.Connection(scratch)
        try:
            dest.pragma("journal_mode", "OFF")
            dest.pragma("synchronous", "OFF")
            _copy(dest, conn, stop)
        finally:
            dest.close()
        with open(scratch, "r+b") as f:
            os.pwrite(f.fileno(), b"\x01\x01", 18)  # as in image_of
            return f.read()
    except (apsw.Error, OSError) as exc:
        raise StorageError(f"snapshot failed: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)


def remove_scratch(path: str) -> None:
    """Delete the scratch files a crash left beside the table at ``path``."""
    folder, prefix = os.path.split(os.path.abspath(path))
    prefix += SCRATCH_INFIX
    with os.scandir(folder) as it:
        names = [e.name for e in it if e.name.startswith(prefix)]
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, name))


@final
class PinnedImage:
    """The job table as it was at applied index ``index``, to copy once in any thread."""

    def __init__(self, conn: apsw.Connection, index: int, scratch: str) -> None:
        self._conn: apsw.Connection | None = conn
        self._index = index
        self._scratch = scratch
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @property
    def index(self) -> int:
        """The applied index the image holds (its ``meta`` row says so too)."""
        return self._index

    def read(self) -> bytes:
        """The image as bytes, as ``JobStore.snapshot()`` gives them; call once, from any thread.

        StorageError when it was closed first (or meanwhile), or SQLite fails.
        """
        with self._lock:
            conn, self._conn = self._conn, None  # from here on only this thread uses it
        if conn is None or self._stop.is_set():
            if conn is not None:
                conn.close()
            raise StorageError(f"the snapshot at {self._index} was closed before it was read")
        try:
            return image_via_file(conn, self._scratch, self._stop)
        finally:
            conn.close()

    def close(self) -> None:
        """Let go of the image (any thread): a ``read`` under way stops at its next step."""
        self._stop.set()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def pin(path: str, applied: tuple[int, int]) -> PinnedImage:
    """Open a read transaction on the job table at ``path``: the image it sees stays put.

    ``applied`` is the (index, term) the store's own connection has committed;
    the pinned ``meta`` row must say the same (StorageError otherwise: the
    caller has a write transaction open, or a bug).
    """
    try:
        conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as exc:
        raise StorageError(f"job table {path}: cannot open it to snapshot: {exc}") from exc
    try:
        conn.execute("BEGIN")
        # The first read starts the transaction: this is the moment the image is pinned.
        row = conn.execute("SELECT applied_index, applied_term FROM meta WHERE id = 0").fetchone()
        if row is None or (row[0], row[1]) != applied:
            raise StorageError(
                f"job table {path}: the file holds applied (index, term) {row}, "
                f"the store says {applied}"
            )
    except BaseException as exc:
        conn.close()
        if isinstance(exc, apsw.Error):
            raise StorageError(f"job table {path}: cannot snapshot: {exc}") from exc
        raise
    scratch = f"{path}{SCRATCH_INFIX}{os.getpid()}-{next(_scratch_serial)}"
    return PinnedImage(conn, applied[0], scratch)
