"""Fixtures for the job-table tests: a real SQLite file per test, and a proposer stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dcrond.raft import Entry
from dcrond.store import (
    Command,
    CreateJob,
    JobSpec,
    JobStore,
    Result,
    RunScheduled,
    make_run_id,
    unwrap,
)

#: 2026-01-01T00:00:00Z in milliseconds
T0 = 1_767_225_600_000


class Proposer:
    """Numbers log entries and client requests as a one-voter cluster would."""

    def __init__(self, store: JobStore, session: str = "s1", term: int = 1) -> None:
        self.store = store
        self.session = session
        self.term = term
        self.seq = 0
        self.clock = T0

    def common(self, **over: Any) -> dict[str, Any]:
        """The fields every command carries: the next request of this session, a second later."""
        self.seq += 1
        self.clock += 1000
        fields: dict[str, Any] = {
            "now": self.clock,
            "actor": "alice",
            "session": self.session,
            "seq": self.seq,
        }
        fields.update(over)
        return fields

    def entry(self, data: bytes) -> Entry:
        return Entry(term=self.term, index=self.store.applied_index + 1, data=data)

    def apply(self, cmd: Command) -> Result:
        result = self.store.apply(self.entry(cmd.encode()))
        assert result is not None
        return result

    def ok(self, cmd: Command) -> dict[str, Any]:
        """Apply and return the JSON object (raising the user's error if refused)."""
        return unwrap(self.apply(cmd))

    def run(self, cmd: Command) -> dict[str, Any]:
        """Apply a run command (raising the user's error if refused); the run's JSON after it.

        (A run command's own result is the run's summary, ``run_summary``.)
        """
        summary = self.ok(cmd)
        run: dict[str, Any] = self.store.get_run(summary["id"])
        return run

    def create(self, name: str, **fields: Any) -> dict[str, Any]:
        fields.setdefault("schedule", "@hourly")
        if "script" not in fields:
            fields.setdefault("command", f"echo {name}")
        return self.ok(CreateJob(job=JobSpec(name=name, **fields), **self.common()))

    def schedule_run(
        self, job: str, at: int = T0, host: str | None = "h1", reason: str = "schedule"
    ) -> str:
        found = self.store.get_job(job)
        version = found["version"]
        run_id = make_run_id(job, at, host if found["on"] != "any" else None)  # (per host)
        self.ok(
            RunScheduled(
                run_id=run_id,
                job=job,
                job_version=version,
                scheduled_at=at,
                host=host,
                reason=reason,
                **self.common(),
            )
        )
        return run_id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    with JobStore.open(tmp_path / "jobs.db") as s:
        yield s


@pytest.fixture
def p(store: JobStore) -> Proposer:
    return Proposer(store)
