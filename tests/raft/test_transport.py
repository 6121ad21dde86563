"""The Raft TCP transport, on real sockets on 127.0.0.1."""

from __future__ import annotations

import logging
import random
import socket
import struct
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import pytest
import trio

from dcrond._wire import FrameStream, encode_frame
from dcrond.raft._codec import encode
from dcrond.raft._transport import Address, RaftTransport, TransportStatistics
from dcrond.raft._types import (
    AppendEntries,
    Entry,
    EntryKind,
    Message,
    NodeId,
    TimeoutNow,
    VoteRequest,
)

LOCAL = "127.0.0.1"
CLUSTER = "test-cluster"
TIMEOUT = 10  # seconds; every test here finishes in well under one


def make(
    node: NodeId,
    peers: Mapping[NodeId, Address],
    *,
    listen: Address = (LOCAL, 0),
    cluster: str = CLUSTER,
    **kwargs: float,
) -> RaftTransport:
    return RaftTransport(
        node,
        cluster,
        listen,
        peers,
        rng=random.Random(1),
        backoff_base=0.02,
        backoff_cap=0.2,
        **kwargs,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def serving(*transports: RaftTransport) -> AsyncIterator[list[Address]]:
    """Run the transports until the block ends; yield their bound addresses."""
    async with trio.open_nursery() as nursery:
        addresses = [await nursery.start(t.serve) for t in transports]
        yield addresses
        nursery.cancel_scope.cancel()


def free_port() -> int:
    """A port nothing listens on right now (for a peer that starts later)."""
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        port: int = s.getsockname()[1]
        return port


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` (transport counters have no event to wait on)."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.005)


async def resend_until_received(
    sender: RaftTransport, receiver: RaftTransport, msg: Message
) -> Message:
    """Send ``msg`` every 20 ms until ``receiver`` gets a message; return it."""
    while True:
        sender.send_nowait(msg)
        with trio.move_on_after(0.02):
            return await receiver.receive_channel.receive()


def tick(frm: NodeId, to: NodeId, term: int) -> TimeoutNow:
    return TimeoutNow(frm=frm, to=to, term=term)


async def test_three_transports_exchange_messages() -> None:
    with trio.fail_after(TIMEOUT):
        ports = {n: free_port() for n in ("a", "b", "c")}
        peers = {n: (LOCAL, p) for n, p in ports.items()}
        nodes = {n: make(n, peers, listen=peers[n]) for n in peers}
        batch = tuple(Entry(2, i, EntryKind.NORMAL, bytes(256)) for i in range(1, 65))
        async with serving(*nodes.values()):
            for frm, sender in nodes.items():
                for to in nodes:
                    if frm != to:
                        sender.send_nowait(AppendEntries(frm, to, 2, 0, 0, batch, 0))
                        sender.send_nowait(VoteRequest(frm, to, 3, 64, 2))
            for to, node in nodes.items():
                got = [await node.receive_channel.receive() for _ in range(4)]
                assert {(type(m).__name__, m.frm) for m in got} == {
                    (kind, frm)
                    for kind in ("AppendEntries", "VoteRequest")
                    for frm in nodes
                    if frm != to
                }
                assert all(m.to == to for m in got)
                appended = [m for m in got if isinstance(m, AppendEntries)]
                assert all(m.entries == batch for m in appended)
            stats = {n: t.statistics() for n, t in nodes.items()}
    for n, s in stats.items():
        assert s.sent == 4
        assert s.received == 4
        assert s.connected_peers == frozenset(nodes) - {n}
        assert (s.dropped, s.rejected_frames, s.rejected_connections) == (0, 0, 0)


async def test_serve_reports_the_bound_port_and_refuses_a_second_serve() -> None:
    with trio.fail_after(TIMEOUT):
        t = make("a", {})
        async with serving(t) as [(host, port)]:
            assert host == LOCAL
            assert port > 0
            with pytest.raises(RuntimeError, match="already serving"):
                await t.serve()


async def test_a_peer_that_starts_late_is_connected_and_gets_messages() -> None:
    with trio.fail_after(TIMEOUT):
        b_addr = (LOCAL, free_port())
        b = make("b", {"a": (LOCAL, 1)}, listen=b_addr)
        a = make("a", {"b": b_addr})
        async with serving(a) as [a_addr]:
            b.update_peers({"a": a_addr})
            a.send_nowait(tick("a", "b", 1))
            await trio.sleep(0.3)  # a keeps redialing with backoff meanwhile
            assert a.statistics().connected_peers == frozenset()
            async with serving(b):
                msg = await b.receive_channel.receive()  # the queued message
                assert msg == tick("a", "b", 1)
                assert a.statistics().connected_peers == {"b"}


async def test_peer_restart_is_reconnected_and_messages_flow_again() -> None:
    with trio.fail_after(TIMEOUT):
        b_addr = (LOCAL, free_port())
        a = make("a", {"b": b_addr})
        async with serving(a) as [a_addr]:
            b = make("b", {"a": a_addr}, listen=b_addr)
            async with serving(b):
                assert await resend_until_received(a, b, tick("a", "b", 1)) == tick("a", "b", 1)
            await wait_until(lambda: not a.statistics().connected_peers)
            b = make("b", {"a": a_addr}, listen=b_addr)  # same address, fresh process
            async with serving(b):
                assert await resend_until_received(a, b, tick("a", "b", 2)) == tick("a", "b", 2)
                assert a.statistics().reconnects >= 1


async def _hello_then(addr: Address, node: NodeId, payload: bytes) -> bytes:
    """Connect like peer ``node``, pass the handshake, send ``payload``; return what comes back."""
    stream = await trio.open_tcp_stream(*addr)
    async with stream:
        conn = FrameStream(stream)
        await conn.send({"cluster": CLUSTER, "node_id": node, "version": 1, "to": "a"})
        assert (await conn.receive())["node_id"] == "a"
        await stream.send_all(payload)
        received = b""
        while chunk := await stream.receive_some():
            received += chunk
        return received


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (struct.pack(">I", 1 << 30), "oversized"),  # 1 GiB announced, never sent
        (struct.pack(">I", 3) + b"\xc1\xc1\xc1", "not msgpack"),
        (encode_frame([3, "evil"]), "malformed"),
        (encode_frame(encode(tick("c", "b", 1))), "misaddressed"),  # not for a
        (encode_frame(encode(tick("evil", "a", 1))), "misaddressed"),  # forged sender
    ],
)
async def test_bad_frame_closes_only_that_connection(
    payload: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        ports = {n: free_port() for n in ("a", "b", "c")}
        peers = {n: (LOCAL, p) for n, p in ports.items()}
        a, b = make("a", peers, listen=peers["a"]), make("b", peers, listen=peers["b"])
        async with serving(a, b):
            # "c" is a known peer, so the handshake passes; then it misbehaves.
            assert await _hello_then(peers["a"], "c", payload) == b""  # closed on us
            stats = a.statistics()
            assert stats.rejected_frames == 1
            # a still serves b in both directions
            assert await resend_until_received(b, a, tick("b", "a", 5)) == tick("b", "a", 5)
            assert await resend_until_received(a, b, tick("a", "b", 6)) == tick("a", "b", 6)
    rejected = [r.getMessage() for r in caplog.records if "raft_frame_rejected" in r.getMessage()]
    assert len(rejected) == 1
    assert "peer=c" in rejected[0]
    assert reason in rejected[0]


async def test_garbage_instead_of_a_hello_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(TIMEOUT):
        a = make("a", {})
        async with serving(a) as [addr]:
            stream = await trio.open_tcp_stream(*addr)
            async with stream:
                await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
                assert await stream.receive_some() == b""
            assert a.statistics().rejected_frames == 1
    assert any("raft_frame_rejected" in r.getMessage() for r in caplog.records)


async def test_wrong_cluster_name_is_refused_with_a_logged_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(TIMEOUT):
        a_addr = (LOCAL, free_port())
        a = make("a", {"x": (LOCAL, 1)}, listen=a_addr)
        x = make("x", {"a": a_addr}, cluster="other-cluster")
        async with serving(a, x):
            x.send_nowait(tick("x", "a", 1))
            await wait_until(lambda: a.statistics().rejected_connections >= 2)  # it retries
            assert x.statistics().connected_peers == frozenset()
            assert a.statistics().received == 0
    logs = [r.getMessage() for r in caplog.records]
    # the acceptor says why, once (not on each of the dialer's retries)
    heard = [m for m in logs if "raft_connection_refused addr=" in m and "wrong cluster" in m]
    assert len(heard) == 1
    # the dialer is told why, and logs it once, not on every retry
    told = [m for m in logs if "raft_connection_refused peer=a" in m and "wrong cluster" in m]
    assert len(told) == 1


async def test_unknown_sender_is_refused() -> None:
    with trio.fail_after(TIMEOUT):
        a = make("a", {})
        async with serving(a) as [addr]:
            stream = await trio.open_tcp_stream(*addr)
            async with stream:
                conn = FrameStream(stream)
                await conn.send({"cluster": CLUSTER, "node_id": "stranger", "version": 1})
                answer = await conn.receive()
                assert "unknown sender" in answer["refused"]
                with pytest.raises(trio.EndOfChannel):
                    await conn.receive()
            assert a.statistics().rejected_connections == 1


async def test_dialing_an_address_that_belongs_to_another_node_is_refused() -> None:
    with trio.fail_after(TIMEOUT):
        a = make("a", {"b": (LOCAL, 1), "c": (LOCAL, 1)})
        async with serving(a) as [a_addr]:
            c = make("c", {"a": a_addr, "b": a_addr})  # thinks "a" listens at b's address
            async with serving(c):
                await wait_until(lambda: c.statistics().connected_peers == {"a"})
                await trio.sleep(0.2)  # c keeps retrying "b"; a keeps refusing it
                assert c.statistics().connected_peers == {"a"}
                assert a.statistics().rejected_connections >= 2
                # ...without disturbing c's real connection to a
                assert c.statistics().reconnects == 0


async def test_update_peers_adds_and_removes_peers_at_run_time() -> None:
    with trio.fail_after(TIMEOUT):
        a, b = make("a", {}), make("b", {})
        async with serving(a, b) as [a_addr, b_addr]:
            a.update_peers({"b": b_addr})
            b.update_peers({"a": a_addr})
            assert await resend_until_received(a, b, tick("a", "b", 1)) == tick("a", "b", 1)
            c = make("c", {"a": a_addr})
            async with serving(c) as [c_addr]:
                a.update_peers({"b": b_addr, "c": c_addr, "a": a_addr})  # self is ignored
                assert await resend_until_received(a, c, tick("a", "c", 2)) == tick("a", "c", 2)
                assert await resend_until_received(c, a, tick("c", "a", 3)) == tick("c", "a", 3)
                a.update_peers({"c": c_addr})
                before = a.statistics().dropped
                a.send_nowait(tick("a", "b", 4))
                assert a.statistics().dropped == before + 1
                # b's connection to a is now refused: b is no longer a's peer
                await wait_until(lambda: "a" not in b.statistics().connected_peers)
                assert a.statistics().connected_peers == {"c"}


async def test_queue_overflow_drops_the_oldest_and_never_blocks() -> None:
    with trio.fail_after(TIMEOUT):
        b = make("b", {"a": (LOCAL, 1)})
        async with serving(b) as [b_addr]:
            a = make("a", {"b": b_addr}, max_queue=4)
            for term in range(1, 11):  # a is not serving yet: nothing is sent
                a.send_nowait(tick("a", "b", term))
            stats = a.statistics()
            assert (stats.dropped, stats.queued, stats.sent) == (6, 4, 0)
            a.send_nowait(tick("a", "nobody", 1))
            assert a.statistics().dropped == 7
            async with serving(a):
                got = [await b.receive_channel.receive() for _ in range(4)]
            assert [m.term for m in got] == [7, 8, 9, 10]


async def test_large_batches_are_delivered_in_order() -> None:
    with trio.fail_after(TIMEOUT):
        a, b = make("a", {}), make("b", {})
        async with serving(a, b) as [a_addr, b_addr]:
            a.update_peers({"b": b_addr})
            b.update_peers({"a": a_addr})
            entries = tuple(Entry(1, i, EntryKind.NORMAL, bytes(256)) for i in range(64))
            for term in range(1, 501):
                a.send_nowait(AppendEntries("a", "b", term, 0, 0, entries, 0))
            got = [(await b.receive_channel.receive()).term for _ in range(500)]
            assert got == list(range(1, 501))
            stats: TransportStatistics = a.statistics()
            assert stats.sent == 500
            assert stats.dropped == 0


async def test_messages_go_to_a_given_channel() -> None:
    with trio.fail_after(TIMEOUT):
        send, receive = trio.open_memory_channel[Message](10)
        a = make("a", {})
        b = RaftTransport("b", CLUSTER, (LOCAL, 0), {}, send_channel=send)
        with pytest.raises(RuntimeError):
            _ = b.receive_channel
        async with serving(a, b) as [a_addr, b_addr]:
            a.update_peers({"b": b_addr})
            b.update_peers({"a": a_addr})
            a.send_nowait(tick("a", "b", 9))
            assert await receive.receive() == tick("a", "b", 9)


async def test_shutdown_closes_every_socket() -> None:
    # filterwarnings=error turns a leaked socket's ResourceWarning into a failure;
    # here we also check that the ports are free again.
    with trio.fail_after(TIMEOUT):
        a, b = make("a", {}), make("b", {})
        async with serving(a, b) as [a_addr, b_addr]:
            a.update_peers({"b": b_addr})
            b.update_peers({"a": a_addr})
            assert await resend_until_received(a, b, tick("a", "b", 1)) == tick("a", "b", 1)
        assert a.statistics().connected_peers == frozenset()
        with pytest.raises(OSError):
            await trio.open_tcp_stream(*a_addr)


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


async def test_a_silent_connection_is_closed_after_the_handshake_timeout() -> None:
    with trio.fail_after(TIMEOUT):
        a = make("a", {}, handshake_timeout=0.1)
        async with serving(a) as [addr]:
            stream = await trio.open_tcp_stream(*addr)
            async with stream:
                assert await stream.receive_some() == b""  # a hung up on us
            assert a.statistics().rejected_connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        _frame(b"\x81\xa7refused" + b"\x91" * 1000 + b"\xc0"),  # str() of it would recurse
        encode_frame({"refused": "go away"}),
        encode_frame({"cluster": CLUSTER, "node_id": "b", "version": 99}),
        encode_frame(["not", "a", "hello"]),
        b"\x00\x00\x00\x05HTTP/",
        b"\xff\xff\xff\xff",
    ],
    ids=["nested-refusal", "refusal", "version", "array", "garbage", "oversized"],
)
async def test_a_peer_answering_the_hello_with_nonsense_is_not_connected(answer: bytes) -> None:
    async def fake_peer(stream: trio.SocketStream) -> None:
        await FrameStream(stream).receive()  # the hello
        await stream.send_all(answer)
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT):
        listeners = await trio.open_tcp_listeners(0, host=LOCAL)
        fake_addr = listeners[0].socket.getsockname()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, fake_peer, listeners)
            a = make("a", {"b": fake_addr})
            async with serving(a):
                a.send_nowait(tick("a", "b", 1))
                await trio.sleep(0.2)  # several dials, each refused by a
                assert a.statistics().connected_peers == frozenset()
                assert a.statistics().sent == 0
            nursery.cancel_scope.cancel()
