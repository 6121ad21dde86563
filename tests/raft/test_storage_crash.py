"""kill -9 in the middle of saving loses nothing that save() had acknowledged.

A real child process (tests/raft/storage_crash_child.py) saves batches in a
loop and prints each acknowledged index after ``save`` returns. We SIGKILL it
at a random moment, reopen the log, and check that every acknowledged index is
present with exactly the data written (or inside the snapshot a compaction
made), that the log verifies cleanly, that no snapshot file but the one the
log names is left once it is reopened, and that the next run carries on. This
proves atomicity and durability against a process crash; a power loss also
needs the fsync that ``synchronous=FULL`` does, which a test cannot cut.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from dcrond.raft._storage import LogStorage
from tests.raft.storage_crash_child import image, payload

CHILD = Path(__file__).with_name("storage_crash_child.py")


def run_child_and_kill(path: Path, seed: int, acks_before_kill: int) -> tuple[int, int]:
    """Start the child, SIGKILL it after some acknowledgements; return (term, last acked)."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), str(seed)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline()]
        while len(lines) <= acks_before_kill and lines[-1]:
            lines.append(child.stdout.readline())
        time.sleep(random.Random(seed).random() * 0.003)  # land somewhere inside a save
        os.kill(child.pid, signal.SIGKILL)
        lines += child.stdout.readlines()  # printed before it died: acknowledged too
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL, "the child ended before it was killed"
    head, *acks = [line.strip() for line in lines if line.strip()]
    assert head.startswith("term "), head
    return int(head.split()[1]), int(acks[-1])


def test_every_acknowledged_index_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    highest_acked = 0
    for round_ in range(4):
        term, acked = run_child_and_kill(path, seed=round_, acks_before_kill=20 + 40 * round_)
        assert acked > highest_acked
        highest_acked = acked
        with LogStorage.open(path) as log:
            state = log.load()  # verifies every checksum and the log's shape
        assert state.hard_state.term == term
        assert state.last_index >= acked
        snapshot_index = state.snapshot.meta.index if state.snapshot else 0
        stored = {e.index: e for e in state.entries}
        for index in range(snapshot_index + 1, acked + 1):
            assert stored[index].data == payload(index), f"entry {index} differs"
        if state.snapshot is not None:
            assert state.snapshot.data == image(snapshot_index)
        files = [p for p in tmp_path.iterdir() if p.name.startswith("raft.db.snap-")]
        assert len(files) == (state.snapshot is not None)
