"""Membership changes: their encoding in CONFIG entries and the membership history.

Theory of operation
-------------------
dcrond changes membership one server at a time, and a change takes effect on
every node as soon as its CONFIG entry is *appended* to that node's log (not
when it commits), as in chapter 4 of Ongaro's dissertation. The membership in
force is therefore that of the last CONFIG entry in the log, or of the
snapshot, or the bootstrap membership when there is neither.

Because a CONFIG entry may later be cut off by a new leader, a node keeps
the membership *history* after its snapshot point: ``(index, conf)`` for
every CONFIG entry it holds. Cutting off a suffix of the log pops the
matching history entries, which reverts the membership; compaction folds the
history into the new base.

A new cluster's bootstrap membership is written into the log too, as etcd
does: a node created with a membership and nothing on disk starts with one
committed CONFIG entry per member (term 1, indexes 1..k, voters then
learners, sorted), identical on every founding member. A node that joins
later starts with an empty membership and replays those entries like any
others, so it can never mistake itself for the only voter.

The entry data is short text: ``b"add-voter n4"``, ``b"remove-node n2"``,
``b"add-learner n5"``, ``b"promote-learner n5"``.
"""

from __future__ import annotations

from typing import final

from dcrond.errors import InvalidRequest, ProtocolError
from dcrond.raft._types import ConfChange, ConfChangeType, ConfState, Entry, EntryKind

_NAMES: dict[ConfChangeType, str] = {
    ConfChangeType.ADD_VOTER: "add-voter",
    ConfChangeType.REMOVE_NODE: "remove-node",
    ConfChangeType.ADD_LEARNER: "add-learner",
    ConfChangeType.PROMOTE_LEARNER: "promote-learner",
}
_TYPES: dict[str, ConfChangeType] = {v: k for k, v in _NAMES.items()}


def encode_conf_change(cc: ConfChange) -> bytes:
    """The data of the CONFIG entry that carries ``cc``."""
    if not cc.node or any(c.isspace() for c in cc.node):
        raise InvalidRequest(f"invalid node id {cc.node!r}")
    return f"{_NAMES[cc.type]} {cc.node}".encode()


def decode_conf_change(data: bytes) -> ConfChange:
    """The ConfChange a CONFIG entry carries; ProtocolError when ``data`` is not one."""
    try:
        name, node = data.decode().split(" ")
        kind = _TYPES[name]
    except (UnicodeDecodeError, ValueError, KeyError):
        raise ProtocolError(f"not a membership change: {data[:60]!r}") from None
    if not node:
        raise ProtocolError(f"membership change without a node: {data[:60]!r}")
    return ConfChange(kind, node)


def apply_conf_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The membership after ``cc``; InvalidRequest when ``cc`` makes no sense for ``conf``.

    Refused: adding a node that is already a member, removing a non-member or
    the last voter, promoting a node that is not a learner.
    """
    node = cc.node
    voters, learners = conf.voters, conf.learners
    if cc.type is ConfChangeType.ADD_VOTER:
        if node in voters or node in learners:
            raise InvalidRequest(f"{node} is already a member (promote a learner instead)")
        return ConfState(voters | {node}, learners)
    if cc.type is ConfChangeType.ADD_LEARNER:
        if node in voters or node in learners:
            raise InvalidRequest(f"{node} is already a member")
        return ConfState(voters, learners | {node})
    if cc.type is ConfChangeType.PROMOTE_LEARNER:
        if node not in learners:
            raise InvalidRequest(f"{node} is not a learner")
        return ConfState(voters | {node}, learners - {node})
    # REMOVE_NODE
    if node in voters:
        if len(voters) == 1:
            raise InvalidRequest(f"{node} is the last voter")
        return ConfState(voters - {node}, learners)
    if node in learners:
        return ConfState(voters, learners - {node})
    raise InvalidRequest(f"{node} is not a member")


def bootstrap_entries(conf: ConfState) -> tuple[Entry, ...]:
    """The committed CONFIG entries (term 1, from index 1) a new cluster's log starts with."""
    changes = [ConfChange(ConfChangeType.ADD_VOTER, n) for n in sorted(conf.voters)]
    changes += [ConfChange(ConfChangeType.ADD_LEARNER, n) for n in sorted(conf.learners)]
    return tuple(
        Entry(1, i, EntryKind.CONFIG, encode_conf_change(cc)) for i, cc in enumerate(changes, 1)
    )


def conf_after(conf: ConfState, data: bytes) -> ConfState:
    """Apply a CONFIG entry's data leniently: a change that does not apply changes nothing.

    Every node computes membership from the same log with this function, so
    all of them agree even on an entry that should never have been written.
    """
    try:
        return apply_conf_change(conf, decode_conf_change(data))
    except (InvalidRequest, ProtocolError):
        return conf


@final
class ConfHistory:
    """The membership at each CONFIG entry after the snapshot point."""

    __slots__ = ("_base", "_base_index", "_changes")

    def __init__(self, base: ConfState, base_index: int) -> None:
        self._base = base
        self._base_index = base_index
        self._changes: list[tuple[int, ConfState]] = []

    @property
    def current(self) -> ConfState:
        """The membership in force (that of the last CONFIG entry held)."""
        return self._changes[-1][1] if self._changes else self._base

    @property
    def last_index(self) -> int:
        """Index of the last CONFIG entry held, or of the snapshot point."""
        return self._changes[-1][0] if self._changes else self._base_index

    def at(self, index: int) -> ConfState:
        """The membership in force right after the entry at ``index``."""
        for idx, conf in reversed(self._changes):
            if idx <= index:
                return conf
        return self._base

    def append(self, index: int, data: bytes) -> ConfState:
        """Record the CONFIG entry at ``index``; returns the new membership."""
        conf = conf_after(self.current, data)
        self._changes.append((index, conf))
        return conf

    def truncate_from(self, index: int) -> bool:
        """Forget CONFIG entries at ``index`` and after; True when membership reverted."""
        changes = self._changes
        reverted = False
        while changes and changes[-1][0] >= index:
            changes.pop()
            reverted = True
        return reverted

    def compact(self, index: int) -> None:
        """Fold every change up to ``index`` into the base (the log was compacted)."""
        if index <= self._base_index:
            return
        self._base = self.at(index)
        self._base_index = index
        self._changes = [c for c in self._changes if c[0] > index]

    def reset(self, base: ConfState, base_index: int) -> None:
        """Start over from a snapshot's membership."""
        self._base = base
        self._base_index = base_index
        self._changes = []
