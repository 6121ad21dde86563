"""A process killed in the middle of applying leaves the table at exactly its applied index."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dcrond.store import JobStore

# Applies "create job-<index>" entries as fast as it can, forever.
CHILD = """
import sys
from dcrond.raft import Entry
from dcrond.store import CreateJob, JobSpec, JobStore
store = JobStore.open(sys.argv[1])
print("ready", flush=True)
while True:
    i = store.applied_index + 1
    cmd = CreateJob(job=JobSpec(name=f"job-{i}", schedule="@hourly", command="true"),
                    now=1_767_225_600_000 + i, actor="t", session="s", seq=i)
    store.apply(Entry(term=1, index=i, data=cmd.encode()))
"""


def test_kill_9_while_applying_neither_skips_nor_repeats_an_entry(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parents[2],
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n"
            time.sleep(0.3)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            assert child.stdout is not None
            child.stdout.close()
        with JobStore.open(path) as store:
            applied = store.applied_index
            names = {j.name for j in store.list_schedules()}
            assert applied > 0
            assert names == {f"job-{i}" for i in range(1, applied + 1)}
