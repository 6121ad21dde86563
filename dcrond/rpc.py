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
connection.

Mutual TLS (``ssl_context``, see ``dcrond.tls``): the server runs the
handshake on each accepted connection before reading any frame. A client that
fails it (no certificate, one from another CA, a timeout) is logged as
``tls_refused peer=… reason=…``, counted in ``tls_refused`` and hung up on;
the server keeps serving. A client that speaks plain text gets one plain
answer to its first request, a ``TlsError`` saying TLS is required, so old or
misconfigured clients see why. Over TLS the server sets every request's
``params["actor"]`` from the client certificate's name, overriding what the
client sent. A *node* certificate is trusted to name the actor it forwards
for (a node can already write anything into the Raft log); if it names none,
the actor is ``node:NAME``. Methods whose names start with one of
``node_prefixes`` (by default ``raft.``: ``raft.propose`` appends to the log,
and ``engine.``: heartbeats and the calls one host's engine makes on
another's) answer only node certificates; a client gets ``PermissionDenied``.
Without TLS nobody is identified and every method is open: that is why
plain text is allowed on loopback addresses only (``dcrond.config``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, final

import trio

from dcrond import errors, tls
from dcrond._wire import DEFAULT_MAX_FRAME, FrameDecoder, FrameStream, encode_frame

log = logging.getLogger("dcrond.rpc")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

#: what a plain-text client is told when the server requires TLS
TLS_REQUIRED = "this dcrond requires mutual TLS but the client connected in plain text"
_PLAIN_FIRST_FRAME = 64 * 1024

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
        self,
        handlers: Mapping[str, Handler],
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float = tls.HANDSHAKE_TIMEOUT,
        node_prefixes: tuple[str, ...] = ("raft.", "engine."),
    ) -> None:
        self.handlers = dict(handlers)
        self.max_frame = max_frame
        self.ssl_context = ssl_context
        self.node_prefixes = node_prefixes
        self.handshake_timeout = handshake_timeout
        self.requests = 0
        self.failures = 0
        self.tls_refused = 0

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
        identity: tls.PeerIdentity | None = None
        if self.ssl_context is not None:
            secured = await self._secure(stream)
            if secured is None:
                return
            stream, identity = secured
        conn = FrameStream(stream, max_frame=self.max_frame)
        outbox = _Outbox(conn)
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        frame = await conn.receive()
                    except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
                        break  # the peer went away (also mid-TLS): nothing to answer
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
                    if identity is not None:
                        frame[2]["actor"] = _actor(identity, frame[2].get("actor"))
                    rid, method, params = frame
                    nursery.start_soon(self._answer, outbox, rid, method, params, identity)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(conn)

    async def _secure(
        self, stream: trio.abc.Stream
    ) -> tuple[trio.SSLStream[trio.abc.Stream], tls.PeerIdentity] | None:
        """The TLS stream and the client's identity, or None after refusing it."""
        assert self.ssl_context is not None
        peer = _peer_of(stream)
        deadline = trio.current_time() + self.handshake_timeout
        try:
            if isinstance(stream, trio.SocketStream) and await tls.sent_plain_text(
                stream, timeout=self.handshake_timeout
            ):
                await self._answer_plain_text(stream)
                raise errors.TlsError("the client speaks plain text, not TLS")
            left = deadline - trio.current_time()
            if left <= 0:
                raise errors.TlsError(f"no TLS handshake within {self.handshake_timeout:g}s")
            return await tls.accept(stream, self.ssl_context, timeout=left)
        except errors.TlsError as exc:
            self.tls_refused += 1
            log.warning("tls_refused peer=%s reason=%r", peer, str(exc))
            await trio.aclose_forcefully(stream)
            return None

    async def _answer_plain_text(self, stream: trio.abc.Stream) -> None:
        """Tell a plain-text client, in plain text, that TLS is required (best effort)."""
        decoder = FrameDecoder(max_frame=_PLAIN_FIRST_FRAME)
        with trio.move_on_after(self.handshake_timeout):
            try:
                frame = None
                while frame is None:
                    data = await stream.receive_some(_PLAIN_FIRST_FRAME)
                    if not data:
                        return
                    decoder.feed(data)
                    frame = decoder.next_frame_or(None)
                if isinstance(frame, list) and frame:
                    payload = {"type": "TlsError", "message": TLS_REQUIRED, "leader": None}
                    await stream.send_all(encode_frame([frame[0], False, payload]))
            except (errors.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def _answer(
        self,
        outbox: _Outbox,
        rid: Any,
        method: str,
        params: dict[str, Any],
        identity: tls.PeerIdentity | None,
    ) -> None:
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
        elif (
            identity is not None
            and identity.kind != "node"
            and method.startswith(self.node_prefixes)
        ):
            self.failures += 1
            log.warning("rpc_permission_denied method=%s peer=%r", method, str(identity))
            denied = errors.PermissionDenied(f"{method} is for nodes; {identity} may not call it")
            reply = [rid, False, _error_payload(denied)]
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


def _peer_of(stream: trio.abc.Stream) -> str:
    if isinstance(stream, trio.SocketStream):
        try:
            name = stream.socket.getpeername()
            return f"{name[0]}:{name[1]}"
        except OSError:
            pass
    return "?"


def _actor(identity: tls.PeerIdentity, given: object) -> str:
    """Who a request over TLS acts for (see the module docstring)."""
    if identity.kind == "client":
        return identity.name
    return given if isinstance(given, str) and given else f"node:{identity.name}"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """``exc`` or an exception in its cause/context chain is a ``kind``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@final
class RpcClient:
    """A pipelined client: many ``call``s may be in flight on one connection."""

    def __init__(
        self,
        conn: FrameStream,
        *,
        endpoint: str = "dcrond",
        peer: tls.PeerIdentity | None = None,
    ) -> None:
        self._conn = conn
        self._endpoint = endpoint
        self.peer = peer  #: the server's verified identity (over TLS)
        self._answered = False
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[trio.Event, list[Any]]] = {}
        self._outbox = _Outbox(conn)
        self._broken: BaseException | None = None

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        handshake_timeout: float = tls.HANDSHAKE_TIMEOUT,
    ) -> RpcClient:
        """Open a connection (over mutual TLS with ``ssl_context``).

        Raises Unavailable when nothing listens there and TlsError when the
        handshake fails (the server's certificate is not trusted, or it does
        not speak TLS). ``server_hostname`` (default ``host``) is the name the
        server's certificate must carry.
        """
        endpoint = f"{host}:{port}"
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise errors.Unavailable(f"cannot reach dcrond at {endpoint}: {exc}") from exc
        peer: tls.PeerIdentity | None = None
        if ssl_context is not None:
            try:
                stream, peer = await tls.connect(
                    stream,
                    ssl_context,
                    server_hostname=server_hostname or host,
                    timeout=handshake_timeout,
                )
            except errors.TlsError as exc:
                raise errors.TlsError(f"TLS with dcrond at {endpoint} failed: {exc}") from None
        return cls(FrameStream(stream, max_frame=max_frame), endpoint=endpoint, peer=peer)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read answers until the connection ends (run it in a nursery)."""
        task_status.started()
        try:
            while True:
                frame = await self._conn.receive()
                if not isinstance(frame, list) or len(frame) != 3:
                    raise errors.ProtocolError(f"malformed answer: {frame!r}")
                self._answered = True
                slot = self._pending.pop(frame[0], None)
                if slot is not None:
                    slot[1].extend(frame[1:])
                    slot[0].set()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._break(self._lost(exc))
        except trio.EndOfChannel as exc:
            self._break(errors.Unavailable(f"connection to dcrond lost: {exc!r}"))
        except errors.ProtocolError as exc:
            self._break(exc)

    def _lost(self, exc: BaseException) -> errors.DcronError:
        """What to raise when the connection broke with ``exc``.

        In TLS 1.3 the server judges our certificate after our side of the
        handshake is done; trio does not send OpenSSL's alert when its
        handshake fails, so a refused client sees the connection end (without
        close_notify) before its first answer.
        """
        err = tls.ssl_failure(exc)
        reset = self.peer is not None and _caused_by(exc, ConnectionResetError)
        if (isinstance(err, ssl.SSLEOFError) or reset) and not self._answered:
            # (the refusal may also arrive as a reset: the server closed with our request unread)
            return errors.TlsError(
                f"dcrond at {self._endpoint} hung up right after the TLS handshake: it did"
                " not accept our certificate (none sent? issued by another CA? expired?);"
                " its log has a tls_refused line saying why"
            )
        if err is None or isinstance(err, ssl.SSLEOFError):  # e.g. the server restarted
            return errors.Unavailable(f"connection to dcrond lost: {exc!r}")
        return errors.TlsError(f"dcrond at {self._endpoint} refused us: {tls.describe(exc)}")

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
            raise self._broken or self._lost(exc) from exc
        try:
            await event.wait()
        finally:
            self._pending.pop(rid, None)  # answered, broken, or the caller gave up
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
