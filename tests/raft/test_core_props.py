"""Property tests: a fuzzed cluster keeps Raft's safety properties, and the pieces hold theirs.

``test_fuzzed_cluster_is_safe_and_converges`` lets hypothesis drive a cluster
through drops, duplicates, reordering, partitions, crashes (losing whatever
was not yet handed out in a Ready), compactions and proposals, checking after
every step: one leader per term, a committed entry is in every later leader's
log, and all nodes apply the same entry at each index. At the end the network
heals and the cluster must converge (everyone applies the same log).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from dcrond.errors import InvalidRequest
from dcrond.raft import (
    Config,
    ConfState,
    Entry,
    EntryKind,
    NodeId,
    Role,
    Snapshot,
    apply_conf_change,
    decode_conf_change,
    encode_conf_change,
)
from dcrond.raft._confchange import ConfHistory
from dcrond.raft._raftlog import RaftLog
from dcrond.raft._types import ConfChange, ConfChangeType
from tests.raft.test_core import Net

# --- a fuzzed cluster -------------------------------------------------------------

OPS = (
    *("tick-all",) * 4,
    *("deliver-all",) * 4,
    *("propose",) * 3,
    "tick",
    "deliver",
    "drop",
    "dup",
    "reorder",
    "cut",
    "heal",
    "crash",
    "crash-mid-ready",
    "compact",
)


@dataclass
class Safety:
    """What the cluster has done so far, to check new events against."""

    leaders: dict[int, NodeId]
    committed: dict[int, tuple[int, EntryKind, bytes]]

    def check(self, net: Net) -> None:
        for node, core in net.cores.items():
            if core.role is Role.LEADER:
                other = self.leaders.setdefault(core.term, node)
                assert other == node, f"two leaders in term {core.term}: {other} and {node}"
                self.check_complete(net, node)
        for node, disk in net.disks.items():
            for e in disk.applied:
                seen = self.committed.setdefault(e.index, (e.term, e.kind, e.data))
                assert seen == (e.term, e.kind, e.data), f"{node} applied {e}, others {seen}"

    def check_complete(self, net: Net, leader: NodeId) -> None:
        """Leader completeness: every committed entry is in the leader's log."""
        core = net[leader]
        disk = net.disks[leader]
        snap = disk.snapshot.meta.index if disk.snapshot is not None else 0
        # the leader's in-memory log is what matters; the disk lags only by its last Ready
        held = {e.index: e.term for e in disk.entries}
        for index, (term, _, _) in self.committed.items():
            if index <= snap or index > core.last_index:
                assert index <= core.last_index, f"leader {leader} lacks committed {index}"
                continue
            if index in held:
                assert held[index] == term, f"leader {leader} has another entry at {index}"


def run_ops(net: Net, ops: list[tuple[str, int, int]], safety: Safety) -> None:
    ids = list(net.cores)
    for op, a, b in ops:
        node = ids[a % len(ids)]
        other = ids[b % len(ids)]
        inbox = net.inbox[node]
        if op == "tick-all":
            for core in net.cores.values():
                core.tick()
        elif op == "tick":
            for _ in range(1 + b % 6):
                net[node].tick()
        elif op == "deliver-all":
            net.inbox[node] = []
            for m in inbox:
                net[node].step(m)
        elif op == "deliver" and inbox:
            net[node].step(inbox.pop(b % len(inbox)))
        elif op == "drop" and inbox:
            inbox.pop(b % len(inbox))
        elif op == "dup" and inbox:
            inbox.append(inbox[b % len(inbox)])
        elif op == "reorder" and inbox:
            inbox.reverse()
        elif op == "propose":
            leader = next((c for c in net.cores.values() if c.role is Role.LEADER), None)
            if leader is not None:
                leader.propose(b"v%d" % b)
        elif op == "cut" and node != other:
            net.cut.add(frozenset((node, other)))
        elif op == "heal":
            net.cut.clear()
        elif op == "crash":
            # whatever the core did not hand out in a Ready is lost
            net.restart(node)
        elif op == "crash-mid-ready":
            # early messages went out, then the node died before its fsync
            net.crash_mid_ready(node)
        elif op == "compact":
            core, disk = net[node], net.disks[node]
            index = disk.applied_index
            if index > core.status().snapshot_index:
                core.compact(Snapshot(core.snapshot_meta(index), b"image"))
                disk.snapshot = Snapshot(core.snapshot_meta(index), b"image")
                disk.entries = [e for e in disk.entries if e.index > index]
        for n in ids:
            net.handle(n)
        safety.check(net)


def converge(net: Net, safety: Safety) -> None:
    net.cut.clear()
    for _ in range(400):
        for core in net.cores.values():
            core.tick()
        net.stabilize()
        safety.check(net)
        leaders = net.leaders()
        if len(leaders) == 1 and all(
            c.commit_index == net[leaders[0]].last_index for c in net.cores.values()
        ):
            break
    leaders = net.leaders()
    assert len(leaders) == 1, f"no single leader after healing: {leaders}"
    last = net[leaders[0]].last_index
    for node, disk in net.disks.items():
        assert disk.applied_index == last, f"{node} applied {disk.applied_index} of {last}"


op_strategy = st.tuples(st.sampled_from(OPS), st.integers(0, 7), st.integers(0, 50))


@settings(max_examples=80, deadline=None)
@given(
    n=st.sampled_from([3, 5]),
    seed=st.integers(0, 2**16),
    ops=st.lists(op_strategy, min_size=80, max_size=300),
    inflight=st.integers(1, 4),
    prevote=st.booleans(),
    early=st.booleans(),
)
def test_fuzzed_cluster_is_safe_and_converges(
    *, n: int, seed: int, ops: list[tuple[str, int, int]], inflight: int, prevote: bool, early: bool
) -> None:
    config = Config(
        election_ticks=5,
        heartbeat_ticks=1,
        max_inflight=inflight,
        max_entries_bytes=8,
        snapshot_chunk_bytes=3,
        prevote=prevote,
        send_appends_early=early,
    )
    net = Net(n, config=config, seed=seed)
    safety = Safety({}, {})
    net.elect("n1")
    safety.check(net)
    run_ops(net, ops, safety)
    converge(net, safety)


# --- the log ------------------------------------------------------------------------


def _log_from_terms(terms: list[int], data_sizes: list[int] | None = None) -> RaftLog:
    entries = [
        Entry(t, i, EntryKind.NORMAL, b"x" * (data_sizes[i - 1] if data_sizes else 1))
        for i, t in enumerate(terms, 1)
    ]
    return RaftLog(0, 0, entries)


terms_strategy = st.lists(st.integers(1, 4), max_size=40).map(sorted)


@given(terms=terms_strategy, index=st.integers(0, 45), term=st.integers(0, 5))
def test_last_at_or_below_is_the_largest_index_with_an_old_enough_term(
    terms: list[int], index: int, term: int
) -> None:
    log = _log_from_terms(terms)
    expected = max(
        (i for i in range(0, min(index, len(terms)) + 1) if (terms[i - 1] if i else 0) <= term),
        default=-1,
    )
    assert log.last_at_or_below(index, term) == expected


@given(
    sizes=st.lists(st.integers(0, 10), min_size=1, max_size=30),
    lo=st.integers(1, 30),
    max_bytes=st.integers(1, 25),
)
def test_batches_respect_the_byte_limit_and_are_as_large_as_it_allows(
    sizes: list[int], lo: int, max_bytes: int
) -> None:
    log = _log_from_terms([1] * len(sizes), sizes)
    batch = log.batch(lo, max_bytes)
    if lo > len(sizes):
        assert batch == ()
        return
    assert batch, "at least one entry"
    assert [e.index for e in batch] == list(range(lo, lo + len(batch)))
    total = sum(len(e.data) for e in batch)
    assert total <= max_bytes or len(batch) == 1
    end = batch[-1].index
    if end < len(sizes):
        assert total + sizes[end] > max_bytes, "the next entry would have fitted"


# --- membership ---------------------------------------------------------------------

cc_strategy = st.builds(
    ConfChange, st.sampled_from(list(ConfChangeType)), st.sampled_from(["a", "b", "c", "d"])
)


@given(ccs=st.lists(cc_strategy, max_size=30))
def test_membership_changes_keep_voters_and_learners_apart_and_never_empty_the_voters(
    ccs: list[ConfChange],
) -> None:
    conf = ConfState(frozenset({"a"}))
    history = ConfHistory(ConfState(), 0)
    history.append(1, encode_conf_change(ConfChange(ConfChangeType.ADD_VOTER, "a")))
    for i, cc in enumerate(ccs, 2):
        assert decode_conf_change(encode_conf_change(cc)) == cc
        with contextlib.suppress(InvalidRequest):
            conf = apply_conf_change(conf, cc)
        history.append(i, encode_conf_change(cc))
        assert history.current == conf, "the log's history agrees with the refusals"
        assert conf.voters and not conf.voters & conf.learners


@given(ccs=st.lists(cc_strategy, min_size=1, max_size=12), cut=st.integers(1, 12))
def test_cutting_off_config_entries_reverts_to_the_membership_before_them(
    ccs: list[ConfChange], cut: int
) -> None:
    base = ConfState(frozenset({"a", "b"}))
    history = ConfHistory(base, 0)
    confs = [base]
    for i, cc in enumerate(ccs, 1):
        confs.append(history.append(i, encode_conf_change(cc)))
    history.truncate_from(cut)
    assert history.current == confs[min(cut - 1, len(ccs))]
    for i in range(len(confs)):
        assert history.at(i) == confs[min(i, cut - 1, len(ccs))]


# --- randomness is injected ---------------------------------------------------------


def test_identical_seeds_give_identical_runs() -> None:
    def run(seed: int) -> list[str]:
        net = Net(3, seed=seed)
        trace: list[str] = []
        for _ in range(60):
            net.tick_all()
            trace.append(",".join(f"{c.role.name}{c.term}" for c in net.cores.values()))
        return trace

    assert run(5) == run(5)
    assert random.Random(5).random() == random.Random(5).random()
