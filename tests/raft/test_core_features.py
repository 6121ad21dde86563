"""RaftCore features one at a time: PreVote, CheckQuorum, flow control, batching,
snapshots, membership refusals, ReadIndex, leadership transfer, hostile input."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcrond.errors import InvalidRequest, NotLeader
from dcrond.raft import (
    MESSAGE_TYPES,
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryKind,
    InstallSnapshot,
    Message,
    ProgressState,
    RaftCore,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from tests.raft.test_core import Net

CFG = Config(election_ticks=5, heartbeat_ticks=1)


def cc(kind: ConfChangeType, node: str) -> ConfChange:
    return ConfChange(kind, node)


def appends(msgs: list[Message], to: str) -> list[AppendEntries]:
    return [m for m in msgs if isinstance(m, AppendEntries) and m.to == to and m.entries]


# --- PreVote and CheckQuorum ------------------------------------------------------


def test_prevote_does_not_change_anyones_term_when_it_fails() -> None:
    net = Net(3, config=CFG)
    net.elect("n1")
    net.cut |= {frozenset(("n3", "n1")), frozenset(("n3", "n2"))}
    for _ in range(50):
        net["n3"].tick()
        net.stabilize()
    assert net["n3"].role is Role.PRE_CANDIDATE
    assert {c.term for c in net.cores.values()} == {2}


def test_a_node_in_a_leaders_lease_ignores_prevotes_but_grants_once_it_expires() -> None:
    net = Net(3, config=CFG)
    net.elect("n1")
    probe = VoteRequest("n3", "n2", 3, net["n2"].last_index, 2, prevote=True)
    net["n2"].step(probe)
    assert not net["n2"].has_ready()  # ignored: n2 heard from n1 just now
    net.cut |= {frozenset(("n1", "n2"))}
    for _ in range(CFG.election_ticks):
        net["n2"].tick()  # the lease ends after election_ticks without the leader
    net["n2"].step(probe)
    rd = net["n2"].ready()
    assert VoteResponse("n2", "n3", 3, True, prevote=True) in rd.messages


def test_without_prevote_the_checkquorum_lease_still_protects_the_leader() -> None:
    cfg = Config(election_ticks=5, heartbeat_ticks=1, prevote=False)
    net = Net(3, config=cfg)
    net.elect("n1")
    net.cut |= {frozenset(("n3", "n1"))}  # the A-C cut of the partial partition
    for _ in range(60):
        net.tick_all()
    assert net["n1"].role is Role.LEADER, "n3's vote requests did not depose n1"
    assert net["n2"].term == net["n1"].term


def test_leader_in_a_minority_steps_down_after_an_election_timeout() -> None:
    net = Net(5, config=CFG)
    net.elect("n1")
    net.cut |= {frozenset(("n1", n)) for n in ("n3", "n4", "n5")}
    for _ in range(2 * CFG.election_ticks):
        net["n1"].tick()
        net["n2"].tick()
        net.stabilize()
    assert net["n1"].role is Role.FOLLOWER
    with pytest.raises(NotLeader):
        net["n1"].propose(b"x")


def test_leader_with_check_quorum_off_stays_leader_alone() -> None:
    cfg = Config(election_ticks=5, heartbeat_ticks=1, check_quorum=False)
    net = Net(3, config=cfg)
    net.elect("n1")
    net.cut |= {frozenset(("n1", "n2")), frozenset(("n1", "n3"))}
    for _ in range(20):
        net["n1"].tick()
    assert net["n1"].role is Role.LEADER


def test_partial_partition_does_not_stall_the_cluster() -> None:
    """A-B and B-C up, A-C down, whoever leads: proposals keep committing."""
    for leader in ("n1", "n2", "n3"):
        net = Net(3, config=CFG, seed=3)
        net.elect(leader)
        net.cut |= {frozenset(("n1", "n3"))}
        for k in range(120):
            net.tick_all()
            for node in net.leaders():
                net[node].propose(b"%d" % k)
            net.stabilize()
        committed = max(len(net.applied_data(n)) for n in net.cores)
        assert committed >= 100, f"leader {leader}: only {committed} committed"
        assert max(c.term for c in net.cores.values()) <= 4, "terms kept climbing"


# --- replication: flow control, batching, back-off -----------------------------------


def test_at_most_max_inflight_batches_are_unacknowledged() -> None:
    cfg = Config(election_ticks=5, heartbeat_ticks=1, max_inflight=3, max_entries_bytes=1)
    net = Net(2, config=cfg)
    leader = net.elect("n1")
    for k in range(10):
        leader.propose(b"%d" % k)
    rd = net.handle("n1")
    assert rd is not None
    batches = appends(list(rd.messages), "n2")
    assert len(batches) == 3
    assert [len(b.entries) for b in batches] == [1, 1, 1]
    assert leader.status().progress[0].inflight == 3
    # one acknowledgement frees one slot: exactly one more batch goes out
    net.inbox["n2"] = net.inbox["n2"][:1]
    net.deliver("n2")
    net.handle("n2")
    net.deliver("n1")
    rd = net.handle("n1")
    assert rd is not None
    assert len(appends(list(rd.messages), "n2")) == 1


def test_probe_state_sends_one_append_at_a_time() -> None:
    cfg = Config(election_ticks=5, heartbeat_ticks=1, max_inflight=4, max_entries_bytes=1)
    net = Net(2, config=cfg)
    net["n1"].campaign()
    for _ in range(2):  # pre-vote, then vote
        net.handle("n1")
        net.deliver("n2")
        net.handle("n2")
        net.deliver("n1")
    leader = net["n1"]
    assert leader.role is Role.LEADER
    for k in range(5):
        leader.propose(b"%d" % k)
    assert leader.status().progress[0].state is ProgressState.PROBE
    rd = net.handle("n1")
    assert rd is not None
    assert len(appends(list(rd.messages), "n2")) == 1  # probing: one, then wait
    net.deliver("n2")
    net.handle("n2")
    net.deliver("n1")
    assert leader.status().progress[0].state is ProgressState.REPLICATE
    rd = net.handle("n1")
    assert rd is not None
    assert len(appends(list(rd.messages), "n2")) == 4  # streaming: the whole window


def test_appends_respect_max_entries_bytes() -> None:
    cfg = Config(election_ticks=5, heartbeat_ticks=1, max_entries_bytes=10, max_inflight=100)
    net = Net(2, config=cfg)
    leader = net.elect("n1")
    for size in (3, 4, 5, 1, 12, 2, 2):
        leader.propose(b"x" * size)
    rd = net.handle("n1")
    assert rd is not None
    sizes = [[len(e.data) for e in m.entries] for m in appends(list(rd.messages), "n2")]
    assert sizes == [[3, 4], [5, 1], [12], [2, 2]]


def test_fast_back_off_skips_a_whole_term_per_round_trip() -> None:
    """A follower with a long suffix of a stale term is repaired in two round trips."""
    cfg = Config(election_ticks=5, heartbeat_ticks=1, prevote=False, check_quorum=False)
    net = Net(3, config=cfg)
    net.elect("n1")
    net.cut |= {frozenset(("n1", "n2")), frozenset(("n1", "n3"))}
    for k in range(50):  # n1 alone appends 50 entries of term 2
        net["n1"].propose(b"stale%d" % k)
    net.stabilize()
    net["n2"].campaign()
    net.stabilize()
    for k in range(5):
        net["n2"].propose(b"new%d" % k)
    net.stabilize()
    net.sent.clear()
    net.cut.clear()
    net["n2"].tick()
    net.stabilize()
    rejections = [m for m in net.sent if isinstance(m, AppendResponse) and not m.success]
    assert len(rejections) <= 2
    assert net.applied_data("n1") == net.applied_data("n2")
    assert net["n1"].last_index == net["n2"].last_index


def test_commit_index_sent_to_a_follower_never_exceeds_its_match() -> None:
    net = Net(3, config=CFG)
    net.elect("n1")
    net.cut |= {frozenset(("n1", "n3"))}
    for k in range(5):
        net["n1"].propose(b"%d" % k)
    net.stabilize()
    net.cut.clear()
    net.sent.clear()
    net["n1"].tick()
    net.stabilize()
    match_n3 = 4  # n3 had bootstrap entries and the NOOP
    hb = [m for m in net.sent if isinstance(m, AppendEntries) and m.to == "n3" and not m.entries]
    assert hb and hb[0].commit == match_n3


# --- snapshots ----------------------------------------------------------------------


def test_snapshot_goes_out_in_chunks_one_at_a_time_and_installs() -> None:
    cfg = Config(election_ticks=5, heartbeat_ticks=1, snapshot_chunk_bytes=4)
    net = Net(3, config=cfg)
    leader = net.elect("n1")
    net.cut |= {frozenset(("n1", "n3")), frozenset(("n2", "n3"))}
    for k in range(4):
        leader.propose(b"%d" % k)
    net.stabilize()
    image = bytes(range(10))
    index = leader.commit_index
    leader.compact(Snapshot(leader.snapshot_meta(index), image))
    net.cut.clear()
    net.sent.clear()
    for _ in range(3):
        net.tick_all()
    chunks = [m for m in net.sent if isinstance(m, InstallSnapshot)]
    assert [(c.offset, len(c.chunk), c.done) for c in chunks] == [
        (0, 4, False),
        (4, 4, False),
        (8, 2, True),
    ]
    assert b"".join(c.chunk for c in chunks) == image
    assert net.disks["n3"].snapshot == Snapshot(leader.snapshot_meta(index), image)
    assert net["n3"].commit_index >= index
    leader.propose(b"after")
    net.stabilize()
    assert net.applied_data("n3")[-1] == b"after"


def test_out_of_order_snapshot_chunk_makes_the_leader_start_over() -> None:
    core = RaftCore("b", CFG, random.Random(0), conf=ConfState(frozenset("ab")))
    core.advance(core.ready())
    meta = SnapshotMeta(10, 2, ConfState(frozenset("ab")))
    core.step(InstallSnapshot("a", "b", 2, meta, 4, b"late", False))
    rd = core.ready()
    assert SnapshotResponse("b", "a", 2, 10, 0, False, False) in rd.messages
    core.step(InstallSnapshot("a", "b", 2, meta, 0, b"abcd", False))
    core.step(InstallSnapshot("a", "b", 2, meta, 0, b"abcd", False))  # duplicate: restart
    core.step(InstallSnapshot("a", "b", 2, meta, 4, b"ef", True))
    rd = core.ready()
    assert rd.snapshot == Snapshot(meta, b"abcdef")
    assert rd.committed == ()
    assert core.commit_index == 10 and core.last_index == 10


def test_snapshot_keeps_a_matching_log_suffix() -> None:
    entries = [Entry(1, i, EntryKind.NORMAL, b"%d" % i) for i in range(1, 8)]
    core = RaftCore("b", CFG, random.Random(0), entries=entries, conf=ConfState(frozenset("ab")))
    meta = SnapshotMeta(5, 1, ConfState(frozenset("ab")))
    core.step(InstallSnapshot("a", "b", 2, meta, 0, b"img", True))
    # it already holds entry (5, term 1): it just commits up to it, no image needed
    rd = core.ready()
    assert rd.snapshot is None and core.commit_index == 5 and core.last_index == 7
    assert SnapshotResponse("b", "a", 2, 5, 0, True) in rd.messages


# --- membership ---------------------------------------------------------------------


def test_conf_change_refusals() -> None:
    net = Net(3, config=CFG, extra=["x"])
    with pytest.raises(NotLeader):
        net["n2"].propose_conf_change(cc(ConfChangeType.ADD_LEARNER, "x"))
    net["n1"].campaign()
    for _ in range(2):  # pre-vote, then vote: leader, NOOP appended but not committed
        net.handle("n1")
        net.deliver("n2")
        net.handle("n2")
        net.deliver("n1")
    assert net["n1"].role is Role.LEADER
    with pytest.raises(InvalidRequest, match="not committed an entry of its term"):
        net["n1"].propose_conf_change(cc(ConfChangeType.ADD_LEARNER, "x"))
    net.stabilize()
    net["n1"].propose_conf_change(cc(ConfChangeType.ADD_LEARNER, "x"))
    with pytest.raises(InvalidRequest, match="not committed yet"):
        net["n1"].propose_conf_change(cc(ConfChangeType.PROMOTE_LEARNER, "x"))
    net.stabilize()
    for bad in (
        cc(ConfChangeType.PROMOTE_LEARNER, "n2"),
        cc(ConfChangeType.ADD_VOTER, "x"),
        cc(ConfChangeType.ADD_LEARNER, "n3"),
        cc(ConfChangeType.REMOVE_NODE, "zz"),
    ):
        with pytest.raises(InvalidRequest):
            net["n1"].propose_conf_change(bad)
    net["n1"].transfer_leadership("n2")
    with pytest.raises(NotLeader):
        net["n1"].propose_conf_change(cc(ConfChangeType.REMOVE_NODE, "x"))


def test_removing_the_last_voter_is_refused() -> None:
    net = Net(1, config=CFG)
    net.elect("n1")
    with pytest.raises(InvalidRequest, match="last voter"):
        net["n1"].propose_conf_change(cc(ConfChangeType.REMOVE_NODE, "n1"))


def test_learners_never_count_for_commit() -> None:
    net = Net(1, learners=["l1", "l2"], config=CFG)
    net.elect("n1")
    net.cut |= {frozenset(("n1", "l1")), frozenset(("n1", "l2"))}
    index = net["n1"].propose(b"x")
    net.stabilize()
    assert net["n1"].commit_index == index  # n1 alone is the quorum
    net2 = Net(2, learners=["l1"], config=CFG)
    net2.elect("n1")
    net2.cut |= {frozenset(("n1", "n2"))}
    index = net2["n1"].propose(b"x")
    net2.stabilize()
    assert net2["n1"].commit_index < index  # the learner's ack does not make a quorum


def test_removed_leader_steps_down_once_the_change_commits_and_the_rest_elect() -> None:
    net = Net(3, config=CFG)
    net.elect("n1")
    net["n1"].propose_conf_change(cc(ConfChangeType.REMOVE_NODE, "n1"))
    net.stabilize()
    assert net["n1"].role is Role.FOLLOWER
    assert net["n2"].commit_index == net["n1"].commit_index  # told before stepping down
    for _ in range(40):
        net.tick_all()
    assert len(net.leaders()) == 1 and net.leaders()[0] in ("n2", "n3")
    assert net["n1"].role is Role.FOLLOWER


# --- ReadIndex ----------------------------------------------------------------------


def test_read_index_on_a_single_node_answers_at_its_commit_index() -> None:
    net = Net(1, config=CFG)
    leader = net.elect("n1")
    leader.read_index(b"r1")
    rd = leader.ready()
    assert rd.read_states == (ReadState(b"r1", leader.commit_index),)


def test_duplicate_read_answers_are_handed_out_once() -> None:
    net = Net(3, config=CFG)
    net.elect("n1")
    net["n2"].read_index(b"r")
    net.handle("n2")
    net.deliver("n1")
    net.handle("n1")
    for n in ("n2", "n3"):
        net.deliver(n)
        net.handle(n)
    net.deliver("n1")
    rd = net.handle("n1")
    assert rd is not None
    answer = next(m for m in rd.messages if isinstance(m, ReadIndexResponse))
    net["n2"].step(answer)
    net["n2"].step(answer)
    assert net["n2"].ready().read_states == (ReadState(b"r", answer.index),)


def test_read_index_answers_the_commit_index_at_the_time_of_the_request() -> None:
    net = Net(3, config=CFG)
    leader = net.elect("n1")
    leader.propose(b"a")
    net.stabilize()
    at = leader.commit_index
    leader.read_index(b"r")
    leader.propose(b"b")  # commits in the same round trip, after the read arrived
    seen: list[ReadState] = []
    for _ in range(10):
        rd = net.handle("n1")
        if rd is not None:
            seen.extend(rd.read_states)
        for n in ("n2", "n3", "n1"):
            net.deliver(n)
            if n != "n1":
                net.handle(n)
    assert leader.commit_index > at
    assert seen == [ReadState(b"r", at)]


def test_read_index_with_no_leader_is_refused_at_once() -> None:
    net = Net(3, config=CFG)
    net["n2"].read_index(b"r")
    assert ReadState(b"r", 0) in net["n2"].ready().read_states


# --- leadership transfer ------------------------------------------------------------


def test_transfer_hands_over_and_refuses_proposals_meanwhile() -> None:
    net = Net(3, config=CFG)
    net.elect("n1")
    net["n1"].transfer_leadership("n3")
    with pytest.raises(NotLeader) as exc:
        net["n1"].propose(b"x")
    assert exc.value.leader == "n3"
    net.stabilize()
    assert net.leaders() == ["n3"]


def test_transfer_to_an_unreachable_node_is_abandoned_after_an_election_timeout() -> None:
    net = Net(3, config=CFG)
    net.elect("n1")
    net.cut |= {frozenset(("n1", "n3"))}
    net["n1"].transfer_leadership("n3")
    for _ in range(CFG.election_ticks):
        net["n1"].tick()
    assert net["n1"].propose(b"x") > 0
    assert net["n1"].status().transferee is None


def test_timeout_now_is_ignored_by_learners_and_stale_terms() -> None:
    net = Net(2, learners=["l"], config=CFG)
    net.elect("n1")
    net["l"].step(TimeoutNow("n1", "l", 2))
    net["n2"].step(TimeoutNow("n1", "n2", 1))
    assert net["l"].role is Role.LEARNER and net["l"].term == 2
    assert net["n2"].role is Role.FOLLOWER and net["n2"].term == 2


def test_transfer_errors() -> None:
    net = Net(2, learners=["l"], config=CFG)
    net.elect("n1")
    with pytest.raises(NotLeader):
        net["n2"].transfer_leadership("n1")
    with pytest.raises(InvalidRequest):
        net["n1"].transfer_leadership("l")


# --- hostile input ------------------------------------------------------------------

ids = st.sampled_from(["a", "b", "c", "zz"])
small = st.integers(-2, 12)
entry_st = st.builds(Entry, small, small, st.sampled_from(list(EntryKind)), st.binary(max_size=6))
conf_st = st.builds(ConfState, st.frozensets(ids, max_size=3), st.frozensets(ids, max_size=2))
meta_st = st.builds(SnapshotMeta, small, small, conf_st)
message_st = st.one_of(
    st.builds(VoteRequest, ids, st.just("b"), small, small, small, st.booleans(), st.booleans()),
    st.builds(VoteResponse, ids, st.just("b"), small, st.booleans(), st.booleans()),
    st.builds(
        AppendEntries,
        ids,
        st.just("b"),
        small,
        small,
        small,
        st.lists(entry_st, max_size=4).map(tuple),
        small,
        small,
    ),
    st.builds(AppendResponse, ids, st.just("b"), small, st.booleans(), small, small, small, small),
    st.builds(
        InstallSnapshot,
        ids,
        st.just("b"),
        small,
        meta_st,
        small,
        st.binary(max_size=4),
        st.booleans(),
    ),
    st.builds(
        SnapshotResponse, ids, st.just("b"), small, small, small, st.booleans(), st.booleans()
    ),
    st.builds(TimeoutNow, ids, st.just("b"), small),
    st.builds(ReadIndexRequest, ids, st.just("b"), small, st.binary(max_size=3)),
    st.builds(ReadIndexResponse, ids, st.just("b"), small, st.binary(max_size=3), small),
)


@settings(max_examples=150, deadline=None)
@given(msgs=st.lists(message_st, max_size=25), leader=st.booleans(), ticks=st.integers(0, 3))
def test_the_core_never_raises_on_messages_from_the_network(
    msgs: list[Message], leader: bool, ticks: int
) -> None:
    core = RaftCore("b", CFG, random.Random(0), conf=ConfState(frozenset("abc")))
    if leader:
        core.campaign()
        core.step(VoteResponse("a", "b", 2, True, prevote=True))
        core.step(VoteResponse("a", "b", 2, True))
    for m in msgs:
        core.step(m)
        for _ in range(ticks):
            core.tick()
        rd = core.ready()
        assert all(m.to != "b" for m in rd.messages)
        core.advance(rd)
    assert len(MESSAGE_TYPES) == 9


# --- sending before persisting (Config.send_appends_early) -----------------------------

EARLY = Config(election_ticks=5, heartbeat_ticks=1, send_appends_early=True)


def test_early_mode_puts_leader_appends_before_the_persist_step() -> None:
    net = Net(3, config=EARLY)
    leader = net.elect("n1")
    leader.propose(b"x")
    rd = leader.ready()
    assert rd.entries and not rd.messages
    assert {type(m) for m in rd.early_messages} == {AppendEntries}
    # followers' answers, whatever they are, wait for their own fsync
    net.send("n1", rd.early_messages)
    net.disks["n1"].persist(rd)
    leader.advance(rd)
    net.deliver("n2")
    rd2 = net["n2"].ready()
    assert rd2.early_messages == () and rd2.messages


def test_early_mode_leader_counts_itself_only_once_persisted() -> None:
    core = RaftCore("a", EARLY, random.Random(0), conf=ConfState(frozenset("a")))
    core.campaign()
    core.advance(core.ready())
    core.advance(core.ready())  # the NOOP commits once persisted
    index = core.propose(b"x")
    rd = core.ready()
    assert [e.index for e in rd.entries] == [index]
    assert rd.committed == () and core.commit_index < index
    core.advance(rd)
    assert core.commit_index == index
    assert [e.index for e in core.ready().committed] == [index]


def test_early_mode_never_sends_ahead_of_an_unpersisted_term() -> None:
    """A lone voter with a learner becomes leader in the very step that bumps its term."""
    net = Net(1, learners=["l"], config=EARLY)
    net["n1"].campaign()
    rd = net.handle("n1")
    assert rd is not None and rd.hard_state is not None and rd.hard_state.term == 2
    assert rd.early_messages == ()
    assert any(isinstance(m, AppendEntries) for m in rd.messages)
    net.stabilize()
    net["n1"].propose(b"x")
    rd = net.handle("n1")
    assert rd is not None and rd.early_messages  # the term is durable now: early again


def test_early_mode_crash_before_fsync_loses_nothing_committed() -> None:
    net = Net(3, config=EARLY)
    net.elect("n1")
    for k in range(3):
        net["n1"].propose(b"%d" % k)
    net.stabilize()
    committed = net.applied_data("n2")
    net["n1"].propose(b"lost-or-not")
    net.crash_mid_ready("n1")  # its followers got the entry, its own disk did not
    for _ in range(60):
        net.tick_all()
    applied = {n: net.applied_data(n) for n in net.cores}
    assert len({tuple(v) for v in applied.values()}) == 1
    assert applied["n1"][: len(committed)] == committed
