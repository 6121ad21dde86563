"""The engine's rules for one claimed attempt, as pure functions (no clock, no I/O).

Each returns a verdict the driver carries out; the rules are the ones
docs/runs.md states:

* **Dependencies** (``after``): the run of B for instant T waits for the
  runs of B's upstream jobs for the *same instant* T (``A@T``), where they
  exist. It starts once all of them succeeded, and is skipped, naming the
  upstream run, as soon as one ended otherwise (failed, timed out, killed,
  skipped or lost). An upstream without a run at T does not hold B back.
* **Concurrency**: ``allow`` starts regardless; ``forbid`` skips the run
  while another run of the job runs; ``replace`` stops the others first.
* **Stale claims**: a run claimed before a downtime and found not started
  afterwards is an instant the daemon missed, so the job's catch-up policy
  decides: with ``none`` it is skipped, otherwise it starts late.
* **Retention**: ``[jobs] keep_runs`` and ``keep_days`` (0 keeps all).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, final

from dcrond.store import FINAL_STATES

Verdict = Literal["start", "wait", "skip", "replace"]

SUCCEEDED: Final = "succeeded"


@final
@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with an attempt now, and why (for the run's message)."""

    verdict: Verdict
    reason: str = ""
    runs: tuple[str, ...] = ()  #: the runs waited for or to be replaced


def upstream_gate(upstream: Mapping[str, str | None]) -> Decision:
    """The dependency rule; ``upstream`` maps each upstream run id at T to its state (or None)."""
    waiting: list[str] = []
    for run_id in sorted(upstream):
        state = upstream[run_id]
        if state is None:
            continue  # that upstream has no run at this instant
        if state not in FINAL_STATES:
            waiting.append(run_id)
        elif state != SUCCEEDED:
            return Decision("skip", f"upstream run {run_id} ended {state}", (run_id,))
    if waiting:
        return Decision("wait", "waiting for " + ", ".join(waiting), tuple(waiting))
    return Decision("start")


def concurrency(policy: str, run_id: str, others: list[str]) -> Decision:
    """The concurrency rule for ``run_id`` while the job's runs ``others`` are active."""
    others = sorted(o for o in others if o != run_id)
    if not others or policy == "allow":
        return Decision("start")
    if policy == "forbid":
        return Decision(
            "skip", "concurrency forbid: " + ", ".join(others) + " still running", tuple(others)
        )
    return Decision("replace", "concurrency replace: stopping " + ", ".join(others), tuple(others))


def stale_claim(
    *, catch_up: str, reason: str, attempt: int, scheduled_at: int, now: int, grace_ms: int
) -> str | None:
    """Why a claimed first attempt should not start this late (None: start it).

    Only scheduled runs are judged: a trigger, a catch-up run or a retry was
    asked for as it is.
    """
    if attempt != 1 or reason != "schedule" or catch_up != "none":
        return None
    late = now - scheduled_at
    if late <= grace_ms:
        return None
    return f"missed by {late / 1000:.1f} s (dcrond was not running) and catch_up is none"


def prune_limits(keep_runs: int, keep_days: int) -> tuple[int | None, int | None] | None:
    """(keep_count, max_age in seconds) for ``PruneRuns``, or None when nothing is pruned."""
    keep = keep_runs if keep_runs > 0 else None
    age = keep_days * 86400 if keep_days > 0 else None
    if keep is None and age is None:
        return None
    return keep, age
