"""What happens to a run: logs live and after, kill, timeout, retries, concurrency, dependencies."""

from __future__ import annotations

import itertools
import os
import pwd
from pathlib import Path

import trio

from dcrond.engine._table import iso_ms
from dcrond.store import PauseJob
from tests.engine.conftest import Wall, start_node


async def test_a_log_is_readable_live_while_running_and_from_storage_after(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        await node.create("talk", schedule="@yearly", command="echo one; sleep 1; printf 'two\\n'")
        run = await node.engine.trigger("talk", actor="alice")
        data, done = await node.engine.read_log(run["id"], 0, wait=5)
        assert (data, done) == (b"one\n", False)  # live, from the spool, before the job ended
        assert node.run(run["id"])["state"] == "running"
        data, done = await node.engine.read_log(run["id"], 4, wait=0)
        assert (data, done) == (b"", False)  # nothing new yet, and no waiting asked
        rest = b""
        while not done:
            data, done = await node.engine.read_log(run["id"], 4 + len(rest), wait=5)
            rest += data
        assert rest == b"two\n"
        ended = await node.until_final(run["id"])
        assert ended["state"] == "succeeded" and ended["exit_code"] == 0
        key = ended["attempts"][0]["log_path"]
        assert key == f"logs/talk/{run['id']}/1.log"
        await node.until(lambda: (node_dir / "objects" / key).exists())
        assert (node_dir / "objects" / key).read_bytes() == b"one\ntwo\n"
        assert await node.log(run["id"]) == b"one\ntwo\n"  # from storage now
        assert await node.engine.read_log(run["id"], 2) == (b"e\ntwo\n", True)
        await node.until(lambda: not node.runner.spool_path(run["id"], 1).exists())


async def test_kill_stops_the_whole_run_and_answers_once_it_ended(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        await node.create("long", schedule="@yearly", command="sleep 30 & wait", retries=3)
        run = await node.engine.trigger("long", actor="alice")
        await node.until(lambda: node.run(run["id"])["state"] == "running")
        with trio.fail_after(5):
            killed = await node.engine.kill(run["id"], actor="bob")
        assert killed["state"] == "killed"  # and never retried
        assert killed["attempt"] == 1
        assert await node.engine.kill(run["id"], actor="bob") == killed  # already over: as is
        assert b"[dcrond:" not in await node.log(run["id"])


async def test_a_timeout_ends_the_run_timed_out_and_a_silent_run_stores_no_log(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        await node.create("slow", schedule="@yearly", command="sleep 30", timeout=0.5)
        run = await node.engine.trigger("slow", actor="alice")
        ended = await node.until_final(run["id"], timeout=5)
        assert ended["state"] == "timed_out"
        started, finished = iso_ms(ended["started_at"]), iso_ms(ended["finished_at"])
        assert 400 <= finished - started < 3000
        assert ended["attempts"][0]["log_path"] is None  # it printed nothing: no log stored
        assert await node.engine.read_log(run["id"], 0) == (b"", True)


async def test_a_failing_run_is_retried_with_backoff_until_its_retries_run_out(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        await node.create(
            "flaky", schedule="@yearly", command="exit 3", retries=2, backoff=0.3,
            backoff_multiplier=2,
        )  # fmt: skip
        run = await node.engine.trigger("flaky", actor="alice")
        ended = await node.until_final(run["id"], timeout=8)
        assert ended["state"] == "failed" and ended["exit_code"] == 3
        attempts = ended["attempts"]
        assert [a["state"] for a in attempts] == ["failed", "failed", "failed"]
        gaps = [
            iso_ms(b["started_at"]) - iso_ms(a["finished_at"])
            for a, b in itertools.pairwise(attempts)
        ]
        assert gaps[0] >= 300 and gaps[1] >= 600  # backoff, then backoff x multiplier
        # a run that succeeds on its second attempt ends succeeded
        marker = node_dir / "second-time"
        await node.create(
            "heals", schedule="@yearly", retries=3, backoff=0,
            command=f"test -e {marker} || {{ touch {marker}; exit 1; }}",
        )  # fmt: skip
        run = await node.engine.trigger("heals", actor="alice")
        ended = await node.until_final(run["id"])
        assert ended["state"] == "succeeded"
        assert [a["state"] for a in ended["attempts"]] == ["failed", "succeeded"]
        assert node.engine.statistics().retries == 3


async def test_forbid_skips_a_run_while_the_previous_one_runs(node_dir: Path, wall: Wall) -> None:
    async with start_node(node_dir, wall) as node:
        await node.create("single", schedule="@yearly", command="sleep 30", concurrency="forbid")
        first = await node.engine.trigger("single", actor="alice")
        await node.until(lambda: node.run(first["id"])["state"] == "running")
        second = await node.engine.trigger("single", actor="alice")
        skipped = await node.until_final(second["id"])
        assert skipped["state"] == "skipped"
        assert skipped["message"] == f"concurrency forbid: {first['id']} still running"
        assert node.run(first["id"])["state"] == "running"
        await node.engine.kill(first["id"], actor="test")


async def test_replace_stops_the_previous_run_before_the_new_one_starts(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        await node.create("latest", schedule="@yearly", command="sleep 30", concurrency="replace")
        first = await node.engine.trigger("latest", actor="alice")
        await node.until(lambda: node.run(first["id"])["state"] == "running")
        second = await node.engine.trigger("latest", actor="alice")
        old = await node.until_final(first["id"], timeout=5)
        assert old["state"] == "killed"
        new = await node.until(
            lambda: (r := node.run(second["id"]))["state"] == "running" and r, timeout=5
        )
        assert iso_ms(new["started_at"]) >= iso_ms(old["finished_at"])  # never both at once
        await node.engine.kill(second["id"], actor="test")


async def test_a_dependent_runs_after_its_upstream_succeeds_and_is_skipped_when_it_fails(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        await node.create("dump", schedule="@yearly", command="sleep 0.3")
        await node.create("upload", schedule="@yearly", after=["dump"])
        up = await node.engine.trigger("dump", actor="alice")
        instant = up["id"].partition("@")[2]
        dependent = await node.until(lambda: node.runs("upload"))
        assert [r["id"] for r in dependent] == [f"upload@{instant}"]  # the same instant
        dep = await node.until_final(f"upload@{instant}")
        upstream = node.run(up["id"])
        assert (upstream["state"], dep["state"]) == ("succeeded", "succeeded")
        assert iso_ms(dep["started_at"]) >= iso_ms(upstream["finished_at"])
        assert dep["reason"] == "trigger"
        # the upstream fails: the dependent run for that instant is skipped, naming it
        await node.update("dump", command="exit 1")
        up = await node.engine.trigger("dump", actor="alice")
        instant = up["id"].partition("@")[2]
        dep = await node.until_final(
            await node.until(lambda: f"upload@{instant}" in {r["id"] for r in node.runs()}
                             and f"upload@{instant}")
        )  # fmt: skip
        assert dep["state"] == "skipped"
        assert dep["message"] == f"upstream run {up['id']} ended failed"
        assert node.engine.statistics().dependents == 2


async def test_slots_bound_the_attempts_running_at_once_and_a_waiting_run_can_be_killed(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall, runner={"slots": 1}) as node:
        await node.create("hog", schedule="@yearly", command="sleep 30")
        await node.create("next", schedule="@yearly", command="true")
        hog = await node.engine.trigger("hog", actor="alice")
        await node.until(lambda: node.run(hog["id"])["state"] == "running")
        waiting = await node.engine.trigger("next", actor="alice")
        await trio.sleep(0.3)
        assert node.run(waiting["id"])["state"] == "scheduled"  # no free slot
        assert node.engine.statistics().armed == 1
        killed = await node.engine.kill(waiting["id"], actor="bob")
        assert killed["state"] == "killed"
        assert killed["attempts"][0]["started_at"] is None  # it never started
        queued = await node.engine.trigger("next", actor="alice")
        await node.engine.kill(hog["id"], actor="bob")  # frees the slot
        assert (await node.until_final(queued["id"]))["state"] == "succeeded"


async def test_killing_a_run_that_waits_for_its_retry_cancels_the_retry(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        await node.create("flaky", schedule="@yearly", command="exit 1", retries=5, backoff=60)
        run = await node.engine.trigger("flaky", actor="alice")
        await node.until(lambda: node.run(run["id"])["retry_at"] is not None)
        ended = await node.engine.kill(run["id"], actor="bob")
        assert ended["state"] == "skipped"
        assert ended["message"] == "killed by bob while waiting for a retry"
        assert len(ended["attempts"]) == 1


async def test_a_script_job_runs_the_stored_script_as_the_default_user(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall, runner={"default_user": "nobody"}) as node:
        body = b'print("from python", __import__("os").getuid())\n'
        sha = await node.blobs.put_script(body)
        await node.create(
            "py", schedule="@yearly", script={"sha256": sha, "size": len(body)},
            interpreter="python3",
        )  # fmt: skip
        run = await node.engine.trigger("py", actor="alice")
        assert (await node.until_final(run["id"]))["state"] == "succeeded"
        nobody = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.geteuid()
        assert await node.log(run["id"]) == f"from python {nobody}\n".encode()


async def test_a_pause_between_the_claim_and_the_instant_skips_the_run(
    node_dir: Path, wall: Wall
) -> None:
    # a long lead time, so the pause lands after the claim and before the instant
    async with start_node(node_dir, wall, lead_time=0.8) as node:
        await node.create("pausable")

        def ahead() -> list[dict[str, object]]:  # a claim with time to pause before it
            soon = wall() * 1000 + 400
            return [r for r in node.runs("pausable") if iso_ms(str(r["scheduled_at"])) > soon]

        claimed = await node.until(ahead)
        await node.replica.propose(PauseJob(**node.replica.stamp("test"), name="pausable"))  # type: ignore[arg-type]
        skipped = await node.until_final(str(claimed[0]["id"]))
        assert skipped["state"] == "skipped"
        assert skipped["message"] == "job 'pausable' is paused"


async def test_instants_due_before_a_pause_get_their_runs_even_when_the_leader_was_behind(
    node_dir: Path, wall: Wall
) -> None:
    """The leader is seconds behind (the wall clock jumps) when a pause arrives: the
    instants that came due before the pause still get a run each (skipped as paused),
    none after it; without this the pause silently dropped them."""
    async with start_node(node_dir, wall) as node:
        await node.create("behind")
        first = await node.until(lambda: node.runs("behind", state="succeeded"))
        wall.offset += 5.0  # the leader has handed out nothing of the next 5 s yet
        await node.replica.propose(PauseJob(**node.replica.stamp("test"), name="behind"))  # type: ignore[arg-type]
        paused_at = iso_ms(node.replica.store.get_job("behind")["updated_at"]) // 1000

        start = iso_ms(first[0]["scheduled_at"]) // 1000

        def settled() -> list[dict[str, object]]:  # every instant up to the pause has a run
            runs = node.runs("behind")
            final = {"succeeded", "failed", "skipped"}
            done = all(r["state"] in final for r in runs)
            at = {iso_ms(str(r["scheduled_at"])) // 1000 for r in runs}
            return runs if done and set(range(start, paused_at)) <= at else []

        runs = await node.until(settled)
        await trio.sleep(1.5)  # (nothing more comes: the pause wins after its instant)
        runs = node.runs("behind")
        instants = sorted(iso_ms(str(r["scheduled_at"])) // 1000 for r in runs)
        assert instants == list(range(start, instants[-1] + 1))  # none missing, none twice
        assert paused_at - 1 <= instants[-1] <= paused_at  # up to the pause, none after it
        skipped = [r for r in runs if r["state"] == "skipped"]
        assert len(skipped) >= 4
        assert {r["message"] for r in skipped} == {"job 'behind' is paused"}


async def test_a_run_whose_script_cannot_be_fetched_fails_with_the_reason_as_its_log(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall) as node:
        missing = "0" * 64  # never stored
        await node.create("lost-script", schedule="@yearly", script={"sha256": missing, "size": 1})
        run = await node.engine.trigger("lost-script", actor="alice")
        ended = await node.until_final(run["id"])
        assert ended["state"] == "failed"
        assert ended["exit_code"] is None and ended["attempts"][0]["started_at"] is None
        log = (await node.log(run["id"])).decode()
        assert log.startswith("[dcrond: the attempt could not start: could not prepare")
        assert missing in log
