"""A small durable queue: one JSON file per record in a folder, in the order added.

The engine keeps two: the log uploads still to do, and the attempt reports
(``RunFinished``) not yet committed. A record is written to a temporary
name and renamed into place, so after a crash of the daemon each record is
either whole or absent; records are read back in order on the next start.
There is no fsync: a power cut can lose the newest records, as it can lose
the newest bytes of the spool files they point at (the runner does not
fsync output either); a daemon crash or restart loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, final

log = logging.getLogger("dcrond.engine")


@final
class Journal:
    """Records (JSON objects) kept as files in ``folder``; see the module doc."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._records: dict[int, dict[str, Any]] = {}
        self._seq = 0
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
            self._seq = max(self._seq, seq)

    def add(self, record: dict[str, Any]) -> int:
        """Keep ``record``; it is on disk when this returns. Returns its number."""
        self._seq += 1
        seq = self._seq
        path = self.folder / f"{seq:016d}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(json.dumps(record, separators=(",", ":")).encode())
        os.replace(tmp, path)
        self._records[seq] = record
        return seq

    def remove(self, seq: int) -> None:
        """Forget record ``seq`` (done)."""
        if self._records.pop(seq, None) is not None:
            (self.folder / f"{seq:016d}.json").unlink(missing_ok=True)

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
