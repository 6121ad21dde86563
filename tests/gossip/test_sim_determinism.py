"""One seed, one run: the gossip simulator replays a seed event for event, in any process."""

from __future__ import annotations

import os
import subprocess
import sys

from dcrond.testing._gossipscenarios import property_run


def test_same_seed_gives_the_same_trace() -> None:
    first = property_run(3, seconds=10, record_trace=True)
    again = property_run(3, seconds=10, record_trace=True)
    assert first.trace_hash is not None and first == again


def test_different_seeds_give_different_runs() -> None:
    a = property_run(4, seconds=10, record_trace=True)
    b = property_run(6, seconds=10, record_trace=True)
    assert a.trace_hash != b.trace_hash


_CHILD = """
from dcrond.testing._gossipscenarios import property_run
print(property_run(5, seconds=10, record_trace=True).trace_hash)
"""


def test_replay_does_not_depend_on_the_process_hash_seed() -> None:
    """Set iteration order changes with PYTHONHASHSEED; the trace must not."""
    outputs = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run(
            [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(out.stdout.strip())
    assert len(outputs) == 1 and "None" not in outputs
