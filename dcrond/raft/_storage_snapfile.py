"""Snapshot images in their own files beside the Raft log, so they can be written off the loop.

Theory of operation
-------------------
A state machine image is big (~88 MB for a table of 100,000 jobs). Written as a
row of ``raft.db`` it would go through SQLite's WAL, be fsync'd and copied again
by the checkpoint, all on the one connection that also saves new entries, so
Raft could do nothing else meanwhile (~0.4 s measured). So the bytes live in a
file of their own next to the log, ``<log>.snap-<index>-<term>-<random>``, and
the ``snapshot`` row holds the file's name and the CRC over (index, term,
membership, bytes), as it held the bytes before (format version 2).

Installing a snapshot takes three steps, and a crash may cut any of them:

1. :func:`write_image` writes the bytes to ``<log>.snap-tmp-<random>``, fsyncs
   it, renames it to its final name and fsyncs the folder. It uses no SQLite
   connection, so it may run in a worker thread while the log is in use;
2. one transaction of the log points the row at the new file (and deletes the
   entries the snapshot covers); it is fsync'd;
3. the previous file is deleted.

A crash before step 2 leaves the old row and a file nobody names; a crash
after it, a row naming a file that is already durable (step 1 synced it
first); a crash before step 3, the old file, named by nobody. Files named by
nobody are deleted when the log is next opened (:func:`remove_unreferenced`).
The random part keeps two images of the same index and term (a local one
being written while the leader's arrives, say) from ever sharing a name.

With ``sync=False`` nothing is fsync'd, as for the rest of the log: a process
crash loses nothing, a power cut may.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, final

from dcrond.errors import StorageError
from dcrond.raft._storage_format import encode_conf, snapshot_crc
from dcrond.raft._types import SnapshotMeta

#: bytes written between two looks at ``stop`` (and two GIL releases)
_CHUNK: Final = 8 << 20


@final
@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A snapshot's bytes, durable in their own file, not yet named by the log.

    Made by ``LogStorage.write_snapshot``; hand it to ``LogStorage.compact``
    to install it, or to ``LogStorage.discard_snapshot`` to drop it.
    """

    meta: SnapshotMeta
    name: str  #: the file's name in the log's folder
    crc: int  #: the row's CRC over index, term, membership and bytes
    size: int


def folder_of(log_path: str) -> str:
    """The folder that holds the log and its snapshot files."""
    return os.path.dirname(os.path.abspath(log_path))


def _prefix(log_path: str) -> str:
    return os.path.basename(log_path) + ".snap-"


def write_image(
    log_path: str,
    meta: SnapshotMeta,
    data: bytes,
    *,
    sync: bool,
    stop: Callable[[], bool] | None = None,
) -> SnapshotFile:
    """Write ``data`` to a new snapshot file beside the log (step 1 above).

    ``stop`` is asked between chunks; when it says True the partial file is
    removed and StorageError raised (the caller gave up on this snapshot).
    StorageError too when the disk fails; nothing is left behind then.
    """
    folder, prefix = folder_of(log_path), _prefix(log_path)
    token = secrets.token_hex(4)
    tmp = os.path.join(folder, f"{prefix}tmp-{token}")
    name = f"{prefix}{meta.index}-{meta.term}-{token}"
    crc = snapshot_crc(meta.index, meta.term, encode_conf(meta.conf), data)
    view = memoryview(data)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for start in range(0, len(view), _CHUNK):
                if stop is not None and stop():
                    raise StorageError(f"snapshot {meta.index} was abandoned while written")
                chunk = view[start : start + _CHUNK]
                while chunk:
                    chunk = chunk[os.write(fd, chunk) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(folder, name))
        if sync:
            sync_folder(folder)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise StorageError(f"raft log {log_path}: cannot write snapshot: {exc}") from exc
        raise
    return SnapshotFile(meta, name, crc, len(data))


def read_image(log_path: str, name: str) -> bytes:
    """The bytes of the snapshot file ``name``; OSError if it cannot be read."""
    if os.sep in name or name in (".", "..") or not name.startswith(_prefix(log_path)):
        raise OSError(f"{name!r} is not a snapshot file of this log")
    with open(os.path.join(folder_of(log_path), name), "rb") as f:
        return f.read()


def image_size(log_path: str, name: str | None) -> int:
    """The size of the snapshot file ``name`` (0 when there is none)."""
    if name is None:
        return 0
    try:
        return os.stat(os.path.join(folder_of(log_path), name)).st_size
    except OSError:
        return 0


def remove(log_path: str, name: str) -> None:
    """Delete the snapshot file ``name`` if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(folder_of(log_path), name))


def remove_unreferenced(log_path: str, keep: str | None) -> list[str]:
    """Delete every snapshot file of this log but ``keep``; return the names deleted.

    Only safe while nothing writes one (at open: the log is locked to us).
    """
    folder, prefix = folder_of(log_path), _prefix(log_path)
    removed = []
    with os.scandir(folder) as it:
        names = [e.name for e in it if e.name.startswith(prefix) and e.name != keep]
    for name in names:
        remove(log_path, name)
        removed.append(name)
    return removed


def sync_folder(folder: str) -> None:
    """fsync a folder, so that the names created or renamed in it are durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
