"""What one attempt is asked to run (``RunSpec``) and what came of it (``RunResult``).

Everything here is a plain frozen value: validated on construction, never
touching processes, files or clocks. ``RunSpec`` raises
:class:`dcrond.errors.InvalidRequest` for bad input (the caller's fault).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import final

from dcrond.errors import InvalidRequest

#: interpreter names a job may use, and the program each one runs
#: (names are looked up on the job's ``PATH`` when the attempt starts)
INTERPRETERS: dict[str, str] = {
    "bash": "bash",
    "sh": "/bin/sh",
    "python": "python3",
    "python3": "python3",
    "ruby": "ruby",
}

#: the shell that runs command lines (``/bin/sh -c``)
SHELL = "/bin/sh"

DEFAULT_KILL_GRACE = 10.0
DEFAULT_OUTPUT_CAP = 10 * 1024 * 1024


class Outcome(enum.StrEnum):
    """How an attempt ended; the values are the run states the store records."""

    SUCCEEDED = "succeeded"  #: exited with status 0
    FAILED = "failed"  #: non-zero exit, or killed by a signal dcrond did not send
    TIMED_OUT = "timed_out"  #: dcrond stopped it at its deadline
    KILLED = "killed"  #: dcrond stopped it on request
    LOST = "lost"  #: it ended while dcrond was down and left no exit status


def _check_text(what: str, value: str) -> None:
    if "\0" in value:
        raise InvalidRequest(f"{what} must not contain a NUL character")


@final
@dataclass(frozen=True, slots=True)
class RunSpec:
    """One attempt of one run: what to execute, where, as whom and with which limits.

    Exactly one of ``command`` (a shell command line, run by ``/bin/sh -c``
    with ``args`` as ``$1``…) or ``script`` (bytes, or the path of a cached
    script file, run by ``interpreter`` with ``args`` after the script) is
    given. ``interpreter`` is ``bash``, ``sh``, ``python`` (``python3``),
    ``ruby`` or an absolute path; any other name is an ``InvalidRequest``.
    """

    run_id: str  #: ``job@instant``
    attempt: int = 1
    command: str | None = None
    script: bytes | Path | None = None
    interpreter: str = "sh"
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None  #: absolute; default: the user's home if it exists, else /
    user: str | None = None  #: unix user name (or numeric uid); None: the daemon's own user
    timeout: float | None = None  #: seconds from the start; None: no limit
    kill_grace: float = DEFAULT_KILL_GRACE  #: seconds between SIGTERM and SIGKILL
    output_cap: int = DEFAULT_OUTPUT_CAP  #: bytes of output kept; the rest is counted and dropped

    def __post_init__(self) -> None:
        job, at, instant = self.run_id.rpartition("@")
        if not at or not job or not instant:
            raise InvalidRequest(f"run id {self.run_id!r} is not of the form job@instant")
        if "/" in self.run_id:
            raise InvalidRequest(f"run id {self.run_id!r} must not contain '/'")
        _check_text("run id", self.run_id)
        if self.attempt < 1:
            raise InvalidRequest(f"attempt must be >= 1, got {self.attempt}")
        if (self.command is None) == (self.script is None):
            raise InvalidRequest("give exactly one of a command line or a script")
        if self.command is not None:
            _check_text("command", self.command)
            if not self.command.strip():
                raise InvalidRequest("the command line is empty")
        if isinstance(self.script, Path) and not self.script.is_absolute():
            raise InvalidRequest(f"script path {str(self.script)!r} must be absolute")
        self.program()  # validates the interpreter
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "env", dict(self.env))  # the caller's dict may change later
        for a in self.args:
            _check_text("argument", a)
        for k, v in self.env.items():
            if not k or "=" in k or "\0" in k:
                raise InvalidRequest(f"environment variable name {k!r} is not valid")
            _check_text(f"environment variable {k}", v)
        if self.working_dir is not None and not os.path.isabs(self.working_dir):
            raise InvalidRequest(f"working dir {self.working_dir!r} must be an absolute path")
        if self.working_dir is not None:
            _check_text("working dir", self.working_dir)
        if self.user is not None and (not self.user or "\0" in self.user):
            raise InvalidRequest(f"user {self.user!r} is not a valid user name")
        if self.timeout is not None and not self.timeout > 0:
            raise InvalidRequest(f"timeout must be positive, got {self.timeout}")
        if not self.kill_grace >= 0:
            raise InvalidRequest(f"kill grace must be >= 0, got {self.kill_grace}")
        if self.output_cap < 0:
            raise InvalidRequest(f"output cap must be >= 0, got {self.output_cap}")

    @property
    def job(self) -> str:
        """The job part of the run id."""
        return self.run_id.rpartition("@")[0]

    @property
    def instant(self) -> str:
        """The scheduled instant part of the run id, as written there (without a ``~host``)."""
        return self.run_id.rpartition("@")[2].partition("~")[0]

    def program(self) -> str:
        """The program that runs a script (``/bin/sh`` for command lines)."""
        if self.command is not None:
            return SHELL
        name = self.interpreter
        if name in INTERPRETERS:
            return INTERPRETERS[name]
        if os.path.isabs(name) and "\0" not in name:
            return name
        known = ", ".join(sorted(INTERPRETERS))
        raise InvalidRequest(
            f"unknown interpreter {name!r}: use one of {known} or an absolute path"
        )

    def argv(self, script_path: str | None) -> list[str]:
        """The job's argv, as the spawner execs it."""
        if self.command is not None:
            return [SHELL, "-c", self.command, self.job, *self.args]
        assert script_path is not None
        return [self.program(), script_path, *self.args]


@final
@dataclass(frozen=True, slots=True)
class RunHandle:
    """A started attempt: which process runs it and where its output goes.

    ``started_at`` is the wall-clock instant at which the runner asked its
    spawner for the process (the job's first instruction follows within
    about a millisecond); ``pid`` is the job's pid, which is also the
    process group id and session id of everything the attempt starts.
    """

    run_id: str
    attempt: int
    pid: int
    started_at: float
    spool_path: Path
    adopted: bool = False  #: re-adopted after a daemon restart


@final
@dataclass(frozen=True, slots=True)
class RunResult:
    """How one attempt ended.

    ``exit_code`` is set when the job exited by itself; ``signal`` when a
    signal ended it (following the shell's convention, a status of 128+N is
    read as signal N). After a restart an attempt whose exit status could not
    be recovered has neither, and state ``lost``. ``output_bytes`` counts the
    bytes kept in the spool (at most the cap); ``discarded_bytes`` the bytes
    dropped after it, noted by a trailer line in the spool.
    """

    run_id: str
    attempt: int
    state: Outcome
    exit_code: int | None
    signal: int | None
    started_at: float
    finished_at: float
    output_bytes: int
    discarded_bytes: int
    truncated: bool
    spool_path: Path
    adopted: bool = False


@final
@dataclass(frozen=True, slots=True)
class Recovered:
    """One attempt found by :meth:`recover` after a restart.

    Either ``handle`` is set (the attempt is still running and was
    re-adopted: pass it to ``supervise``) or ``result`` is (it ended while
    dcrond was down: its real outcome, or ``lost``).
    """

    run_id: str
    attempt: int
    handle: RunHandle | None
    result: RunResult | None


@final
@dataclass(frozen=True, slots=True)
class RunnerStatistics:
    """Counters of one runner since it was created (``/metrics`` shows them)."""

    running: int
    started: int
    adopted: int
    succeeded: int
    failed: int
    timed_out: int
    killed: int
    lost: int

    @property
    def finished(self) -> int:
        """Attempts that reached a final state."""
        return self.succeeded + self.failed + self.timed_out + self.killed + self.lost
