"""The runner package's public surface is exactly what its __init__ names."""

from __future__ import annotations

import dcrond.runner


def test_public_names_are_exported_and_nothing_private_is() -> None:
    assert set(dcrond.runner.__all__) == {
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
    }
    for name in dcrond.runner.__all__:
        assert getattr(dcrond.runner, name) is not None


def test_outcomes_are_the_final_run_states() -> None:
    assert [o.value for o in dcrond.runner.Outcome] == [
        "succeeded",
        "failed",
        "timed_out",
        "killed",
        "lost",
    ]
