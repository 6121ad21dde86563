"""Gossip sealing: what is sealed opens; a changed, cut, foreign or replayed-into-another-
cluster packet does not, and is counted; two real gossip nodes talk only with the same secret."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from dcrond.errors import InvalidRequest, ProtocolError
from dcrond.gossip import AeadSealer, GossipConfig, GossipNode, MemberState, NodeMeta
from dcrond.gossip._aead import SEAL_OVERHEAD, derive_key
from dcrond.gossip._codec import encode_packet
from dcrond.gossip._types import Ping

SECRET = "q8Wc1vJ0bS2mT5xR7yK3nP6dF9gH4jL2"
PACKETS = st.binary(min_size=0, max_size=1500)


def test_the_key_is_hkdf_sha256_of_the_secret_salted_with_the_cluster_name() -> None:
    # RFC 5869 written out with the standard library, as an independent oracle
    prk = hmac.digest(b"prod", SECRET.encode(), hashlib.sha256)
    okm = hmac.digest(prk, b"dcrond gossip seal v1" + b"\x01", hashlib.sha256)
    assert derive_key(SECRET, "prod") == okm
    assert derive_key(SECRET, "prod") != derive_key(SECRET, "staging")


@given(PACKETS)
def test_a_sealed_packet_opens_to_the_same_bytes_and_grows_by_the_overhead(data: bytes) -> None:
    sealer = AeadSealer(SECRET, "prod")
    sealed = sealer.seal(data)
    assert len(sealed) == len(data) + sealer.overhead == len(data) + SEAL_OVERHEAD
    assert sealed[0] == 1  # the version byte
    assert AeadSealer(SECRET, "prod").open(sealed) == data  # another host, same secret


def test_every_seal_uses_a_fresh_nonce_and_hides_the_content() -> None:
    sealer = AeadSealer(SECRET, "prod")
    data = b"member node-alpha at 198.18.0.1:7302" * 4
    one, two = sealer.seal(data), sealer.seal(data)
    assert one[1:13] != two[1:13]
    assert one != two
    assert b"node-alpha" not in one and b"198.18" not in one


@given(PACKETS, st.data())
def test_changing_any_byte_is_refused(data: bytes, draw: st.DataObject) -> None:
    sealer = AeadSealer(SECRET, "prod")
    sealed = bytearray(sealer.seal(data))
    index = draw.draw(st.integers(0, len(sealed) - 1), label="index")
    sealed[index] ^= draw.draw(st.integers(1, 255), label="xor")
    with pytest.raises(ProtocolError, match="not authentic"):
        sealer.open(bytes(sealed))
    assert sealer.statistics().refused == 1


@given(PACKETS, st.data())
def test_a_cut_or_lengthened_packet_is_refused(data: bytes, draw: st.DataObject) -> None:
    sealer = AeadSealer(SECRET, "prod")
    sealed = sealer.seal(data)
    cut = draw.draw(st.integers(0, len(sealed) - 1), label="keep")
    extra = draw.draw(st.binary(min_size=1, max_size=32), label="extra")
    for bad in (sealed[:cut], sealed + extra):
        with pytest.raises(ProtocolError, match="not authentic"):
            sealer.open(bad)


@pytest.mark.parametrize(
    ("secret", "cluster"),
    [("another secret of 32 characters!", "prod"), (SECRET, "staging")],
    ids=["another-secret", "another-cluster"],
)
def test_a_packet_of_another_secret_or_cluster_is_refused_and_counted(
    secret: str, cluster: str
) -> None:
    ours = AeadSealer(SECRET, "prod")
    foreign = AeadSealer(secret, cluster).seal(b"ping")
    for _ in range(3):
        with pytest.raises(ProtocolError, match="another key"):
            ours.open(foreign)
    assert ours.statistics().refused == 3
    assert ours.statistics().opened == 0


def test_plain_text_and_unknown_versions_are_refused() -> None:
    sealer = AeadSealer(SECRET, "prod")
    plain = encode_packet([Ping(1, "a", "b")], 1400)
    with pytest.raises(ProtocolError, match="not authentic"):
        sealer.open(plain)
    future = b"\x02" + sealer.seal(b"x")[1:]
    with pytest.raises(ProtocolError, match="unknown seal version 2"):
        sealer.open(future)


def test_a_secret_change_without_a_flag_day() -> None:
    new = "a brand new secret, 32 chars...!"
    old_only = AeadSealer(SECRET, "prod")
    step1 = AeadSealer(SECRET, "prod", also_accept=[new])  # everywhere first
    step2 = AeadSealer(new, "prod", also_accept=[SECRET])  # then switch
    step3 = AeadSealer(new, "prod")  # then forget the old one
    assert step1.open(step2.seal(b"a")) == b"a"
    assert step2.open(old_only.seal(b"b")) == b"b"
    assert step3.open(step2.seal(b"c")) == b"c"
    with pytest.raises(ProtocolError):
        old_only.open(step2.seal(b"d"))


def test_weak_secrets_and_empty_cluster_names_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="at least 16 characters"):
        AeadSealer("hunter2", "prod")
    with pytest.raises(InvalidRequest, match="cluster name"):
        AeadSealer(SECRET, "")


FAST = GossipConfig(
    probe_interval=0.1,
    probe_timeout=0.05,
    gossip_interval=0.03,
    suspicion_mult=3,
    push_pull_interval=2.0,
    reconnect_interval=1.0,
)


class Recording:
    """Delegates to a sealer and keeps every sealed packet (what travels the network)."""

    def __init__(self, inner: AeadSealer) -> None:
        self.inner = inner
        self.wire: list[bytes] = []

    @property
    def overhead(self) -> int:
        return self.inner.overhead

    def seal(self, data: bytes) -> bytes:
        sealed = self.inner.seal(data)
        self.wire.append(sealed)
        return sealed

    def open(self, data: bytes) -> bytes:
        return self.inner.open(data)


def _alive(nodes: Sequence[GossipNode], name: str) -> bool:
    return all((m := n.member(name)) is not None and m.state == MemberState.ALIVE for n in nodes)


async def test_gossip_nodes_with_one_secret_talk_and_a_stranger_is_refused() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a_seal = Recording(AeadSealer(SECRET, "prod"))
            a = GossipNode("node-alpha", NodeMeta(), config=FAST, sealer=a_seal)
            b = GossipNode("node-bravo", NodeMeta(), config=FAST, sealer=AeadSealer(SECRET, "prod"))
            other = AeadSealer(SECRET, "staging")  # same secret, another cluster
            stranger = GossipNode("x", NodeMeta(), config=FAST, sealer=other)
            addr_a = await nursery.start(a.serve)
            await nursery.start(b.serve)
            await nursery.start(stranger.serve)
            assert await b.join([addr_a]) == 1  # push-pull over TCP, sealed
            while not (_alive([a, b], "node-alpha") and _alive([a, b], "node-bravo")):  # noqa: ASYNC110
                await trio.sleep(0.02)
            await trio.sleep(0.3)  # some UDP probes and gossip go both ways
            assert b.statistics().packets_in > 0
            assert b.statistics().rejected_packets == 0

            assert await stranger.join([addr_a]) == 0
            with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as s:
                await s.sendto(
                    other.seal(encode_packet([Ping(1, "node-alpha", "x")], 1400)), addr_a
                )
                with trio.move_on_after(0.5) as cs:
                    await s.recvfrom(2000)
                assert cs.cancelled_caught, "a packet of another cluster got an answer"
            assert a.member("x") is None and b.member("x") is None
            assert a.statistics().rejected_packets >= 2
            assert a_seal.wire and not any(b"node-alpha" in p for p in a_seal.wire)
            nursery.cancel_scope.cancel()
