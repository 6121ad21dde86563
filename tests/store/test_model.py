"""Two replicas fed the same random log stay identical, and agree with a model of the jobs."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from dcrond.engine._table import iso_ms
from dcrond.raft import Entry
from dcrond.store import (
    Applied,
    CreateJob,
    DeleteJob,
    JobSpec,
    JobStore,
    PauseJob,
    Rejected,
    Result,
    ResumeJob,
    RunFinished,
    RunLost,
    RunScheduled,
    RunSkipped,
    RunStarted,
    UpdateJob,
    make_run_id,
)
from tests.store.conftest import T0

NAMES = ("a", "b", "c", "d")
SCHEDULES = ("@hourly", "*/5 * * * *", "@every 30s", "0 3 * * 1-5")
names = st.sampled_from(NAMES)


def summary_of(run: dict[str, Any], cmd: object) -> dict[str, Any]:
    """What ``run_summary`` must give after ``cmd``, from the run's full JSON."""
    attempt = getattr(cmd, "attempt", None) or run["attempt"]
    claimed = (
        run["attempts"][attempt - 1]["claimed_at"] if attempt <= len(run["attempts"]) else None
    )
    return {
        "id": run["id"],
        "job": run["job"],
        "job_version": run["job_version"],
        "reason": run["reason"],
        "state": run["state"],
        "host": run["host"],
        "attempt": run["attempt"],
        "scheduled_at_ms": iso_ms(run["scheduled_at"]),
        "retry_at_ms": None if run["retry_at"] is None else iso_ms(run["retry_at"]),
        "claimed_at_ms": None if claimed is None else iso_ms(claimed),
    }


@dataclass(frozen=True)
class ModelJob:
    schedule: str
    paused: bool
    version: int
    after: tuple[str, ...]
    timeout: int | None


class TwoReplicas(RuleBasedStateMachine):
    """Random valid and invalid commands, applied in one log order to two stores."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="dcrond-store-model-"))
        self.one = JobStore.open(self.dir / "one.db")
        self.two = JobStore.open(self.dir / "two.db")
        self.index = 0
        self.seq = 0
        self.clock = T0
        self.jobs: dict[str, ModelJob] = {}
        self.last_version: dict[str, int] = {}
        self.runs: list[str] = []
        self.last: tuple[bytes, Result] | None = None

    def teardown(self) -> None:
        self.one.close()
        self.two.close()
        shutil.rmtree(self.dir)

    @initialize()
    def two_jobs(self) -> None:
        self.create("a", "@hourly", [], None)
        self.create("b", "@every 30s", ["a"], 2)  # one retry (a job's retries = len(after))
        for name in ("a", "b"):
            run_id = make_run_id(name, T0)
            self.apply(
                RunScheduled(
                    run_id=run_id,
                    job=name,
                    job_version=1,
                    scheduled_at=T0,
                    host="h1",
                    **self.common(),
                ).encode()
            )
            self.runs.append(run_id)

    # --- helpers ---------------------------------------------------------------

    def common(self) -> dict[str, Any]:
        self.seq += 1
        self.clock += 1000
        return {"now": self.clock, "actor": "model", "session": "m", "seq": self.seq}

    def apply(self, data: bytes) -> Result:
        self.index += 1
        entry = Entry(term=1, index=self.index, data=data)
        first, second = self.one.apply(entry), self.two.apply(entry)
        assert first == second
        assert first is not None
        self.last = (data, first)
        return first

    def expect(self, data: bytes, code: str | None) -> Result:
        before = self.one.dump(data_only=True)
        result = self.apply(data)
        if code is None:
            assert isinstance(result, Applied), result
        else:
            assert isinstance(result, Rejected) and result.code == code, (code, result)
            assert self.one.dump(data_only=True) == before
        return result

    def reaches(self, start: str, target: str, skip: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            node = stack.pop()
            if node == target:
                return True
            if node in seen or node == skip or node not in self.jobs:
                continue
            seen.add(node)
            stack.extend(self.jobs[node].after)
        return False

    def bump(self, name: str, job: ModelJob) -> None:
        version = self.last_version[name] + 1
        self.last_version[name] = version
        self.jobs[name] = replace(job, version=version)

    # --- jobs ------------------------------------------------------------------

    @rule(
        name=names,
        schedule=st.sampled_from(SCHEDULES),
        after=st.lists(names, unique=True, max_size=2),
        timeout=st.none() | st.integers(1, 3),
    )
    def create(self, name: str, schedule: str, after: list[str], timeout: int | None) -> None:
        if name in after:
            return  # refused before proposing; covered in test_jobs
        spec = JobSpec(
            name=name,
            schedule=schedule,
            command="true",
            after=tuple(after),
            timeout=timeout,
            retries=len(after),
        )
        data = CreateJob(job=spec, **self.common()).encode()
        if name in self.jobs:
            self.expect(data, "already_exists")
        elif any(a not in self.jobs for a in after):
            self.expect(data, "invalid")
        else:
            self.expect(data, None)
            version = self.last_version.get(name, 0) + 1
            self.last_version[name] = version
            self.jobs[name] = ModelJob(schedule, False, version, tuple(sorted(after)), timeout)

    @rule(name=names, field=st.sampled_from(["schedule", "timeout"]), value=st.integers(-1, 3))
    def create_invalid(self, name: str, field: str, value: int) -> None:
        """A committed entry with a bad field (a buggy or hostile proposer)."""
        spec = JobSpec(name=name, schedule="@hourly", command="true")
        kind, wire = msgpack.unpackb(CreateJob(job=spec, **self.common()).encode())
        wire["job"][field] = "61 * * * *" if field == "schedule" else value - 4
        self.expect(msgpack.packb([kind, wire]), "invalid")

    @rule(name=names, timeout=st.none() | st.integers(1, 3))
    def update_timeout(self, name: str, timeout: int | None) -> None:
        data = UpdateJob(name=name, changes={"timeout": timeout}, **self.common()).encode()
        if name not in self.jobs:
            self.expect(data, "not_found")
            return
        self.expect(data, None)
        job = self.jobs[name]
        if job.timeout != timeout:
            self.bump(name, replace(job, timeout=timeout))

    @rule(name=names, after=st.lists(names, unique=True, max_size=2))
    def update_after(self, name: str, after: list[str]) -> None:
        if name in after:
            return
        data = UpdateJob(name=name, changes={"after": after}, **self.common()).encode()
        if name not in self.jobs:
            self.expect(data, "not_found")
        elif any(a not in self.jobs for a in after) or any(
            self.reaches(a, name, skip=name) for a in after
        ):
            self.expect(data, "invalid")
        else:
            self.expect(data, None)
            job = self.jobs[name]
            if job.after != tuple(sorted(after)):
                self.bump(name, replace(job, after=tuple(sorted(after))))

    @rule(name=names, pause=st.booleans())
    def pause_or_resume(self, name: str, pause: bool) -> None:
        cls = PauseJob if pause else ResumeJob
        data = cls(name=name, **self.common()).encode()
        if name not in self.jobs:
            self.expect(data, "not_found")
            return
        self.expect(data, None)
        job = self.jobs[name]
        if job.paused != pause:
            self.bump(name, replace(job, paused=pause))

    @rule(name=names)
    def delete(self, name: str) -> None:
        data = DeleteJob(name=name, **self.common()).encode()
        if name not in self.jobs:
            self.expect(data, "not_found")
        elif any(name in j.after for j in self.jobs.values()):
            self.expect(data, "conflict")
        else:
            self.expect(data, None)
            del self.jobs[name]
            self.last_version[name] += 1

    # --- runs (no model: the replicas must agree, whatever the outcome) ----------

    @precondition(lambda self: bool(self.jobs))
    @rule(data=st.data(), minute=st.integers(0, 3), stale=st.integers(0, 4))
    def schedule_run(self, data: st.DataObject, minute: int, stale: int) -> None:
        name = data.draw(st.sampled_from(sorted(self.jobs)))
        at = T0 + minute * 60_000
        version = max(1, self.jobs[name].version - (stale == 0))  # now and then an old one
        run_id = make_run_id(name, at)
        result = self.apply(
            RunScheduled(
                run_id=run_id,
                job=name,
                scheduled_at=at,
                host="h1",
                job_version=version,
                reason="trigger",
                **self.common(),
            ).encode()
        )
        if isinstance(result, Applied):
            self.runs.append(run_id)

    @precondition(lambda self: bool(self.runs))
    @rule(
        data=st.data(),
        events=st.lists(
            st.tuples(
                st.sampled_from(
                    ["start", "succeeded", "failed", "killed", "lost", "skip", "claim"]
                ),
                st.integers(1, 2),
            ),
            min_size=1,
            max_size=8,
        ),
    )
    def run_events(self, data: st.DataObject, events: list[tuple[str, int]]) -> None:
        run_id = data.draw(st.sampled_from(self.runs))
        for event, attempt in events:
            c = self.common()
            if event == "start":
                cmd: object = RunStarted(
                    run_id=run_id, attempt=attempt, host="h1", pid=9, started_at=self.clock, **c
                )
            elif event == "claim":
                name, _, _ = run_id.partition("@")
                cmd = RunScheduled(
                    run_id=run_id,
                    job=name,
                    job_version=1,
                    scheduled_at=T0 + 60_000 * int(run_id[-6:-4]),
                    host="h1",
                    attempt=2,
                    reason="retry",
                    **c,
                )
            elif event == "lost":
                cmd = RunLost(run_id=run_id, attempt=attempt, **c)
            elif event == "skip":
                cmd = RunSkipped(run_id=run_id, reason="policy", **c)
            else:
                cmd = RunFinished(
                    run_id=run_id,
                    attempt=attempt,
                    state=event,
                    exit_code=None if event == "killed" else int(event == "failed"),
                    signal=15 if event == "killed" else None,
                    finished_at=self.clock,
                    **c,
                )
            assert isinstance(cmd, RunStarted | RunLost | RunSkipped | RunFinished | RunScheduled)
            before = self.one.dump(data_only=True)
            result = self.apply(cmd.encode())
            if isinstance(result, Applied):  # the result is the run's summary, as the table says
                assert result.value == summary_of(self.one.get_run(run_id), cmd)
            else:  # a refused run command changes nothing (its executor checks before writing)
                assert self.one.dump(data_only=True) == before

    # --- the log's own faults -----------------------------------------------------

    @precondition(lambda self: self.last is not None)
    @rule()
    def retry_last_request(self) -> None:
        """The client did not hear back and proposed its request again."""
        assert self.last is not None
        data, result = self.last
        before = self.one.dump(data_only=True)
        assert self.apply(data) == result
        assert self.one.dump(data_only=True) == before

    @rule(data=st.binary(max_size=40))
    def garbage(self, data: bytes) -> None:
        before = self.one.dump(data_only=True)
        result = self.apply(data)
        assert isinstance(result, Rejected) and result.code in ("protocol", "invalid")
        assert self.one.dump(data_only=True) == before

    @rule()
    def restore_second_from_first(self) -> None:
        self.two.restore(self.one.snapshot(), self.one.applied_index)

    @rule()
    def reopen_second(self) -> None:
        self.two.close()
        self.two = JobStore.open(self.dir / "two.db")
        assert self.two.applied_index == self.index

    # --- what must always hold ----------------------------------------------------

    @invariant()
    def replicas_are_identical(self) -> None:
        assert self.one.dump() == self.two.dump()

    @invariant()
    def jobs_match_the_model(self) -> None:
        seen = {
            j["name"]: ModelJob(
                j["schedule"], j["paused"], j["version"], tuple(j["after"]), j["timeout"]
            )
            for j in self.one.list_jobs()
        }
        assert seen == self.jobs


TwoReplicas.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
test_two_replicas_stay_identical_and_match_the_model = TwoReplicas.TestCase
