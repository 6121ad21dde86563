"""The one small file each live attempt keeps in the work dir, so a restart can find it.

The daemon creates it (``O_APPEND``) just before starting the supervisor,
which inherits it as the descriptor it writes the job's exit status to. So
the file holds, in whatever order they happened:

- one JSON record written right after the start: the supervisor's pid and
  start time (which together defeat pid reuse), the spool, and the deadline
  as a wall-clock instant;
- ``{"stop": "timed_out"|"killed", "at": ...}`` once dcrond began stopping
  the attempt, so a restart finishes it with the right outcome;
- ``started``, written by the supervisor's child just before it execs the
  job (see ``_spawn`` for why);
- a bare number: the job's exit status, written by the supervisor.

No fsync: the file only has to outlive the daemon, not the machine (a
machine crash ends the processes too, and an attempt without a state file is
lost).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import Any, final

VERSION = 1


@final
@dataclass(frozen=True, slots=True)
class AttemptState:
    """What a restarted daemon needs to know about an attempt it did not start."""

    run_id: str
    attempt: int
    pid: int
    start_ticks: int
    started_at: float
    deadline: float | None  #: wall-clock instant of the timeout, if any
    kill_grace: float
    output_cap: int
    spool: str
    script: str | None
    stop: str | None = None  #: "timed_out" or "killed" once dcrond began stopping it
    stop_at: float | None = None
    status: int | None = None  #: the job's exit status, once the supervisor wrote it


def create(path: str) -> int:
    """Create (or empty) a state file; the descriptor appends."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)


def open_append(path: str) -> int:
    """Open an existing state file for appending."""
    return os.open(path, os.O_WRONLY | os.O_APPEND)


def _line(fd: int, rec: dict[str, Any]) -> None:
    os.write(fd, json.dumps(rec).encode() + b"\n")


def write_record(fd: int, st: AttemptState) -> None:
    """Append the record of a just-started attempt."""
    _line(
        fd,
        {
            "v": VERSION,
            "run_id": st.run_id,
            "attempt": st.attempt,
            "pid": st.pid,
            "start_ticks": st.start_ticks,
            "started_at": st.started_at,
            "deadline": st.deadline,
            "kill_grace": st.kill_grace,
            "output_cap": st.output_cap,
            "spool": st.spool,
            "script": st.script,
        },
    )


def append_stop(path: str, reason: str, at: float) -> None:
    """Append that dcrond began stopping the attempt (if its state file is still there)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        return
    try:
        _line(fd, {"stop": reason, "at": at})
    finally:
        os.close(fd)


def read(path: str) -> AttemptState:
    """Read a state file; ``ValueError`` when it holds no usable record."""
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    st: AttemptState | None = None
    stop: tuple[str, float] | None = None
    status: int | None = None
    for raw in lines:
        ln = raw.strip()
        if ln.isdigit():
            status = int(ln)
            continue
        try:
            rec = json.loads(ln)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a torn line: we died while writing it
        if not isinstance(rec, dict):
            continue
        if rec.get("stop") in ("timed_out", "killed") and stop is None:
            stop = (str(rec["stop"]), float(rec["at"]))
        elif "v" in rec and st is None:
            st = _record(rec)
    if st is None:
        raise ValueError("no attempt record in the state file")
    if stop is not None:
        st = replace(st, stop=stop[0], stop_at=stop[1])
    return replace(st, status=status)


def _record(rec: dict[str, Any]) -> AttemptState:
    if rec["v"] != VERSION:
        raise ValueError(f"unknown state file version {rec['v']!r}")
    try:
        return AttemptState(
            run_id=str(rec["run_id"]),
            attempt=int(rec["attempt"]),
            pid=int(rec["pid"]),
            start_ticks=int(rec["start_ticks"]),
            started_at=float(rec["started_at"]),
            deadline=None if rec["deadline"] is None else float(rec["deadline"]),
            kill_grace=float(rec["kill_grace"]),
            output_cap=int(rec["output_cap"]),
            spool=str(rec["spool"]),
            script=None if rec["script"] is None else str(rec["script"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"unreadable attempt record: {e!r}") from e


def started_after_stop(path: str) -> bool | None:
    """Did the job start after dcrond's stop record (True), before it (False), or not yet (None)?

    Also None when there is no stop record to compare with.
    """
    try:
        with open(path, "rb") as f:
            lines = [ln.strip() for ln in f.read().splitlines()]
    except OSError:
        return None
    stop = next((i for i, ln in enumerate(lines) if ln.startswith(b'{"stop"')), None)
    started = next((i for i, ln in enumerate(lines) if ln == b"started"), None)
    if stop is None or started is None:
        return None
    return started > stop
