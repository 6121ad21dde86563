"""The commands that change the job table, and their encoding in Raft log entries.

Every command is a frozen value validated on construction (InvalidRequest
naming the field). Besides its own fields each carries:

* ``now`` -- the proposer's wall clock, integer milliseconds since the UNIX
  epoch (UTC); apply never reads a clock, times travel in commands;
* ``actor`` -- who asked (a user name, or ``scheduler@host``);
* ``session``, ``seq`` -- the client's session id and its request number,
  so a proposal retried after a timeout or a leader change applies once;
* ``acked`` -- every request of the session numbered up to ``acked`` has had
  its answer, so the table may forget those answers (default ``seq - 1``:
  one request in flight at a time).

Wire form: a msgpack array ``[kind, {field: value}]``; ``decode`` is strict
and raises ProtocolError for anything that is not that shape (unknown kind,
unknown or missing field, trailing bytes) and InvalidRequest for a bad value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, final

import msgpack

from dcrond.errors import DcronError, InvalidRequest, ProtocolError
from dcrond.store._instants import check_run_id, make_run_id
from dcrond.store._jobspec import JobSpec, check_change
from dcrond.store._runstate import OUTCOME_EVENTS
from dcrond.store._validate import (
    bad,
    check_bool,
    check_choice,
    check_instant,
    check_int,
    check_job_name,
    check_optional_instant,
    check_optional_int,
    check_optional_str,
    check_str,
    show,
)

MAX_COMMAND_BYTES: Final = 1 << 20
MAX_SEQ: Final = (1 << 63) - 1
MAX_ATTEMPTS: Final = 1000
#: why a run was scheduled
RUN_REASONS: Final = ("schedule", "trigger", "catch-up", "retry")
#: how an attempt can end (the values of RunFinished.state)
OUTCOMES: Final = tuple(str(s) for s in OUTCOME_EVENTS)


def _check_host(field: str, value: object) -> str:
    return check_str(field, value, max_len=255, min_len=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """The fields every command carries (see the module doc)."""

    KIND: ClassVar[str] = ""

    now: int
    actor: str
    session: str
    seq: int
    acked: int | None = None

    def __post_init__(self) -> None:
        check_instant("now", self.now)
        check_str("actor", self.actor, max_len=256, min_len=1)
        check_str("session", self.session, max_len=128, min_len=1)
        check_int("seq", self.seq, 1, MAX_SEQ, "a request number")
        if self.acked is None:
            object.__setattr__(self, "acked", self.seq - 1)
        check_int("acked", self.acked, 0, self.seq - 1, "a request number below seq")
        self._check()

    def _check(self) -> None:
        """Check the command's own fields (subclasses)."""

    def encode(self) -> bytes:
        """The bytes of the log entry that carries this command."""
        fields = {name: _to_wire(getattr(self, name)) for name in _FIELDS[type(self)]}
        out: bytes = msgpack.packb([self.KIND, fields])
        return out

    @classmethod
    def _from_wire(cls, fields: dict[str, Any]) -> Command:
        return cls(**fields)


def _to_wire(value: object) -> object:
    if isinstance(value, JobSpec):
        return value.to_wire()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


# --- jobs ---------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class CreateJob(Command):
    """Create a job; refused with AlreadyExists if the name is taken."""

    KIND: ClassVar[str] = "create_job"

    job: JobSpec

    def _check(self) -> None:
        if not isinstance(self.job, JobSpec):
            raise bad("job", self.job, "give a job")

    @classmethod
    def _from_wire(cls, fields: dict[str, Any]) -> Command:
        fields["job"] = JobSpec.from_wire(fields["job"])
        return cls(**fields)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateJob(Command):
    """Change some fields of a job: ``changes`` maps field names to new (wire-form) values.

    Fields not named keep their value. Setting ``command`` clears ``script``
    and ``interpreter``; setting ``script`` clears ``command``.
    """

    KIND: ClassVar[str] = "update_job"

    name: str
    changes: Mapping[str, object]

    def _check(self) -> None:
        check_job_name("name", self.name)
        if not isinstance(self.changes, Mapping) or not self.changes:
            raise bad("changes", self.changes, "give a non-empty map of fields to change")
        for key, value in self.changes.items():
            check_change(key, value)
        wire = {str(k): _to_wire(self.changes[k]) for k in sorted(self.changes)}
        object.__setattr__(self, "changes", wire)


@dataclass(frozen=True, slots=True, kw_only=True)
class _NamedJob(Command):
    name: str

    def _check(self) -> None:
        check_job_name("name", self.name)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteJob(_NamedJob):
    """Delete a job (its versions and runs stay); refused while other jobs run after it."""

    KIND: ClassVar[str] = "delete_job"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class PauseJob(_NamedJob):
    """Stop scheduling a job (manual triggers still run)."""

    KIND: ClassVar[str] = "pause_job"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeJob(_NamedJob):
    """Schedule a paused job again."""

    KIND: ClassVar[str] = "resume_job"


# --- runs ---------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RunScheduled(Command):
    """Claim attempt ``attempt`` of run ``run_id`` (placed on ``host``, or not yet placed).

    Attempt 1 creates the run; ``run_id`` must be ``make_run_id(job,
    scheduled_at)`` (or, for a job that runs on several hosts, ``make_run_id(job,
    scheduled_at, host)``: one run per host) and ``job_version`` the job's current version (so a run
    claimed after an edit or a pause in the log is refused). Later attempts
    (``reason="retry"``) need the run to be waiting for a retry.
    """

    KIND: ClassVar[str] = "run_scheduled"

    run_id: str
    job: str
    job_version: int
    scheduled_at: int
    host: str | None
    attempt: int = 1
    reason: str = "schedule"

    def _check(self) -> None:
        check_job_name("job", self.job)
        check_int("job_version", self.job_version, 1, MAX_SEQ, "a job version")
        check_instant("scheduled_at", self.scheduled_at)
        if self.host is not None:
            _check_host("host", self.host)
        expected = make_run_id(self.job, self.scheduled_at)
        per_host = (
            None if self.host is None else make_run_id(self.job, self.scheduled_at, self.host)
        )
        if self.run_id not in (expected, per_host):
            raise bad(
                "run_id",
                self.run_id,
                f"the run of this job and instant is {expected!r}"
                + ("" if per_host is None else f" (or {per_host!r} on host {self.host})"),
            )
        check_int("attempt", self.attempt, 1, MAX_ATTEMPTS, "an attempt number")
        check_choice("reason", self.reason, RUN_REASONS)
        if (self.reason == "retry") != (self.attempt > 1):
            raise bad(
                "reason", self.reason, "attempt 1 is never a retry; later attempts are retries"
            )


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Command):
    """The process of attempt ``attempt`` started on ``host`` as ``pid``."""

    KIND: ClassVar[str] = "run_started"

    run_id: str
    attempt: int
    host: str
    pid: int
    started_at: int

    def _check(self) -> None:
        check_run_id("run_id", self.run_id)
        check_int("attempt", self.attempt, 1, MAX_ATTEMPTS, "an attempt number")
        _check_host("host", self.host)
        check_int("pid", self.pid, 1, (1 << 31) - 1, "a process id")
        check_instant("started_at", self.started_at)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Command):
    """Attempt ``attempt`` ended in ``state`` (succeeded, failed, timed_out, killed or lost).

    ``exit_code`` is set when the process exited by itself, ``signal`` when a
    signal ended it, neither when the outcome is lost. ``started_at`` may be
    given when no RunStarted was recorded. ``truncated`` says the log lost
    output beyond the size cap.
    """

    KIND: ClassVar[str] = "run_finished"

    run_id: str
    attempt: int
    state: str
    exit_code: int | None = None
    signal: int | None = None
    finished_at: int
    started_at: int | None = None
    log_path: str | None = None
    truncated: bool = False

    def _check(self) -> None:
        check_run_id("run_id", self.run_id)
        check_int("attempt", self.attempt, 1, MAX_ATTEMPTS, "an attempt number")
        check_choice("state", self.state, OUTCOMES)
        check_optional_int("exit_code", self.exit_code, 0, 255, "an exit status")
        check_optional_int("signal", self.signal, 1, 128, "a signal number")
        check_instant("finished_at", self.finished_at)
        check_optional_instant("started_at", self.started_at)
        check_optional_str("log_path", self.log_path, max_len=4096)
        check_bool("truncated", self.truncated)
        if self.exit_code is not None and self.signal is not None:
            raise bad("signal", self.signal, "give an exit code or a signal, not both")
        if self.state == "succeeded" and self.exit_code != 0:
            raise bad("exit_code", self.exit_code, "a succeeded attempt exited with 0")
        if self.state == "failed" and self.exit_code == 0:
            raise bad("exit_code", 0, "a failed attempt has a non-zero exit code or a signal")
        if self.state == "lost" and (self.exit_code is not None or self.signal is not None):
            raise bad("state", self.state, "a lost attempt has neither exit code nor signal")
        if self.started_at is not None and self.started_at > self.finished_at:
            raise bad("started_at", self.started_at, "an attempt starts before it finishes")


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RunSkipped(Command):
    """A scheduled run will not run (or not again); ``reason`` says why, for people."""

    KIND: ClassVar[str] = "run_skipped"

    run_id: str
    reason: str

    def _check(self) -> None:
        check_run_id("run_id", self.run_id)
        check_str("reason", self.reason, max_len=1024, min_len=1)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RunLost(Command):
    """Attempt ``attempt``'s outcome is unknown (its host died or left no exit status)."""

    KIND: ClassVar[str] = "run_lost"

    run_id: str
    attempt: int
    reason: str = ""

    def _check(self) -> None:
        check_run_id("run_id", self.run_id)
        check_int("attempt", self.attempt, 1, MAX_ATTEMPTS, "an attempt number")
        check_str("reason", self.reason, max_len=1024)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RunRefused(Command):
    """``host`` will not start attempt ``attempt`` (it has no free slot): it is unplaced again.

    Only the host the attempt is placed on may refuse it, and only before it
    started; the leader then places it elsewhere (``RunPlaced``) or, when no
    host takes it in time, skips the run.
    """

    KIND: ClassVar[str] = "run_refused"

    run_id: str
    attempt: int
    host: str
    reason: str

    def _check(self) -> None:
        check_run_id("run_id", self.run_id)
        check_int("attempt", self.attempt, 1, MAX_ATTEMPTS, "an attempt number")
        _check_host("host", self.host)
        check_str("reason", self.reason, max_len=1024, min_len=1)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlaced(Command):
    """Place attempt ``attempt`` -- claimed with no host, or refused -- on ``host``."""

    KIND: ClassVar[str] = "run_placed"

    run_id: str
    attempt: int
    host: str

    def _check(self) -> None:
        check_run_id("run_id", self.run_id)
        check_int("attempt", self.attempt, 1, MAX_ATTEMPTS, "an attempt number")
        _check_host("host", self.host)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class PruneRuns(Command):
    """Delete ``job``'s oldest ended runs beyond ``keep_count`` or older than ``max_age`` s.

    Runs that have not ended are never pruned. At most ``limit`` runs go per
    command (the result says if more remain). The result lists the log paths
    of the deleted attempts, for the caller to delete from storage.
    """

    KIND: ClassVar[str] = "prune_runs"

    job: str
    keep_count: int | None = None
    max_age: int | None = None
    limit: int = 10_000

    def _check(self) -> None:
        check_job_name("job", self.job)
        check_optional_int("keep_count", self.keep_count, 0, 10_000_000, "a count of runs")
        check_optional_int("max_age", self.max_age, 0, 100 * 366 * 86400, "an age in seconds")
        check_int("limit", self.limit, 1, 100_000, "a count of runs")
        if self.keep_count is None and self.max_age is None:
            raise InvalidRequest("keep_count, max_age: give at least one limit")


#: the commands about one job's definition, and those about one run (each has ``run_id``)
JOB_COMMANDS: Final = (CreateJob, UpdateJob, DeleteJob, PauseJob, ResumeJob)
RUN_COMMANDS: Final = (
    RunScheduled,
    RunStarted,
    RunFinished,
    RunSkipped,
    RunLost,
    RunRefused,
    RunPlaced,
)

COMMANDS: Final[dict[str, type[Command]]] = {
    cls.KIND: cls for cls in (*JOB_COMMANDS, *RUN_COMMANDS, PruneRuns)
}

_FIELDS: Final = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in COMMANDS.values()}
_REQUIRED: Final = {
    cls: frozenset(
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    for cls in COMMANDS.values()
}


@final
@dataclass(frozen=True, slots=True)
class Batch:
    """Several encoded commands in one log entry, applied in order, each as if alone.

    A proposer with many small commands ready at once (the engine: a crowd
    of claims, the start and end reports of a tick) sends them as one entry,
    so the log, the network and every replica's transaction pay once for
    all. Each command keeps its own session and number: apply deduplicates,
    refuses and answers it exactly as it would the command alone, and a
    batch sent again after an error (with any other mix of commands) applies
    nothing twice. The entry's result is ``Applied({"results": [...]})``,
    one result per command in wire form (``result_to_wire``).
    """

    commands: tuple[bytes, ...]

    def encode(self) -> bytes:
        """The bytes of the log entry."""
        out: bytes = msgpack.packb([BATCH_KIND, list(self.commands)])
        return out


#: the kind of a batch entry (not a command: it holds commands)
BATCH_KIND: Final = "batch"
#: the most commands one batch may hold
MAX_BATCH: Final = 4096


def _unpack(data: object) -> tuple[str, Any]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"a command is bytes, not {type(data).__name__}")
    if len(data) > MAX_COMMAND_BYTES:
        raise ProtocolError(f"command of {len(data)} bytes is over the {MAX_COMMAND_BYTES} limit")
    try:
        item = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:
        raise ProtocolError(f"not a msgpack command: {exc}") from None
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        raise ProtocolError(f"a command is [kind, {{fields}}], got {show(item)}")
    return item[0], item[1]


def decode(data: bytes) -> Command:
    """Decode one log entry's bytes into a validated command.

    Raises ProtocolError if the bytes are not a command of a known kind with
    exactly its fields, InvalidRequest if a field's value is invalid.
    """
    kind, fields = _unpack(data)
    return _command(kind, fields)


def decode_entry(data: bytes) -> Command | Batch:
    """Decode a log entry: one command (as ``decode``) or a ``Batch`` of encoded commands.

    The commands of a batch are decoded (and so validated) one by one when
    applied: one bad command is refused alone. ProtocolError for a batch
    that is not a non-empty list of at most ``MAX_BATCH`` byte strings.
    """
    kind, body = _unpack(data)
    if kind != BATCH_KIND:
        return _command(kind, body)
    if not (isinstance(body, list) and 0 < len(body) <= MAX_BATCH):
        raise ProtocolError(f"a batch is a list of 1 to {MAX_BATCH} commands, got {show(body)}")
    if not all(isinstance(c, bytes) for c in body):
        raise ProtocolError("a batch holds encoded commands (bytes)")
    return Batch(tuple(body))


def _command(kind: str, fields: object) -> Command:
    if not isinstance(fields, dict):
        raise ProtocolError(f"a command is [kind, {{fields}}], got {show([kind, fields])}")
    cls = COMMANDS.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown command {show(kind)}; known: " + ", ".join(COMMANDS))
    known = _FIELDS[cls]
    unknown = sorted(str(k) for k in fields if k not in known)
    if unknown:
        raise ProtocolError(f"{kind}: unknown field {show(unknown[0])}")
    missing = sorted(_REQUIRED[cls].difference(fields))
    if missing:
        raise ProtocolError(f"{kind}: missing field {missing[0]!r}")
    try:
        return cls._from_wire(fields)
    except DcronError:
        raise
    except Exception as exc:  # a value of a type the constructor could not take
        raise InvalidRequest(f"{kind}: {exc}") from None
