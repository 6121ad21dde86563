"""Print how fast Raft messages are encoded, decoded and carried over loopback TCP.

Usage: ``.venv/bin/python bench/codec.py [--seconds 2]``

1. Codec: encode + decode per second of an AppendEntries with 64 entries of
   256 bytes (the hot path), from message to msgpack bytes and back, with
   full validation. Anchors measured in the same run: bare ``msgpack``
   packing and unpacking of the same data as a flat array (no dataclasses, no
   checks -- the floor), and a naive encoding with one map per entry.
2. Transport: frames per second from one ``RaftTransport`` to another over
   127.0.0.1, for small messages (AppendResponse) and for the 64 x 256 B
   AppendEntries, decoded and delivered to the receiver's channel. Anchors:
   the same msgpack arrays through a bare ``FrameStream`` (framing and msgpack
   only: no dataclasses, validation, queues or handshake), and MB/s through a
   bare trio socket pair with no framing at all.

The machines are shared and noisy: compare the ratios, not the figures.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import msgpack
import trio

from dcrond._wire import FrameStream
from dcrond.raft._codec import decode_bytes, encode, encode_bytes
from dcrond.raft._transport import RaftTransport
from dcrond.raft._types import AppendEntries, AppendResponse, Entry, EntryKind, Message

ENTRIES = tuple(Entry(7, 1000 + i, EntryKind.NORMAL, bytes(256)) for i in range(64))
BIG = AppendEntries("n1", "n2", 7, 999, 7, ENTRIES, 990)
SMALL = AppendResponse("n1", "n2", 7, True, 1063)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls of ``fn`` per second, best of three slices of ``seconds / 3``."""
    best = 0.0
    for _ in range(3):
        n = 0
        end = time.perf_counter() + seconds / 3
        start = time.perf_counter()
        while time.perf_counter() < end:
            for _ in range(100):
                fn()
            n += 100
        best = max(best, n / (time.perf_counter() - start))
    return best


def codec(seconds: float) -> None:
    ours = rate(lambda: decode_bytes(encode_bytes(BIG)), seconds)
    flat = encode(BIG)
    floor = rate(lambda: msgpack.unpackb(msgpack.packb(flat)), seconds)

    def naive() -> object:
        obj = {
            "type": "AppendEntries",
            "frm": BIG.frm,
            "to": BIG.to,
            "term": BIG.term,
            "entries": [
                {"term": e.term, "index": e.index, "kind": int(e.kind), "data": e.data}
                for e in BIG.entries
            ],
        }
        back: dict[str, Any] = msgpack.unpackb(msgpack.packb(obj))
        return [
            Entry(e["term"], e["index"], EntryKind(e["kind"]), e["data"]) for e in back["entries"]
        ]

    dicts = rate(naive, seconds)
    size = len(encode_bytes(BIG))
    print(f"AppendEntries 64 x 256 B ({size} bytes on the wire), encode + decode:")
    print(f"  dcrond codec (validated)   {ours:10,.0f} msg/s  {ours * 64:12,.0f} entries/s")
    print(f"  anchor: bare msgpack       {floor:10,.0f} msg/s  (codec = {ours / floor:.2f} x)")
    print(f"  anchor: map per entry      {dicts:10,.0f} msg/s  (codec = {ours / dicts:.2f} x)")


async def transport_rate(msg_for: Callable[[int], Message], seconds: float) -> float:
    """Messages per second delivered from one transport to another over loopback."""
    a = RaftTransport("n1", "bench", ("127.0.0.1", 0), {}, max_queue=1 << 16)
    b = RaftTransport("n2", "bench", ("127.0.0.1", 0), {})
    received = 0

    async def consume() -> None:
        nonlocal received
        async for _ in b.receive_channel:
            received += 1

    async with trio.open_nursery() as nursery:
        a_addr = await nursery.start(a.serve)
        b_addr = await nursery.start(b.serve)
        a.update_peers({"n2": b_addr})
        b.update_peers({"n1": a_addr})
        nursery.start_soon(consume)
        a.send_nowait(msg_for(0))
        while received == 0:  # noqa: ASYNC110 (warm-up: wait for the connection)
            await trio.sleep(0.01)
        start, first = trio.current_time(), received
        end = start + seconds
        produced = first
        while trio.current_time() < end:
            # Keep a window of messages in flight; send_nowait never waits.
            if produced - received < 2048:
                for i in range(256):
                    a.send_nowait(msg_for(i))
                produced += 256
            await trio.lowlevel.checkpoint()
        got = received - first
        elapsed = trio.current_time() - start
        assert a.statistics().dropped == 0
        nursery.cancel_scope.cancel()
    return got / elapsed


async def _loopback_pair() -> tuple[trio.SocketStream, trio.SocketStream, trio.SocketListener]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    return client, server, listeners[0]


async def framed_rate(msg: Message, seconds: float) -> float:
    """Anchor: frames/s of ``encode(msg)`` through a bare FrameStream (no codec, no queue)."""
    client, server, listener = await _loopback_pair()
    obj = encode(msg)
    got = 0
    async with client, server, listener, trio.open_nursery() as nursery:
        sender, receiver = FrameStream(client), FrameStream(server)

        async def produce() -> None:
            while True:
                await sender.send_many([obj] * 64)

        nursery.start_soon(produce)
        start = trio.current_time()
        while trio.current_time() < start + seconds:
            await receiver.receive()
            got += 1
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    return got / elapsed


async def raw_bytes_rate(seconds: float) -> float:
    """Anchor: MB/s through a bare trio TCP connection (no framing, no codec)."""
    client, server, listener = await _loopback_pair()
    total = 0
    async with client, server, listener, trio.open_nursery() as nursery:

        async def produce() -> None:
            chunk = bytes(256 * 1024)
            while True:
                await client.send_all(chunk)

        nursery.start_soon(produce)
        start = trio.current_time()
        while trio.current_time() < start + seconds:
            total += len(await server.receive_some(256 * 1024))
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    return total / elapsed / 1e6


async def transport(seconds: float) -> None:
    def small(i: int) -> Message:
        return AppendResponse("n1", "n2", 7, True, i)

    def big(i: int) -> Message:
        return BIG

    print("Loopback TCP, one RaftTransport to another, decoded and delivered:")
    for name, msg_for in [("AppendResponse (small)", small), ("AppendEntries 64 x 256 B", big)]:
        frames = await transport_rate(msg_for, seconds)
        floor = await framed_rate(msg_for(1), seconds)
        wire = len(encode_bytes(msg_for(1))) + 4
        print(
            f"  {name:25} {frames:9,.0f} frames/s {frames * wire / 1e6:7.1f} MB/s"
            f"   anchor: bare FrameStream {floor:9,.0f} frames/s"
            f" (transport = {frames / floor:.2f} x)"
        )
    print(f"  anchor: bare trio socket {await raw_bytes_rate(seconds):,.0f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = parser.parse_args()
    codec(args.seconds)
    trio.run(transport, args.seconds)


if __name__ == "__main__":
    main()
