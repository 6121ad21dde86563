"""The session table written once per transaction gives what one command at a time gave.

``Sessions`` (dcrond/store/_sessions.py) reads a client session once per
apply transaction and writes it once at the end. Whatever the grouping --
every command its own transaction, many entries in one transaction, or
commands packed into batch entries -- each command must get the same answer
(applied, the stored answer of a retry, or ``stale``) and the tables must end
the same, sessions and stored answers included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcrond.raft import Entry
from dcrond.store import (
    Command,
    CreateJob,
    JobSpec,
    JobStore,
    PauseJob,
    Result,
    ResumeJob,
    RunScheduled,
    RunStarted,
)
from dcrond.store._commands import Batch
from dcrond.store._results import Applied, result_from_wire

from .conftest import T0

#: (session, seq, how far below seq its acked is, which command)
Step = tuple[str, int, int, int]

steps_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.integers(1, 14),
        st.integers(1, 6),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=40,
)


def commands(steps: list[Step]) -> list[Command]:
    out: list[Command] = []
    for i, (session, seq, below, kind) in enumerate(steps):
        common: dict[str, Any] = {
            "now": T0 + 1000 * (i + 1),
            "actor": "t",
            "session": session,
            "seq": seq,
            "acked": max(0, seq - below),
        }
        if kind == 0:
            out.append(PauseJob(name="j", **common))
        elif kind == 1:
            out.append(ResumeJob(name="j", **common))
        elif kind == 2:
            at = T0 + 60_000 * (seq % 3)
            out.append(
                RunScheduled(
                    run_id=f"j@{_iso(at)}",
                    job="j",
                    job_version=1,
                    scheduled_at=at,
                    host="h1",
                    reason="trigger",
                    **common,
                )
            )
        else:
            at = T0 + 60_000 * (seq % 3)
            out.append(
                RunStarted(
                    run_id=f"j@{_iso(at)}", attempt=1, host="h1", pid=1, started_at=at, **common
                )
            )
    return out


def _iso(ms: int) -> str:
    from dcrond.store import make_run_id

    return make_run_id("j", ms).partition("@")[2]


def fresh(path: Path) -> JobStore:
    store = JobStore.open(path)
    spec = JobSpec(name="j", schedule="@hourly", command="true")
    store.apply(
        Entry(
            term=1,
            index=1,
            data=CreateJob(job=spec, now=T0, actor="t", session="setup", seq=1).encode(),
        )
    )
    return store


def tables(store: JobStore) -> list[str]:
    """Every row but the applied index (which differs when commands are packed in batches)."""
    return [line for line in store.dump().splitlines() if not line.startswith("meta ")]


def one_at_a_time(store: JobStore, cmds: list[Command]) -> list[Result]:
    out = []
    for cmd in cmds:
        result = store.apply(Entry(term=1, index=store.applied_index + 1, data=cmd.encode()))
        assert result is not None
        out.append(result)
    return out


def grouped(store: JobStore, cmds: list[Command], sizes: list[int], batch: bool) -> list[Result]:
    """Apply in groups of ``sizes``: each group one transaction of entries, or one batch entry."""
    out: list[Result] = []
    at = 0
    sizes = [*sizes, len(cmds)]
    for size in sizes:
        group, at = cmds[at : at + size], at + size
        if not group:
            continue
        first = store.applied_index + 1
        if batch:
            entry = Entry(
                term=1, index=first, data=Batch(tuple(c.encode() for c in group)).encode()
            )
            [result] = store.apply_many([entry])
            assert isinstance(result, Applied)
            out.extend(result_from_wire(item) for item in result.value["results"])
        else:
            entries = [Entry(term=1, index=first + i, data=c.encode()) for i, c in enumerate(group)]
            results = store.apply_many(entries)
            out.extend(r for r in results if r is not None)
    return out


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=steps_strategy, sizes=st.lists(st.integers(1, 12), max_size=8), batch=st.booleans())
def test_grouped_applies_answer_and_store_as_one_at_a_time(
    tmp_path_factory: Any, steps: list[Step], sizes: list[int], batch: bool
) -> None:
    folder = tmp_path_factory.mktemp("sessions")
    cmds = commands(steps)
    with fresh(folder / "one.db") as one, fresh(folder / "grouped.db") as two:
        expected = one_at_a_time(one, cmds)
        got = grouped(two, cmds, sizes, batch)
        assert got == expected
        assert tables(two) == tables(one)


def test_a_retry_in_the_same_batch_gets_the_first_answer_and_an_acked_one_is_stale(
    tmp_path: Path,
) -> None:
    def cmd(seq: int, acked: int, kind: int = 0) -> Command:
        return commands([("a", seq, seq - acked, kind)])[0]

    with fresh(tmp_path / "t.db") as store:
        first = cmd(1, 0)
        got = grouped(store, [first, cmd(2, 0, 1), first, cmd(3, 2), first], [], batch=True)
        assert isinstance(got[0], Applied) and isinstance(got[1], Applied)
        assert got[2] == got[0]  # a retry: the same answer, nothing done twice
        assert got[3] != got[0] and isinstance(got[3], Applied)
        stale = got[4]
        assert not isinstance(stale, Applied) and stale.code == "stale"
        # what remains stored: the session acknowledged up to 2, so only request 3's answer
        rows = store.db.execute("SELECT session, seq FROM client_results ORDER BY 1, 2").fetchall()
        assert rows == [("a", 3), ("setup", 1)]
        assert store.db.execute(
            "SELECT acked FROM client_sessions WHERE session = 'a'"
        ).fetchone() == (2,)
