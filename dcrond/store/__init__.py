"""The replicated job table: jobs, their versions, runs and attempts, applied from the Raft log.

- ``_commands``: the commands (``CreateJob`` ... ``PruneRuns``) and their log encoding.
- ``_jobspec``: ``JobSpec``, the validated fields of a job.
- ``_runstate``: the transition tables of runs and attempts.
- ``_store``: ``JobStore``, the state machine over SQLite, and its queries.
- ``_objects``: the JSON objects (docs/jobs.md describes them).

A proposer builds a command (validated on construction), calls
``store.precheck(cmd)``, proposes ``cmd.encode()`` to Raft, and passes what
comes back to ``unwrap`` to get the JSON object or the error to show.
"""

from __future__ import annotations

from dcrond.store._commands import (
    COMMANDS,
    JOB_COMMANDS,
    OUTCOMES,
    RUN_COMMANDS,
    RUN_REASONS,
    Command,
    CreateJob,
    DeleteJob,
    PauseJob,
    PruneRuns,
    ResumeJob,
    RunFinished,
    RunLost,
    RunPlaced,
    RunRefused,
    RunScheduled,
    RunSkipped,
    RunStarted,
    UpdateJob,
    decode,
)
from dcrond.store._instants import format_instant, make_run_id, run_host, run_job
from dcrond.store._jobspec import (
    CATCH_UP,
    CONCURRENCY,
    INTERPRETERS,
    SPEC_FIELDS,
    UPDATABLE_FIELDS,
    JobSpec,
    Script,
)
from dcrond.store._queries import JobSchedule
from dcrond.store._results import Applied, Rejected, Result, unwrap
from dcrond.store._runstate import (
    ATTEMPT_TRANSITIONS,
    FINAL_STATES,
    RUN_TRANSITIONS,
    Event,
    RunState,
)
from dcrond.store._store import JobStore, StoreStatistics

__all__ = [
    "ATTEMPT_TRANSITIONS",
    "CATCH_UP",
    "COMMANDS",
    "CONCURRENCY",
    "FINAL_STATES",
    "INTERPRETERS",
    "JOB_COMMANDS",
    "OUTCOMES",
    "RUN_COMMANDS",
    "RUN_REASONS",
    "RUN_TRANSITIONS",
    "SPEC_FIELDS",
    "UPDATABLE_FIELDS",
    "Applied",
    "Command",
    "CreateJob",
    "DeleteJob",
    "Event",
    "JobSchedule",
    "JobSpec",
    "JobStore",
    "PauseJob",
    "PruneRuns",
    "Rejected",
    "Result",
    "ResumeJob",
    "RunFinished",
    "RunLost",
    "RunPlaced",
    "RunRefused",
    "RunScheduled",
    "RunSkipped",
    "RunStarted",
    "RunState",
    "Script",
    "StoreStatistics",
    "UpdateJob",
    "decode",
    "format_instant",
    "make_run_id",
    "run_host",
    "run_job",
    "unwrap",
]
