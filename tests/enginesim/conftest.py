"""Seeds for the engine simulator: ``--enginesim-seeds=START:COUNT`` or ``$DCROND_ENGINESIM_SEEDS``.

A test that takes ``enginesim_seed`` runs once per seed; a seed the test
module lists in ``KNOWN_FAILURES`` runs as ``xfail(strict=False)`` with the
recorded reason, so a fix shows up as XPASS and a new failure as a failure.
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import DEFAULT_ENGINESIM_SECONDS, DEFAULT_ENGINESIM_SEEDS, parse_sim_seeds


def _seeds(config: pytest.Config) -> range:
    spec = config.getoption("--enginesim-seeds") or os.environ.get(
        "DCROND_ENGINESIM_SEEDS", DEFAULT_ENGINESIM_SEEDS
    )
    return parse_sim_seeds(str(spec))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "enginesim_seed" not in metafunc.fixturenames:
        return
    known: dict[int, str] = getattr(metafunc.module, "KNOWN_FAILURES", {})
    params = [
        pytest.param(s, marks=pytest.mark.xfail(strict=False, reason=known[s])) if s in known else s
        for s in _seeds(metafunc.config)
    ]
    metafunc.parametrize(
        "enginesim_seed", params, ids=[f"seed{s}" for s in _seeds(metafunc.config)]
    )


@pytest.fixture
def enginesim_seconds(request: pytest.FixtureRequest) -> float:
    """Simulated seconds of workload and faults per seed."""
    value = request.config.getoption("--enginesim-seconds") or os.environ.get(
        "DCROND_ENGINESIM_SECONDS", DEFAULT_ENGINESIM_SECONDS
    )
    return float(value)
