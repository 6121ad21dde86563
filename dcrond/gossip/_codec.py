"""Gossip messages, packets and push-pull state to and from msgpack, validated strictly.

Theory of operation
-------------------
A message is a msgpack array ``[tag, field, ...]`` in its dataclass's field
order; an address is two fields (host, port) and a ``NodeMeta`` is one nested
array ``[api_port, raft_port, [key, value, ...], free_slots, version,
raft_role, cluster_id]``. A UDP packet is one array ``[WIRE_VERSION, message, ...]``.
msgpack encodes an array as a header followed by its elements back to back,
so a packet's size is exactly ``PACKET_OVERHEAD`` at most plus the sum of
its messages' sizes; the core relies on that (``message_size``) to fill each
packet with piggybacked updates up to its byte budget without encoding the
packet twice.

A push-pull exchange (TCP, length-prefixed frames from ``dcrond._wire``)
carries ``[WIRE_VERSION, join, [name, host, port, meta, incarnation, state],
...]``.

Decoding is the trust boundary: it takes whatever msgpack produced from a
peer's bytes and returns well-typed values or raises
:class:`~dcrond.errors.ProtocolError` -- never another exception. Ints are
``int`` (not ``bool``) within range, names are non-empty strings of at most
``MAX_NAME`` bytes of UTF-8, ports are 1..65535, enums are known values, tags
are unique, a meta block encodes within ``MAX_META_BYTES``. Arrays arrive as
lists; tuples are accepted too.

Tags and field orders are the wire format: never renumber, only add.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, NoReturn

import msgpack

from dcrond.errors import InvalidRequest, ProtocolError
from dcrond.gossip._types import (
    Ack,
    Address,
    Alive,
    Dead,
    IndirectPing,
    MemberState,
    Message,
    Nack,
    NodeMeta,
    Ping,
    StateEntry,
    Suspect,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_META_BYTES",
    "MAX_NAME",
    "PACKET_OVERHEAD",
    "WIRE_VERSION",
    "check_identity",
    "decode",
    "decode_packet",
    "decode_state",
    "encode",
    "encode_packet",
    "encode_state",
    "message_size",
]

WIRE_VERSION: Final = 1
MAX_NAME: Final = 128
"""Longest member name (and tag key), in UTF-8 bytes."""
MAX_HOST: Final = 255
MAX_META_BYTES: Final = 512
"""Largest encoded ``NodeMeta``: an Alive always fits one packet."""
MAX_INT: Final = (1 << 63) - 1
MAX_TAGS: Final = 64
MAX_STATE_ENTRIES: Final = 100_000
MAX_MESSAGE_BYTES: Final = 1020
"""No valid message encodes larger (an Alive with the longest name, host and meta: ~915)."""
PACKET_OVERHEAD: Final = 4
"""Bytes a packet adds to its messages: an array header (3 at most) and the version."""

_PING, _INDIRECT, _ACK, _NACK, _ALIVE, _SUSPECT, _DEAD = 1, 2, 3, 4, 5, 6, 7
_STATES: Final = {int(s): s for s in MemberState}


# --- encoding -----------------------------------------------------------------
#
# msgpack directly rather than through ``dcrond._wire``, which also holds the
# trio stream layer: the core imports this module and must stay pure.


def dumps(obj: object) -> bytes:
    """msgpack bytes of ``obj`` (arrays, strings, ints, bools only here)."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def loads(data: bytes | bytearray | memoryview) -> Any:
    """One msgpack object from ``data``; ProtocolError if it is not exactly that."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types; the peer's fault
        raise ProtocolError(f"not msgpack: {type(exc).__name__}") from None


def _meta(m: NodeMeta) -> list[Any]:
    flat: list[str] = []
    for k, v in m.tags:
        flat.append(k)
        flat.append(v)
    return [m.api_port, m.raft_port, flat, m.free_slots, m.version, m.raft_role, m.cluster_id]


def encode(msg: Message) -> list[Any]:
    """``msg`` as a msgpack-able array."""
    match msg:
        case Ping(seq, target, source):
            return [_PING, seq, target, source]
        case Ack(seq):
            return [_ACK, seq]
        case Alive(name, inc, (host, port), meta):
            return [_ALIVE, name, inc, host, port, _meta(meta)]
        case Suspect(name, inc, frm):
            return [_SUSPECT, name, inc, frm]
        case Dead(name, inc, frm):
            return [_DEAD, name, inc, frm]
        case IndirectPing(seq, target, (host, port), nack):
            return [_INDIRECT, seq, target, host, port, nack]
        case Nack(seq):
            return [_NACK, seq]
    raise TypeError(f"not a gossip message: {msg!r}")  # pragma: no cover


def message_size(msg: Message) -> int:
    """Bytes ``msg`` takes inside a packet."""
    return len(dumps(encode(msg)))


def encode_packet(messages: Sequence[Message], max_bytes: int) -> bytes:
    """One UDP datagram holding ``messages``.

    Raises ProtocolError("oversized ...") beyond ``max_bytes``: the core sizes
    its packets, so that is a bug.
    """
    data = dumps([WIRE_VERSION, *map(encode, messages)])
    if len(data) > max_bytes:
        raise ProtocolError(f"oversized: packet of {len(data)} bytes exceeds {max_bytes}")
    return data


def encode_state(entries: Iterable[StateEntry], *, join: bool) -> bytes:
    """The body of one push-pull frame."""
    return dumps(
        [
            WIRE_VERSION,
            join,
            [
                [e.name, e.address[0], e.address[1], _meta(e.meta), e.incarnation, int(e.state)]
                for e in entries
            ],
        ]
    )


# --- decoding -----------------------------------------------------------------


def _bad(what: str) -> NoReturn:
    raise ProtocolError(f"malformed: {what}")


def _int(v: Any, what: str, hi: int = MAX_INT, lo: int = 0) -> int:
    if type(v) is not int or not lo <= v <= hi:
        _bad(f"{what} must be an int in {lo}..{hi}")
    return v


def _str(v: Any, what: str, limit: int, *, empty: bool = False) -> str:
    try:
        size = len(v.encode()) if type(v) is str else -1
    except UnicodeEncodeError:
        size = -1
    if size < 0 or size > limit or (not size and not empty):
        _bad(f"{what} must be a {'' if empty else 'non-empty '}string of <= {limit} UTF-8 bytes")
    return v  # type: ignore[no-any-return]


def _name(v: Any, what: str = "name") -> str:
    return _str(v, what, MAX_NAME)


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        _bad(f"{what} must be a bool")
    return v


def _addr(host: Any, port: Any) -> Address:
    return (_str(host, "host", MAX_HOST), _int(port, "port", 65535, 1))


def _array(v: Any, what: str, n: int | None = None) -> Sequence[Any]:
    if not isinstance(v, list | tuple) or (n is not None and len(v) != n):
        _bad(f"{what} must be an array" + (f" of {n}" if n is not None else ""))
    return v


def _decode_meta(v: Any) -> NodeMeta:
    f = _array(v, "meta", 7)
    flat = _array(f[2], "tags")
    if len(flat) % 2 or len(flat) > 2 * MAX_TAGS:
        _bad(f"tags must be at most {MAX_TAGS} key/value pairs")
    tags = {}
    for i in range(0, len(flat), 2):
        key = _str(flat[i], "tag key", MAX_NAME)
        if key in tags:
            _bad(f"tag {key!r} repeated")
        tags[key] = _str(flat[i + 1], "tag value", MAX_META_BYTES, empty=True)
    meta = NodeMeta(
        api_port=_int(f[0], "api_port", 65535),
        raft_port=_int(f[1], "raft_port", 65535),
        tags=tuple(tags.items()),
        free_slots=_int(f[3], "free_slots", 1 << 31),
        version=_str(f[4], "version", 64, empty=True),
        raft_role=_str(f[5], "raft_role", 16, empty=True),
        cluster_id=_str(f[6], "cluster_id", 64, empty=True),
    )
    if len(dumps(_meta(meta))) > MAX_META_BYTES:
        _bad(f"meta exceeds {MAX_META_BYTES} bytes")
    return meta


def decode(obj: Any) -> Message:
    """One message from what msgpack produced; ProtocolError if it is not valid."""
    if not isinstance(obj, list | tuple) or not obj:
        _bad("message must be a non-empty array")
    tag = obj[0]
    if tag == _PING and type(tag) is int:
        _array(obj, "Ping", 4)
        return Ping(
            _int(obj[1], "seq"), _str(obj[2], "target", MAX_NAME, empty=True), _name(obj[3])
        )
    if tag == _ACK and type(tag) is int:
        _array(obj, "Ack", 2)
        return Ack(_int(obj[1], "seq"))
    if tag == _ALIVE and type(tag) is int:
        _array(obj, "Alive", 6)
        return Alive(
            _name(obj[1]), _int(obj[2], "incarnation"), _addr(obj[3], obj[4]), _decode_meta(obj[5])
        )
    if tag == _SUSPECT and type(tag) is int:
        _array(obj, "Suspect", 4)
        return Suspect(_name(obj[1]), _int(obj[2], "incarnation"), _name(obj[3], "from"))
    if tag == _DEAD and type(tag) is int:
        _array(obj, "Dead", 4)
        return Dead(_name(obj[1]), _int(obj[2], "incarnation"), _name(obj[3], "from"))
    if tag == _INDIRECT and type(tag) is int:
        _array(obj, "IndirectPing", 6)
        return IndirectPing(
            _int(obj[1], "seq"),
            _name(obj[2], "target"),
            _addr(obj[3], obj[4]),
            _bool(obj[5], "nack"),
        )
    if tag == _NACK and type(tag) is int:
        _array(obj, "Nack", 2)
        return Nack(_int(obj[1], "seq"))
    _bad(f"unknown message tag {tag!r}")


def decode_packet(data: bytes | bytearray | memoryview) -> tuple[Message, ...]:
    """Every message of one datagram; ProtocolError if any part is not valid."""
    obj = loads(data)
    if not isinstance(obj, list) or not obj:
        _bad("packet must be a non-empty array")
    if obj[0] != WIRE_VERSION or type(obj[0]) is not int:
        _bad(f"unsupported wire version {obj[0]!r}")
    return tuple(decode(m) for m in obj[1:])


def decode_state(data: bytes | bytearray | memoryview) -> tuple[bool, tuple[StateEntry, ...]]:
    """``(join, entries)`` from one push-pull frame body; ProtocolError if not valid."""
    obj = _array(loads(data), "push-pull state", 3)
    if obj[0] != WIRE_VERSION or type(obj[0]) is not int:
        _bad(f"unsupported wire version {obj[0]!r}")
    join = _bool(obj[1], "join")
    raw = _array(obj[2], "entries")
    if len(raw) > MAX_STATE_ENTRIES:
        _bad(f"more than {MAX_STATE_ENTRIES} members")
    entries = []
    for e in raw:
        f = _array(e, "entry", 6)
        state = _STATES.get(_int(f[5], "state", 255))
        if state is None:
            _bad(f"unknown member state {f[5]!r}")
        entries.append(
            StateEntry(
                _name(f[0]), _addr(f[1], f[2]), _decode_meta(f[3]), _int(f[4], "incarnation"), state
            )
        )
    return join, tuple(entries)


def check_identity(name: str, address: Address, meta: NodeMeta) -> None:
    """Raise InvalidRequest unless this member could be gossiped (the caller's fault)."""
    try:
        _name(name)
        _addr(*address)
        decoded = _decode_meta(_meta(meta))
    except ProtocolError as exc:
        raise InvalidRequest(str(exc).replace("malformed: ", "")) from None
    if decoded != meta:
        raise InvalidRequest("meta has repeated tag keys")
