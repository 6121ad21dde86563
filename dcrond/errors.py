"""The one error tree of dcrond.

::

    DcronError                      root: catch this at the edges
    ├── ConfigError                 the operator's fault: a bad config file (exit 78)
    ├── InvalidRequest              the caller's fault: bad input, nothing was changed
    │   ├── NotFound                the named job, run or node does not exist
    │   ├── AlreadyExists           a job with that name exists
    │   └── PermissionDenied        the caller's certificate does not allow that method
    ├── NotLeader                   this node cannot serve the request; carries a hint
    ├── Unavailable                 no quorum or the daemon is shutting down; retry later
    │   └── TlsError                a TLS handshake failed or a peer's certificate was refused
    ├── ProtocolError               a peer sent a malformed or oversized frame
    └── StorageError                the disk or object storage failed (or holds a corrupt log)
        ├── CorruptLog              a torn or corrupted log tail was found and not applied
        ├── StorageUnavailable      unreachable, timing out or overloaded: retry with backoff
        ├── StorageRefused          refused: wrong credentials or missing bucket; fix config
        └── BlobNotFound            no object under that key

Errors under ``InvalidRequest`` are the caller's fault. ``StorageUnavailable``
is transient: retrying with backoff is the right answer (nothing was written
under the final key). ``StorageRefused`` needs an operator: retrying changes
nothing until the credentials, bucket or permissions are fixed. Any other
``StorageError`` and anything not in this tree are bugs or failing hardware
and should be reported.
"""

from __future__ import annotations


class DcronError(Exception):
    """Root of every error dcrond raises on purpose."""


class ConfigError(DcronError):
    """The configuration file is invalid; the message names the dotted key."""


class InvalidRequest(DcronError):
    """The request is invalid; nothing was changed."""


class NotFound(InvalidRequest):
    """The named object does not exist."""


class AlreadyExists(InvalidRequest):
    """An object with that name already exists."""


class PermissionDenied(InvalidRequest):
    """The caller may not call that method (e.g. a client certificate calling a node's)."""


class NotLeader(DcronError):
    """This node is not the leader; ``leader`` names the one it knows, if any."""

    def __init__(self, message: str = "not the leader", leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader


class Unavailable(DcronError):
    """The cluster cannot serve the request right now (no quorum, shutting down)."""


class TlsError(Unavailable):
    """A TLS connection could not be made: no, a foreign or an unusable certificate,
    or a peer that does not speak TLS. Retrying does not help until the certificates
    (or the TLS settings) are fixed; the message says which side refused and why."""


class ProtocolError(DcronError):
    """A peer sent a malformed, unknown or oversized frame."""


class StorageError(DcronError):
    """Durable storage failed."""


class CorruptLog(StorageError):
    """The Raft log on disk has a torn or corrupted tail; it was not applied."""


class StorageUnavailable(StorageError):
    """Object storage cannot be reached, timed out or is overloaded; retry with backoff."""


class StorageRefused(StorageError):
    """Object storage refused us: wrong credentials, a missing bucket or no permission."""


class BlobNotFound(StorageError):
    """There is no object under the key asked for."""
