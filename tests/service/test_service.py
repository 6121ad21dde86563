"""The RPC handlers over a real one-voter log, real job table and a local object store.

Every bad input is refused with a clear error and changes nothing: the table
dump and the log's last index are the same after it as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dcrond.config import Config, JobsConfig
from dcrond.errors import AlreadyExists, InvalidRequest, NotFound
from dcrond.replica import Replica
from dcrond.service import Service
from dcrond.store._blobs import Blobs
from dcrond.testing._replica import local_replica


class _Engine:
    """Unit-test stand-in for the engine (the engine has its own tests; e2e covers both)."""

    def __init__(self) -> None:
        self.triggered: list[tuple[str, str]] = []

    async def trigger(self, name: str, *, actor: str) -> dict[str, Any]:
        self.triggered.append((name, actor))
        return {"id": f"{name}@now", "state": "scheduled"}

    async def kill(self, run_id: str, *, actor: str, forward: bool = True) -> dict[str, Any]:
        return {"id": run_id, "state": "killed"}

    async def read_log(
        self, run_id: str, offset: int, *, wait: float = 0.0, attempt: int | None = None
    ) -> tuple[bytes, bool]:
        return b"hello\n"[offset:], True

    async def read_log_anywhere(
        self, run_id: str, offset: int, *, wait: float = 0.0, attempt: int | None = None
    ) -> tuple[bytes, bool]:
        return await self.read_log(run_id, offset, wait=wait, attempt=attempt)

    def heartbeat(self, host: str) -> dict[str, Any]:
        return {"lease_s": 10.0}

    def upcoming(self, name: str, n: int) -> list[int]:
        return [60_000 * (i + 1) for i in range(n)]

    def annotate(self, run: dict[str, Any]) -> dict[str, Any]:
        return run


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    config = replace(Config(), jobs=JobsConfig(max_script_bytes=1000))
    blobs = Blobs((tmp_path / "objects").as_uri())
    async with local_replica(tmp_path / "node") as replica:
        yield Service(replica, _Engine(), blobs, config)


def _state(replica: Replica) -> tuple[str, int]:
    return replica.store.dump(), replica.node.statistics().last_index


async def test_create_get_update_pause_resume_history_delete(service: Service) -> None:
    job = await service.job_create(
        {"name": "backup", "spec": {"schedule": "0 3 * * *", "command": "echo hi"}, "actor": "ann"}
    )
    assert (job["name"], job["schedule"], job["timezone"], job["paused"], job["version"]) == (
        "backup",
        "0 3 * * *",
        "UTC",
        False,
        1,
    )
    assert (await service.job_get({"name": "backup"}))["command"] == "echo hi"
    updated = await service.job_update(
        {"name": "backup", "spec": {"timezone": "Europe/Berlin"}, "actor": "bob"}
    )
    assert (updated["timezone"], updated["version"]) == ("Europe/Berlin", 2)
    assert (await service.job_pause({"name": "backup"}))["paused"] is True
    assert (await service.job_resume({"name": "backup"}))["paused"] is False
    history = await service.job_history({"name": "backup"})
    assert [v["version"] for v in history][:2] == [1, 2]
    assert [j["name"] for j in await service.job_list({})] == ["backup"]
    assert await service.job_next({"name": "backup", "n": 2}) == [
        "1970-01-01T00:01:00Z",
        "1970-01-01T00:02:00Z",
    ]
    await service.job_delete({"name": "backup"})
    with pytest.raises(NotFound):
        await service.job_get({"name": "backup"})


async def test_a_script_is_stored_by_sha256_and_pinned_by_the_version(
    service: Service, tmp_path: Path
) -> None:
    body = b"#!/bin/sh\necho from a script\n"
    job = await service.job_create(
        {"name": "s", "spec": {"schedule": "@hourly", "script": body, "interpreter": "sh"}}
    )
    sha = hashlib.sha256(body).hexdigest()
    assert job["script"] == {"sha256": sha, "size": len(body)}
    assert await service.blobs.get_script(sha) == body


@pytest.mark.parametrize(
    ("method", "params", "error", "text"),
    [
        (
            "job_create",
            {"name": "j", "spec": {"schedule": "61 * * * *", "command": "x"}},
            InvalidRequest,
            "schedule",
        ),
        (
            "job_create",
            {
                "name": "j",
                "spec": {"schedule": "@hourly", "command": "x", "timezone": "Mars/Olympus"},
            },
            InvalidRequest,
            "Mars/Olympus",
        ),
        (
            "job_create",
            {"name": "j", "spec": {"schedule": "@hourly", "script": b"x", "interpreter": "cobol"}},
            InvalidRequest,
            "cobol",
        ),
        (
            "job_create",
            {"name": "j", "spec": {"schedule": "@hourly", "script": b"x" * 1001}},
            InvalidRequest,
            "max_script_bytes",
        ),
        (
            "job_create",
            {"name": "taken", "spec": {"schedule": "@hourly", "command": "x"}},
            AlreadyExists,
            "taken",
        ),
        (
            "job_create",
            {"name": "bad name!", "spec": {"schedule": "@hourly", "command": "x"}},
            InvalidRequest,
            "name",
        ),
        (
            "job_create",
            {"name": "j", "spec": {"schedule": "@hourly", "command": "x", "colour": "red"}},
            InvalidRequest,
            "colour",
        ),
        ("job_create", {"name": "j", "spec": "not a map"}, InvalidRequest, "spec"),
        ("job_create", {"name": "j", "spec": {}, "extra": 1}, InvalidRequest, "extra"),
        (
            "job_update",
            {"name": "taken", "spec": {"schedule": "every day"}},
            InvalidRequest,
            "schedule",
        ),
        ("job_update", {"name": "ghost", "spec": {"command": "y"}}, NotFound, "ghost"),
        ("job_update", {"name": "taken", "spec": {}}, InvalidRequest, "nothing to change"),
        ("job_delete", {"name": "ghost"}, NotFound, "ghost"),
        ("job_pause", {"name": 42}, InvalidRequest, "name"),
        ("run_list", {"limit": -1}, InvalidRequest, "limit"),
        ("run_get", {"id": "ghost@2026-01-01T00:00:00Z"}, NotFound, "ghost"),
    ],
)
async def test_bad_input_is_refused_clearly_and_changes_nothing(  # noqa: PLR0917
    service: Service,
    tmp_path: Path,
    method: str,
    params: dict[str, Any],
    error: type[Exception],
    text: str,
) -> None:
    await service.job_create({"name": "taken", "spec": {"schedule": "@daily", "command": "x"}})
    before = _state(service.replica)
    with pytest.raises(error, match=text):
        await getattr(service, method)(params)
    assert _state(service.replica) == before
    assert not (tmp_path / "objects" / "scripts").exists()  # no script stored for a refused job


async def test_status_and_nodes_describe_this_one_voter_cluster(service: Service) -> None:
    status = await service.cluster_status({})
    assert (status["role"], status["leader"], status["voters"]) == ("leader", "n1", ["n1"])
    nodes = await service.node_list({})
    assert [(n["name"], n["state"], n["raft_role"]) for n in nodes] == [("n1", "alive", "leader")]
