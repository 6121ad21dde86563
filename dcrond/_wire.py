"""Length-prefixed msgpack frames, as bytes and over any trio stream.

Theory of operation
-------------------
A frame is a 4-byte big-endian unsigned length followed by exactly that many
bytes of one msgpack object. Strings are UTF-8 ``str``, binary is ``bytes``
(``use_bin_type=True`` / ``raw=False``), map keys must be ``str`` or ``bytes``
(``strict_map_key=True``), and arrays decode as ``list``.

Two layers:

- :func:`encode_frame` / :class:`FrameDecoder` are synchronous and know nothing
  of trio: the simulator and tests can frame and unframe bytes directly. The
  decoder is incremental (feed it any chunking of a byte stream and it hands
  back whole frames) and refuses an announced length above ``max_frame`` as
  soon as the 4 header bytes arrive, before any of the body is buffered.
- :class:`FrameStream` is a ``trio.abc.Channel`` of msgpack objects over any
  ``trio.abc.Stream`` (a ``SocketStream`` today, an ``SSLStream`` wrapped
  around it later, a memory stream in tests). Reads go through the decoder in
  large chunks, so one ``receive_some`` usually yields many frames.

Every problem with the bytes a peer sent is a :class:`dcrond.errors.ProtocolError`
whose message starts with one of the stable reasons ``oversized``,
``truncated``, ``not msgpack`` or ``wrong type``; after one, the decoder (and
the stream) is unusable and the connection should be closed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any, Final, NoReturn, final

import msgpack
import trio

from dcrond.errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER_SIZE",
    "FrameDecoder",
    "FrameStream",
    "dumps",
    "encode_frame",
    "encode_frames",
    "loads",
]

DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
"""Largest frame body accepted or sent by default (16 MiB)."""

HEADER_SIZE: Final = 4
_HEADER: Final = struct.Struct(">I")
_MAX_ENCODABLE: Final = (1 << 32) - 1
_RECEIVE_SIZE: Final = 256 * 1024
_NEED_DATA: Final = object()


def dumps(obj: object) -> bytes:
    """Serialize ``obj`` to msgpack bytes (no length prefix).

    Raises ProtocolError("wrong type …") if ``obj`` holds something msgpack
    cannot carry (a set, a custom class…); that is the caller's bug.
    """
    try:
        return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"wrong type: cannot encode {type(obj).__name__}: {exc}") from None


def loads(data: bytes | bytearray | memoryview) -> Any:
    """Parse exactly one msgpack object from ``data`` (no length prefix).

    Raises ProtocolError("not msgpack …") on anything else, including
    trailing bytes after the object.
    """
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types; the peer's fault
        raise ProtocolError(_not_msgpack(exc)) from None


def _not_msgpack(exc: Exception) -> str:
    detail = str(exc)[:200]
    return f"not msgpack: {type(exc).__name__}" + (f": {detail}" if detail else "")


def encode_frame(obj: object, *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Return ``obj`` as one frame: 4-byte big-endian length + msgpack body.

    Raises ProtocolError("oversized …") if the body exceeds ``max_frame``
    (the receiving side would refuse it) and ProtocolError("wrong type …")
    if ``obj`` cannot be encoded.
    """
    body = dumps(obj)
    if len(body) > max_frame:
        raise ProtocolError(f"oversized: frame of {len(body)} bytes exceeds max {max_frame}")
    return _HEADER.pack(len(body)) + body


def encode_frames(objs: Iterable[object], *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Return several frames back to back, ready for a single ``send_all``."""
    return b"".join([encode_frame(obj, max_frame=max_frame) for obj in objs])


@final
class FrameDecoder:
    """Incremental frame parser: ``feed`` bytes in any chunking, take whole frames out.

    Usage::

        dec = FrameDecoder()
        dec.feed(chunk)
        for obj in dec.frames():
            ...
        dec.eof()  # at end of stream: raises if a frame was cut short

    The buffer never holds more than one frame (at most ``max_frame`` plus
    the header) beyond what the caller last fed. After a ProtocolError the
    decoder stays failed and raises the same error again.
    """

    __slots__ = ("_buf", "_error", "_max_frame", "_pos")

    def __init__(self, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if not 0 < max_frame <= _MAX_ENCODABLE:
            raise ValueError(f"max_frame must be in 1..{_MAX_ENCODABLE}, not {max_frame}")
        self._max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0
        self._error: ProtocolError | None = None

    @property
    def max_frame(self) -> int:
        """The largest body this decoder accepts (may be changed between frames)."""
        return self._max_frame

    @max_frame.setter
    def max_frame(self, value: int) -> None:
        if not 0 < value <= _MAX_ENCODABLE:
            raise ValueError(f"max_frame must be in 1..{_MAX_ENCODABLE}, not {value}")
        self._max_frame = value

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes; call :meth:`frames` to take out whole frames."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def frames(self) -> Iterator[Any]:
        """Yield every complete frame buffered so far, in order.

        Raises ProtocolError at the first bad frame (frames before it have
        already been yielded).
        """
        while True:
            obj = self.next_frame_or(_NEED_DATA)
            if obj is _NEED_DATA:
                return
            yield obj

    def next_frame_or(self, default: object) -> Any:
        """Return the next complete frame, or ``default`` if more bytes are needed."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < HEADER_SIZE:
            return default
        (length,) = _HEADER.unpack_from(buf, pos)
        if length > self._max_frame:
            self._fail(f"oversized: peer announced {length} bytes, max is {self._max_frame}")
        end = pos + HEADER_SIZE + length
        if end > len(buf):
            return default
        with memoryview(buf) as view:
            body = view[pos + HEADER_SIZE : end]
            try:
                obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
            except Exception as exc:  # any msgpack failure is the peer's fault
                self._fail(_not_msgpack(exc))
            finally:
                body.release()
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return obj

    def eof(self) -> None:
        """Declare the end of the stream; raises ProtocolError if a frame was cut short."""
        if self._error is not None:
            raise self._error
        if self.buffered:
            self._fail(f"truncated: stream ended inside a frame ({self.buffered} bytes pending)")

    def _fail(self, reason: str) -> NoReturn:
        self._error = ProtocolError(reason)
        self._buf = bytearray()
        self._pos = 0
        raise self._error


@final
class FrameStream(trio.abc.Channel[Any]):
    """A channel of msgpack objects over any ``trio.abc.Stream``.

    ``send(obj)`` writes one frame; ``send_many(objs)`` writes several in one
    ``send_all``. ``receive()`` returns the next object and raises
    ``trio.EndOfChannel`` when the peer closed the stream cleanly between
    frames, ProtocolError on a bad, oversized or truncated frame, and the
    underlying stream's errors (``trio.BrokenResourceError``…) otherwise.
    ``async for obj in frame_stream`` stops at a clean end of stream.

    Like the stream beneath it, at most one task may send and one receive at
    a time. Closing the FrameStream closes the stream.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        receive_size: int = _RECEIVE_SIZE,
    ) -> None:
        self.stream = stream
        self._decoder = FrameDecoder(max_frame=max_frame)
        self._receive_size = receive_size

    @property
    def max_frame(self) -> int:
        """The largest frame body sent or accepted.

        It may be changed between frames, e.g. kept small until a peer has
        identified itself and raised afterwards.
        """
        return self._decoder.max_frame

    @max_frame.setter
    def max_frame(self, value: int) -> None:
        self._decoder.max_frame = value

    async def send(self, value: object) -> None:
        """Write ``value`` as one frame."""
        await self.stream.send_all(encode_frame(value, max_frame=self._decoder.max_frame))

    async def send_many(self, values: Iterable[object]) -> None:
        """Write several frames with a single ``send_all``."""
        await self.stream.send_all(encode_frames(values, max_frame=self._decoder.max_frame))

    async def receive(self) -> Any:
        """Return the next object; ``trio.EndOfChannel`` at a clean end of stream."""
        decoder = self._decoder
        obj = decoder.next_frame_or(_NEED_DATA)
        if obj is not _NEED_DATA:
            # Already buffered: stay cheap, but still honour cancellation.
            await trio.lowlevel.checkpoint_if_cancelled()
            return obj
        while True:
            data = await self.stream.receive_some(self._receive_size)
            if not data:
                decoder.eof()
                raise trio.EndOfChannel
            decoder.feed(data)
            obj = decoder.next_frame_or(_NEED_DATA)
            if obj is not _NEED_DATA:
                return obj

    async def aclose(self) -> None:
        """Close the underlying stream."""
        await self.stream.aclose()
