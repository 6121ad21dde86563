"""The engine: the replicated job table turned into processes that run at their instants.

Theory of operation
-------------------
Everything the engine decides is a command in the Raft log, and everything
it does follows from commands applied to the job table -- so a restart, or
(with issue 5) a new leader, carries on from the table and never skips nor
repeats a run.

::

    job table ──watch──► Leader (the node leading the log)        _leader.py
                           SchedulerCore heap of next instants ──► RunScheduled  (lead_time
                           retries (retry_at) ──────────────────► RunScheduled    before the
                           dependents (A@T ended → B@T) ────────► RunScheduled    instant)
                           retention ───────────────────────────► PruneRuns + log deletes
    job table ──watch──► Worker (every node; attempts placed on it) _worker.py
                           timer to the instant, rules (pause, catch-up, after,
                           concurrency, slots) ──► runner.run ──► RunStarted
                           attempt ends ──► outbox + upload queue ──► RunFinished
                         LogUploader: spool ──► object storage, durable queue  _uploader.py

1. **Claim before start.** The leader proposes ``RunScheduled`` for
   ``job@instant`` ``lead_time`` (50 ms) before the instant -- earlier for a
   crowd due at one instant, up to 1 s -- so the log write is off the
   critical path. The store refuses a second claim of one
   id, and after a restart the scheduler counts from the newest claimed
   instant in the table: catch-up (none / latest / all, capped) applies only
   to instants missed while no scheduler ran.
2. **Start at the instant.** The worker on the placed host has everything
   ready (the job version's spec, its script from the sha256 cache) and
   sleeps to the instant on trio's clock mapped from the wall clock, wakes
   2 ms early and spins to it, then starts the process with no checkpoint
   in between. A first attempt never starts before its instant.
3. **Rules at the instant** (``_policy``): a claim killed or skipped
   meanwhile is dropped; a paused job's scheduled run is skipped; a claim
   found not started after a downtime obeys catch-up ``none``; a dependent
   run waits for its upstream runs of the same instant; concurrency
   ``forbid`` skips, ``replace`` stops the older run first; ``[runner]
   slots`` bounds how many attempts run here at once (first come, first
   served).
4. **Report the end durably.** When an attempt ends the worker keeps its
   report in an on-disk outbox and its log in the upload queue before it
   proposes ``RunFinished``; both are picked up again after a restart. The
   log is readable from the spool while the attempt runs and while its
   upload is pending, from object storage after.
5. **Never stuck.** On start the engine re-adopts attempts whose process
   still runs, reports those that ended while it was down with their real
   status, and marks ``lost`` any run the table says runs here that no
   process, state file or report backs. ``shutdown`` leaves running
   processes to be re-adopted (see docs/runs.md, "Restarts").

The two seams issue 5 widens -- where an attempt goes (``Context.place``)
and how a command reaches the leader (``Context.propose``) -- are in
``_context``. Errors: ``InvalidRequest``/``NotFound`` are the caller's;
``Unavailable`` means ask again later or elsewhere; storage problems are
retried, never raised into the scheduler.
"""

from __future__ import annotations

from dcrond.engine._engine import Engine, EngineStatistics
from dcrond.engine._lease import LeaseTimes
from dcrond.engine._uploader import LogUploader, UploaderStatistics

__all__ = ["Engine", "EngineStatistics", "LeaseTimes", "LogUploader", "UploaderStatistics"]
