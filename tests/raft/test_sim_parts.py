"""The simulator's parts behave as the faults they model: network, disk, state machine, checker."""

from __future__ import annotations

import random

import pytest

from dcrond.raft import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from dcrond.testing import (
    STALE,
    Command,
    DiskContractError,
    InvariantViolation,
    KVStateMachine,
    NetworkQuality,
    Op,
    SafetyChecker,
    SimDisk,
    SimNetwork,
)

# --- network ------------------------------------------------------------------


def test_network_delivers_one_copy_within_the_latency_bounds() -> None:
    net = SimNetwork(random.Random(1), NetworkQuality(min_delay_us=100, max_delay_us=200))
    for _ in range(200):
        (d,) = net.route("a", "b")
        assert 100 <= d <= 200


def test_lossy_network_drops_and_duplicates_about_as_often_as_configured() -> None:
    q = NetworkQuality(drop=0.2, duplicate=0.1)
    net = SimNetwork(random.Random(2), q)
    copies = [len(net.route("a", "b")) for _ in range(10_000)]
    assert 0.17 < copies.count(0) / 10_000 < 0.23
    assert 0.06 < copies.count(2) / 10_000 < 0.10


def test_delay_spikes_reorder_messages() -> None:
    q = NetworkQuality(min_delay_us=100, max_delay_us=200, spike=0.5, spike_max_us=10_000)
    net = SimNetwork(random.Random(3), q)
    arrivals = [t + net.route("a", "b")[0] for t in range(0, 5_000, 50)]
    assert arrivals != sorted(arrivals)


def test_symmetric_partition_cuts_both_directions_between_groups_only() -> None:
    net = SimNetwork(random.Random(4))
    net.partition([["a", "b"], ["c"]])
    assert net.link_up("a", "b") and net.link_up("b", "a")
    for x in ("a", "b"):
        assert not net.link_up(x, "c") and not net.link_up("c", x)
        assert net.route(x, "c") == []
    net.heal()
    assert net.link_up("a", "c") and net.route("c", "a")


def test_one_way_cut_leaves_the_other_direction_up() -> None:
    net = SimNetwork(random.Random(5))
    net.cut("a", "b")
    assert not net.link_up("a", "b")
    assert net.link_up("b", "a")


def test_bridge_is_the_cloudflare_shape() -> None:
    net = SimNetwork(random.Random(6))
    net.partition([["a"], ["b"], ["c"]])
    net.bridge("a", "b", "c")
    up = {(x, y) for x in "abc" for y in "abc" if x != y and net.link_up(x, y)}
    assert up == {("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")}


# --- disk ---------------------------------------------------------------------


def _entries(lo: int, hi: int, term: int) -> tuple[Entry, ...]:
    return tuple(Entry(term, i, EntryKind.NORMAL, b"%d" % i) for i in range(lo, hi + 1))


def test_crash_between_write_and_sync_loses_the_whole_write() -> None:
    disk = SimDisk()
    disk.write(None, _entries(1, 3, 1), HardState(1, "a", 0))
    disk.sync()
    disk.write(None, _entries(4, 5, 1), HardState(2, "b", 3))
    assert disk.has_pending
    disk.crash()
    assert disk.last_index == 3
    assert disk.hard_state == HardState(1, "a", 0)
    assert not disk.has_pending


def test_entries_at_stored_indexes_replace_the_rest_of_the_log() -> None:
    disk = SimDisk()
    disk.write(None, _entries(1, 5, 1), None)
    disk.sync()
    disk.write(None, _entries(3, 3, 2), None)
    disk.sync()
    assert disk.last_index == 3
    assert [disk.term(i) for i in range(1, 4)] == [1, 1, 2]


def test_a_gap_in_the_log_is_refused() -> None:
    disk = SimDisk()
    disk.write(None, _entries(3, 4, 1), None)
    with pytest.raises(DiskContractError):
        disk.sync()


def test_received_snapshot_keeps_the_log_after_it_only_when_terms_match() -> None:
    conf = ConfState(voters=frozenset({"a"}))
    disk = SimDisk()
    disk.write(None, _entries(1, 6, 1), None)
    disk.sync()
    disk.write(Snapshot(SnapshotMeta(4, 1, conf), b"s"), (), None)
    disk.sync()
    assert (disk.first_index, disk.last_index) == (5, 6)
    disk.write(Snapshot(SnapshotMeta(5, 3, conf), b"t"), (), None)
    disk.sync()
    assert (disk.first_index, disk.last_index) == (6, 5)
    assert disk.entries() == []
    assert disk.term(5) == 3


def test_compaction_drops_covered_entries_and_refuses_a_foreign_snapshot() -> None:
    conf = ConfState(voters=frozenset({"a"}))
    disk = SimDisk()
    disk.write(None, _entries(1, 6, 1), None)
    disk.sync()
    disk.compact(Snapshot(SnapshotMeta(4, 1, conf), b"s"))
    assert [e.index for e in disk.entries()] == [5, 6]
    with pytest.raises(DiskContractError):
        disk.compact(Snapshot(SnapshotMeta(6, 2, conf), b"s"))


# --- key-value state machine --------------------------------------------------


def _cmd_entry(index: int, cmd: Command) -> Entry:
    return Entry(1, index, EntryKind.NORMAL, cmd.encode())


def test_retried_command_applies_once_and_returns_the_first_result() -> None:
    kv = KVStateMachine()
    cas = Command(Op.CAS, "c1", 1, "k", None, "v1")
    assert kv.apply(_cmd_entry(1, cas)) is True
    kv.apply(_cmd_entry(2, Command(Op.PUT, "c2", 1, "k", "other")))
    # the retry of c1's cas reaches the log again: same answer, no effect
    assert kv.apply(_cmd_entry(3, cas)) is True
    assert kv.get("k") == "other"


def test_command_older_than_the_session_is_stale_and_ignored() -> None:
    kv = KVStateMachine()
    kv.apply(_cmd_entry(1, Command(Op.PUT, "c1", 2, "k", "new")))
    assert kv.apply(_cmd_entry(2, Command(Op.PUT, "c1", 1, "k", "old"))) == STALE
    assert kv.get("k") == "new"


def test_snapshot_restores_data_sessions_and_applied_sequence() -> None:
    kv = KVStateMachine()
    kv.apply(_cmd_entry(1, Command(Op.PUT, "c1", 1, "k", "v")))
    kv.apply(Entry(2, 2, EntryKind.NOOP))
    copy = KVStateMachine.restore(kv.snapshot())
    assert copy.snapshot() == kv.snapshot()
    assert (copy.applied, copy.applied_term, copy.get("k")) == (2, 2, "v")
    assert copy.apply(_cmd_entry(3, Command(Op.PUT, "c1", 1, "k", "v"))) is None
    assert copy.applied == 3


def test_state_machine_refuses_an_entry_out_of_order() -> None:
    kv = KVStateMachine()
    with pytest.raises(ValueError, match="out of order"):
        kv.apply(Entry(1, 2, EntryKind.NOOP))


def test_different_applied_sequences_give_different_snapshots() -> None:
    a, b = KVStateMachine(), KVStateMachine()
    a.apply(Entry(1, 1, EntryKind.NOOP))
    b.apply(Entry(2, 1, EntryKind.NOOP))
    assert a.snapshot() != b.snapshot()


# --- checker ------------------------------------------------------------------


def _persist(chk: SafetyChecker, node: str, disk: SimDisk, rd: Ready) -> None:
    chk.before_persist(node, disk, rd)
    disk.write(rd.snapshot, rd.entries, rd.hard_state)
    disk.sync()
    chk.after_persist(node, disk, rd)


def test_checker_catches_two_leaders_in_one_term() -> None:
    chk = SafetyChecker()
    chk.observe_role("a", 3, Role.LEADER, SimDisk())
    chk.observe_role("a", 3, Role.LEADER, SimDisk())
    with pytest.raises(InvariantViolation, match="election safety"):
        chk.observe_role("b", 3, Role.LEADER, SimDisk())


def test_checker_catches_a_second_vote_in_one_term() -> None:
    chk = SafetyChecker()
    disk = SimDisk()
    _persist(chk, "a", disk, Ready(hard_state=HardState(2, "b", 0)))
    with pytest.raises(InvariantViolation, match="one vote per term"):
        chk.before_persist("a", disk, Ready(hard_state=HardState(2, "c", 0)))


def test_checker_catches_logs_that_agree_on_a_term_but_not_before_it() -> None:
    chk = SafetyChecker()
    d1, d2 = SimDisk(), SimDisk()
    _persist(chk, "a", d1, Ready(entries=(Entry(1, 1), Entry(2, 2))))
    _persist(chk, "b", d2, Ready(entries=(Entry(2, 1),)))
    with pytest.raises(InvariantViolation, match="log matching"):
        _persist(chk, "b", d2, Ready(entries=(Entry(2, 2),)))


def test_checker_catches_same_index_and_term_with_different_content() -> None:
    chk = SafetyChecker()
    _persist(chk, "a", SimDisk(), Ready(entries=(Entry(1, 1, data=b"x"),)))
    with pytest.raises(InvariantViolation, match="log matching"):
        _persist(chk, "b", SimDisk(), Ready(entries=(Entry(1, 1, data=b"y"),)))


def test_checker_catches_a_committed_entry_being_overwritten() -> None:
    chk = SafetyChecker()
    disk = SimDisk()
    _persist(chk, "a", disk, Ready(entries=_entries(1, 3, 1), hard_state=HardState(1, None, 2)))
    with pytest.raises(InvariantViolation, match="committed entries are never removed"):
        chk.before_persist("a", disk, Ready(entries=_entries(2, 2, 2)))


def test_checker_catches_a_leader_missing_a_committed_entry() -> None:
    chk = SafetyChecker()
    d1, d2 = SimDisk(), SimDisk()
    _persist(chk, "a", d1, Ready(entries=_entries(1, 2, 1), hard_state=HardState(1, "a", 2)))
    _persist(chk, "b", d2, Ready(entries=_entries(1, 1, 1), hard_state=HardState(2, "b", 1)))
    with pytest.raises(InvariantViolation, match="leader completeness"):
        chk.observe_role("b", 2, Role.LEADER, d2)


def test_checker_lets_a_late_winner_of_an_old_term_lack_later_commits() -> None:
    # a candidate of term 2 may win late (its votes were delayed) after term 3 committed
    # entries it never saw: leader completeness only covers entries committed before its term
    chk = SafetyChecker()
    d1, d2 = SimDisk(), SimDisk()
    _persist(chk, "a", d1, Ready(entries=_entries(1, 2, 3), hard_state=HardState(3, "a", 2)))
    _persist(chk, "b", d2, Ready(hard_state=HardState(2, "b", 0)))
    chk.observe_role("b", 2, Role.LEADER, d2)
    with pytest.raises(InvariantViolation, match="leader completeness"):
        chk.observe_role("b", 4, Role.LEADER, d2)


def test_checker_catches_nodes_applying_different_entries_at_one_index() -> None:
    chk = SafetyChecker()
    chk.on_apply("a", Entry(1, 1, data=b"x"), 1)
    with pytest.raises(InvariantViolation, match="state machine safety"):
        chk.on_apply("b", Entry(2, 1, data=b"y"), 2)


def test_checker_catches_an_apply_that_skips_an_index() -> None:
    chk = SafetyChecker()
    chk.on_apply("a", Entry(1, 1), 1)
    with pytest.raises(InvariantViolation, match="apply in order"):
        chk.on_apply("a", Entry(1, 3), 1)


def test_checker_catches_snapshots_that_differ_at_one_index() -> None:
    chk = SafetyChecker()
    meta = SnapshotMeta(5, 1, ConfState())
    chk.on_snapshot_created("a", Snapshot(meta, b"one"))
    with pytest.raises(InvariantViolation, match="snapshot safety"):
        chk.on_restore("b", Snapshot(meta, b"two"))


def test_checker_catches_an_acknowledged_write_that_was_not_committed() -> None:
    chk = SafetyChecker()
    chk.on_apply("a", Entry(1, 1, data=b"x"), 1)
    chk.on_ack("a", Entry(1, 1, data=b"x"))
    with pytest.raises(InvariantViolation, match="acknowledged writes are kept"):
        chk.on_ack("b", Entry(2, 2, data=b"y"))


# --- public surface -----------------------------------------------------------


def test_dcrond_testing_exports_exactly_its_public_names() -> None:
    import types

    import dcrond.testing as pkg

    for name in pkg.__all__:
        assert getattr(pkg, name) is not None, name
    public = {
        n
        for n, v in vars(pkg).items()
        if not n.startswith("_") and n != "annotations" and not isinstance(v, types.ModuleType)
    }
    assert public == set(pkg.__all__)
