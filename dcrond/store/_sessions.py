"""The session table during one apply transaction: each session read once, written once.

What it keeps (see ``_commands`` for ``session``/``seq``/``acked``): for
every client session, the highest ``acked`` it has sent (its *floor*) and
when it was last seen, in ``client_sessions``; and the answers to its
requests above the floor, in ``client_results``, so a retried request gets
its first answer again and a request at or below the floor is refused as
stale. A row of ``client_results`` at or below its session's floor is dead:
the table holds none once a transaction ends.

Applying commands one at a time, that bookkeeping was six statements per
command (look up, insert the answer, update the session, delete the answers
acknowledged) -- more than the command's own effect on the run table, for
the engine's three commands per run. ``Sessions`` gives each command the
same verdict as that did, but reads a session's row once per transaction
and writes it, the answers still needed and the deletion of those
acknowledged, once in ``flush``; per command only the exact-key lookup of
a stored answer (a retry) is left. The table after ``flush`` holds exactly
what the one-at-a-time writes left (tests/store/test_sessions.py compares
the two).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import final

import apsw

from dcrond.store._commands import Command
from dcrond.store._results import Rejected, Result, decode_result, encode_result


@final
@dataclass(slots=True)
class _Session:
    stored_floor: int | None  #: ``acked`` as the table holds it (None: no row)
    floor: int | None  #: the highest ``acked`` so far (None: the session is new)
    last_seen: int | None  #: the newest ``now`` of a command answered (None: none)
    answers: dict[int, Result] = field(default_factory=dict)  #: given in this transaction


@final
class Sessions:
    """The session table as one transaction sees it (see the module doc).

    Use: ``check(cmd)`` before executing a command -- a Result means answer
    that and do nothing else; then ``remember(cmd, result)``; ``flush()``
    before the transaction commits (and before anything else reads or
    writes the session tables in it). ``forget()`` after a rollback.
    """

    def __init__(self, db: apsw.Connection) -> None:
        self._db = db
        self._open: dict[str, _Session] = {}

    def _session(self, name: str) -> _Session:
        s = self._open.get(name)
        if s is None:
            row = self._db.execute(
                "SELECT acked, last_seen FROM client_sessions WHERE session = ?", (name,)
            ).fetchone()
            acked, last_seen = (None, None) if row is None else row
            s = _Session(stored_floor=acked, floor=acked, last_seen=last_seen)
            self._open[name] = s
        return s

    def check(self, cmd: Command) -> Result | None:
        """The answer a request already has (a retry), Rejected("stale"), or None: execute it."""
        s = self._session(cmd.session)
        if s.floor is not None and cmd.seq <= s.floor:
            # (an answer stored at or below the floor is dead: acknowledged, so never asked again)
            return Rejected(
                "stale",
                f"request {cmd.seq} of session {cmd.session!r} was answered already "
                f"(the session acknowledged up to {s.floor})",
            )
        answer = s.answers.get(cmd.seq)
        if answer is not None:
            return answer
        # (one exact-key lookup: asking once per session for its highest stored number, to
        # skip these, cost more than all of them -- max() over the key took ~25 us)
        row = self._db.execute(
            "SELECT result FROM client_results WHERE session = ? AND seq = ?",
            (cmd.session, cmd.seq),
        ).fetchone()
        return None if row is None else decode_result(row[0])

    def remember(self, cmd: Command, result: Result) -> None:
        """Keep ``result`` as the answer to ``cmd``; forget what ``cmd.acked`` acknowledges."""
        s = self._session(cmd.session)
        s.answers[cmd.seq] = result
        s.last_seen = cmd.now if s.last_seen is None else max(s.last_seen, cmd.now)
        acked = cmd.seq - 1 if cmd.acked is None else cmd.acked
        if s.floor is None or acked > s.floor:
            s.floor = acked  # (answers at or below it are dropped in flush: ``check`` never
            # reaches them, and dropping them here was quadratic in a long catch-up)

    def flush(self) -> None:
        """Write what this transaction changed; the cache starts empty again."""
        db = self._db
        for name, s in self._open.items():
            if not s.answers:  # only looked up (retries, stale requests): nothing to write
                continue
            assert s.floor is not None and s.last_seen is not None
            live = [
                (name, seq, encode_result(result))
                for seq, result in s.answers.items()
                if seq > s.floor
            ]
            if live:
                db.executemany("INSERT INTO client_results VALUES (?, ?, ?)", live)
            if s.stored_floor is not None and s.floor > s.stored_floor:
                db.execute(
                    "DELETE FROM client_results WHERE session = ? AND seq <= ?", (name, s.floor)
                )
            db.execute(
                "INSERT INTO client_sessions VALUES (?, ?, ?) ON CONFLICT (session) DO UPDATE SET "
                "acked = max(acked, excluded.acked), "
                "last_seen = max(last_seen, excluded.last_seen)",
                (name, s.floor, s.last_seen),
            )
        self._open.clear()

    def forget(self) -> None:
        """Drop the cache without writing (the transaction was rolled back)."""
        self._open.clear()
