"""Request/response RPC over msgpack frames: one surface for dcronctl, peers and tests.

Theory of operation
-------------------
A connection carries frames (``dcrond._wire``). A request is the list
``[id, method, params]``; the answer is ``[id, True, result]`` or
``[id, False, {"type": name, "message": text, "leader": hint}]``. Requests are
pipelined: the server runs each in its own task and answers as they finish,
so a client may keep many in flight on one connection (the benchmark keeps 64).

Errors from ``dcrond.errors`` cross the wire by name and are raised again on
the client as the same class; anything else is reported as an internal error
(a bug) without taking the server down. A malformed frame closes only that
connection. The framing works on any trio stream, so TLS wraps it unchanged.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, final

import trio

from dcrond import errors
from dcrond._wire import DEFAULT_MAX_FRAME, FrameStream

log = logging.getLogger("dcrond.rpc")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

_ERRORS: dict[str, type[errors.DcronError]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.DcronError)
}


def _error_payload(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, errors.DcronError):
        return {
            "type": type(exc).__name__,
            "message": str(exc),
            "leader": getattr(exc, "leader", None),
        }
    return {"type": "InternalError", "message": f"internal error: {type(exc).__name__}: {exc}"}


def error_from_payload(payload: object) -> errors.DcronError:
    """Rebuild the error a server sent (unknown kinds become DcronError)."""
    if not isinstance(payload, dict):
        return errors.ProtocolError(f"malformed error payload: {payload!r}")
    name = str(payload.get("type", "DcronError"))
    message = str(payload.get("message", ""))
    cls = _ERRORS.get(name, errors.DcronError)
    if cls is errors.NotLeader:
        leader = payload.get("leader")
        return errors.NotLeader(message, leader if isinstance(leader, str) else None)
    return cls(message)


@final
class _Outbox:
    """Frames for one connection, written by whichever task finds it idle.

    A task that sends while another is writing only queues its frame; the
    writer sends everything queued when its write returns, in one
    ``send_all``. Under load that turns dozens of small answers into one
    system call (and one TCP segment) instead of one each.
    """

    def __init__(self, conn: FrameStream) -> None:
        self._conn = conn
        self._queue: list[object] = []
        self._writing = False

    async def send(self, frame: object) -> None:
        self._queue.append(frame)
        if self._writing:
            await trio.lowlevel.checkpoint()
            return
        self._writing = True
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._conn.send_many(batch)
        finally:
            self._writing = False


@final
class RpcServer:
    """Serves ``handlers`` (method name -> async function of params) over TCP."""

    def __init__(
        self, handlers: Mapping[str, Handler], *, max_frame: int = DEFAULT_MAX_FRAME
    ) -> None:
        self.handlers = dict(handlers)
        self.max_frame = max_frame
        self.requests = 0
        self.failures = 0

    async def serve_tcp(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on (host, port); report the bound address through task_status."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self.handle_stream, listeners)
            task_status.started((bound[0], bound[1]))

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until it closes; never raises."""
        conn = FrameStream(stream, max_frame=self.max_frame)
        outbox = _Outbox(conn)
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        frame = await conn.receive()
                    except trio.EndOfChannel:
                        break
                    except errors.ProtocolError as exc:
                        log.warning("rpc_frame_rejected reason=%r", str(exc))
                        break
                    if (
                        not isinstance(frame, list)
                        or len(frame) != 3
                        or not isinstance(frame[1], str)
                        or not isinstance(frame[2], dict)
                    ):
                        log.warning("rpc_frame_rejected reason='not [id, method, params]'")
                        break
                    nursery.start_soon(self._answer, outbox, *frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(conn)

    async def _answer(self, outbox: _Outbox, rid: Any, method: str, params: dict[str, Any]) -> None:
        self.requests += 1
        handler = self.handlers.get(method)
        reply: list[Any]
        if handler is None:
            self.failures += 1
            reply = [
                rid,
                False,
                _error_payload(errors.InvalidRequest(f"unknown method {method!r}")),
            ]
        else:
            try:
                reply = [rid, True, await handler(params)]
            except Exception as exc:
                self.failures += 1
                if not isinstance(exc, errors.DcronError):
                    log.exception("rpc_handler_crashed method=%s", method)
                reply = [rid, False, _error_payload(exc)]
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await outbox.send(reply)


@final
class RpcClient:
    """A pipelined client: many ``call``s may be in flight on one connection."""

    def __init__(self, conn: FrameStream) -> None:
        self._conn = conn
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[trio.Event, list[Any]]] = {}
        self._outbox = _Outbox(conn)
        self._broken: BaseException | None = None

    @classmethod
    async def connect(
        cls, host: str, port: int, *, max_frame: int = DEFAULT_MAX_FRAME
    ) -> RpcClient:
        """Open a connection; raises Unavailable when nothing listens there."""
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise errors.Unavailable(f"cannot reach dcrond at {host}:{port}: {exc}") from exc
        return cls(FrameStream(stream, max_frame=max_frame))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read answers until the connection ends (run it in a nursery)."""
        task_status.started()
        try:
            while True:
                frame = await self._conn.receive()
                if not isinstance(frame, list) or len(frame) != 3:
                    raise errors.ProtocolError(f"malformed answer: {frame!r}")
                slot = self._pending.pop(frame[0], None)
                if slot is not None:
                    slot[1].extend(frame[1:])
                    slot[0].set()
        except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._break(errors.Unavailable(f"connection to dcrond lost: {exc!r}"))
        except errors.ProtocolError as exc:
            self._break(exc)

    def _break(self, exc: BaseException) -> None:
        self._broken = exc
        for event, _ in self._pending.values():
            event.set()

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call ``method`` and return its result or raise the server's error."""
        if self._broken is not None:
            raise self._broken
        rid = next(self._ids)
        event = trio.Event()
        out: list[Any] = []
        self._pending[rid] = (event, out)
        try:
            await self._outbox.send([rid, method, dict(params or {})])
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._pending.pop(rid, None)
            raise errors.Unavailable(f"connection to dcrond lost: {exc!r}") from exc
        await event.wait()
        if not out:
            assert self._broken is not None
            raise self._broken
        ok, value = out
        if ok:
            return value
        raise error_from_payload(value)

    async def aclose(self) -> None:
        """Close the connection."""
        await self._conn.aclose()
