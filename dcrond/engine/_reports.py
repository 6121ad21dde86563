"""Reporting attempts to the log: started, ended (through a durable outbox), skipped, lost.

An attempt's end is written to the *outbox* (a ``Journal`` in
``<state>/reports``) and its log queued for upload before ``RunFinished`` is
proposed; the record goes once the report is committed (or refused because
the attempt was already recorded) *and this host's own copy of the table
shows the attempt ended*. After a restart ``Worker.recover`` proposes every
record left in the outbox again, so no end is lost to a shutdown in the
middle of a proposal -- and an attempt whose end the cluster committed
while this host's copy still lagged (a follower that crashed just after
the leader answered) is not taken for a claim still to start: the record
says it ran. (The engine simulator found this: an attempt started twice.)
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, final
from urllib.parse import quote

import trio

from dcrond.engine import _table
from dcrond.engine._context import Context
from dcrond.engine._journal import Journal
from dcrond.engine._table import Claim
from dcrond.runner import LocalProcessRunner, Outcome, RunHandle, RunResult
from dcrond.store import (
    Applied,
    Rejected,
    RunFinished,
    RunLost,
    RunSkipped,
    RunStarted,
    run_job,
)
from dcrond.store._blobs import log_key

log = logging.getLogger("dcrond.engine")

#: the longest a report waits for the attempts due at the same moment to start (s)
SETTLE_PATIENCE: Final = 1.0


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


@final
class Reporter:
    """Proposes what happened to this host's attempts (see the module doc)."""

    def __init__(
        self,
        ctx: Context,
        state_dir: Path,
        *,
        settle: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._ctx = ctx
        self._settle = settle
        self.outbox = Journal(state_dir / "reports")
        #: (run id, attempt) -> outbox record committed, not yet in this host's table
        self._unseen: dict[tuple[str, int], int] = {}
        self._notes = state_dir / "notes"
        self._notes.mkdir(parents=True, exist_ok=True)

    @property
    def unreported(self) -> int:
        """Ends written to the outbox and not committed yet."""
        return len(self.outbox)

    async def _after_starts(self) -> None:
        """Let attempts due now start before reporting (a crowd at one instant)."""
        if self._settle is not None:
            await self._settle(SETTLE_PATIENCE)

    async def started(self, run_id: str, attempt: int, handle: RunHandle, done: trio.Event) -> None:
        ctx = self._ctx
        try:
            await self._after_starts()
            cmd = RunStarted(
                **ctx.replica.stamp(f"runner@{ctx.host}"),  # type: ignore[arg-type]
                run_id=run_id,
                attempt=attempt,
                host=ctx.host,
                pid=handle.pid,
                started_at=_ms(handle.started_at),
            )
            result = await ctx.propose(cmd, patience=30.0)
            if isinstance(result, Rejected):
                log.info(
                    "run_started_refused run=%s attempt=%d: %s", run_id, attempt, result.message
                )
        finally:
            done.set()

    async def end(
        self,
        job: str,
        result: RunResult,
        started: trio.Event | None,
        *,
        began: bool = True,
    ) -> None:
        """Keep the report in the outbox, queue the log, then commit the report.

        ``began`` False: the attempt's start time is unknown (or it never
        started), so the report carries none.
        """
        spool = result.spool_path
        has_log = _has_output(spool)  # an attempt that printed nothing stores no log
        key = log_key(job, result.run_id, result.attempt) if has_log else None
        record: dict[str, Any] = {
            "run_id": result.run_id,
            "attempt": result.attempt,
            "state": str(result.state),
            "exit_code": result.exit_code,
            "signal": result.signal,
            "started_at": _ms(result.started_at) if began else None,
            "finished_at": max(_ms(result.finished_at), _ms(result.started_at)),
            "log_path": key,
            "truncated": result.truncated,
            "spool": str(spool) if has_log else None,
        }
        seq = self.outbox.add(record)
        if key is not None:
            self._ctx.uploader.put(key, spool)
        else:
            _remove(spool)
        if started is not None:
            await started.wait()  # RunStarted goes first in the log
        else:
            await self._after_starts()
        await self.send(seq, record)

    async def send(self, seq: int, record: dict[str, Any]) -> None:
        ctx = self._ctx
        cmd = RunFinished(
            **ctx.replica.stamp(f"runner@{ctx.host}"),  # type: ignore[arg-type]
            run_id=record["run_id"],
            attempt=record["attempt"],
            state=record["state"],
            exit_code=record["exit_code"],
            signal=record["signal"],
            started_at=record["started_at"],
            finished_at=record["finished_at"],
            log_path=record["log_path"],
            truncated=record["truncated"],
        )
        result = await ctx.propose(cmd)
        if isinstance(result, Applied):
            ctx.counters.finished += 1
            if record["state"] == "lost":
                ctx.counters.lost += 1
            log.info(
                "run_finished run=%s attempt=%d state=%s exit=%s signal=%s",
                record["run_id"],
                record["attempt"],
                record["state"],
                record["exit_code"],
                record["signal"],
            )
        elif isinstance(result, Rejected):
            # already recorded (a report sent again after a restart), or the run moved on
            log.info("run_finished_refused run=%s: %s", record["run_id"], result.message)
        if result is None:
            self.outbox.remove(seq)  # abandoned (Context.propose gave up): as before
        elif self._ended_here(record["run_id"], record["attempt"]):
            self.outbox.remove(seq)
        else:  # the leader has it; keep the record until this host's copy shows it
            self._unseen[(record["run_id"], record["attempt"])] = seq

    def seen(self, run_id: str, attempt: int | None) -> None:
        """This host applied the end of an attempt (``None``: of every attempt of the run)."""
        if attempt is not None:
            keys = [(run_id, attempt)] if (run_id, attempt) in self._unseen else []
        else:
            keys = [k for k in self._unseen if k[0] == run_id]
        for key in keys:
            self.outbox.remove(self._unseen.pop(key))

    def _ended_here(self, run_id: str, attempt: int) -> bool:
        """This host's table has the attempt ended (or has moved past it, or dropped the run)."""
        current = _table.current_attempt(self._ctx.store, run_id)
        return (
            current is None
            or current[1] > attempt
            or (current[1] == attempt and current[2] not in ("scheduled", "running"))
        )

    async def fail_unstarted(self, claim: Claim, message: str) -> None:
        """End an attempt that could not be started as failed, with the reason as its log."""
        now = self._ctx.clock.now()
        note = self._notes / f"{quote(claim.run_id, safe='@+-_.~')}.{claim.attempt}.log"
        note.write_bytes(f"[dcrond: the attempt could not start: {message}]\n".encode())
        log.warning("run_start_failed run=%s attempt=%d: %s", claim.run_id, claim.attempt, message)
        ended = _without_process(claim.run_id, claim.attempt, Outcome.FAILED, now, note)
        await self.end(claim.job, ended, None, began=False)

    async def skip(self, claim: Claim, reason: str) -> None:
        ctx = self._ctx
        cmd = RunSkipped(
            **ctx.replica.stamp(f"runner@{ctx.host}"),  # type: ignore[arg-type]
            run_id=claim.run_id,
            reason=reason,
        )
        result = await ctx.propose(cmd, patience=30.0)
        if isinstance(result, Applied):
            ctx.counters.skipped += 1
            log.info("run_skipped run=%s reason=%r", claim.run_id, reason)

    async def lost(self, run_id: str, attempt: int) -> None:
        """A run the table says runs here, that no process or report backs: lost."""
        ctx = self._ctx
        reason = "dcrond restarted and found no process or exit status for this attempt"
        runner = ctx.runner
        spool = (
            runner.spool_path(run_id, attempt) if isinstance(runner, LocalProcessRunner) else None
        )
        if spool is not None and spool.exists():
            now = ctx.clock.now()
            with spool.open("ab") as f:
                f.write(f"\n[dcrond: {reason}]\n".encode())
            ended = _without_process(run_id, attempt, Outcome.LOST, now, spool)
            await self.end(run_job(run_id), ended, None, began=False)
            return
        cmd = RunLost(
            **ctx.replica.stamp(f"runner@{ctx.host}"),  # type: ignore[arg-type]
            run_id=run_id,
            attempt=attempt,
            reason=reason,
        )
        result = await ctx.propose(cmd)
        if isinstance(result, Applied):
            ctx.counters.lost += 1
            log.warning("run_lost run=%s attempt=%d", run_id, attempt)


def _without_process(
    run_id: str, attempt: int, state: Outcome, now: float, spool: Path
) -> RunResult:
    """The result of an attempt that ended with no process of ours to tell (``spool``: a note)."""
    return RunResult(
        run_id=run_id,
        attempt=attempt,
        state=state,
        exit_code=None,
        signal=None,
        started_at=now,
        finished_at=now,
        output_bytes=0,
        discarded_bytes=0,
        truncated=False,
        spool_path=spool,
    )


def _has_output(path: Path) -> bool:
    """The spool exists and is not empty (a local stat)."""
    try:
        return os.stat(path).st_size > 0
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
