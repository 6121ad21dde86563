"""Spare state files: starts rename an empty file into place instead of creating one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import trio

from dcrond.runner import LocalProcessRunner, Outcome, RunSpec
from tests.runner.conftest import wall


def _names(live: Path) -> tuple[list[str], list[str]]:
    """(spares, state files) in the live dir."""
    names = sorted(os.listdir(live))
    return [n for n in names if n.startswith("spare.")], [n for n in names if n.endswith(".state")]


async def test_a_runner_makes_its_spares_and_a_start_renames_one_into_place(
    work_dir: Path, daemon_env: dict[str, str]
) -> None:
    runner = LocalProcessRunner(work_dir, wall_clock=wall, daemon_env=daemon_env, spares=4)
    try:
        live = work_dir / "live"
        spares, states = _names(live)
        assert len(spares) == 4 and states == []
        inodes = {os.stat(live / n).st_ino for n in spares}
        started: list[int] = []

        async def look(handle: object) -> None:  # while the job runs: its state file
            _, states = _names(live)
            assert states == ["a@1.1.state"]
            started.append(os.stat(live / states[0]).st_ino)

        spec = RunSpec("a@1", command="sleep 0.2")
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(runner.run, spec)
            await look(handle)
        assert started[0] in inodes  # a spare became the state file: nothing was created
        spares, states = _names(live)  # and the ended attempt's file is a spare again, empty
        assert len(spares) == 4 and states == []
        assert all((live / n).stat().st_size == 0 for n in spares)
    finally:
        runner.close()


async def test_starts_beyond_the_spares_create_their_files_and_the_pool_stays_capped(
    work_dir: Path, daemon_env: dict[str, str]
) -> None:
    runner = LocalProcessRunner(work_dir, wall_clock=wall, daemon_env=daemon_env, spares=2)
    try:
        results = []

        async def one(i: int) -> None:
            results.append(await runner.run(RunSpec(f"j{i}@1", command="sleep 0.1")))

        async with trio.open_nursery() as nursery:
            for i in range(5):  # 5 at once, 2 spares: 3 create their state files
                nursery.start_soon(one, i)
        assert sorted(r.state for r in results) == [Outcome.SUCCEEDED] * 5
        spares, states = _names(work_dir / "live")
        assert len(spares) == 2 and states == []
    finally:
        runner.close()


async def test_a_restarted_runner_keeps_the_spares_and_never_recovers_them(
    work_dir: Path, daemon_env: dict[str, str]
) -> None:
    first = LocalProcessRunner(work_dir, wall_clock=wall, daemon_env=daemon_env, spares=3)
    first.close()
    live = work_dir / "live"
    spares, _ = _names(live)
    (live / spares[0]).write_text(json.dumps({"v": 2, "run_id": "x@1"}) + "\n")  # junk in one
    (live / "spare.junk").write_text("")  # a name no runner makes
    again = LocalProcessRunner(work_dir, wall_clock=wall, daemon_env=daemon_env, spares=2)
    try:
        assert again.recover() == []
        spares_now, states = _names(live)
        assert len(spares_now) == 2 and states == []
        assert all((live / n).stat().st_size == 0 for n in spares_now)  # emptied
        res = await again.run(RunSpec("b@1", command="true"))
        assert res.state is Outcome.SUCCEEDED
        assert len(_names(live)[0]) == 2
    finally:
        again.close()
