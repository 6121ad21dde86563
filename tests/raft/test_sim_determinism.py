"""One seed, one run: the simulator replays a seed event for event, in any process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dcrond.testing import SimulationFailure, config_for_seed, simulate
from dcrond.testing._sim import Simulation

_SECONDS = 5.0


def _trace(seed: int) -> tuple[str | None, str]:
    r = simulate(config_for_seed(seed, _SECONDS, record_trace=True))
    return r.trace_hash, r.fingerprint


def test_same_seed_gives_the_same_trace_and_final_state() -> None:
    first = _trace(3)
    assert first[0] is not None
    assert _trace(3) == first


def test_different_seeds_give_different_runs() -> None:
    assert _trace(4)[0] != _trace(6)[0]


_CHILD = """
import sys
from dcrond.testing import config_for_seed, simulate
r = simulate(config_for_seed(int(sys.argv[1]), float(sys.argv[2]), record_trace=True))
print(r.trace_hash, r.fingerprint)
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
            timeout=120,
        )
        outputs.add(out.stdout.strip())
    here = " ".join(str(x) for x in _trace(5))
    assert outputs == {here}


def test_a_failure_names_the_seed_the_replay_command_and_the_last_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = Simulation(config_for_seed(1234, 3.0))
    real_drain = sim.drain
    calls = 0

    def sabotaged(node: object, **kw: bool) -> None:
        nonlocal calls
        calls += 1
        if calls == 500:
            raise RuntimeError("boom")
        real_drain(node, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sim, "drain", sabotaged)
    with pytest.raises(SimulationFailure) as info:
        sim.run()
    msg = str(info.value)
    assert "RuntimeError: boom" in msg
    assert "seed 1234 (3 nodes, 3 simulated s)" in msg
    assert "replay: pytest tests/raft/test_sim.py --sim-seeds=1234:1 -x --sim-seconds=3" in msg
    assert "last 40 events:" in msg
    assert len(msg.splitlines()) > 40
