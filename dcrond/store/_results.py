"""What ``JobStore.apply`` hands back to the proposer: ``Applied`` or ``Rejected``.

A committed command is applied on every replica, so its outcome must be a
value, the same everywhere -- never an exception that would stop the Raft
driver. A refused command (a duplicate name, a transition the run table
forbids) changes nothing and yields ``Rejected(code, message)``; the
proposer calls :func:`unwrap` to turn it into the error the user sees:

=================  ======================================================
code               raised by ``unwrap``
=================  ======================================================
``invalid``        InvalidRequest -- a field is wrong (message names it)
``not_found``      NotFound -- the job, run or attempt does not exist
``already_exists`` AlreadyExists -- a job or run with that id exists
``conflict``       InvalidRequest -- valid, but not in the current state
                   (a stale job version, a transition the table refuses);
                   a scheduler or runner reads ``code`` to tell this apart
``stale``          InvalidRequest -- an older request of a client session
``protocol``       ProtocolError -- the entry is not a dcrond command
=================  ======================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, final

import msgpack

from dcrond.errors import (
    AlreadyExists,
    DcronError,
    InvalidRequest,
    NotFound,
    ProtocolError,
    StorageError,
)

CODES: Final = ("invalid", "not_found", "already_exists", "conflict", "stale", "protocol")


class Conflict(InvalidRequest):
    """Internal: a valid command that the current state refuses (code ``conflict``)."""


@final
@dataclass(frozen=True, slots=True)
class Applied:
    """The command took effect; ``value`` is the JSON-able object it produced."""

    value: dict[str, Any]


@final
@dataclass(frozen=True, slots=True)
class Rejected:
    """The command was refused and changed nothing (see the module doc for ``code``)."""

    code: str
    message: str

    def error(self) -> DcronError:
        """The exception the proposer raises to its caller."""
        if self.code == "not_found":
            return NotFound(self.message)
        if self.code == "already_exists":
            return AlreadyExists(self.message)
        if self.code == "protocol":
            return ProtocolError(self.message)
        return InvalidRequest(self.message)


Result = Applied | Rejected


def rejected_from(exc: DcronError) -> Rejected:
    """The Rejected value for an error raised while checking or applying a command."""
    if isinstance(exc, NotFound):
        code = "not_found"
    elif isinstance(exc, AlreadyExists):
        code = "already_exists"
    elif isinstance(exc, Conflict):
        code = "conflict"
    elif isinstance(exc, ProtocolError):
        code = "protocol"
    else:
        code = "invalid"
    return Rejected(code, str(exc))


def unwrap(result: object) -> dict[str, Any]:
    """Return an Applied result's value, or raise the error a Rejected one stands for.

    Raises ``TypeError`` for anything else (such as the None of a NOOP
    entry): a bug in the caller.
    """
    if isinstance(result, Applied):
        return result.value
    if isinstance(result, Rejected):
        raise result.error()
    raise TypeError(f"not a job-table result: {result!r}")


def result_to_wire(result: Result) -> list[Any]:
    """A result as msgpack-able data: ``[0, value]`` or ``[1, code, message]``."""
    if isinstance(result, Applied):
        return [0, result.value]
    return [1, result.code, result.message]


def result_from_wire(item: Any) -> Result:
    """The result ``result_to_wire`` gave; ProtocolError for anything else."""
    try:
        if item[0] == 0 and isinstance(item[1], dict):
            return Applied(item[1])
        if item[0] == 1:
            return Rejected(str(item[1]), str(item[2]))
    except (TypeError, IndexError, KeyError):
        pass
    raise ProtocolError(f"not a job-table result: {item!r:.80}")


def encode_result(result: Result) -> bytes:
    """Encode a result for the session table (so a retried request gets it again)."""
    out: bytes = msgpack.packb(result_to_wire(result))
    return out


def decode_result(data: bytes) -> Result:
    """Decode what ``encode_result`` stored; StorageError if the table holds garbage."""
    try:
        return result_from_wire(msgpack.unpackb(data))
    except Exception as exc:
        raise StorageError(f"corrupt session result in the job table: {exc}") from exc
