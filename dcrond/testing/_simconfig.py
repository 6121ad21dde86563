"""What one simulated run is: its parameters, its result, its event kinds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, final

from dcrond.raft._types import Config
from dcrond.testing._checkers import CheckerStats
from dcrond.testing._linearizability import LinearizabilityResult

if TYPE_CHECKING:
    from dcrond.testing._sim import Simulation

# event kinds (the third field of a queued event)
TICK = 0
DELIVER = 1
CLIENT_INVOKE = 2
CLIENT_REQUEST = 3
CLIENT_RESPONSE = 4
CLIENT_TIMEOUT = 5
NEMESIS = 6
RESTART = 7
RESUME = 8
DECOMMISSION = 9
FAULTS_END = 10
PROBE = 11
CALL = 12


class SimulationFailure(AssertionError):
    """The simulation found a broken invariant or a liveness failure; the message replays it."""


@final
@dataclass(frozen=True, slots=True)
class SimConfig:
    """Parameters of one simulated run (everything else is drawn from ``seed``)."""

    seed: int
    nodes: int = 3
    seconds: float = 60.0
    tick_us: int = 10_000
    clients: int = 3
    keys: int = 3
    faults: bool = True
    liveness_seconds: float = 20.0
    #: start joining nodes with an empty membership, as a real new host (it learns the
    #: membership from the log); False gives them the cluster's bootstrap membership
    join_empty: bool = True
    #: fixed Raft tunables / compaction interval instead of ones drawn from the seed
    raft: Config | None = None
    compact_every: int | None = None
    #: scripted actions: (simulated seconds, function of the Simulation), for regressions
    script: tuple[tuple[float, Callable[[Simulation], object]], ...] = ()
    trace_events: int = 40
    record_trace: bool = False
    #: how to replay this run; ``{seed}`` and ``{seconds}`` are filled in
    replay: str = "pytest tests/raft/test_sim.py --sim-seeds={seed}:1 -x"


@final
@dataclass(frozen=True, slots=True)
class SimResult:
    """What a run did (for assertions, reports and the determinism test)."""

    seed: int
    nodes: int
    events: int
    sim_ms: float
    fingerprint: str  #: digest of the final state: equal runs, equal fingerprints
    trace_hash: str | None  #: digest of every event, when ``record_trace``
    checker: CheckerStats
    linearizability: LinearizabilityResult
    ops_ok: int
    ops_unknown: int
    client_attempts: int
    crashes: int
    faults: dict[str, int] = field(default_factory=dict)
    max_term: int = 0
    commit: int = 0
    liveness_ms: float = 0.0  #: from faults ending to the probe committing


def config_for_seed(seed: int, seconds: float = 60.0, **kw: Any) -> SimConfig:
    """The standard run for a seed: even seeds get 3 nodes, odd seeds 5."""
    return SimConfig(seed=seed, nodes=3 if seed % 2 == 0 else 5, seconds=seconds, **kw)
