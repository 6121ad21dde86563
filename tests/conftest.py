"""Project-wide pytest options.

``--sim-seeds=START:COUNT`` picks the seeds the Raft simulator runs (even
seeds simulate 3 nodes, odd seeds 5); ``--sim-seconds`` how long each run's
fault phase lasts in simulated time. A failing run prints the exact command
that replays it, e.g. ``pytest tests/raft/test_sim.py --sim-seeds=1234:1 -x``.

``--gossip-seeds=START:COUNT`` does the same for the gossip simulator's
randomized property runs (``tests/gossip/test_sim.py``).
"""

from __future__ import annotations

import pytest

#: the default: 300 runs (150 with 3 nodes, 150 with 5) of 60 simulated seconds each
DEFAULT_SIM_SEEDS = "0:300"
DEFAULT_SIM_SECONDS = 60.0
#: gossip property runs: 4-24 members, 30 simulated seconds of faults each
DEFAULT_GOSSIP_SEEDS = "0:60"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dcrond simulator")
    group.addoption(
        "--sim-seeds",
        default=DEFAULT_SIM_SEEDS,
        metavar="START:COUNT",
        help=f"Raft simulator seeds to run (default {DEFAULT_SIM_SEEDS}; even=3 nodes, odd=5)",
    )
    group.addoption(
        "--sim-seconds",
        type=float,
        default=DEFAULT_SIM_SECONDS,
        metavar="S",
        help=f"simulated seconds of faults per seed (default {DEFAULT_SIM_SECONDS:g})",
    )
    group.addoption(
        "--gossip-seeds",
        default=DEFAULT_GOSSIP_SEEDS,
        metavar="START:COUNT",
        help=f"gossip simulator seeds to run (default {DEFAULT_GOSSIP_SEEDS})",
    )
    _add_enginesim_options(parser)


def parse_sim_seeds(spec: str) -> range:
    """``"START:COUNT"`` (or just ``"SEED"``) to the seeds it names."""
    start, _, count = spec.partition(":")
    try:
        first, n = int(start), int(count or "1")
    except ValueError:
        raise pytest.UsageError(f"--sim-seeds wants START:COUNT, got {spec!r}") from None
    if first < 0 or n < 1:
        raise pytest.UsageError(f"--sim-seeds wants START>=0 and COUNT>=1, got {spec!r}")
    return range(first, first + n)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_seed" in metafunc.fixturenames:
        seeds = parse_sim_seeds(metafunc.config.getoption("--sim-seeds"))
        metafunc.parametrize("sim_seed", list(seeds), ids=[f"seed{s}" for s in seeds])
    if "gossip_seed" in metafunc.fixturenames:
        seeds = parse_sim_seeds(metafunc.config.getoption("--gossip-seeds"))
        metafunc.parametrize("gossip_seed", list(seeds), ids=[f"seed{s}" for s in seeds])


@pytest.fixture
def sim_seconds(request: pytest.FixtureRequest) -> float:
    """Simulated seconds of faults per seed (``--sim-seconds``)."""
    seconds: float = request.config.getoption("--sim-seconds")
    return seconds


# --- the engine simulator (tests/enginesim) -------------------------------------------------

#: the default: 8 seeds (4 with 3 hosts, 4 with 5) of 60 simulated seconds of faults each
DEFAULT_ENGINESIM_SEEDS = "0:8"
DEFAULT_ENGINESIM_SECONDS = 60.0


def _add_enginesim_options(parser: pytest.Parser) -> None:
    """``--enginesim-seeds=START:COUNT`` and ``--enginesim-seconds`` (see tests/enginesim)."""
    group = parser.getgroup("dcrond engine simulator")
    group.addoption(
        "--enginesim-seeds",
        default=None,
        metavar="START:COUNT",
        help=f"engine simulator seeds (default {DEFAULT_ENGINESIM_SEEDS}, or "
        "$DCROND_ENGINESIM_SEEDS; even=3 hosts, odd=5)",
    )
    group.addoption(
        "--enginesim-seconds",
        type=float,
        default=None,
        metavar="S",
        help=f"simulated seconds of faults per seed (default {DEFAULT_ENGINESIM_SECONDS:g}, "
        "or $DCROND_ENGINESIM_SECONDS)",
    )
