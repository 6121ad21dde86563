"""One seed, one run: the engine simulator replays a seed event for event, in any process.

Trio's scheduler, the network, the nemesis, the workload and every clock are
driven by the seed; the trace digest covers every applied command on every
host, every process start and end, every fault and every user write.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dcrond.testing._enginesim import (
    EngineSimConfig,
    EngineSimFailure,
    assert_engines,
    config_for_seed,
    simulate_engines,
)

_SECONDS = 15.0


def _digest(seed: int) -> str:
    return simulate_engines(config_for_seed(seed, _SECONDS)).trace_hash


def test_same_seed_gives_the_same_trace() -> None:
    first = simulate_engines(config_for_seed(3, _SECONDS))
    second = simulate_engines(config_for_seed(3, _SECONDS))
    assert first.events > 1000
    assert first.trace_hash == second.trace_hash
    assert first.observed.table_digests == second.observed.table_digests


def test_different_seeds_give_different_runs() -> None:
    assert _digest(4) != _digest(6)


_CHILD = """
import sys
from dcrond.testing._enginesim import config_for_seed, simulate_engines
print(simulate_engines(config_for_seed(int(sys.argv[1]), float(sys.argv[2]))).trace_hash)
"""


def test_replay_does_not_depend_on_the_process_hash_seed() -> None:
    """Set iteration order changes with PYTHONHASHSEED; the trace must not."""
    outputs = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, "5", str(_SECONDS)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        outputs.add(out.stdout.strip().splitlines()[-1])
    assert outputs == {_digest(5)}


def test_a_failure_names_the_seed_the_replay_command_and_the_last_events() -> None:
    result = simulate_engines(EngineSimConfig(seed=7, hosts=3, window=10.0, faults=False))
    result.violations["c_forbid"] = ["forbid0 (forbid): an injected overlap"]
    with pytest.raises(EngineSimFailure) as caught:
        assert_engines(result)
    msg = str(caught.value)
    assert "seed 7" in msg
    assert "--enginesim-seeds=7:1" in msg
    assert "--enginesim-seconds=10" in msg
    assert "(c_forbid) 1 violation(s)" in msg
    assert "an injected overlap" in msg
    assert "last 60 events" in msg
