"""The gossip codec: every message survives the wire, sizes add up, and bad bytes only ever
raise ProtocolError."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcrond.errors import InvalidRequest, ProtocolError
from dcrond.gossip import Alive, Message, NodeMeta, Ping, StateEntry
from dcrond.gossip._codec import (
    MAX_MESSAGE_BYTES,
    MAX_META_BYTES,
    MAX_NAME,
    PACKET_OVERHEAD,
    check_identity,
    decode,
    decode_packet,
    decode_state,
    encode,
    encode_packet,
    encode_state,
    message_size,
)
from tests.gossip.strategies import entries, messages


@given(st.lists(messages, max_size=8))
def test_packets_round_trip_and_cost_no_more_than_their_messages(msgs: list[Message]) -> None:
    data = encode_packet(msgs, 1 << 20)
    assert decode_packet(data) == tuple(msgs)
    assert len(data) <= PACKET_OVERHEAD + sum(message_size(m) for m in msgs)


@given(st.lists(entries, max_size=20), st.booleans())
def test_push_pull_state_round_trips(es: list[StateEntry], join: bool) -> None:
    assert decode_state(encode_state(es, join=join)) == (join, tuple(es))


def test_the_largest_valid_alive_fits_the_declared_maximum() -> None:
    # Tag values are bounded by the meta limit, so fill the meta right up to it.
    meta = NodeMeta(65535, 65535, (("k" * MAX_NAME, "v" * 300),), 1 << 31, "v" * 20, "leader")
    while len(msgpack.packb(encode(Alive("n", 0, ("h", 1), meta))[5])) < MAX_META_BYTES:
        meta = NodeMeta(meta.api_port, meta.raft_port, ((meta.tags[0][0], meta.tags[0][1] + "v"),),
                        meta.free_slots, meta.version, meta.raft_role)  # fmt: skip
    alive = Alive("\u00e9" * (MAX_NAME // 2), (1 << 63) - 1, ("h" * 255, 65535), meta)
    assert decode_packet(encode_packet([alive], 1400)) == (alive,)
    assert message_size(alive) <= MAX_MESSAGE_BYTES


def test_encode_packet_refuses_to_exceed_its_budget() -> None:
    with pytest.raises(ProtocolError, match="oversized"):
        encode_packet([Ping(1, "a" * 100, "b" * 100)] * 10, 1400)


@pytest.mark.parametrize(
    "obj",
    [
        [],
        [2, [3, 1]],  # wrong wire version
        [True, [3, 1]],  # a bool is not a version
        [1, [99, 1]],  # unknown tag
        [1, [3]],  # Ack without seq
        [1, [3, -1]],  # negative seq
        [1, [3, 1 << 63]],  # seq out of range
        [1, [3, True]],  # bool where an int belongs
        [1, [1, 1, "a", ""]],  # Ping without a source
        [1, [5, "a", 0, "h", 0, [0, 0, [], 0, "", "", ""]]],  # port 0
        [1, [5, "a", 0, "h", 1, [0, 0, ["k"], 0, "", "", ""]]],  # odd tag list
        [1, [5, "a", 0, "h", 1, [0, 0, ["k", "1", "k", "2"], 0, "", "", ""]]],  # repeated tag
        [1, [5, "a", 0, "h", 1, [0, 0, ["k", "v" * 600], 0, "", "", ""]]],  # meta too large
        [1, [5, "a", 0, "h", 1, [0, 0, [], 0, "", ""]]],  # meta field missing
        [1, [6, "x" * (MAX_NAME + 1), 0, "a"]],  # name too long
        [1, [2, 1, "t", "h", 1, 1]],  # nack flag is not a bool
        {"not": "an array"},
    ],
)
def test_malformed_packets_are_refused(obj: object) -> None:
    with pytest.raises(ProtocolError):
        decode_packet(msgpack.packb(obj))


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_packet(data)


_leaf = st.one_of(
    st.integers(-5, 5), st.booleans(), st.text(max_size=3), st.binary(max_size=3), st.none()
)
_objs = st.recursive(_leaf, lambda c: st.lists(c, max_size=7), max_leaves=30)


@given(st.lists(_objs, max_size=4))
def test_random_structures_decode_to_valid_messages_or_protocol_error(items: list[object]) -> None:
    for tag in range(1, 8):
        try:
            msg = decode([tag, *items])
        except ProtocolError:
            continue
        assert decode(encode(msg)) == msg


def test_state_frames_are_checked_too() -> None:
    for obj in (
        [1, "yes", []],
        [1, True, [["a", "h", 1, [0, 0, [], 0, "", "", ""], 0, 9]]],
        [2, True, []],
    ):
        with pytest.raises(ProtocolError):
            decode_state(msgpack.packb(obj))


def test_check_identity_refuses_what_could_not_be_gossiped() -> None:
    check_identity("a", ("127.0.0.1", 7946), NodeMeta())
    with pytest.raises(InvalidRequest):
        check_identity("", ("127.0.0.1", 7946), NodeMeta())
    with pytest.raises(InvalidRequest):
        check_identity("a", ("127.0.0.1", 0), NodeMeta())
    with pytest.raises(InvalidRequest, match="meta exceeds"):
        check_identity("a", ("h", 1), NodeMeta(tags=tuple((f"k{i}", "v" * 100) for i in range(8))))
    with pytest.raises(InvalidRequest):
        check_identity("a", ("h", 1), NodeMeta(tags=(("k", "1"), ("k", "2"))))
