"""Logs reach storage through an outage and a restart; retention prunes runs and their logs."""

from __future__ import annotations

from pathlib import Path

from tests.engine.conftest import Wall, start_node


async def test_logs_wait_in_a_durable_queue_while_storage_is_down_and_survive_a_restart(
    node_dir: Path, wall: Wall
) -> None:
    objects = node_dir / "objects"
    objects.write_text("a file where the storage folder should be")  # storage refuses writes
    async with start_node(node_dir, wall) as node:
        await node.create("report", schedule="@yearly", command="echo 'the report'")
        run = await node.engine.trigger("report", actor="alice")
        ended = await node.until_final(run["id"])
        assert ended["state"] == "succeeded"  # the run does not wait for storage
        key = ended["attempts"][0]["log_path"]
        assert node.engine.annotate(node.run(run["id"]))["attempts"][0]["log_pending"] is True
        assert await node.log(run["id"]) == b"the report\n"  # read from the local copy
        await node.until(lambda: node.engine.statistics().uploads.failures >= 2)
        assert node.engine.statistics().uploads.pending == 1
    async with start_node(node_dir, wall) as node:  # restarted, storage still down
        assert node.engine.statistics().uploads.pending == 1
        assert await node.log(run["id"]) == b"the report\n"
        objects.unlink()  # storage is back
        await node.until(lambda: node.engine.statistics().uploads.pending == 0)
        assert (objects / key).read_bytes() == b"the report\n"
        assert node.engine.annotate(node.run(run["id"]))["attempts"][0]["log_pending"] is False
        assert await node.log(run["id"]) == b"the report\n"  # from storage
        assert not node.runner.spool_path(run["id"], 1).exists()  # the local copy is gone


async def test_retention_prunes_a_jobs_oldest_runs_and_deletes_their_logs(
    node_dir: Path, wall: Wall
) -> None:
    async with start_node(node_dir, wall, jobs={"keep_runs": 2}, prune_interval=0.1) as node:
        await node.create("chatty", schedule="@yearly", command="echo hello")
        ids = []
        for _ in range(4):
            run = await node.engine.trigger("chatty", actor="alice")
            await node.until_final(run["id"])
            ids.append(run["id"])
        await node.until(lambda: len(node.runs("chatty")) == 2)
        assert [r["id"] for r in node.runs("chatty")] == ids[2:]  # the newest are kept
        logs = node_dir / "objects" / "logs" / "chatty"
        kept = [f"{run_id}/1.log" for run_id in ids[2:]]
        await node.until(
            lambda: sorted(str(p.relative_to(logs)) for p in logs.glob("*/*.log")) == kept
        )
        assert node.engine.statistics().pruned == 2
