"""Raft messages to and from compact msgpack-able arrays, validated strictly.

Theory of operation
-------------------
:func:`encode` turns a message into a tuple ``(tag, field, field, ...)`` in the
dataclass's field order; msgpack writes it as an array, which is smaller and
much faster to build and parse than a map. The hot path is AppendEntries, so
its entries are one *flat* array ``[term, index, kind, data, term, ...]``
rather than an array per entry (64 entries of 256 B encode + decode in a few
tens of microseconds; see bench/codec.py). A snapshot's membership travels as
two sorted arrays so the encoding is deterministic.

:func:`decode` is the trust boundary: it takes whatever msgpack produced from a
peer's frame and either returns a well-typed message or raises
:class:`~dcrond.errors.ProtocolError` -- never any other exception. Every field
is checked: ints are ``int`` (not ``bool``, not ``float``) in ``0 .. 2**63-1``
(so they fit an SQLite INTEGER), node ids are non-empty ``str`` of at most
255 characters, byte fields are ``bytes``, flags are ``bool`` and entry kinds
are valid ``EntryKind`` values. Arrays from msgpack arrive as lists; tuples
(from calling ``decode(encode(m))`` without msgpack in between, as the
simulator may) are accepted too.

Tags are part of the wire format: never renumber them, only add.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NoReturn, TypeAlias

from dcrond._wire import dumps, loads
from dcrond.errors import ProtocolError
from dcrond.raft._types import (
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

__all__ = [
    "MAX_INT",
    "MAX_NODE_ID",
    "TAGS",
    "decode",
    "decode_bytes",
    "encode",
    "encode_bytes",
]

MAX_INT: Final = (1 << 63) - 1
"""Largest term, index, offset or counter accepted from a peer (SQLite's INTEGER)."""

MAX_NODE_ID: Final = 255
"""Longest node id accepted from a peer, in characters."""

TAGS: Final[dict[type, int]] = {
    VoteRequest: 1,
    VoteResponse: 2,
    AppendEntries: 3,
    AppendResponse: 4,
    InstallSnapshot: 5,
    SnapshotResponse: 6,
    TimeoutNow: 7,
    ReadIndexRequest: 8,
    ReadIndexResponse: 9,
}
"""Wire tag of each message type."""

_KINDS: Final[dict[int, EntryKind]] = {int(k): k for k in EntryKind}
_KIND_VALUES: Final = frozenset(_KINDS)
_KIND_TYPES: Final = frozenset({int, EntryKind})
_INT_ONLY: Final = {int}
_BYTES_ONLY: Final = {bytes}
_ARRAY: Final = (list, tuple)
_Array: TypeAlias = list[Any] | tuple[Any, ...]

# Entry is a frozen slotted dataclass, whose generated __init__ goes through
# object.__setattr__ once per field; on the hot path (tens of entries per
# AppendEntries) we fill the slots through their descriptors instead, which is
# about 40% faster. tests/raft/test_codec.py pins Entry's field list so a new
# field cannot be silently skipped here.
_new_entry: Final = object.__new__
_set_term: Final = Entry.__dict__["term"].__set__
_set_index: Final = Entry.__dict__["index"].__set__
_set_kind: Final = Entry.__dict__["kind"].__set__
_set_data: Final = Entry.__dict__["data"].__set__


# --- encoding ----------------------------------------------------------------


def encode(msg: Message) -> tuple[Any, ...]:
    """Return ``msg`` as a tuple of msgpack-able plain values (tag first).

    Raises TypeError if ``msg`` is not one of the Raft message types (a bug
    in the caller). Values are not validated here; the receiver does that.
    """
    try:
        fn = _ENCODERS[type(msg)]
    except KeyError:
        raise TypeError(f"not a Raft message: {type(msg).__name__}") from None
    return fn(msg)


def encode_bytes(msg: Message) -> bytes:
    """Return ``msg`` as msgpack bytes (no frame header)."""
    return dumps(encode(msg))


def _enc_vote_request(m: VoteRequest) -> tuple[Any, ...]:
    return (1, m.frm, m.to, m.term, m.last_index, m.last_term, m.prevote, m.transfer)


def _enc_vote_response(m: VoteResponse) -> tuple[Any, ...]:
    return (2, m.frm, m.to, m.term, m.granted, m.prevote)


def _enc_append_entries(m: AppendEntries) -> tuple[Any, ...]:
    flat: list[Any] = []
    extend = flat.extend
    for e in m.entries:
        extend((e.term, e.index, e.kind, e.data))
    return (3, m.frm, m.to, m.term, m.prev_index, m.prev_term, flat, m.commit, m.read_ctx)


def _enc_append_response(m: AppendResponse) -> tuple[Any, ...]:
    return (
        4,
        m.frm,
        m.to,
        m.term,
        m.success,
        m.index,
        m.hint_index,
        m.hint_term,
        m.read_ctx,
    )


def _enc_meta(meta: SnapshotMeta) -> tuple[Any, ...]:
    return (
        meta.index,
        meta.term,
        sorted(meta.conf.voters),
        sorted(meta.conf.learners),
    )


def _enc_install_snapshot(m: InstallSnapshot) -> tuple[Any, ...]:
    return (5, m.frm, m.to, m.term, _enc_meta(m.meta), m.offset, m.chunk, m.done)


def _enc_snapshot_response(m: SnapshotResponse) -> tuple[Any, ...]:
    return (6, m.frm, m.to, m.term, m.index, m.offset, m.done, m.success)


def _enc_timeout_now(m: TimeoutNow) -> tuple[Any, ...]:
    return (7, m.frm, m.to, m.term)


def _enc_read_index_request(m: ReadIndexRequest) -> tuple[Any, ...]:
    return (8, m.frm, m.to, m.term, m.request_id)


def _enc_read_index_response(m: ReadIndexResponse) -> tuple[Any, ...]:
    return (9, m.frm, m.to, m.term, m.request_id, m.index)


_ENCODERS: Final[dict[type, Callable[[Any], tuple[Any, ...]]]] = {
    VoteRequest: _enc_vote_request,
    VoteResponse: _enc_vote_response,
    AppendEntries: _enc_append_entries,
    AppendResponse: _enc_append_response,
    InstallSnapshot: _enc_install_snapshot,
    SnapshotResponse: _enc_snapshot_response,
    TimeoutNow: _enc_timeout_now,
    ReadIndexRequest: _enc_read_index_request,
    ReadIndexResponse: _enc_read_index_response,
}


# --- decoding ----------------------------------------------------------------


def decode(obj: object) -> Message:
    """Return the message ``obj`` encodes; ProtocolError if it is malformed in any way."""
    if type(obj) not in _ARRAY or not obj:
        _bad(f"wrong type: a message is a non-empty array, got {_describe(obj)}")
    assert isinstance(obj, list | tuple)
    tag = obj[0]
    fn = _DECODERS.get(tag) if type(tag) is int else None
    if fn is None:
        _bad(f"malformed: unknown message tag {_describe(tag)}")
    name, arity, decoder = fn
    if len(obj) != arity:
        _bad(f"malformed: {name} has {arity - 1} fields, got {len(obj) - 1}")
    return decoder(obj)


def decode_bytes(data: bytes | bytearray | memoryview) -> Message:
    """Parse msgpack bytes (no frame header) into a message; ProtocolError if malformed."""
    return decode(loads(data))


def _bad(reason: str) -> NoReturn:
    raise ProtocolError(reason)


def _describe(x: object) -> str:
    """Name what a peer sent, briefly and without ever failing."""
    kind = type(x).__name__
    if isinstance(x, str | bytes | bytearray | list | tuple | dict):
        if isinstance(x, str) and len(x) <= 20:
            return f"{kind} {x!r}"
        return f"{kind} of length {len(x)}"
    if isinstance(x, bool | float) or x is None:
        return f"{kind} {x!r}"
    if isinstance(x, int):
        return f"{kind} {x}" if x.bit_length() <= 64 else f"{kind} of {x.bit_length()} bits"
    return kind


def _int(x: object, what: str) -> int:
    if type(x) is not int or not 0 <= x <= MAX_INT:
        _bad(f"wrong type: {what} must be an int in 0..2**63-1, got {_describe(x)}")
    return x


def _bool(x: object, what: str) -> bool:
    if type(x) is not bool:
        _bad(f"wrong type: {what} must be a bool, got {_describe(x)}")
    return x


def _bytes(x: object, what: str) -> bytes:
    if type(x) is not bytes:
        _bad(f"wrong type: {what} must be bytes, got {_describe(x)}")
    return x


def _node(x: object, what: str) -> str:
    if type(x) is not str or not 0 < len(x) <= MAX_NODE_ID:
        _bad(f"wrong type: {what} must be a node id (str of 1..255 chars), got {_describe(x)}")
    return x


def _dec_vote_request(o: _Array) -> VoteRequest:
    return VoteRequest(
        frm=_node(o[1], "VoteRequest.frm"),
        to=_node(o[2], "VoteRequest.to"),
        term=_int(o[3], "VoteRequest.term"),
        last_index=_int(o[4], "VoteRequest.last_index"),
        last_term=_int(o[5], "VoteRequest.last_term"),
        prevote=_bool(o[6], "VoteRequest.prevote"),
        transfer=_bool(o[7], "VoteRequest.transfer"),
    )


def _dec_vote_response(o: _Array) -> VoteResponse:
    return VoteResponse(
        frm=_node(o[1], "VoteResponse.frm"),
        to=_node(o[2], "VoteResponse.to"),
        term=_int(o[3], "VoteResponse.term"),
        granted=_bool(o[4], "VoteResponse.granted"),
        prevote=_bool(o[5], "VoteResponse.prevote"),
    )


def _dec_entries(flat: object) -> tuple[Entry, ...]:
    if type(flat) not in _ARRAY:
        _bad(f"wrong type: AppendEntries.entries must be an array, got {_describe(flat)}")
    assert isinstance(flat, list | tuple)
    if len(flat) % 4:
        _bad(f"malformed: AppendEntries.entries has {len(flat)} items, not a multiple of 4")
    if not flat:
        return ()
    # Validate column by column with C-level builtins, then build the entries.
    terms = flat[0::4]
    indexes = flat[1::4]
    kinds = flat[2::4]
    datas = flat[3::4]
    if (
        set(map(type, terms)) != _INT_ONLY
        or set(map(type, indexes)) != _INT_ONLY
        or set(map(type, datas)) != _BYTES_ONLY
        or not set(map(type, kinds)) <= _KIND_TYPES
        or not set(kinds) <= _KIND_VALUES
        or min(terms) < 0
        or min(indexes) < 0
        or max(terms) > MAX_INT
        or max(indexes) > MAX_INT
    ):
        _bad_entries(flat)
    get_kind = _KINDS.__getitem__
    out: list[Entry] = []
    append = out.append
    for term, index, kind, data in zip(terms, indexes, kinds, datas, strict=True):
        e = _new_entry(Entry)
        _set_term(e, term)
        _set_index(e, index)
        _set_kind(e, get_kind(kind))
        _set_data(e, data)
        append(e)
    return tuple(out)


def _bad_entries(flat: list[Any] | tuple[Any, ...]) -> NoReturn:
    """Raise ProtocolError naming the first bad field of a flat entry array."""
    for n in range(len(flat) // 4):
        term, index, kind, data = flat[4 * n : 4 * n + 4]
        what = f"AppendEntries.entries[{n}]"
        _int(term, what + ".term")
        _int(index, what + ".index")
        _bytes(data, what + ".data")
        if type(kind) not in _KIND_TYPES or kind not in _KIND_VALUES:
            _bad(f"wrong type: {what}.kind must be an EntryKind value, got {_describe(kind)}")
    raise AssertionError("_bad_entries found nothing wrong")  # pragma: no cover


def _dec_append_entries(o: _Array) -> AppendEntries:
    return AppendEntries(
        frm=_node(o[1], "AppendEntries.frm"),
        to=_node(o[2], "AppendEntries.to"),
        term=_int(o[3], "AppendEntries.term"),
        prev_index=_int(o[4], "AppendEntries.prev_index"),
        prev_term=_int(o[5], "AppendEntries.prev_term"),
        entries=_dec_entries(o[6]),
        commit=_int(o[7], "AppendEntries.commit"),
        read_ctx=_int(o[8], "AppendEntries.read_ctx"),
    )


def _dec_append_response(o: _Array) -> AppendResponse:
    return AppendResponse(
        frm=_node(o[1], "AppendResponse.frm"),
        to=_node(o[2], "AppendResponse.to"),
        term=_int(o[3], "AppendResponse.term"),
        success=_bool(o[4], "AppendResponse.success"),
        index=_int(o[5], "AppendResponse.index"),
        hint_index=_int(o[6], "AppendResponse.hint_index"),
        hint_term=_int(o[7], "AppendResponse.hint_term"),
        read_ctx=_int(o[8], "AppendResponse.read_ctx"),
    )


def _dec_nodes(x: object, what: str) -> frozenset[str]:
    if type(x) not in _ARRAY:
        _bad(f"wrong type: {what} must be an array of node ids, got {_describe(x)}")
    assert isinstance(x, list | tuple)
    return frozenset(_node(n, what + "[]") for n in x)


def _dec_meta(x: object) -> SnapshotMeta:
    if type(x) not in _ARRAY or len(x) != 4:  # type: ignore[arg-type]
        _bad(f"wrong type: InstallSnapshot.meta must be an array of 4, got {_describe(x)}")
    assert isinstance(x, list | tuple)
    return SnapshotMeta(
        index=_int(x[0], "InstallSnapshot.meta.index"),
        term=_int(x[1], "InstallSnapshot.meta.term"),
        conf=ConfState(
            voters=_dec_nodes(x[2], "InstallSnapshot.meta.voters"),
            learners=_dec_nodes(x[3], "InstallSnapshot.meta.learners"),
        ),
    )


def _dec_install_snapshot(o: _Array) -> InstallSnapshot:
    return InstallSnapshot(
        frm=_node(o[1], "InstallSnapshot.frm"),
        to=_node(o[2], "InstallSnapshot.to"),
        term=_int(o[3], "InstallSnapshot.term"),
        meta=_dec_meta(o[4]),
        offset=_int(o[5], "InstallSnapshot.offset"),
        chunk=_bytes(o[6], "InstallSnapshot.chunk"),
        done=_bool(o[7], "InstallSnapshot.done"),
    )


def _dec_snapshot_response(o: _Array) -> SnapshotResponse:
    return SnapshotResponse(
        frm=_node(o[1], "SnapshotResponse.frm"),
        to=_node(o[2], "SnapshotResponse.to"),
        term=_int(o[3], "SnapshotResponse.term"),
        index=_int(o[4], "SnapshotResponse.index"),
        offset=_int(o[5], "SnapshotResponse.offset"),
        done=_bool(o[6], "SnapshotResponse.done"),
        success=_bool(o[7], "SnapshotResponse.success"),
    )


def _dec_timeout_now(o: _Array) -> TimeoutNow:
    return TimeoutNow(
        frm=_node(o[1], "TimeoutNow.frm"),
        to=_node(o[2], "TimeoutNow.to"),
        term=_int(o[3], "TimeoutNow.term"),
    )


def _dec_read_index_request(o: _Array) -> ReadIndexRequest:
    return ReadIndexRequest(
        frm=_node(o[1], "ReadIndexRequest.frm"),
        to=_node(o[2], "ReadIndexRequest.to"),
        term=_int(o[3], "ReadIndexRequest.term"),
        request_id=_bytes(o[4], "ReadIndexRequest.request_id"),
    )


def _dec_read_index_response(o: _Array) -> ReadIndexResponse:
    return ReadIndexResponse(
        frm=_node(o[1], "ReadIndexResponse.frm"),
        to=_node(o[2], "ReadIndexResponse.to"),
        term=_int(o[3], "ReadIndexResponse.term"),
        request_id=_bytes(o[4], "ReadIndexResponse.request_id"),
        index=_int(o[5], "ReadIndexResponse.index"),
    )


_DECODERS: Final[dict[int, tuple[str, int, Callable[[_Array], Message]]]] = {
    1: ("VoteRequest", 8, _dec_vote_request),
    2: ("VoteResponse", 6, _dec_vote_response),
    3: ("AppendEntries", 9, _dec_append_entries),
    4: ("AppendResponse", 9, _dec_append_response),
    5: ("InstallSnapshot", 8, _dec_install_snapshot),
    6: ("SnapshotResponse", 8, _dec_snapshot_response),
    7: ("TimeoutNow", 4, _dec_timeout_now),
    8: ("ReadIndexRequest", 5, _dec_read_index_request),
    9: ("ReadIndexResponse", 6, _dec_read_index_response),
}
