"""Runs one attempt of a job as a real process group, with its output spooled.

- ``RunSpec``: what to run (command line or script + interpreter), with its
  env, working dir, user, timeout, kill grace and output cap.
- ``ProcessRunner``: the seam; ``LocalProcessRunner`` is the real one (trio,
  process groups, one small spawner process that starts and reaps every
  job, restart recovery),
  ``dcrond.testing.FakeProcessRunner`` the deterministic fake.
- ``RunHandle`` / ``RunResult`` / ``Recovered`` / ``RunnerStatistics``: what
  comes back. ``Outcome`` holds the final states.

See docs/runs.md for the states and what happens to processes.
"""

from __future__ import annotations

from dcrond.runner._output import Follower, trailer
from dcrond.runner._protocol import ProcessRunner
from dcrond.runner._runner import LocalProcessRunner
from dcrond.runner._spec import (
    DEFAULT_KILL_GRACE,
    DEFAULT_OUTPUT_CAP,
    INTERPRETERS,
    Outcome,
    Recovered,
    RunHandle,
    RunnerStatistics,
    RunResult,
    RunSpec,
)

__all__ = [
    "DEFAULT_KILL_GRACE",
    "DEFAULT_OUTPUT_CAP",
    "INTERPRETERS",
    "Follower",
    "LocalProcessRunner",
    "Outcome",
    "ProcessRunner",
    "Recovered",
    "RunHandle",
    "RunResult",
    "RunSpec",
    "RunnerStatistics",
    "trailer",
]
