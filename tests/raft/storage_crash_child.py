"""Child process for the crash test: save entries forever, print what each save made durable.

Usage: ``python storage_crash_child.py PATH SEED``. Opens the log at PATH,
starts a new term (printing ``term T`` once that is saved), then loops: save a
batch of 1..16 entries with a hard state, and after ``save`` returns print the
last index it acknowledged. Every 100 entries or so it compacts the log to
about 40 entries back, with an image of ~1 MB (:func:`image`); half of the
time the image's file is written first and installed after the next save, as
the Raft driver does from a worker thread. The parent kills it with SIGKILL
at a random moment; every index printed must then be in the log (or inside
its snapshot).

An entry's data is a function of its index (:func:`payload`), so the parent can
check that what it finds is exactly what was written.
"""

from __future__ import annotations

import random
import sys

from dcrond.raft._storage import LogStorage
from dcrond.raft._storage_snapfile import SnapshotFile
from dcrond.raft._types import ConfState, Entry, HardState, Snapshot, SnapshotMeta


def payload(index: int) -> bytes:
    """The 256 bytes stored in entry ``index``."""
    return (b"entry-%d;" % index * 40)[:256]


def image(index: int) -> bytes:
    """The snapshot image of the log up to ``index``."""
    return b"image-%d;" % index * (1 << 17)


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    log = LogStorage.open(path)
    state = log.load()
    index = state.last_index
    term = state.hard_state.term + 1
    log.save(
        hard_state=HardState(term, "child", state.hard_state.commit), entries=(), snapshot=None
    )
    print(f"term {term}", flush=True)
    conf = ConfState(voters=frozenset({"child"}))
    pending: tuple[Snapshot, SnapshotFile] | None = None
    while True:
        count = rng.randint(1, 16)
        entries = [Entry(term, index + i + 1, data=payload(index + i + 1)) for i in range(count)]
        log.save(hard_state=HardState(term, "child", index), entries=entries, snapshot=None)
        index += count
        print(index, flush=True)
        if pending is not None:
            log.compact(*pending)
            pending = None
        elif rng.random() < 0.1 and index > 50:
            keep_from = index - 40
            (at,) = log.entries(keep_from, keep_from + 1)
            snap = Snapshot(SnapshotMeta(keep_from, at.term, conf), image(keep_from))
            if rng.random() < 0.5:
                log.compact(snap)
            else:
                pending = (snap, log.write_snapshot(snap))


if __name__ == "__main__":
    main()
