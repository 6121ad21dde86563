"""SWIM gossip membership with Lifeguard, written for dcrond.

- ``_types``: the values every part shares (members, messages, ``Ready``, config).
- ``_health``: Lifeguard's local health multiplier and suspicion timeout.
- ``_broadcast``: the queue of updates piggybacked on packets.
- ``_core``: the pure state machine (no I/O, no clock, no randomness of its own),
  built from ``_corebase`` (shared fields, sending), ``_updates`` (precedence,
  refutation) and ``_probing`` (probes, relays).
- ``_codec``: msgpack encoding of packets and push-pull state, validated strictly.
- ``_seal``: the seam where packets get sealed and opened.
- ``_aead``: the sealer a cluster uses: ChaCha20-Poly1305 keyed from the join secret.
- ``_driver``: the trio driver (UDP socket, TCP push-pull, timers).

See docs/gossip.md for the protocol, its parameters and what each test proves.
"""

from __future__ import annotations

from dcrond.gossip._aead import AeadSealer, SealStatistics
from dcrond.gossip._core import GossipCore, Rng
from dcrond.gossip._driver import GossipNode, NodeStatistics
from dcrond.gossip._seal import PLAINTEXT, PlainText, Sealer
from dcrond.gossip._types import (
    MESSAGE_TYPES,
    Ack,
    Address,
    Alive,
    Dead,
    EventKind,
    GossipConfig,
    GossipStatistics,
    IndirectPing,
    Member,
    MemberEvent,
    MemberState,
    Message,
    Nack,
    NodeMeta,
    Packet,
    Ping,
    PushPull,
    Ready,
    StateEntry,
    Suspect,
)

__all__ = [
    "MESSAGE_TYPES",
    "PLAINTEXT",
    "Ack",
    "Address",
    "AeadSealer",
    "Alive",
    "Dead",
    "EventKind",
    "GossipConfig",
    "GossipCore",
    "GossipNode",
    "GossipStatistics",
    "IndirectPing",
    "Member",
    "MemberEvent",
    "MemberState",
    "Message",
    "Nack",
    "NodeMeta",
    "NodeStatistics",
    "Packet",
    "Ping",
    "PlainText",
    "PushPull",
    "Ready",
    "Rng",
    "SealStatistics",
    "Sealer",
    "StateEntry",
    "Suspect",
]
