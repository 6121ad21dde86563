"""A tiny replicated key-value state machine for the Raft simulator.

Theory of operation: clients send ``put``, ``get`` and ``cas`` commands, each
stamped with the client's session id and a per-session sequence number. The
state machine remembers, per session, the last sequence number it applied and
that command's result, so a proposal that a client retried (and that therefore
reached the log twice) takes effect once: the duplicate returns the cached
result and changes nothing. A command older than the session's last one is
answered with ``STALE`` and ignored.

Besides the data, the machine keeps the index and term of the last entry it
applied and a running digest of every entry it applied, in order. Snapshots
carry all of it, so two replicas whose snapshots are byte-equal applied the
same commands in the same order. Everything is deterministic: no clocks, no
randomness, no iteration over unordered sets.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import TypeAlias, final

import msgpack

from dcrond.raft._types import Entry, EntryKind

#: What a command returns: ``None`` for a put, the value (or ``None``) for a
#: get, ``True``/``False`` for a compare-and-set, or ``STALE``.
Result: TypeAlias = str | bool | None

#: The result of a command older than its session's latest one (it did nothing).
STALE = "\x00stale"


class Op(enum.IntEnum):
    """The three commands."""

    PUT = 0
    GET = 1
    CAS = 2


@final
@dataclass(frozen=True, slots=True)
class Command:
    """One client command; ``arg``/``arg2`` are the value, or expected and new value for CAS."""

    op: Op
    session: str
    seq: int
    key: str
    arg: str | None = None
    arg2: str | None = None

    def encode(self) -> bytes:
        """Encode as the opaque bytes of a log entry."""
        out: bytes = msgpack.packb(
            (int(self.op), self.session, self.seq, self.key, self.arg, self.arg2)
        )
        return out

    @staticmethod
    def decode(data: bytes) -> Command:
        """Decode what ``encode`` produced; raises ValueError on anything else."""
        try:
            op, session, seq, key, arg, arg2 = msgpack.unpackb(data)
            return Command(Op(op), session, seq, key, arg, arg2)
        except Exception as exc:
            raise ValueError(f"not a KV command: {data!r}") from exc


_EMPTY_DIGEST = bytes(8)


def chain_digest(prev: bytes, entry: Entry) -> bytes:
    """Fold one applied entry into a running 8-byte digest of the applied sequence."""
    h = hashlib.blake2b(prev, digest_size=8)
    h.update(b"%d:%d:%d:" % (entry.index, entry.term, entry.kind))
    h.update(entry.data)
    return h.digest()


@final
class KVStateMachine:
    """The key-value store: ``apply`` entries in log order, ``snapshot``/``restore`` as bytes."""

    __slots__ = ("applied", "applied_term", "data", "digest", "sessions")

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.sessions: dict[str, tuple[int, Result]] = {}
        self.applied = 0
        self.applied_term = 0
        self.digest = _EMPTY_DIGEST

    def apply(self, entry: Entry) -> Result:
        """Apply one committed entry (any kind) and return the command's result.

        Entries must come in index order with no gaps; NOOP and CONFIG entries
        only advance ``applied``. Raises ValueError on an out-of-order entry
        (a bug in whoever drives this machine).
        """
        if entry.index != self.applied + 1:
            raise ValueError(f"apply out of order: applied={self.applied}, got {entry.index}")
        self.applied = entry.index
        self.applied_term = entry.term
        self.digest = chain_digest(self.digest, entry)
        if entry.kind != EntryKind.NORMAL:
            return None
        return self.execute(Command.decode(entry.data))

    def execute(self, cmd: Command) -> Result:
        """Run one command against the data, honouring its session's deduplication."""
        last = self.sessions.get(cmd.session)
        if last is not None:
            if cmd.seq == last[0]:
                return last[1]
            if cmd.seq < last[0]:
                return STALE
        result: Result
        if cmd.op == Op.PUT:
            assert cmd.arg is not None
            self.data[cmd.key] = cmd.arg
            result = None
        elif cmd.op == Op.GET:
            result = self.data.get(cmd.key)
        elif self.data.get(cmd.key) == cmd.arg:
            assert cmd.arg2 is not None
            self.data[cmd.key] = cmd.arg2
            result = True
        else:
            result = False
        self.sessions[cmd.session] = (cmd.seq, result)
        return result

    def get(self, key: str) -> str | None:
        """Read a key locally (the caller makes the read linearizable)."""
        return self.data.get(key)

    def snapshot(self) -> bytes:
        """Serialize the whole state (canonically: equal states give equal bytes)."""
        out: bytes = msgpack.packb(
            (
                self.applied,
                self.applied_term,
                self.digest,
                sorted(self.data.items()),
                sorted((s, seq, res) for s, (seq, res) in self.sessions.items()),
            )
        )
        return out

    @staticmethod
    def restore(blob: bytes) -> KVStateMachine:
        """Rebuild a machine from ``snapshot()`` bytes."""
        applied, term, digest, data, sessions = msgpack.unpackb(blob)
        kv = KVStateMachine()
        kv.applied = applied
        kv.applied_term = term
        kv.digest = digest
        kv.data = dict(data)
        kv.sessions = {s: (seq, res) for s, seq, res in sessions}
        return kv
