"""Raft, written for dcrond.

- ``_types``: the values every part shares (entries, messages, ``Ready``).
- ``_core``: the pure state machine (no I/O, no clock, no randomness of its own).
- ``_storage``: the log and hard state in SQLite through apsw.
- ``_codec`` / ``_transport``: msgpack frames over TCP under trio.
- ``_node``: the trio driver that ties them together; ``_snapjob``: its
  snapshots taken in worker threads.

See docs/raft.md for the design and what each test proves.
"""

from __future__ import annotations

from dcrond.raft._confchange import apply_conf_change, decode_conf_change, encode_conf_change
from dcrond.raft._core import RaftCore, Rng
from dcrond.raft._node import NodeStatistics, RaftNode, StateMachine, open_node
from dcrond.raft._progress import ProgressState
from dcrond.raft._snapjob import PinsSnapshots, SnapshotImage
from dcrond.raft._status import PeerStatus, Status
from dcrond.raft._storage import LoadedState, LogStorage, RepairReport, StorageStatistics
from dcrond.raft._storage_snapfile import SnapshotFile
from dcrond.raft._transport import RaftTransport, TransportStatistics
from dcrond.raft._types import (
    MESSAGE_TYPES,
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    Config,
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
    "LoadedState",
    "LogStorage",
    "Message",
    "NodeId",
    "NodeStatistics",
    "PeerStatus",
    "PinsSnapshots",
    "ProgressState",
    "RaftCore",
    "RaftNode",
    "RaftTransport",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "ReadState",
    "Ready",
    "RepairReport",
    "Rng",
    "Role",
    "Snapshot",
    "SnapshotFile",
    "SnapshotImage",
    "SnapshotMeta",
    "SnapshotResponse",
    "StateMachine",
    "Status",
    "StorageStatistics",
    "TimeoutNow",
    "TransportStatistics",
    "VoteRequest",
    "VoteResponse",
    "apply_conf_change",
    "decode_conf_change",
    "encode_conf_change",
    "open_node",
]
