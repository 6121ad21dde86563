"""The simulator's trace: the last events for failure reports, and a digest of all of them.

Events are kept as raw tuples in a ring buffer and only formatted when a
failure is reported, so tracing costs one append per event. With
``record=True`` every event is also formatted and folded into a digest, which
the determinism test compares across runs (and across processes with
different hash seeds: the formatting never depends on set iteration order).
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import fields, is_dataclass
from typing import final

from dcrond.raft._types import (
    AppendEntries,
    ConfState,
    Entry,
    InstallSnapshot,
    Message,
    SnapshotMeta,
)


def _fmt_value(v: object) -> str:
    if isinstance(v, frozenset | set):
        return "{" + ",".join(sorted(map(str, v))) + "}"
    if isinstance(v, ConfState):
        return f"voters={_fmt_value(v.voters)} learners={_fmt_value(v.learners)}"
    if isinstance(v, SnapshotMeta):
        return f"({v.index},t{v.term},{_fmt_value(v.conf)})"
    if isinstance(v, Entry):
        return f"{v.index}/t{v.term}/{v.kind.name}"
    if isinstance(v, bytes):
        return repr(v[:24]) + ("…" if len(v) > 24 else "")
    return repr(v)


def fmt_msg(m: Message) -> str:
    """A compact, deterministic one-line form of a message."""
    name = type(m).__name__
    if isinstance(m, AppendEntries):
        ents = m.entries
        span = f" [{ents[0].index}..{ents[-1].index}]" if ents else ""
        return (
            f"{m.frm}->{m.to} {name} t{m.term} prev=({m.prev_index},t{m.prev_term}) "
            f"n={len(ents)}{span} commit={m.commit}" + (f" ctx={m.read_ctx}" if m.read_ctx else "")
        )
    if isinstance(m, InstallSnapshot):
        return (
            f"{m.frm}->{m.to} {name} t{m.term} meta={_fmt_value(m.meta)} "
            f"offset={m.offset} len={len(m.chunk)} done={m.done}"
        )
    assert is_dataclass(m)
    rest = " ".join(
        f"{f.name}={_fmt_value(getattr(m, f.name))}"
        for f in fields(m)
        if f.name not in ("frm", "to", "term")
    )
    return f"{m.frm}->{m.to} {name} t{m.term} {rest}"


def _fmt(what: object) -> str:
    if isinstance(what, str):
        return what
    if is_dataclass(what) and hasattr(what, "frm"):
        return fmt_msg(what)  # type: ignore[arg-type]
    return _fmt_value(what)


@final
class Trace:
    """Recent events of one simulation, plus an optional digest of every event."""

    __slots__ = ("_digest", "_events", "count")

    def __init__(self, keep: int, record: bool) -> None:
        self._events: deque[tuple[int, str, object]] = deque(maxlen=keep)
        self._digest = hashlib.blake2b(digest_size=16) if record else None
        self.count = 0

    def add(self, now: int, who: str, what: object) -> None:
        """Note one event (``what`` is a string or a message, formatted lazily)."""
        self._events.append((now, who, what))
        self.count += 1
        if self._digest is not None:
            self._digest.update(f"{now} {who} {_fmt(what)}\n".encode())

    def __len__(self) -> int:
        return len(self._events)

    def lines(self) -> list[str]:
        """The recent events, formatted, oldest first."""
        return [f"{now / 1000:12.3f}ms {who:>4} {_fmt(what)}" for now, who, what in self._events]

    def digest(self) -> str | None:
        """Hex digest of every event so far (None unless recording)."""
        return self._digest.hexdigest() if self._digest is not None else None
