"""The one small file each live attempt keeps in the work dir, so a restart can find it.

It is append-only and holds, in whatever order they happened:

- one JSON record, written by the spawner (``_spawner``) right after the
  exec: the daemon sends it everything it knows (run, spool, deadline as a
  wall-clock instant, the output pipe's inode, …) and the spawner adds the
  job's pid and start time (which together defeat pid reuse) and which of
  its descriptors holds the pipe's read end (``holder`` / ``holder_fd``);
- ``{"stop": "timed_out"|"killed", "at": ...}`` once dcrond began stopping
  the attempt, so a restart finishes it with the right outcome;
- ``{"exit": N}`` or ``{"signal": N}``: how the job ended, written by the
  spawner before it reaps the job.

Version 1 files (from the shell supervisor: its pid, the pipe as its fd 4,
a bare ``$?`` number as the status, ``started`` lines) are still read.

No fsync: the file only has to outlive the daemon, not the machine (a
machine crash ends the processes too, and an attempt without a state file is
lost).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import Any, final

VERSION = 2

#: (exit code, signal): exactly one of them is set
Status = tuple[int | None, int | None]


@final
@dataclass(frozen=True, slots=True)
class AttemptState:
    """What a restarted daemon needs to know about an attempt it did not start."""

    run_id: str
    attempt: int
    pid: int  #: the job's pid: its process group and session id too
    start_ticks: int
    started_at: float
    deadline: float | None  #: wall-clock instant of the timeout, if any
    kill_grace: float
    output_cap: int
    spool: str
    script: str | None
    holder: int | None = None  #: the process holding the pipe's read end (None: ``pid``)
    holder_fd: int = 4  #: which of its descriptors that is
    pipe_ino: int | None = None  #: the pipe's inode, to check what was opened through /proc
    stop: str | None = None  #: "timed_out" or "killed" once dcrond began stopping it
    stop_at: float | None = None
    status: Status | None = None  #: how the job ended, once recorded


def record_prefix(
    *,
    run_id: str,
    attempt: int,
    started_at: float,
    deadline: float | None,
    kill_grace: float,
    output_cap: int,
    spool: str,
    script: str | None,
    pipe_ino: int,
) -> bytes:
    """The attempt's record without its closing brace; the spawner appends pid and the rest."""
    rec = {
        "v": VERSION,
        "run_id": run_id,
        "attempt": attempt,
        "started_at": started_at,
        "deadline": deadline,
        "kill_grace": kill_grace,
        "output_cap": output_cap,
        "spool": spool,
        "script": script,
        "pipe_ino": pipe_ino,
    }
    return json.dumps(rec).encode()[:-1] + b", "


def _line(fd: int, rec: dict[str, Any]) -> None:
    os.write(fd, json.dumps(rec).encode() + b"\n")


def append_stop(path: str, reason: str, at: float) -> None:
    """Append that dcrond began stopping the attempt."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        _line(fd, {"stop": reason, "at": at})
    finally:
        os.close(fd)


def _shell_status(status: int) -> Status:
    """A version 1 status: ``$?`` (128+N after signal N)."""
    if 128 < status <= 128 + 64:
        return None, status - 128
    return status, None


def read(path: str) -> AttemptState:
    """Read a state file; ``ValueError`` when it holds no usable record."""
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    st: AttemptState | None = None
    stop: tuple[str, float] | None = None
    status: Status | None = None
    for raw in lines:
        ln = raw.strip()
        if ln.isdigit():
            status = _shell_status(int(ln))
            continue
        try:
            rec = json.loads(ln)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a torn line: we died while writing it
        if not isinstance(rec, dict):
            continue
        if "exit" in rec or "signal" in rec:
            code, sig = rec.get("exit"), rec.get("signal")
            if isinstance(code, int) or isinstance(sig, int):
                status = (
                    code if isinstance(code, int) else None,
                    sig if isinstance(sig, int) else None,
                )
        elif rec.get("stop") in ("timed_out", "killed") and stop is None:
            stop = (str(rec["stop"]), float(rec["at"]))
        elif "v" in rec and st is None:
            st = _record(rec)
    if st is None:
        raise ValueError("no attempt record in the state file")
    if stop is not None:
        st = replace(st, stop=stop[0], stop_at=stop[1])
    return replace(st, status=status)


def _record(rec: dict[str, Any]) -> AttemptState:
    if rec["v"] not in (1, VERSION):
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
            holder=None if rec.get("holder") is None else int(rec["holder"]),
            holder_fd=int(rec.get("holder_fd", 4)),
            pipe_ino=None if rec.get("pipe_ino") is None else int(rec["pipe_ino"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"unreadable attempt record: {e!r}") from e
