"""The trio driver on real sockets: UDP probes and gossip, TCP push-pull, on 127.0.0.1.

Timings are shrunk (probe every 100 ms) so a whole life cycle -- join, agree,
detect a stopped member, see a graceful leave -- takes a few real seconds.
Every test has an absolute timeout and stops every node it started.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from functools import partial

import trio

from dcrond.errors import ProtocolError
from dcrond.gossip import (
    Address,
    GossipConfig,
    GossipNode,
    MemberEvent,
    MemberState,
    NodeMeta,
)
from dcrond.gossip._codec import decode_packet, encode_packet
from dcrond.gossip._types import Ack, Ping

FAST = GossipConfig(
    probe_interval=0.1,
    probe_timeout=0.05,
    gossip_interval=0.03,
    suspicion_mult=3,
    push_pull_interval=2.0,
    reconnect_interval=1.0,
)


class Changes:
    """Wakes waiters whenever any node reports a membership event."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def on_event(self, ev: MemberEvent) -> None:
        self._event.set()
        self._event = trio.Event()

    async def until(self, pred: Callable[[], bool]) -> None:
        while not pred():
            await self._event.wait()


async def _serve(
    node: GossipNode, scope: trio.CancelScope, *, task_status: trio.TaskStatus[Address]
) -> None:
    with scope:
        await node.serve(task_status=task_status)


def _sees(nodes: Sequence[GossipNode], name: str, state: MemberState) -> bool:
    return all((m := n.member(name)) is not None and m.state == state for n in nodes)


async def test_five_members_join_agree_detect_a_stopped_one_and_see_a_leave() -> None:
    changes = Changes()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nodes = [
                GossipNode(
                    f"n{i}",
                    NodeMeta(api_port=8000 + i, raft_port=9000 + i, version="0.1.0"),
                    config=FAST,
                    on_event=changes.on_event,
                )
                for i in range(5)
            ]
            scopes = [trio.CancelScope() for _ in nodes]
            addrs = [
                await nursery.start(partial(_serve, n, s))
                for n, s in zip(nodes, scopes, strict=True)
            ]
            assert len(set(addrs)) == 5
            for node in nodes[1:]:
                assert await node.join([addrs[0]]) == 1

            # Everyone sees everyone alive, with the metadata each announced.
            await changes.until(lambda: all(_sees(nodes, n.name, MemberState.ALIVE) for n in nodes))
            assert nodes[3].member("n1") is not None
            assert nodes[3].member("n1").meta.api_port == 8001  # type: ignore[union-attr]

            # A metadata change reaches everyone (with a new incarnation).
            nodes[2].update_meta(NodeMeta(api_port=8002, free_slots=7, raft_role="voter"))
            await changes.until(
                lambda: all(
                    (m := n.member("n2")) is not None and m.meta.free_slots == 7 for n in nodes
                )
            )

            # n4 stops answering (no leave): the others declare it dead.
            scopes[4].cancel()
            await changes.until(lambda: _sees(nodes[:4], "n4", MemberState.DEAD))

            # n3 leaves gracefully: the others record a leave, not a failure.
            await nodes[3].leave()
            await changes.until(lambda: _sees(nodes[:3], "n3", MemberState.LEFT))
            for n in nodes[:3]:
                assert _sees([n], "n4", MemberState.DEAD)
                st = n.statistics()
                assert st.push_pulls_ok + st.push_pulls_served >= 1
                assert st.rejected_packets == 0 and st.core.packets_out > 0
            nursery.cancel_scope.cancel()


async def test_garbage_datagrams_are_counted_and_change_nothing() -> None:
    changes = Changes()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a = GossipNode("a", NodeMeta(), config=FAST, on_event=changes.on_event)
            b = GossipNode("b", NodeMeta(), config=FAST, on_event=changes.on_event)
            addr_a = await nursery.start(a.serve)
            await nursery.start(b.serve)
            assert await b.join([addr_a]) == 1
            await changes.until(lambda: _sees([a, b], "a", MemberState.ALIVE))

            junk = [
                b"",
                b"\xc1",  # never valid msgpack
                b"\x92\x02\x90",  # wire version 2
                encode_packet([Ping(1, "a", "x")], 1400)[:-1],  # truncated
                b"\x92\x01\x93\x63\x00\x00",  # unknown message tag 99
                bytes(2000),
            ]
            with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as s:
                for data in junk:
                    await s.sendto(data, addr_a)
                # A valid ping still gets its ack after all that.
                await s.sendto(encode_packet([Ping(7, "a", "x")], 1400), addr_a)
                reply, _ = await s.recvfrom(2000)
            assert decode_packet(reply)[0] == Ack(7)
            assert a.statistics().rejected_packets == len(junk)
            assert _sees([a, b], "b", MemberState.ALIVE) and _sees([a, b], "a", MemberState.ALIVE)
            nursery.cancel_scope.cancel()


class HmacSealer:
    """A test sealer (authentication only) proving the seal/open seam."""

    overhead = 32

    def __init__(self, key: bytes) -> None:
        self._key = key

    def seal(self, data: bytes) -> bytes:
        return hmac.digest(self._key, data, hashlib.sha256) + data

    def open(self, data: bytes) -> bytes:
        tag, body = data[:32], data[32:]
        if not hmac.compare_digest(tag, hmac.digest(self._key, body, hashlib.sha256)):
            raise ProtocolError("not authentic: bad tag")
        return body


async def test_sealed_members_talk_and_refuse_a_member_with_another_key() -> None:
    changes = Changes()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            key = HmacSealer(b"join secret")
            a = GossipNode("a", NodeMeta(), config=FAST, sealer=key, on_event=changes.on_event)
            b = GossipNode("b", NodeMeta(), config=FAST, sealer=key, on_event=changes.on_event)
            stranger = GossipNode("x", NodeMeta(), config=FAST, sealer=HmacSealer(b"guess"))
            addr_a = await nursery.start(a.serve)
            await nursery.start(b.serve)
            await nursery.start(stranger.serve)
            assert await b.join([addr_a]) == 1
            await changes.until(lambda: _sees([a, b], "a", MemberState.ALIVE))
            await changes.until(lambda: _sees([a, b], "b", MemberState.ALIVE))

            assert await stranger.join([addr_a]) == 0
            # The stranger also probes by UDP once it knows an address: refused too.
            with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as s:
                sealed = HmacSealer(b"guess").seal(encode_packet([Ping(1, "a", "x")], 1400))
                await s.sendto(sealed, addr_a)
                with trio.move_on_after(0.5) as cs:
                    await s.recvfrom(2000)
                assert cs.cancelled_caught, "a packet with the wrong key got an answer"
            assert a.member("x") is None and b.member("x") is None
            assert a.statistics().rejected_packets >= 2
            nursery.cancel_scope.cancel()
