"""An attempt's output: from its pipe into a capped spool file, and followed live.

The pump reads the attempt's pipe as data arrives and appends it, as raw
bytes, to one spool file per attempt, created with the first byte (an
attempt that prints nothing has no spool: creating a file is the costliest
step of a start on a busy disk); nothing is decoded, so any byte
sequence is kept exactly. Once ``cap`` bytes are kept, further output is
still read (the job never blocks on a full pipe) but only counted; when the
attempt ends, :meth:`OutputPump.seal` appends a trailer line that says how
much was dropped. Readers decode with ``errors="replace"``.

Followers (``dcronctl run logs --follow``) read the spool file from an offset
and wait on the pump's ``changed`` event for more; the event is replaced on
every write, so a follower that took it before reading can never miss one.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator
from typing import final

import trio

CHUNK = 64 * 1024


def trailer(kept: int, discarded: int, *, complete: bool = True) -> bytes:
    """The line appended to a truncated spool."""
    some = "" if complete else "at least "
    return (
        f"[dcrond: output truncated after {kept} bytes; {some}{discarded} bytes discarded]\n"
    ).encode()


@final
class OutputPump:
    """Copies one attempt's output pipe into its spool file, up to a cap."""

    def __init__(
        self, read_fd: int | None, spool: str, cap: int, *, kept: int = 0, fresh: bool = True
    ) -> None:
        self._read_fd = read_fd  #: None when the pipe is gone (an attempt that ended offline)
        self._spool = spool
        #: opened on the first write; a fresh spool replaces any older file of that name
        self._spool_fd: int | None = None
        self._spool_flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if fresh else 0)
        self.cap = cap
        self.kept = kept  #: bytes of output in the spool
        self.discarded = 0  #: bytes read after the cap was reached
        #: False after a restart once the cap was reached: bytes dropped before it were not counted
        self.count_complete = kept < cap
        self.write_error: str | None = None
        self._last = b"\n"
        self.eof = trio.Event()
        if read_fd is None:
            self.eof.set()
        self.changed = trio.Event()
        self.sealed = False

    @property
    def truncated(self) -> bool:
        """Some output was dropped."""
        return self.discarded > 0 or not self.count_complete

    def _open_spool(self) -> int:
        if self._spool_fd is None:
            self._spool_fd = os.open(self._spool, self._spool_flags, 0o600)
        return self._spool_fd

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def _store(self, data: bytes) -> None:
        room = self.cap - self.kept
        if self.write_error is not None:
            room = 0
        keep = data[:room] if room < len(data) else data
        if keep:
            view = memoryview(keep)
            try:
                fd = self._open_spool()
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as e:
                # a full disk must not stop the job or the daemon: count it as dropped
                self.write_error = os.strerror(e.errno) if e.errno else str(e)
                keep = keep[: len(keep) - len(view)]
            self.kept += len(keep)
            if keep:
                self._last = keep[-1:]
        self.discarded += len(data) - len(keep)
        self._notify()

    def _read_available(self) -> bool:
        """Read what the pipe holds now; True at end of file."""
        assert self._read_fd is not None
        while True:
            try:
                data = os.read(self._read_fd, CHUNK)
            except BlockingIOError:
                return False
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise
            if not data:
                return True
            self._store(data)

    async def run(self) -> None:
        """Pump until every writer has closed the pipe (or until cancelled)."""
        while self._read_fd is not None and not self.eof.is_set():
            await trio.lowlevel.wait_readable(self._read_fd)
            if self._read_available():
                self.eof.set()

    def drain_nowait(self) -> None:
        """Take whatever is in the pipe right now, without waiting."""
        if self._read_fd is not None and not self.eof.is_set() and self._read_available():
            self.eof.set()

    def close_pipe(self) -> None:
        """Stop reading: writers still holding the pipe get SIGPIPE from now on."""
        if self._read_fd is not None:
            trio.lowlevel.notify_closing(self._read_fd)
            os.close(self._read_fd)
            self._read_fd = None

    def seal(self, note: str | None = None) -> None:
        """Append the truncation trailer (and an optional note) and close the spool."""
        if self.sealed:
            return
        self.close_pipe()
        extra = b""
        if self.truncated:
            extra += trailer(self.kept, self.discarded, complete=self.count_complete)
        if self.write_error is not None:
            extra += f"[dcrond: could not write output: {self.write_error}]\n".encode()
        if note is not None:
            extra += f"[dcrond: {note}]\n".encode()
        if extra and self._last != b"\n":
            extra = b"\n" + extra
        if extra:
            with contextlib.suppress(OSError):
                os.write(self._open_spool(), extra)
        if self._spool_fd is not None:
            os.close(self._spool_fd)
            self._spool_fd = None
        self.sealed = True
        self._notify()

    def detach(self) -> None:
        """Close everything without a trailer: the attempt continues without us."""
        self.close_pipe()
        if self._spool_fd is not None:
            os.close(self._spool_fd)
            self._spool_fd = None


@final
class Follower:
    """Async iterator over a spool file's bytes from ``offset`` until its attempt ends.

    With ``pump`` None the attempt is already over: the file is read to its
    end and the iteration stops.
    """

    def __init__(self, path: str, offset: int, pump: OutputPump | None) -> None:
        self._path = path
        self._offset = offset
        self._pump = pump
        self._done = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    def _read(self) -> bytes:
        try:
            fd = os.open(self._path, os.O_RDONLY)
        except FileNotFoundError:
            return b""  # nothing printed yet
        try:
            return os.pread(fd, CHUNK, self._offset)
        finally:
            os.close(fd)

    async def __anext__(self) -> bytes:
        while not self._done:
            pump = self._pump
            # take the event before reading, so a write in between cannot be missed
            changed = pump.changed if pump is not None else None
            sealed = pump is None or pump.sealed
            data = self._read()
            if data:
                self._offset += len(data)
                await trio.lowlevel.checkpoint()
                return data
            if sealed:
                break
            assert changed is not None
            await changed.wait()
        self._done = True
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop following early."""
        self._done = True
        await trio.lowlevel.checkpoint()
