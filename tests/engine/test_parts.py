"""The engine's parts on their own: upload queue, journal, rules, clock, instants."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from dcrond.engine import LogUploader
from dcrond.engine._clock import SPIN, WallClock
from dcrond.engine._journal import Journal
from dcrond.engine._policy import concurrency, prune_limits, stale_claim, upstream_gate
from dcrond.engine._table import iso_ms
from dcrond.errors import StorageError
from dcrond.store import format_instant


class FlakyBlobs:
    """A fake object store that refuses the first ``failures`` calls, then works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.objects: dict[str, bytes] = {}
        self.calls: list[str] = []

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StorageError("storage is down")

    async def put_script(self, data: bytes) -> str:
        raise NotImplementedError

    async def get_script(self, sha: str) -> bytes:
        raise NotImplementedError

    async def put_log(self, key: str, source: Path) -> int:
        await trio.lowlevel.checkpoint()
        self.calls.append(f"put {key}")
        self._maybe_fail()
        self.objects[key] = await trio.Path(source).read_bytes()
        return len(self.objects[key])

    async def read(self, key: str, offset: int = 0, size: int = -1) -> bytes:
        raise NotImplementedError

    async def delete(self, keys: list[str]) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append("delete " + ",".join(keys))
        self._maybe_fail()
        for key in keys:
            self.objects.pop(key, None)


async def test_the_upload_queue_retries_in_order_until_storage_works(tmp_path: Path) -> None:
    blobs = FlakyBlobs(failures=3)
    queue = tmp_path / "queue"
    spool = tmp_path / "a.log"
    spool.write_bytes(b"output")
    up = LogUploader(blobs, queue, retry_min=0.01, retry_max=0.02)
    up.put("logs/a/1.log", spool)
    up.delete(["logs/a/1.log"])  # pruned before its upload: deleted after it, never before
    assert up.pending_source("logs/a/1.log") == spool
    async with trio.open_nursery() as nursery:
        await nursery.start(up.run)
        with trio.fail_after(5):
            await up.wait_idle()
        nursery.cancel_scope.cancel()
    assert blobs.calls == ["put logs/a/1.log"] * 4 + ["delete logs/a/1.log"]
    assert blobs.objects == {}
    stats = up.statistics()
    assert (stats.uploaded, stats.deleted, stats.failures, stats.pending) == (1, 1, 3, 0)
    assert not spool.exists()  # the local copy goes once stored
    assert up.pending_source("logs/a/1.log") is None


async def test_the_upload_queue_survives_a_restart_and_drops_only_vanished_sources(
    tmp_path: Path,
) -> None:
    queue = tmp_path / "queue"
    kept, gone = tmp_path / "kept.log", tmp_path / "gone.log"
    kept.write_bytes(b"kept")
    gone.write_bytes(b"gone")
    first = LogUploader(FlakyBlobs(failures=10**6), queue)
    first.put("logs/j/gone.log", gone)
    first.put("logs/j/kept.log", kept)
    (queue / "0000000000000099.tmp").write_text("{half a record")  # a write cut by a crash
    gone.unlink()
    blobs = FlakyBlobs(failures=0)
    again = LogUploader(blobs, queue)  # the daemon restarted
    assert again.pending() == 2 and again.pending_source("logs/j/kept.log") == kept
    async with trio.open_nursery() as nursery:
        await nursery.start(again.run)
        with trio.fail_after(5):
            await again.wait_idle()
        nursery.cancel_scope.cancel()
    assert blobs.objects == {"logs/j/kept.log": b"kept"}
    assert again.statistics().dropped == 1
    assert sorted(p.name for p in queue.iterdir()) == []


def test_a_journal_keeps_records_in_order_across_reopening(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    a, b, c = j.add({"n": 1}), j.add({"n": 2}), j.add({"n": 3})
    j.remove(b)
    (tmp_path / "0000000000000007.json").write_text("not json")
    again = Journal(tmp_path)
    assert again.items() == [(a, {"n": 1}), (c, {"n": 3})]
    assert (tmp_path / "0000000000000007.bad").exists()  # kept aside for a person, not replayed
    assert again.add({"n": 4}) > c


def test_dependency_rule_waits_for_upstreams_at_the_same_instant_and_skips_on_failure() -> None:
    assert upstream_gate({}).verdict == "start"
    assert upstream_gate({"a@T": None}).verdict == "start"  # no upstream run at this instant
    assert upstream_gate({"a@T": "succeeded", "b@T": "succeeded"}).verdict == "start"
    waiting = upstream_gate({"a@T": "running", "b@T": "succeeded", "c@T": "scheduled"})
    assert (waiting.verdict, waiting.runs) == ("wait", ("a@T", "c@T"))
    failed = upstream_gate({"a@T": "running", "b@T": "timed_out"})
    assert (failed.verdict, failed.reason) == ("skip", "upstream run b@T ended timed_out")


def test_concurrency_rule() -> None:
    assert concurrency("allow", "j@2", ["j@1"]).verdict == "start"
    assert concurrency("forbid", "j@2", ["j@2"]).verdict == "start"  # itself (a retry) is fine
    forbid = concurrency("forbid", "j@2", ["j@1"])
    assert (forbid.verdict, forbid.reason) == ("skip", "concurrency forbid: j@1 still running")
    assert concurrency("replace", "j@2", ["j@1"]).runs == ("j@1",)


def test_a_stale_claim_obeys_catch_up_none_only_for_scheduled_first_attempts() -> None:
    late = {"scheduled_at": 0, "now": 60_000, "grace_ms": 5000}
    assert stale_claim(catch_up="none", reason="schedule", attempt=1, **late) is not None
    assert stale_claim(catch_up="latest", reason="schedule", attempt=1, **late) is None
    assert stale_claim(catch_up="none", reason="trigger", attempt=1, **late) is None
    assert stale_claim(catch_up="none", reason="schedule", attempt=2, **late) is None
    on_time = {"scheduled_at": 0, "now": 4000, "grace_ms": 5000}
    assert stale_claim(catch_up="none", reason="schedule", attempt=1, **on_time) is None


def test_retention_limits() -> None:
    assert prune_limits(0, 0) is None
    assert prune_limits(100, 0) == (100, None)
    assert prune_limits(0, 30) == (None, 30 * 86400)


@pytest.mark.parametrize("ms", [0, 1, 999, 1_767_225_600_004, 1_795_838_400_000])
def test_instants_read_back_exactly(ms: int) -> None:
    assert iso_ms(format_instant(ms)) == ms


async def test_the_clock_wakes_a_moment_before_an_instant_and_spins_to_it() -> None:
    clock = WallClock()
    target = time.time() + 0.05
    await clock.wake_before(target)
    assert time.time() >= target - SPIN  # early by at most SPIN (late only on a busy machine)
    assert clock.spin_until(target)
    assert time.time() >= target
    assert not clock.spin_until(time.time() + 1.0)  # too far away to spin: returns at once
    frozen = WallClock(lambda: 100.0)
    assert not frozen.spin_until(100.0 + SPIN)  # a clock that stands still cannot hang it


def test_a_journal_survives_a_line_cut_short_and_leaves_no_file_when_empty(
    tmp_path: Path,
) -> None:
    j = Journal(tmp_path)
    a, b = j.add({"n": 1}), j.add({"n": 2})
    j.remove(a)
    j.close()
    with (tmp_path / "journal.log").open("ab") as f:  # a crash in the middle of a write
        f.write(b'{"seq":3,"rec')
    again = Journal(tmp_path)
    assert again.items() == [(b, {"n": 2})]
    c = again.add({"n": 3})
    assert c > b
    assert Journal(tmp_path).items() == [(b, {"n": 2}), (c, {"n": 3})]
    again.remove(b)
    again.remove(c)
    assert list(tmp_path.iterdir()) == []  # an idle queue leaves an empty folder


def test_a_journal_reads_the_files_of_the_earlier_format(tmp_path: Path) -> None:
    (tmp_path / "0000000000000004.json").write_text('{"n": 4}')
    j = Journal(tmp_path)
    assert j.items() == [(4, {"n": 4})]
    five = j.add({"n": 5})
    assert five == 5
    j.remove(4)
    assert not (tmp_path / "0000000000000004.json").exists()
    assert Journal(tmp_path).items() == [(5, {"n": 5})]


async def test_an_end_report_stays_in_the_outbox_until_this_hosts_table_shows_it(
    tmp_path: Path,
) -> None:
    """A follower that crashes after the leader committed its report, before its own copy
    applied it, must not take the attempt for a claim still to start (it would run twice):
    the outbox record that says it ran goes only once the local table shows the end."""
    from types import SimpleNamespace

    from dcrond.engine._context import Counters
    from dcrond.engine._reports import Reporter
    from dcrond.store import Applied, JobStore, RunFinished, RunStarted
    from tests.store.conftest import Proposer

    with JobStore.open(tmp_path / "jobs.db") as store:
        p = Proposer(store)
        p.create("j")
        run_id = p.schedule_run("j", host="h1")
        p.ok(
            RunStarted(run_id=run_id, attempt=1, host="h1", pid=7, started_at=p.clock, **p.common())
        )

        async def committed_elsewhere(cmd: object, **_: object) -> Applied:
            await trio.lowlevel.checkpoint()
            return Applied({})  # the leader applied it; this host has not yet

        stamps = iter(range(1, 1000))
        ctx = SimpleNamespace(
            store=store,
            host="h1",
            counters=Counters(),
            propose=committed_elsewhere,
            replica=SimpleNamespace(
                stamp=lambda actor: {
                    "now": p.clock,
                    "actor": actor,
                    "session": "w",
                    "seq": next(stamps),
                }
            ),
        )
        reporter = Reporter(ctx, tmp_path / "state")  # type: ignore[arg-type]
        record = {
            "run_id": run_id,
            "attempt": 1,
            "state": "succeeded",
            "exit_code": 0,
            "signal": None,
            "started_at": p.clock,
            "finished_at": p.clock + 5,
            "log_path": None,
            "truncated": False,
            "spool": None,
        }
        seq = reporter.outbox.add(record)
        await reporter.send(seq, record)
        assert reporter.unreported == 1  # kept: a restart now would read "it ran"
        again = Reporter(ctx, tmp_path / "state")  # type: ignore[arg-type]
        assert len(again.outbox) == 1  # ... on disk too
        reporter.seen(run_id, 1)  # this host applied the end
        assert reporter.unreported == 0

        # once the local table has the end, the record goes as soon as the send returns
        p.ok(
            RunFinished(
                run_id=run_id,
                attempt=1,
                state="succeeded",
                exit_code=0,
                signal=None,
                started_at=p.clock,
                finished_at=p.clock + 5,
                log_path=None,
                truncated=False,
                **p.common(),
            )
        )
        seq = reporter.outbox.add(record)
        await reporter.send(seq, record)
        assert reporter.unreported == 0
