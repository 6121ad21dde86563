"""A whole single-host node for the engine tests: real Raft log, job table, processes, storage.

``start_node`` opens a one-voter replica, a ``LocalProcessRunner`` and
``file://`` object storage under one temp dir and runs an ``Engine`` on
them; leaving the block shuts the engine down (runs in flight stay, as on
SIGTERM). Opening the same dir again is a daemon restart. ``Wall`` is the
wall clock every part reads, and a test can move it (a downtime). Every
process group a test leaves behind is killed at teardown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from dcrond.config import Config, JobsConfig, NodeConfig, RunnerConfig
from dcrond.engine import Engine
from dcrond.replica import Replica
from dcrond.runner import LocalProcessRunner
from dcrond.runner._statefile import read as read_state
from dcrond.store import CreateJob, JobSpec, UpdateJob, unwrap
from dcrond.store._blobs import Blobs
from dcrond.testing._replica import local_replica

HOST = "h1"


class Wall:
    """The wall clock of the node under test: real time plus an offset a test can move."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Node:
    """One running node: its parts and a few helpers."""

    tmp: Path
    wall: Wall
    replica: Replica
    runner: LocalProcessRunner
    blobs: Blobs
    engine: Engine
    config: Config

    async def create(self, name: str, **fields: Any) -> dict[str, Any]:
        """Create a job (defaults: every second, ``true``)."""
        fields.setdefault("schedule", "* * * * * *")
        if "script" not in fields:
            fields.setdefault("command", "true")
        cmd = CreateJob(
            **self.replica.stamp("test"),  # type: ignore[arg-type]
            job=JobSpec(name=name, **fields),
        )
        return unwrap(await self.replica.propose(cmd))

    async def update(self, name: str, **changes: Any) -> dict[str, Any]:
        """Change fields of a job."""
        cmd = UpdateJob(**self.replica.stamp("test"), name=name, changes=changes)  # type: ignore[arg-type]
        return unwrap(await self.replica.propose(cmd))

    def runs(self, job: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        """Runs, oldest first."""
        return list(reversed(self.replica.store.list_runs(job=job, state=state, limit=10_000)))

    def run(self, run_id: str) -> dict[str, Any]:
        """One run."""
        return self.replica.store.get_run(run_id)

    async def until(
        self, what: Callable[[], object], *, timeout: float = 10.0, every: float = 0.02
    ) -> Any:
        """Poll until ``what()`` is truthy; return it (fail after ``timeout`` s)."""
        with trio.fail_after(timeout):
            while True:
                value = what()
                if value:
                    return value
                await trio.sleep(every)

    async def until_final(self, run_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for a run to reach a final state."""
        final = {"succeeded", "failed", "timed_out", "killed", "skipped", "lost"}

        def ended() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run["state"] in final else None

        result: dict[str, Any] = await self.until(ended, timeout=timeout)
        return result

    async def log(self, run_id: str, attempt: int | None = None) -> bytes:
        """The whole log of an ended attempt."""
        out = b""
        while True:
            data, done = await self.engine.read_log(run_id, len(out), attempt=attempt)
            out += data
            if done:
                return out


def make_config(tmp: Path, jobs: dict[str, Any], runner: dict[str, Any]) -> Config:
    """The node's configuration: data in ``tmp``, a short kill grace, then the test's changes."""
    return Config(
        node=NodeConfig(name=HOST, data_dir=str(tmp)),
        runner=dataclasses.replace(RunnerConfig(slots=64, kill_grace_s=1.0), **runner),
        jobs=dataclasses.replace(JobsConfig(), **jobs),
    )


@contextlib.asynccontextmanager
async def start_node(
    tmp: Path,
    wall: Wall,
    *,
    storage: str | None = None,
    jobs: dict[str, Any] | None = None,
    runner: dict[str, Any] | None = None,
    **engine_options: Any,
) -> AsyncIterator[Node]:
    """Run a node in ``tmp`` until the block ends (then shut its engine down)."""
    config = make_config(tmp, jobs or {}, runner or {})
    url = storage or (tmp / "objects").as_uri()
    async with local_replica(tmp / "raft", wall_clock=wall) as replica:
        procs = LocalProcessRunner(
            tmp / "work", wall_clock=wall, daemon_env={"PATH": os.environ.get("PATH", "/bin")}
        )
        blobs = Blobs(url, cache_dir=tmp / "cache")
        engine_options.setdefault("upload_retry", (0.05, 0.2))
        engine = Engine(replica, procs, blobs, config, host=HOST, wall_clock=wall, **engine_options)
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            try:
                yield Node(tmp, wall, replica, procs, blobs, engine, config)
            finally:
                await engine.shutdown()
                procs.close()


def _kill_leftovers(work: Path) -> None:
    live = work / "live"
    if not live.is_dir():
        return
    for name in os.listdir(live):
        if not name.endswith(".state"):
            continue
        with contextlib.suppress(OSError, ValueError):
            st = read_state(str(live / name))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(st.pid, signal.SIGKILL)


@pytest.fixture
def node_dir(tmp_path: Path) -> Iterator[Path]:
    """The node's data dir; every job process left in it is killed afterwards."""
    yield tmp_path
    _kill_leftovers(tmp_path / "work")


@pytest.fixture
def wall() -> Wall:
    """The node's movable wall clock."""
    return Wall()
