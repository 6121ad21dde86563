"""Length-prefixed msgpack frames: bytes, incremental decoding, and trio streams."""

from __future__ import annotations

import ssl
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from dcrond._wire import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    FrameStream,
    dumps,
    encode_frame,
    encode_frames,
    loads,
)
from dcrond.errors import ProtocolError

# Values msgpack round-trips exactly with our settings (arrays come back as lists).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


def test_frame_is_big_endian_length_then_msgpack() -> None:
    frame = encode_frame({"a": [1, b"x"]})
    body = msgpack.packb({"a": [1, b"x"]}, use_bin_type=True)
    assert frame == struct.pack(">I", len(body)) + body


@settings(max_examples=60, deadline=None)
@given(objs=st.lists(values, max_size=12), data=st.data())
def test_decoder_returns_every_frame_whatever_the_chunking(
    objs: list[Any], data: st.DataObject
) -> None:
    stream = encode_frames(objs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    dec = FrameDecoder()
    out: list[Any] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        dec.feed(stream[start:cut])
        out.extend(dec.frames())
        start = cut
    dec.eof()
    assert out == objs
    assert dec.buffered == 0


def test_oversized_length_is_refused_from_the_header_alone() -> None:
    dec = FrameDecoder(max_frame=100)
    dec.feed(struct.pack(">I", 101))  # no body at all yet
    with pytest.raises(ProtocolError, match=r"^oversized"):
        list(dec.frames())
    # The decoder stays failed: the connection must be dropped.
    dec.feed(b"\x00" * 10)
    with pytest.raises(ProtocolError, match=r"^oversized"):
        list(dec.frames())


def test_frame_at_exactly_max_frame_is_accepted() -> None:
    obj = b"x" * 95
    frame = encode_frame(obj)
    dec = FrameDecoder(max_frame=len(frame) - 4)
    dec.feed(frame)
    assert list(dec.frames()) == [obj]


def test_frames_before_a_bad_one_are_still_delivered() -> None:
    dec = FrameDecoder()
    dec.feed(encode_frame(1) + encode_frame(2) + struct.pack(">I", 1) + b"\xc1")
    got: list[Any] = []
    with pytest.raises(ProtocolError, match=r"^not msgpack"):
        for obj in dec.frames():
            got.append(obj)
    assert got == [1, 2]


@pytest.mark.parametrize(
    "body",
    [
        b"",  # empty frame
        b"\xc1",  # the one byte msgpack never uses
        b"\x92\x01",  # array of 2 with only one item
        b"\x01\x02",  # trailing bytes after one object
        b"\x81\x01\x02",  # map with an int key (strict_map_key)
        b"\xa2\xff\xfe",  # str that is not UTF-8
    ],
)
def test_body_that_is_not_exactly_one_msgpack_object_is_refused(body: bytes) -> None:
    dec = FrameDecoder()
    dec.feed(struct.pack(">I", len(body)) + body)
    with pytest.raises(ProtocolError, match=r"^not msgpack"):
        list(dec.frames())
    with pytest.raises(ProtocolError, match=r"^not msgpack"):
        loads(body)


def test_stream_ending_inside_a_frame_is_truncated() -> None:
    dec = FrameDecoder()
    dec.feed(encode_frame("hello")[:-1])
    assert list(dec.frames()) == []
    with pytest.raises(ProtocolError, match=r"^truncated"):
        dec.eof()


def test_unencodable_value_is_a_wrong_type_error() -> None:
    with pytest.raises(ProtocolError, match=r"^wrong type"):
        encode_frame({1, 2})
    with pytest.raises(ProtocolError, match=r"^wrong type"):
        dumps(object())


def test_sender_refuses_to_build_an_oversized_frame() -> None:
    with pytest.raises(ProtocolError, match=r"^oversized"):
        encode_frame(b"x" * 200, max_frame=100)
    assert len(encode_frame(b"x" * 200)) < DEFAULT_MAX_FRAME


def test_max_frame_must_be_positive_and_fit_the_header() -> None:
    with pytest.raises(ValueError, match="max_frame"):
        FrameDecoder(max_frame=0)
    with pytest.raises(ValueError, match="max_frame"):
        FrameDecoder(max_frame=1 << 32)


class CountingStream(trio.abc.Stream):
    """Wraps a stream and counts receive_some calls."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.receives = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self.receives += 1
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_frame_stream_carries_objects_and_ends_cleanly() -> None:
    left, right = trio.testing.memory_stream_pair()
    sender, receiver = FrameStream(left), FrameStream(right)
    async with trio.open_nursery() as nursery:

        async def produce() -> None:
            await sender.send({"hello": 1})
            await sender.send(None)  # None is a value, not the end of the stream
            await sender.send_many([b"a", [1, 2], "z"])
            await sender.aclose()

        nursery.start_soon(produce)
        got = [obj async for obj in receiver]
    assert got == [{"hello": 1}, None, b"a", [1, 2], "z"]
    with pytest.raises(trio.ClosedResourceError):
        await sender.send(1)


async def test_receive_raises_end_of_channel_then_keeps_saying_so() -> None:
    left, right = trio.testing.memory_stream_pair()
    receiver = FrameStream(right)
    await left.aclose()
    with pytest.raises(trio.EndOfChannel):
        await receiver.receive()
    with pytest.raises(trio.EndOfChannel):
        await receiver.receive()


async def test_peer_closing_inside_a_frame_is_a_truncation_error() -> None:
    left, right = trio.testing.memory_stream_pair()
    receiver = FrameStream(right)
    await left.send_all(encode_frame("complete") + encode_frame("cut")[:-2])
    await left.aclose()
    assert await receiver.receive() == "complete"
    with pytest.raises(ProtocolError, match=r"^truncated"):
        await receiver.receive()


async def test_many_small_frames_are_read_in_few_large_reads() -> None:
    left, right = trio.testing.memory_stream_pair()
    counting = CountingStream(right)
    receiver = FrameStream(counting)
    await left.send_all(encode_frames(list(range(500))))
    got = [await receiver.receive() for _ in range(500)]
    assert got == list(range(500))
    assert counting.receives <= 2


async def test_oversized_announcement_is_refused_without_waiting_for_the_body() -> None:
    left, right = trio.testing.memory_stream_pair()
    receiver = FrameStream(right, max_frame=1024)
    await left.send_all(struct.pack(">I", 1 << 30))  # 1 GiB announced, nothing sent
    with trio.fail_after(1), pytest.raises(ProtocolError, match=r"^oversized"):
        await receiver.receive()


async def test_max_frame_can_be_raised_between_frames() -> None:
    left, right = trio.testing.memory_stream_pair()
    receiver = FrameStream(right, max_frame=16)
    await left.send_all(encode_frame("hi") + encode_frame(b"y" * 100))
    assert await receiver.receive() == "hi"
    receiver.max_frame = 1024
    assert await receiver.receive() == b"y" * 100


def _self_signed_context(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ),
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


async def test_frame_stream_works_unchanged_over_tls() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server_ctx, client_ctx = _self_signed_context(Path(tmp))
    left, right = trio.testing.memory_stream_pair()
    client = FrameStream(trio.SSLStream(left, client_ctx, server_hostname="localhost"))
    server = FrameStream(trio.SSLStream(right, server_ctx, server_side=True))
    payload = [{"n": i, "blob": bytes(300)} for i in range(50)]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def produce() -> None:
                await client.send_many(payload)
                await client.aclose()

            nursery.start_soon(produce)
            got = [await server.receive() for _ in payload]
            await server.aclose()
    assert got == payload
