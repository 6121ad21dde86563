"""The on-disk format of the Raft log: schema, checksums and the verifying scan.

Theory of operation
-------------------
One SQLite file (WAL mode) holds four tables:

``entries``     one row per log entry: ``idx`` (the rowid), ``term``, ``kind``,
                ``data`` and ``crc``, a CRC-32 over (term, idx, kind, data);
``hard_state``  at most one row (``id = 0``): term, vote, commit and their CRC;
``snapshot``    at most one row (``id = 0``): index, term, membership, the
                name of the file that holds the state machine's bytes
                (``_storage_snapfile``; a version 1 log held the bytes in
                ``data``, which is still read) and a CRC over all of them;
``repairs``     one row each time an operator truncated a damaged log.

SQLite's own WAL checksums already make a *transaction* all-or-nothing, so a
crash in the middle of ``save`` leaves the previous state. The per-row CRCs and
the structural checks here catch what SQLite cannot: a flipped bit in a page
(bit rot, a bad disk or controller), a row lost or edited by hand, a file
copied while written, and our own bugs. :func:`scan` reads everything in index
order and stops at the *first* problem; nothing past it is handed to Raft.

Every invariant the scan checks is also checked by ``LogStorage.save`` before
it writes, so a log written by this code can only fail the scan through damage.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, final

import apsw

from dcrond.errors import StorageError
from dcrond.raft._types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta

SCHEMA_VERSION: Final = 2
#: version 1 kept the snapshot's bytes in the row; opening one adds the ``file`` column
_OLD_VERSIONS: Final = (1,)
#: ``PRAGMA application_id`` of a dcrond Raft log ("dcRL"), so that opening
#: some other SQLite file (the job table, say) by mistake is refused.
APPLICATION_ID: Final = int.from_bytes(b"dcRL", "big")

#: Keep the WAL file from staying huge after a large batch or snapshot.
JOURNAL_SIZE_LIMIT: Final = 64 << 20

SCHEMA: Final = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE hard_state (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    term INTEGER NOT NULL,
    vote TEXT,
    commit_index INTEGER NOT NULL,
    crc INTEGER NOT NULL
);
CREATE TABLE snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    idx INTEGER NOT NULL,
    term INTEGER NOT NULL,
    conf TEXT NOT NULL,
    data BLOB NOT NULL,
    crc INTEGER NOT NULL,
    file TEXT
);
CREATE TABLE entries (
    idx INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    data BLOB NOT NULL,
    crc INTEGER NOT NULL
);
CREATE TABLE repairs (
    id INTEGER PRIMARY KEY,
    repaired_at REAL NOT NULL,
    first_bad_index INTEGER,
    reason TEXT NOT NULL,
    entries_removed INTEGER NOT NULL,
    commit_before INTEGER NOT NULL,
    commit_after INTEGER NOT NULL
);
"""

_ENTRY_HEADER = struct.Struct("<qqq")  # term, index, kind
_HARD_STATE_HEADER = struct.Struct("<qq")  # term, commit
_SNAPSHOT_HEADER = struct.Struct("<qq")  # index, term
_VALID_KINDS: Final = frozenset(int(k) for k in EntryKind)


def entry_crc(term: int, index: int, kind: int, data: bytes) -> int:
    """Return the CRC-32 stored beside an entry (covers its index, so moved rows fail)."""
    return zlib.crc32(data, zlib.crc32(_ENTRY_HEADER.pack(term, index, kind)))


def hard_state_crc(term: int, vote: str | None, commit: int) -> int:
    """Return the CRC-32 stored beside the hard state."""
    tail = b"\x00" if vote is None else b"\x01" + vote.encode()
    return zlib.crc32(tail, zlib.crc32(_HARD_STATE_HEADER.pack(term, commit)))


def snapshot_crc(index: int, term: int, conf: str, data: bytes) -> int:
    """Return the CRC-32 stored beside the snapshot."""
    crc = zlib.crc32(_SNAPSHOT_HEADER.pack(index, term))
    return zlib.crc32(data, zlib.crc32(conf.encode(), crc))


def encode_conf(conf: ConfState) -> str:
    """Encode a membership as canonical JSON (sorted, so equal sets encode equally)."""
    return json.dumps(
        {"voters": sorted(conf.voters), "learners": sorted(conf.learners)},
        separators=(",", ":"),
        sort_keys=True,
    )


def decode_conf(text: str) -> ConfState:
    """Decode :func:`encode_conf`'s output; ValueError if it is not that shape."""
    raw = json.loads(text)
    if not isinstance(raw, dict) or set(raw) != {"voters", "learners"}:
        raise ValueError("membership is not {voters, learners}")
    voters, learners = raw["voters"], raw["learners"]
    for names in (voters, learners):
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("membership lists must hold node ids (strings)")
    return ConfState(voters=frozenset(voters), learners=frozenset(learners))


ProblemPart = Literal["entry", "commit", "hard_state", "snapshot"]


@final
@dataclass(frozen=True, slots=True)
class LogProblem:
    """The first thing wrong with a stored log, as found by a verifying scan.

    ``part`` says where: ``"entry"`` (``index`` is the first bad entry; the
    log can be cut there), ``"commit"`` (entries up to the committed index are
    missing; ``index`` is the first missing one), ``"hard_state"`` or
    ``"snapshot"`` (a damaged row that truncation cannot fix; ``index`` is
    None for the hard state, the snapshot's stored index when readable).
    """

    part: ProblemPart
    index: int | None
    reason: str

    @property
    def repairable(self) -> bool:
        """True when truncating the log (and lowering commit) can remove the problem."""
        return self.part in ("entry", "commit")

    def describe(self, path: str) -> str:
        """Say what is wrong and what the operator can do, in one message."""
        if self.part == "entry":
            return (
                f"raft log {path} is corrupt at entry {self.index}: {self.reason}; "
                f"nothing from entry {self.index} on was loaded. If this node's copy "
                f"of those entries may be discarded, LogStorage.repair() truncates the "
                f"log there (read docs/raft.md, Storage, first)"
            )
        if self.part == "commit":
            return (
                f"raft log {path} has lost committed entries from {self.index} on: "
                f"{self.reason}. LogStorage.repair() lowers the recorded commit index "
                f"(read docs/raft.md, Storage, first)"
            )
        what = "hard state" if self.part == "hard_state" else "snapshot"
        return (
            f"raft log {path}: the {what} is corrupt: {self.reason}. This cannot be "
            f"repaired by truncation: restore the data directory from a backup, or "
            f"remove this node from the cluster and add it back empty under a new id"
        )


@final
@dataclass(frozen=True, slots=True)
class ScanResult:
    """What a verifying scan found: the sound prefix and the first problem, if any."""

    hard_state: HardState
    snapshot: Snapshot | None
    snapshot_index: int  #: 0 without a snapshot (or when its row is unreadable)
    entries: tuple[Entry, ...]  #: the verified entries before the problem
    problem: LogProblem | None


def _is_int(value: object) -> bool:
    return type(value) is int


def _read_hard_state(conn: apsw.Connection) -> HardState | LogProblem:
    rows = list(conn.execute("SELECT term, vote, commit_index, crc FROM hard_state WHERE id = 0"))
    if not rows:
        return HardState()
    term, vote, commit, crc = rows[0]
    if not (_is_int(term) and _is_int(commit) and _is_int(crc)) or not (
        vote is None or isinstance(vote, str)
    ):
        return LogProblem("hard_state", None, "a column holds a value of the wrong type")
    computed = hard_state_crc(term, vote, commit)
    if computed != crc:
        return LogProblem(
            "hard_state", None, f"checksum mismatch (stored {crc:#010x}, computed {computed:#010x})"
        )
    if term < 0 or commit < 0:
        return LogProblem("hard_state", None, f"negative term {term} or commit {commit}")
    return HardState(term=term, vote=vote, commit=commit)


def _read_snapshot(
    conn: apsw.Connection, hard_state: HardState, read_file: Callable[[str], bytes]
) -> Snapshot | LogProblem | None:
    rows = list(conn.execute("SELECT idx, term, conf, data, crc, file FROM snapshot WHERE id = 0"))
    if not rows:
        return None
    index, term, conf_text, data, crc, name = rows[0]
    if not (_is_int(index) and _is_int(term) and _is_int(crc)):
        return LogProblem("snapshot", None, "a column holds a value of the wrong type")
    if not (isinstance(conf_text, str) and isinstance(data, bytes)):
        return LogProblem("snapshot", index, "a column holds a value of the wrong type")
    if name is not None:
        if not isinstance(name, str) or data:
            return LogProblem("snapshot", index, "a column holds a value of the wrong type")
        try:
            data = read_file(name)
        except OSError as exc:
            return LogProblem("snapshot", index, f"its file {name} cannot be read: {exc}")
    computed = snapshot_crc(index, term, conf_text, data)
    if computed != crc:
        return LogProblem(
            "snapshot", index, f"checksum mismatch (stored {crc:#010x}, computed {computed:#010x})"
        )
    if index < 1 or term < 1:
        return LogProblem("snapshot", index, f"index {index} / term {term} below 1")
    if term > hard_state.term:
        return LogProblem(
            "snapshot", index, f"its term {term} is newer than the hard state's {hard_state.term}"
        )
    try:
        conf = decode_conf(conf_text)
    except ValueError as exc:
        return LogProblem("snapshot", index, f"unreadable membership: {exc}")
    return Snapshot(meta=SnapshotMeta(index=index, term=term, conf=conf), data=data)


def _check_entry(
    row: tuple[object, ...], expected: int, prev_term: int, prev_what: str, max_term: int
) -> Entry | LogProblem:
    index, term, kind, data, crc = row
    assert isinstance(index, int)  # the rowid is always an integer
    if index < expected:
        return LogProblem(
            "entry", index, f"it lies inside the snapshot (which ends at {expected - 1})"
        )
    if index > expected:
        return LogProblem("entry", expected, f"it is missing (the next stored entry is {index})")
    if not (_is_int(term) and _is_int(kind) and _is_int(crc) and isinstance(data, bytes)):
        return LogProblem("entry", index, "a column holds a value of the wrong type")
    assert isinstance(term, int) and isinstance(kind, int) and isinstance(crc, int)
    computed = entry_crc(term, index, kind, data)
    if computed != crc:
        return LogProblem(
            "entry", index, f"checksum mismatch (stored {crc:#010x}, computed {computed:#010x})"
        )
    if kind not in _VALID_KINDS:
        return LogProblem("entry", index, f"unknown entry kind {kind}")
    if term < 1:
        return LogProblem("entry", index, f"term {term} is below 1")
    if term < prev_term:
        return LogProblem(
            "entry", index, f"its term {term} is lower than the term {prev_term} of {prev_what}"
        )
    if term > max_term:
        return LogProblem(
            "entry", index, f"its term {term} is newer than the hard state's term {max_term}"
        )
    return Entry(term=term, index=index, kind=EntryKind(kind), data=data)


def scan(
    conn: apsw.Connection, *, keep_entries: bool, read_file: Callable[[str], bytes]
) -> ScanResult:
    """Read and verify the whole log in index order, stopping at the first problem.

    With ``keep_entries`` false the verified entries are checked but not kept
    (``entries`` is empty), which is what ``check`` and ``repair`` need.
    ``read_file`` returns the bytes of the snapshot file the row names (OSError
    when it cannot).
    """
    hard_state = _read_hard_state(conn)
    if isinstance(hard_state, LogProblem):
        return ScanResult(HardState(), None, 0, (), hard_state)
    snapshot = _read_snapshot(conn, hard_state, read_file)
    if isinstance(snapshot, LogProblem):
        return ScanResult(hard_state, None, 0, (), snapshot)
    snap_index = snapshot.meta.index if snapshot else 0
    prev_term = snapshot.meta.term if snapshot else 0
    prev_what = "the snapshot"
    expected = snap_index + 1
    kept: list[Entry] = []
    for row in conn.execute("SELECT idx, term, kind, data, crc FROM entries ORDER BY idx"):
        checked = _check_entry(row, expected, prev_term, prev_what, hard_state.term)
        if isinstance(checked, LogProblem):
            return ScanResult(hard_state, snapshot, snap_index, tuple(kept), checked)
        if keep_entries:
            kept.append(checked)
        prev_term = checked.term
        prev_what = f"entry {expected}"
        expected += 1
    last = expected - 1
    problem = None
    if hard_state.commit > last:
        problem = LogProblem(
            "commit",
            last + 1,
            f"the hard state says entries up to {hard_state.commit} are committed "
            f"but the log ends at {last}",
        )
    return ScanResult(hard_state, snapshot, snap_index, tuple(kept), problem)


def prepare(conn: apsw.Connection, path: str, sync: bool) -> None:
    """Set the pragmas, take the file exclusively and create or check the schema."""
    try:
        conn.pragma("locking_mode", "EXCLUSIVE")
        mode = conn.pragma("journal_mode", "WAL")
        if str(mode).lower() != "wal":
            raise StorageError(f"raft log {path}: cannot use WAL (journal_mode is {mode})")
        conn.pragma("synchronous", "FULL" if sync else "NORMAL")
        conn.pragma("journal_size_limit", JOURNAL_SIZE_LIMIT)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            app_id = conn.pragma("application_id")
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_schema")}
            if app_id == 0 and not tables:
                conn.execute(SCHEMA)
                conn.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))
                conn.pragma("application_id", APPLICATION_ID)
            elif app_id != APPLICATION_ID:
                raise StorageError(f"{path} is an SQLite file but not a dcrond raft log")
            else:
                versions: list[Any] = [
                    v for (v,) in conn.execute("SELECT version FROM schema_version")
                ]
                if len(versions) == 1 and versions[0] in _OLD_VERSIONS:
                    conn.execute("ALTER TABLE snapshot ADD COLUMN file TEXT")
                    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
                    versions = [SCHEMA_VERSION]
                if versions != [SCHEMA_VERSION]:
                    raise StorageError(
                        f"raft log {path} has schema version {versions}; this dcrond "
                        f"reads version {SCHEMA_VERSION}"
                    )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except apsw.BusyError as exc:
        raise StorageError(f"raft log {path} is in use by another process") from exc
    except apsw.Error as exc:
        raise StorageError(f"cannot open raft log {path}: {exc}") from exc
