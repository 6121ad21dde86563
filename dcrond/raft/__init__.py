"""Raft, written for dcrond.

- ``_types``: the values every part shares (entries, messages, ``Ready``).
- ``_core``: the pure state machine (no I/O, no clock, no randomness of its own).
- ``_storage``: the log and hard state in SQLite through apsw.
- ``_codec`` / ``_transport``: msgpack frames over TCP under trio.
- ``_node``: the trio driver that ties them together.

See docs/raft.md for the design and what each test proves.
"""

from __future__ import annotations

from dcrond.raft._types import (
    MESSAGE_TYPES,
    AppendEntries,
    AppendResponse,
    Config,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    Message,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

__all__ = [
    "MESSAGE_TYPES",
    "AppendEntries",
    "AppendResponse",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryKind",
    "HardState",
    "InstallSnapshot",
    "Message",
    "NodeId",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SnapshotResponse",
    "TimeoutNow",
    "VoteRequest",
    "VoteResponse",
]
