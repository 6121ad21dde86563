"""A small durable queue: records appended to one file in a folder, in the order added.

The engine keeps two: the log uploads still to do, and the attempt reports
(``RunFinished``) not yet committed. Each ``add`` appends one line
(``{"seq": N, "record": {...}}``) to ``journal.log`` with a single
``write`` on a descriptor opened with ``O_APPEND``, and each ``remove``
appends ``{"done": N}``: a burst of a thousand attempts ending at once costs
a thousand small writes, not a thousand file creations and renames (which
took ~0.4 ms each on the event loop). When no record is left the file is
removed, so an idle queue leaves an empty folder.

After a crash of the daemon the file is read back in order: records not
marked done are the queue. A line cut short by the crash can only be the
last one (writes are appended whole, in order): it is cut off the file. There is no
fsync: a power cut can lose the newest records, as it can lose the newest
bytes of the spool files they point at (the runner does not fsync output
either); a daemon crash or restart loses nothing.

Folders written by earlier versions (one ``<seq>.json`` file per record)
are read too; such a record's file is removed once it is done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Final, final

log = logging.getLogger("dcrond.engine")

#: the journal file in its folder
LOG_NAME: Final = "journal.log"


@final
class Journal:
    """Records (JSON objects) kept in ``folder``; see the module doc."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._path = self.folder / LOG_NAME
        self._records: dict[int, dict[str, Any]] = {}
        self._legacy: set[int] = set()  #: records that still have a file of their own
        self._seq = 0
        self._fd: int | None = None
        self._load_legacy()
        self._load_log()

    # --- reading back ---------------------------------------------------------------

    def _load_legacy(self) -> None:
        for name in sorted(os.listdir(self.folder)):
            path = self.folder / name
            if name.endswith(".tmp"):  # a write a crash interrupted: never renamed into place
                path.unlink(missing_ok=True)
                continue
            if not name.endswith(".json"):
                continue
            try:
                seq = int(name.removesuffix(".json"))
                record = json.loads(path.read_bytes())
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError) as exc:
                log.error("journal_record_unreadable path=%s error=%r", path, str(exc))
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
                continue
            self._records[seq] = record
            self._legacy.add(seq)
            self._seq = max(self._seq, seq)

    def _load_log(self) -> None:
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return
        whole = data.rfind(b"\n") + 1
        if whole < len(data):  # the last line was cut short by a crash: drop it
            os.truncate(self._path, whole)
        for i, line in enumerate(data[:whole].split(b"\n")):
            if not line:
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
                if "done" in entry:
                    self._records.pop(int(entry["done"]), None)
                    continue
                seq, record = int(entry["seq"]), entry["record"]
                if not isinstance(record, dict):
                    raise ValueError("the record is not an object")
            except (ValueError, KeyError, TypeError) as exc:
                log.error(
                    "journal_line_unreadable path=%s line=%d error=%r", self._path, i, str(exc)
                )
                continue
            self._records[seq] = record
            self._seq = max(self._seq, seq)
        if not self._records:
            self._path.unlink(missing_ok=True)

    # --- the queue ----------------------------------------------------------------------

    def _append(self, entry: dict[str, Any]) -> None:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        data = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
        written = os.write(self._fd, data)
        if written != len(data):  # a full disk: the line is cut; say so, keep the memory copy
            raise OSError(f"journal {self._path}: wrote {written} of {len(data)} bytes")

    def add(self, record: dict[str, Any]) -> int:
        """Keep ``record``; it is in the file when this returns. Returns its number."""
        self._seq += 1
        seq = self._seq
        self._append({"seq": seq, "record": record})
        self._records[seq] = record
        return seq

    def remove(self, seq: int) -> None:
        """Forget record ``seq`` (done)."""
        if self._records.pop(seq, None) is None:
            return
        if seq in self._legacy:
            self._legacy.discard(seq)
            (self.folder / f"{seq:016d}.json").unlink(missing_ok=True)
        elif self._records:
            self._append({"done": seq})
        if not self._records:  # nothing left: start the next burst on an empty file
            self.close()
            self._path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the file (records stay on disk; the next ``add`` opens it again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def items(self) -> list[tuple[int, dict[str, Any]]]:
        """The records kept, oldest first."""
        return list(self._records.items())  # added in increasing order

    def first(self) -> tuple[int, dict[str, Any]] | None:
        """The oldest record, if any."""
        if not self._records:
            return None
        seq = next(iter(self._records))
        return seq, self._records[seq]

    def __len__(self) -> int:
        return len(self._records)
