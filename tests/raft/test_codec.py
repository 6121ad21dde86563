"""Raft messages survive the codec exactly, and nothing a peer sends escapes ProtocolError."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcrond._wire import FrameDecoder, encode_frame
from dcrond.errors import ProtocolError
from dcrond.raft._codec import MAX_INT, TAGS, decode, decode_bytes, encode, encode_bytes
from dcrond.raft._types import (
    MESSAGE_TYPES,
    AppendEntries,
    AppendResponse,
    ConfState,
    Entry,
    EntryKind,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotMeta,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

# --- strategies for every message type ---------------------------------------

node_ids = st.text(min_size=1, max_size=12)
counts = st.integers(min_value=0, max_value=MAX_INT)
small = st.integers(min_value=0, max_value=1000)
ints = counts | small
entries = st.builds(
    Entry, term=ints, index=ints, kind=st.sampled_from(EntryKind), data=st.binary(max_size=64)
)
conf_states = st.builds(
    ConfState,
    voters=st.frozensets(node_ids, max_size=5),
    learners=st.frozensets(node_ids, max_size=3),
)
snapshot_metas = st.builds(SnapshotMeta, index=ints, term=ints, conf=conf_states)

STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    VoteRequest: st.builds(
        VoteRequest,
        frm=node_ids,
        to=node_ids,
        term=ints,
        last_index=ints,
        last_term=ints,
        prevote=st.booleans(),
        transfer=st.booleans(),
    ),
    VoteResponse: st.builds(
        VoteResponse,
        frm=node_ids,
        to=node_ids,
        term=ints,
        granted=st.booleans(),
        prevote=st.booleans(),
    ),
    AppendEntries: st.builds(
        AppendEntries,
        frm=node_ids,
        to=node_ids,
        term=ints,
        prev_index=ints,
        prev_term=ints,
        entries=st.lists(entries, max_size=8).map(tuple),
        commit=ints,
        read_ctx=ints,
    ),
    AppendResponse: st.builds(
        AppendResponse,
        frm=node_ids,
        to=node_ids,
        term=ints,
        success=st.booleans(),
        index=ints,
        hint_index=ints,
        hint_term=ints,
        read_ctx=ints,
    ),
    InstallSnapshot: st.builds(
        InstallSnapshot,
        frm=node_ids,
        to=node_ids,
        term=ints,
        meta=snapshot_metas,
        offset=ints,
        chunk=st.binary(max_size=64),
        done=st.booleans(),
    ),
    SnapshotResponse: st.builds(
        SnapshotResponse,
        frm=node_ids,
        to=node_ids,
        term=ints,
        index=ints,
        offset=ints,
        done=st.booleans(),
        success=st.booleans(),
    ),
    TimeoutNow: st.builds(TimeoutNow, frm=node_ids, to=node_ids, term=ints),
    ReadIndexRequest: st.builds(
        ReadIndexRequest, frm=node_ids, to=node_ids, term=ints, request_id=st.binary(max_size=16)
    ),
    ReadIndexResponse: st.builds(
        ReadIndexResponse,
        frm=node_ids,
        to=node_ids,
        term=ints,
        request_id=st.binary(max_size=16),
        index=ints,
    ),
}
messages: st.SearchStrategy[Message] = st.one_of(*STRATEGIES.values())

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=10) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)


# --- round trips ---------------------------------------------------------------


def test_every_message_type_has_a_strategy_and_a_unique_tag() -> None:
    assert set(STRATEGIES) == set(MESSAGE_TYPES) == set(TAGS)
    assert len(set(TAGS.values())) == len(TAGS)


def test_entry_fields_are_the_ones_the_fast_decoder_fills() -> None:
    # _codec builds Entry objects slot by slot on the hot path; a new field
    # in Entry must be added there too, or decoded entries would lack it.
    assert [f.name for f in dataclasses.fields(Entry)] == ["term", "index", "kind", "data"]
    assert not hasattr(Entry, "__post_init__")


@settings(max_examples=300, deadline=None)
@given(msg=messages)
def test_every_message_round_trips_through_msgpack_bytes(msg: Message) -> None:
    assert decode_bytes(encode_bytes(msg)) == msg


@settings(max_examples=100, deadline=None)
@given(msg=messages)
def test_every_message_round_trips_without_msgpack_in_between(msg: Message) -> None:
    # The simulator may hand encode()'s tuples straight to decode().
    assert decode(encode(msg)) == msg


@settings(max_examples=50, deadline=None)
@given(msgs=st.lists(messages, max_size=10))
def test_messages_round_trip_through_frames(msgs: list[Message]) -> None:
    dec = FrameDecoder()
    dec.feed(b"".join(encode_frame(encode(m)) for m in msgs))
    assert [decode(obj) for obj in dec.frames()] == msgs


def test_decoded_entry_kinds_are_enum_members() -> None:
    msg = AppendEntries("a", "b", 1, 0, 0, (Entry(1, 1, EntryKind.CONFIG, b"c"),), 0)
    (entry,) = decode_bytes(encode_bytes(msg)).entries  # type: ignore[union-attr]
    assert entry.kind is EntryKind.CONFIG


def test_encoding_is_deterministic_for_snapshot_membership() -> None:
    a = ConfState(voters=frozenset({"n3", "n1", "n2"}), learners=frozenset({"z", "y"}))
    b = ConfState(voters=frozenset({"n2", "n3", "n1"}), learners=frozenset({"y", "z"}))

    def chunk(conf: ConfState) -> InstallSnapshot:
        return InstallSnapshot("a", "b", 1, SnapshotMeta(5, 1, conf), 0, b"", True)

    assert encode_bytes(chunk(a)) == encode_bytes(chunk(b))


def test_encoding_something_that_is_not_a_message_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not a Raft message"):
        encode(Entry(1, 1))  # type: ignore[arg-type]


def test_hot_path_message_is_compact() -> None:
    batch = tuple(Entry(7, 1000 + i, EntryKind.NORMAL, bytes(256)) for i in range(64))
    size = len(encode_bytes(AppendEntries("n1", "n2", 7, 999, 7, batch, 990)))
    # 64 * (256 data + 2 bin header + ~5 for term, index, kind) plus a little
    assert size < 64 * 266 + 40


# --- strictness --------------------------------------------------------------

GOOD_VOTE = list(encode(VoteRequest("a", "b", 3, 10, 2)))
GOOD_APPEND = list(
    encode(AppendEntries("a", "b", 3, 1, 1, (Entry(3, 2, EntryKind.NORMAL, b"x"),), 1))
)


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"tag": 1}, "wrong type"),
        ([], "wrong type"),
        (b"\x01", "wrong type"),
        ([99, "a"], "unknown message tag"),
        ([True, *GOOD_VOTE[1:]], "unknown message tag"),  # bool is not an int tag
        ([[1], "a"], "unknown message tag"),  # unhashable tag
        (GOOD_VOTE[:-1], "has 7 fields"),
        ([*GOOD_VOTE[:3], 3.0, *GOOD_VOTE[4:]], "VoteRequest.term"),
        ([*GOOD_VOTE[:3], True, *GOOD_VOTE[4:]], "VoteRequest.term"),
        ([*GOOD_VOTE[:3], -1, *GOOD_VOTE[4:]], "VoteRequest.term"),
        ([*GOOD_VOTE[:3], 2**63, *GOOD_VOTE[4:]], "VoteRequest.term"),
        ([GOOD_VOTE[0], b"a", *GOOD_VOTE[2:]], "VoteRequest.frm"),
        ([GOOD_VOTE[0], "", *GOOD_VOTE[2:]], "VoteRequest.frm"),
        ([GOOD_VOTE[0], "x" * 256, *GOOD_VOTE[2:]], "VoteRequest.frm"),
        ([*GOOD_VOTE[:6], 1, GOOD_VOTE[7]], "VoteRequest.prevote"),
        ([*GOOD_APPEND[:6], [3, 2, 0], *GOOD_APPEND[7:]], "not a multiple of 4"),
        ([*GOOD_APPEND[:6], {"x": 1}, *GOOD_APPEND[7:]], "entries must be an array"),
        ([*GOOD_APPEND[:6], [3, 2, 0, "x"], *GOOD_APPEND[7:]], r"entries\[0\]\.data"),
        ([*GOOD_APPEND[:6], [3, 2, 7, b"x"], *GOOD_APPEND[7:]], r"entries\[0\]\.kind"),
        ([*GOOD_APPEND[:6], [3, 2, True, b"x"], *GOOD_APPEND[7:]], r"entries\[0\]\.kind"),
        ([*GOOD_APPEND[:6], [3, 2, 0, b"", 3, -3, 0, b""], *GOOD_APPEND[7:]], r"\[1\]\.index"),
        ([*GOOD_APPEND[:6], [3.5, 2, 0, b""], *GOOD_APPEND[7:]], r"entries\[0\]\.term"),
        ([5, "a", "b", 1, [1, 1, ["v"]], 0, b"", True], "meta must be an array of 4"),
        ([5, "a", "b", 1, [1, 1, ["v"], [7]], 0, b"", True], "meta.learners"),
    ],
)
def test_malformed_message_names_the_bad_field(obj: object, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode(obj)


@settings(max_examples=300, deadline=None)
@given(obj=msgpack_values)
def test_arbitrary_msgpack_values_raise_only_protocol_error(obj: object) -> None:
    try:
        msg = decode(obj)
    except ProtocolError:
        return
    assert type(msg) in MESSAGE_TYPES  # a lucky valid message is fine


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    try:
        msg = decode_bytes(data)
    except ProtocolError:
        return
    assert type(msg) in MESSAGE_TYPES
    with pytest.raises(ProtocolError):
        decode(data)


@settings(max_examples=300, deadline=None)
@given(msg=messages, data=st.data())
def test_a_valid_message_with_one_field_replaced_raises_only_protocol_error(
    msg: Message, data: st.DataObject
) -> None:
    # Near misses reach far deeper into the validation than random values do.
    obj = list(encode(msg))
    position = data.draw(st.integers(0, len(obj) - 1))
    inner = obj[position]
    if isinstance(inner, list | tuple) and inner and data.draw(st.booleans()):
        inner = list(inner)
        inner[data.draw(st.integers(0, len(inner) - 1))] = data.draw(msgpack_values)
        obj[position] = inner
    else:
        obj[position] = data.draw(msgpack_values)
    try:
        decoded = decode(msgpack.unpackb(msgpack.packb(obj), strict_map_key=False))
    except ProtocolError:
        return
    assert type(decoded) in MESSAGE_TYPES


@settings(max_examples=300, deadline=None)
@given(msg=messages, data=st.data())
def test_flipped_or_cut_bytes_raise_only_protocol_error(msg: Message, data: st.DataObject) -> None:
    raw = bytearray(encode_bytes(msg))
    if data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    else:
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    try:
        decoded = decode_bytes(bytes(raw))
    except ProtocolError:
        return
    assert type(decoded) in MESSAGE_TYPES


def test_huge_length_inside_a_msgpack_body_is_refused_cleanly() -> None:
    # bin32 and array32 announcing 4 G items inside a tiny frame body
    with pytest.raises(ProtocolError, match="not msgpack"):
        decode_bytes(b"\xc6" + struct.pack(">I", 0xFFFFFFFF) + b"x")
    with pytest.raises(ProtocolError, match="not msgpack"):
        decode_bytes(b"\xdd" + struct.pack(">I", 0xFFFFFFFF) + b"\x01")


def test_deeply_nested_value_is_refused_cleanly() -> None:
    with pytest.raises(ProtocolError):
        decode_bytes(b"\x91" * 100_000 + b"\x01")
