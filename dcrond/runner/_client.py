"""The runner's end of its spawner (``_spawner``): starting it, requests and replies.

One ``SpawnerClient`` per spawner process. ``spawn`` sends a request at
once, on the calling task, without a checkpoint (the job is started by
another process, so the daemon's own latency is off its path); when the
socket's buffer is full, requests queue in order and a flusher task sends
them as it drains. Replies are read by one reader task per client and
handed to the waiter of each request (an ``Attempt``): ``spawned(pid)``,
``spawn_failed(text)``, ``exited(code, signal)``, or ``spawner_lost()``
when the spawner's end closed (it was killed, or crashed).

The reader and the flusher are trio *system* tasks, started on first use:
a runner has no nursery of its own, and its attempts are run from many
callers' nurseries. They end when the client is closed or the run ends.

``close()`` closes our end of the socket; the spawner then takes no more
requests and exits once its last job has ended (at once when it has none,
and then ``close`` also reaps it).
"""

from __future__ import annotations

import array
import contextlib
import marshal
import os
import socket
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any, Protocol, final

import trio

#: the spawner program (a standalone script: see its docstring)
SPAWNER = str(Path(__file__).with_name("_spawner.py"))
#: requests bigger than this go in a memfd (the spawner reads 64 KiB packets)
MAX_PACKET = 60_000
#: how long ``close`` waits for a spawner with no children to exit
CLOSE_WAIT = 2.0

#: spawners closed while they still had jobs; polled (reaped) now and then
_parked: list[subprocess.Popen[bytes]] = []


def _reap_parked() -> None:
    _parked[:] = [p for p in _parked if p.poll() is None]


class Waiter(Protocol):
    """What a request's replies are reported to."""

    def spawned(self, pid: int) -> None: ...
    def spawn_failed(self, text: str) -> None: ...
    def exited(self, code: int | None, sig: int | None) -> None: ...
    def spawner_lost(self) -> None: ...


@final
class SpawnerClient:
    """A running spawner and the socket to it."""

    def __init__(self) -> None:
        _reap_parked()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with contextlib.suppress(OSError):
                ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", SPAWNER, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock: socket.socket | None = ours
        self._next_id = 0
        self._waiters: dict[int, Waiter] = {}
        #: requests whose job may still run (no "exited" or "error" seen yet)
        self._outstanding: set[int] = set()
        self._outbox: deque[tuple[bytes, list[int], list[int]]] = deque()
        self._outbox_changed = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self.alive = True  #: the spawner's end is open

    @property
    def pid(self) -> int:
        """The spawner's pid."""
        return self._proc.pid

    # --- requests ----------------------------------------------------------------------

    def spawn(
        self, waiter: Waiter, request: tuple[Any, ...], fds: list[int], *, close: list[int]
    ) -> int:
        """Ask for a job to be started; ``fds`` are sent with it, and ``close`` closed after.

        ``request`` is the spawner's request without its op and id. Returns
        the request's id. Never blocks; replies go to ``waiter``.
        """
        self._start_tasks()
        self._next_id += 1
        rid = self._next_id
        data = marshal.dumps(("spawn", rid, *request))
        extra: list[int] = []
        if len(data) > MAX_PACKET:
            big = os.memfd_create("dcrond-request", os.MFD_CLOEXEC)
            view = memoryview(data)
            while view:
                view = view[os.write(big, view) :]
            os.lseek(big, 0, os.SEEK_SET)
            data = marshal.dumps(("big",))
            extra = [big]
        self._waiters[rid] = waiter
        self._outstanding.add(rid)
        sent = [*fds, *extra]
        if not self._outbox and self._send(data, sent):
            for fd in (*close, *extra):
                os.close(fd)
            return rid
        if self._sock is None:  # the spawner is gone (the waiter was told)
            for fd in (*close, *extra):
                os.close(fd)
            return rid
        # it waits its turn: hold copies, so the caller may close its own meanwhile
        queued = [fd if fd in close or fd in extra else os.dup(fd) for fd in sent]
        self._outbox.append((data, queued, queued))
        self._outbox_changed.set()
        return rid

    def _send(self, data: bytes, fds: list[int]) -> bool:
        """Send one request now; False when the socket is full (or gone)."""
        if self._sock is None:
            return False
        try:
            self._sock.sendmsg(
                [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            )
        except BlockingIOError:
            return False
        except OSError:
            self._lost()
            return False
        return True

    def forget(self, rid: int) -> None:
        """Stop reporting on a request (its attempt is detached; the job runs on)."""
        self._waiters.pop(rid, None)

    def _flush(self) -> None:
        """Send what the socket takes now."""
        while self._outbox and self._sock is not None:
            data, fds, to_close = self._outbox[0]
            if not self._send(data, fds):
                return
            self._outbox.popleft()
            for fd in to_close:
                os.close(fd)

    # --- replies -------------------------------------------------------------------------

    def _start_tasks(self) -> None:
        token = trio.lowlevel.current_trio_token()
        if token is self._token or self._sock is None:
            return
        self._token = token
        self._outbox_changed = trio.Event()
        trio.lowlevel.spawn_system_task(self._read_loop, name="dcrond-spawner-reader")
        trio.lowlevel.spawn_system_task(self._flush_loop, name="dcrond-spawner-flusher")

    async def _flush_loop(self) -> None:
        token = self._token
        try:
            while self._sock is not None and token is self._token:
                if not self._outbox:
                    await self._outbox_changed.wait()
                    self._outbox_changed = trio.Event()
                    continue
                await trio.lowlevel.wait_writable(self._sock)
                self._flush()
        except (trio.ClosedResourceError, OSError):
            pass

    async def _read_loop(self) -> None:
        token = self._token
        try:
            while self._sock is not None and token is self._token:
                await trio.lowlevel.wait_readable(self._sock)
                if not self._read_available():
                    self._lost()
                    return
        except (trio.ClosedResourceError, OSError):
            pass

    def _read_available(self) -> bool:
        """Dispatch every reply waiting in the socket; False once the spawner's end closed."""
        while self._sock is not None:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            msg = marshal.loads(data)
            kind, rid = msg[0], msg[1]
            if kind == "pid":
                waiter = self._waiters.get(rid)
                if waiter is not None:
                    waiter.spawned(msg[2])
            elif kind == "exited":
                waiter = self._waiters.pop(rid, None)
                if waiter is not None:
                    waiter.exited(msg[2], msg[3])
            elif kind == "error":
                waiter = self._waiters.pop(rid, None)
                if waiter is not None:
                    waiter.spawn_failed(msg[3])
            if kind in ("exited", "error"):
                self._outstanding.discard(rid)
        return True

    def _lost(self) -> None:
        """The spawner's end closed: it is gone (killed, or crashed)."""
        if not self.alive:
            return
        self.alive = False
        self._close_socket()
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.spawner_lost()
        self._outstanding.clear()
        _parked.append(self._proc)
        _reap_parked()

    # --- closing -------------------------------------------------------------------------

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(RuntimeError):  # RuntimeError: not inside trio
            trio.lowlevel.notify_closing(sock)
        sock.close()
        while self._outbox:
            _data, _fds, to_close = self._outbox.popleft()
            for fd in to_close:
                os.close(fd)
        self._outbox_changed.set()

    def close(self) -> None:
        """Close our end: the spawner exits once its last job has ended.

        When it has none, wait for it to exit (it does so at once); else it
        is reaped later. Jobs still running keep running.
        """
        if self._sock is None and not self.alive:
            return
        self.alive = False
        self._close_socket()
        self._waiters.clear()
        if not self._outstanding:
            try:
                self._proc.wait(CLOSE_WAIT)
            except subprocess.TimeoutExpired:
                _parked.append(self._proc)
        else:
            _parked.append(self._proc)
