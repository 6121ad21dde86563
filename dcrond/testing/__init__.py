"""Fakes and the deterministic Raft simulator, shared by the tests.

- ``_kv``: a key-value state machine with client sessions (retries apply once).
- ``_simnet`` / ``_simdisk``: the simulated network and disk.
- ``_checkers``: Raft's safety invariants, checked incrementally after every step.
- ``_linearizability``: a Wing & Gong / Lowe checker for key-value histories.
- ``_sim``: the simulator that drives whole clusters of ``RaftCore`` from one seed.

See the "Simulator" section of docs/raft.md.
"""

from __future__ import annotations

from dcrond.testing._checkers import CheckerStats, InvariantViolation, SafetyChecker
from dcrond.testing._kv import STALE, Command, KVStateMachine, Op, Result
from dcrond.testing._linearizability import (
    LinearizabilityResult,
    Operation,
    SearchTooLarge,
    check_history,
)
from dcrond.testing._sim import (
    SimConfig,
    SimResult,
    Simulation,
    SimulationFailure,
    config_for_seed,
    simulate,
)
from dcrond.testing._simdisk import DiskContractError, SimDisk
from dcrond.testing._simnet import NetworkQuality, SimNetwork

__all__ = [
    "STALE",
    "CheckerStats",
    "Command",
    "DiskContractError",
    "InvariantViolation",
    "KVStateMachine",
    "LinearizabilityResult",
    "NetworkQuality",
    "Op",
    "Operation",
    "Result",
    "SafetyChecker",
    "SearchTooLarge",
    "SimConfig",
    "SimDisk",
    "SimNetwork",
    "SimResult",
    "Simulation",
    "SimulationFailure",
    "check_history",
    "config_for_seed",
    "simulate",
]
