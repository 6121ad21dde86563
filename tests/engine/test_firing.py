"""Runs fire on schedule: one run per instant, at the instant and never before (real processes)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import trio

from dcrond.engine._table import iso_ms
from dcrond.errors import NotFound
from dcrond.store import PauseJob, make_run_id
from tests.engine.conftest import Wall, start_node


async def test_a_job_every_second_runs_once_per_instant_never_before_it(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        # the job prints its own clock as its first act: when the process really began
        await node.create("tick", command="date +%s.%N")
        await trio.sleep(3.9)
        runs = [r for r in node.runs("tick") if r["state"] == "succeeded"]
        assert len(runs) >= 3
        instants = [iso_ms(r["scheduled_at"]) for r in runs]
        assert instants == sorted(set(instants))  # each instant once
        assert all(i % 1000 == 0 for i in instants)
        assert [b - a for a, b in itertools.pairwise(instants)] == [1000] * (
            len(instants) - 1
        )  # no instant skipped
        for run, instant in zip(runs, instants, strict=True):
            assert run["id"] == make_run_id("tick", instant)
            assert run["reason"] == "schedule"
            assert run["host"] == "h1"
            child_clock = float((await node.log(run["id"])).decode().strip())
            assert child_clock * 1000 >= instant  # never before its instant
            assert child_clock * 1000 - instant < 500  # and on time (generous: shared CI)
        stats = node.engine.statistics()
        assert stats.leading and stats.jobs == 1 and stats.claimed >= 3


async def test_trigger_runs_now_even_when_paused_and_upcoming_honours_the_pause(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        await node.create("nightly", schedule="0 3 * * *", timezone="Europe/Berlin")
        upcoming = node.engine.upcoming("nightly", 3)
        assert len(upcoming) == 3 and upcoming[0] > wall() * 1000
        assert all(
            b - a in (23 * 3600_000, 24 * 3600_000, 25 * 3600_000)
            for a, b in itertools.pairwise(upcoming)
        )
        await node.replica.propose(PauseJob(**node.replica.stamp("test"), name="nightly"))  # type: ignore[arg-type]
        assert node.engine.upcoming("nightly", 3) == []
        run = await node.engine.trigger("nightly", actor="alice")
        assert run["reason"] == "trigger" and run["created_by"] == "alice"
        done = await node.until_final(run["id"])
        assert done["state"] == "succeeded"
        assert [r["id"] for r in node.runs("nightly")] == [run["id"]]
        with pytest.raises(NotFound):
            await node.engine.trigger("nope", actor="alice")
        with pytest.raises(NotFound):
            node.engine.upcoming("nope", 1)
        with pytest.raises(NotFound):
            await node.engine.read_log("nope@2026-01-01T00:00:00Z", 0)


async def test_after_a_snapshot_restore_the_engine_starts_over_without_skipping_or_doubling(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        await node.create("tick")
        await node.until(lambda: len(node.runs("tick")) >= 2, timeout=5)
        table = node.replica.table
        table.restore(table.snapshot(), node.replica.store.applied_index)  # as Raft would
        await trio.sleep(2.2)
        instants = [iso_ms(r["scheduled_at"]) for r in node.runs("tick")]
        assert len(instants) >= 4
        assert [b - a for a, b in itertools.pairwise(instants)] == [1000] * (len(instants) - 1)
        assert node.engine.statistics().leading


async def test_edits_between_an_instant_leaving_the_heap_and_its_claim_skip_no_instant(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        await node.create("edited")
        await node.until(lambda: node.runs("edited"), timeout=5)
        for i in range(10):  # a new version every 0.3 s, often between pop and claim
            await node.update("edited", timeout=10 + i)
            await trio.sleep(0.3)
        runs = node.runs("edited")
        instants = [iso_ms(r["scheduled_at"]) for r in runs]
        assert [b - a for a, b in itertools.pairwise(instants)] == [1000] * (len(instants) - 1)
        assert len({r["job_version"] for r in runs}) >= 3  # each claimed for a current version
