"""The ``ProcessRunner`` seam: what the daemon needs from whatever runs attempts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import trio

from dcrond.runner._spec import Recovered, RunHandle, RunnerStatistics, RunResult, RunSpec


class ProcessRunner(Protocol):
    """Runs attempts; ``LocalProcessRunner`` does it for real, ``FakeProcessRunner`` in tests.

    ``run`` reports the started attempt through ``task_status`` and returns
    its result when it ends; cancelling it detaches (the attempt keeps
    running, for ``recover`` to find after a restart). ``kill`` requests a
    stop (SIGTERM to the group, SIGKILL after the grace) and returns whether
    the run had a live attempt. ``follow`` iterates over an attempt's output
    from a byte offset until it ends. ``recover`` runs once at start-up;
    re-adopted attempts are then watched with ``supervise``.
    """

    async def run(
        self,
        spec: RunSpec,
        *,
        task_status: trio.TaskStatus[RunHandle] = trio.TASK_STATUS_IGNORED,
    ) -> RunResult:
        """Run one attempt to its end."""
        ...

    async def supervise(self, handle: RunHandle) -> RunResult:
        """Watch a re-adopted attempt to its end."""
        ...

    def kill(self, run_id: str) -> bool:
        """Stop the live attempts of a run."""
        ...

    def follow(self, run_id: str, attempt: int, offset: int = 0) -> AsyncIterator[bytes]:
        """Iterate over an attempt's output, live until it ends."""
        ...

    def recover(self) -> list[Recovered]:
        """Find the attempts a previous daemon left behind."""
        ...

    def statistics(self) -> RunnerStatistics:
        """Counters for ``/metrics``."""
        ...
