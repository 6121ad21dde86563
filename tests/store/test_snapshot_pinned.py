"""``JobStore.snapshot_begin``: an image pinned at one applied index, copied in another thread.

These prove that the image read in a worker thread is the table at the index
it was pinned at, although the store applied more meanwhile (restored on a
fresh store it equals, query by query, a store that applied only that far);
that it can be given up before or during the copy; that an in-memory table
has no pinned image; that a pin refuses a file that does not hold what the
store says it applied; and that a crash's leftover scratch file goes at open.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dcrond.errors import StorageError
from dcrond.store import JobStore, PauseJob
from tests.store.conftest import Proposer


def fill(p: Proposer, jobs: int) -> None:
    for i in range(jobs):
        p.create(f"job-{i:04d}", tags={"team": f"t{i % 3}"})
    p.ok(PauseJob(name="job-0001", **p.common()))
    p.schedule_run("job-0002")


def test_an_image_read_in_a_thread_is_the_table_at_the_index_it_was_pinned_at(
    tmp_path: Path,
) -> None:
    with (
        JobStore.open(tmp_path / "jobs.db") as store,
        JobStore.open(tmp_path / "reference.db") as reference,
    ):
        p, ref = Proposer(store), Proposer(reference)
        for q in (p, ref):
            fill(q, 200)
        image = store.snapshot_begin()
        assert image is not None
        assert image.index == store.applied_index == reference.applied_index
        read: list[bytes] = []
        worker = threading.Thread(target=lambda: read.append(image.read()))
        worker.start()
        for i in range(50):  # the store goes on applying while the thread copies
            p.create(f"later-{i:03d}")
        worker.join()
        assert store.applied_index == image.index + 50
        with JobStore.open(tmp_path / "restored.db") as restored:
            restored.restore(read[0], image.index)
            assert restored.dump() == reference.dump()
            assert restored.list_jobs() == reference.list_jobs()
            assert restored.list_runs() == reference.list_runs()
            assert restored.history("job-0001") == reference.history("job-0001")
            assert (restored.applied_index, restored.applied_term) == (image.index, 1)
    assert sorted(f.name for f in tmp_path.iterdir() if ".image-" in f.name) == []


def test_an_image_can_be_given_up_before_or_while_it_is_copied(tmp_path: Path) -> None:
    with JobStore.open(tmp_path / "jobs.db") as store:
        fill(Proposer(store), 20)
        image = store.snapshot_begin()
        assert image is not None
        image.close()
        with pytest.raises(StorageError, match="closed before it was read"):
            image.read()
        # ~40 MB, so that the copy is still under way when it is given up
        store.db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000) "
            "INSERT INTO client_results SELECT 'filler', i, randomblob(1000) FROM n"
        )
        image = store.snapshot_begin()
        assert image is not None
        errors: list[BaseException] = []

        def copy() -> None:
            try:
                image.read()
            except StorageError as exc:
                errors.append(exc)

        worker = threading.Thread(target=copy)
        worker.start()
        while not any(".image-" in f.name for f in tmp_path.iterdir()):  # the copy has begun
            time.sleep(0.0005)
        image.close()
        worker.join()
        assert len(errors) == 1
        assert "abandoned while it was copied" in str(errors[0])
        assert store.snapshot()  # the store itself is unharmed
    assert [f.name for f in tmp_path.iterdir() if ".image-" in f.name] == []


def test_a_table_in_memory_has_no_pinned_image() -> None:
    with JobStore.open(":memory:") as store:
        assert store.snapshot_begin() is None


def test_a_pin_refuses_a_file_that_does_not_hold_what_the_store_applied(tmp_path: Path) -> None:
    with JobStore.open(tmp_path / "jobs.db") as store, JobStore.open(tmp_path / "jobs.db") as twin:
        Proposer(store).create("a")
        behind = Proposer(twin, session="s2")  # writes behind the first store's back
        behind.create("b")
        behind.create("c")
        with pytest.raises(StorageError, match="the store says"):
            store.snapshot_begin()


def test_a_scratch_file_left_by_a_crash_is_deleted_at_open(tmp_path: Path) -> None:
    leftover = tmp_path / "jobs.db.image-0badf00d"
    leftover.write_bytes(b"half a copy")
    with JobStore.open(tmp_path / "jobs.db"):
        assert not leftover.exists()
