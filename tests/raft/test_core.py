"""RaftCore: elections, replication, commit rules, durability order and term rules.

The ``Net`` helper here is a minimal driver: it persists each Ready into a
per-node "disk", routes messages through inboxes (optionally cut links) and
applies committed entries, exactly in the order ``Ready`` prescribes. Other
test_core_*.py files import it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from dcrond.errors import InvalidRequest, NotLeader
from dcrond.raft import (
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    NodeId,
    RaftCore,
    Ready,
    Role,
    Snapshot,
    VoteRequest,
    VoteResponse,
    decode_conf_change,
)


@dataclass
class Disk:
    """What handled Readies persisted, plus the applied entries."""

    conf: ConfState
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    applied: list[Entry] = field(default_factory=list)
    applied_index: int = 0

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            idx = rd.snapshot.meta.index
            same = [e for e in self.entries if e.index == idx and e.term == rd.snapshot.meta.term]
            self.entries = [e for e in self.entries if e.index > idx] if same else []
            self.snapshot = rd.snapshot
        if rd.entries:
            first = rd.entries[0].index
            self.entries = [e for e in self.entries if e.index < first] + list(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def apply(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.applied_index = rd.snapshot.meta.index
        for e in rd.committed:
            assert e.index == self.applied_index + 1, "applied out of order"
            self.applied.append(e)
            self.applied_index = e.index


def check_durable(disk: Disk, rd: Ready) -> None:
    """After persisting ``rd``: what it reports committed is on this node's disk."""
    held = {(e.index, e.term) for e in disk.entries}
    snap = disk.snapshot.meta.index if disk.snapshot is not None else 0
    for e in rd.committed:
        assert e.index <= snap or (e.index, e.term) in held, f"{e} applied before persisted"
    last = disk.entries[-1].index if disk.entries else snap
    assert disk.hard_state.commit <= last, "commit index beyond the durable log"


def node_ids(n: int) -> list[NodeId]:
    return [f"n{i}" for i in range(1, n + 1)]


class Net:
    """A hand-driven cluster of cores (see the module docstring)."""

    def __init__(
        self,
        n: int = 3,
        *,
        learners: Iterable[NodeId] = (),
        config: Config | None = None,
        seed: int = 0,
        extra: Iterable[NodeId] = (),
    ) -> None:
        ids = node_ids(n)
        learners = list(learners)
        self.conf = ConfState(frozenset(ids), frozenset(learners))
        self.config = config or Config(election_ticks=10, heartbeat_ticks=1)
        self.rng = random.Random(seed)
        self.disks: dict[NodeId, Disk] = {}
        self.cores: dict[NodeId, RaftCore] = {}
        self.inbox: dict[NodeId, list[Message]] = {}
        self.cut: set[frozenset[NodeId]] = set()
        self.sent: list[Message] = []
        for i in [*ids, *learners]:
            self.add(i, self.conf)
        for i in extra:
            self.add(i, ConfState())

    def add(self, node: NodeId, conf: ConfState) -> RaftCore:
        self.disks[node] = Disk(conf)
        self.inbox[node] = []
        self.cores[node] = self.boot(node)
        return self.cores[node]

    def boot(self, node: NodeId) -> RaftCore:
        d = self.disks[node]
        return RaftCore(
            node,
            self.config,
            random.Random(self.rng.random()),
            hard_state=d.hard_state,
            snapshot=d.snapshot,
            entries=d.entries,
            conf=d.conf,
            applied=d.applied_index,
        )

    def restart(self, node: NodeId) -> RaftCore:
        self.cores[node] = self.boot(node)
        self.inbox[node] = []
        return self.cores[node]

    def __getitem__(self, node: NodeId) -> RaftCore:
        return self.cores[node]

    def handle(self, node: NodeId) -> Ready | None:
        core = self.cores[node]
        if not core.has_ready():
            return None
        rd = core.ready()
        self.send(node, rd.early_messages)
        disk = self.disks[node]
        disk.persist(rd)
        check_durable(disk, rd)
        self.send(node, rd.messages)
        disk.apply(rd)
        core.advance(rd)
        return rd

    def crash_mid_ready(self, node: NodeId) -> None:
        """Take a Ready, send its early messages, and crash before persisting it."""
        core = self.cores[node]
        if core.has_ready():
            self.send(node, core.ready().early_messages)
        self.restart(node)

    def send(self, node: NodeId, msgs: Iterable[Message]) -> None:
        for m in msgs:
            assert m.frm == node and m.to != node, "a node sent a message to itself"
            self.sent.append(m)
            if m.to in self.inbox and frozenset((m.frm, m.to)) not in self.cut:
                self.inbox[m.to].append(m)

    def deliver(self, node: NodeId) -> int:
        msgs, self.inbox[node] = self.inbox[node], []
        for m in msgs:
            self.cores[node].step(m)
        return len(msgs)

    def stabilize(self, rounds: int = 1000) -> None:
        for _ in range(rounds):
            busy = False
            for i in list(self.cores):
                busy |= self.handle(i) is not None
            for i in list(self.cores):
                busy |= self.deliver(i) > 0
            if not busy:
                return
        raise AssertionError("cluster did not settle")

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for core in self.cores.values():
                core.tick()
            self.stabilize()

    def elect(self, node: NodeId = "n1") -> RaftCore:
        self.cores[node].campaign()
        self.stabilize()
        assert self.cores[node].role is Role.LEADER
        return self.cores[node]

    def leaders(self) -> list[NodeId]:
        return [i for i, c in self.cores.items() if c.role is Role.LEADER]

    def applied_data(self, node: NodeId) -> list[bytes]:
        return [e.data for e in self.disks[node].applied if e.kind == EntryKind.NORMAL]


# --- elections ----------------------------------------------------------------


def test_campaign_elects_a_leader_and_commits_its_noop_everywhere() -> None:
    net = Net(3)
    leader = net.elect("n1")
    assert leader.term == 2  # term 1 is the bootstrap entries'
    for i in ("n2", "n3"):
        assert net[i].leader == "n1"
        assert net[i].commit_index == 4
        kinds = [e.kind for e in net.disks[i].applied]
        assert kinds == [EntryKind.CONFIG] * 3 + [EntryKind.NOOP]


def test_a_new_cluster_writes_its_membership_into_the_log() -> None:
    core = RaftCore(
        "b", Config(), random.Random(0), conf=ConfState(frozenset("ab"), frozenset("c"))
    )
    rd = core.ready()
    assert rd.hard_state == HardState(1, None, 3)
    assert [decode_conf_change(e.data) for e in rd.entries] == [
        ConfChange(ConfChangeType.ADD_VOTER, "a"),
        ConfChange(ConfChangeType.ADD_VOTER, "b"),
        ConfChange(ConfChangeType.ADD_LEARNER, "c"),
    ]
    assert rd.committed == rd.entries
    assert {e.term for e in rd.entries} == {1}


def test_a_joining_node_learns_the_membership_from_the_log_not_from_itself() -> None:
    """A new host (empty membership) replays the founding members from the log."""
    net = Net(3, extra=["x"])
    net.elect("n1")
    net["n1"].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "x"))
    net.stabilize()
    net["n1"].propose_conf_change(ConfChange(ConfChangeType.PROMOTE_LEARNER, "x"))
    net.stabilize()
    assert net["x"].conf == ConfState(frozenset({"n1", "n2", "n3", "x"}))
    # cut off, the newcomer cannot elect itself: it needs 3 of 4 votes
    net.cut |= {frozenset(("x", n)) for n in ("n1", "n2", "n3")}
    for _ in range(100):
        net["x"].tick()
        net.stabilize()
    assert net["x"].role is not Role.LEADER


def test_election_timeout_is_drawn_uniformly_from_e_to_2e() -> None:
    seen: set[int] = set()
    for seed in range(60):
        core = RaftCore(
            "a", Config(election_ticks=5), random.Random(seed), conf=ConfState(frozenset("a"))
        )
        ticks = 0
        while core.role is Role.FOLLOWER:
            core.tick()
            ticks += 1
        seen.add(ticks)
    assert seen == {5, 6, 7, 8, 9}


def test_single_voter_elects_itself_and_commits_in_the_same_ready_it_persists() -> None:
    core = RaftCore("a", Config(), random.Random(1), conf=ConfState(frozenset("a")))
    core.campaign()
    assert core.role is Role.LEADER
    rd = core.ready()
    assert rd.hard_state == HardState(2, "a", 2)
    assert [e.index for e in rd.entries] == [1, 2]  # bootstrap entry, then the NOOP
    assert [e.index for e in rd.committed] == [1, 2]
    core.advance(rd)
    index = core.propose(b"x")
    rd = core.ready()
    # the entry is handed to persist in the same Ready that reports it committed
    assert [e.index for e in rd.entries] == [index]
    assert [e.index for e in rd.committed] == [index]
    assert rd.messages == ()


def test_followers_time_out_and_one_of_them_becomes_leader() -> None:
    net = Net(3, seed=7)
    for _ in range(40):
        net.tick_all()
        if net.leaders():
            break
    assert len(net.leaders()) == 1


def test_learner_and_non_member_never_campaign() -> None:
    net = Net(1, learners=["n9"], extra=["x"])
    for _ in range(100):
        net["n9"].tick()
        net["x"].tick()
    assert net["n9"].role is Role.LEARNER
    assert net["x"].role is Role.FOLLOWER
    assert net["x"].term == 0 and net["n9"].term == 1
    net.handle("n9")
    net["n9"].campaign()
    assert not net["n9"].has_ready()
    assert net["n9"].role is Role.LEARNER


def test_vote_is_persisted_before_the_response_is_sent() -> None:
    net = Net(3)
    net["n1"].campaign()
    net.stabilize()
    # n2's Ready that carried its VoteResponse also carried term+vote
    net2 = Net(3, config=Config(prevote=False))
    net2["n1"].campaign()
    net2.handle("n1")
    net2.deliver("n2")
    rd = net2["n2"].ready()
    assert rd.hard_state == HardState(2, "n1", 3)
    assert any(isinstance(m, VoteResponse) and m.granted for m in rd.messages)


def test_stale_log_cannot_win_a_vote() -> None:
    net = Net(3)
    net.elect("n1")
    net["n1"].propose(b"a")
    net.cut.add(frozenset(("n1", "n3")))
    net.cut.add(frozenset(("n2", "n3")))
    net.stabilize()
    net.cut.clear()
    # n3 misses "a"; its log is behind, so n2 refuses it even with no leader around
    req = VoteRequest("n3", "n2", 5, net["n3"].last_index, net["n3"].term, prevote=False)
    net["n2"].tick()  # (lease does not matter: check with check_quorum off below)
    core = RaftCore(
        "n2",
        Config(check_quorum=False),
        random.Random(0),
        hard_state=net.disks["n2"].hard_state,
        entries=net.disks["n2"].entries,
        conf=net.conf,
    )
    core.step(req)
    rd = core.ready()
    assert [m for m in rd.messages if isinstance(m, VoteResponse)] == [
        VoteResponse("n2", "n3", 5, False)
    ]
    assert rd.hard_state is not None and rd.hard_state.vote is None


# --- replication and commit -----------------------------------------------------


def test_proposals_commit_and_apply_in_the_same_order_everywhere() -> None:
    net = Net(5)
    net.elect("n1")
    for k in range(20):
        net["n1"].propose(b"%d" % k)
        if k % 3 == 0:
            net.stabilize()
    net.stabilize()
    expected = [b"%d" % k for k in range(20)]
    for i in net.cores:
        assert net.applied_data(i) == expected


def test_propose_on_a_follower_raises_not_leader_with_a_hint() -> None:
    net = Net(3)
    net.elect("n1")
    with pytest.raises(NotLeader) as exc:
        net["n2"].propose(b"x")
    assert exc.value.leader == "n1"


def test_minority_cannot_commit() -> None:
    net = Net(3)
    net.elect("n1")
    net.cut |= {frozenset(("n1", "n2")), frozenset(("n1", "n3"))}
    index = net["n1"].propose(b"lost?")
    net.stabilize()
    assert net["n1"].commit_index < index


def test_previous_term_entries_commit_only_through_a_current_term_entry() -> None:
    """Figure 8: an old-term entry on a majority is not committed by counting."""
    net = Net(3, config=Config(prevote=False, check_quorum=False))
    net.elect("n1")
    # n1 appends "old" and gets it to n2 only, but hears no acks
    net.cut |= {frozenset(("n1", "n3"))}
    idx = net["n1"].propose(b"old")
    net.handle("n1")
    net.deliver("n2")
    net.handle("n2")
    net.inbox["n1"].clear()  # the ack is lost
    assert net["n1"].commit_index < idx
    # n1 crashes; n2 becomes leader of term 2: "old" (term 1) is on n2 and n1
    net.cut = {frozenset(("n1", "n2")), frozenset(("n1", "n3"))}
    net["n2"].campaign()
    net.stabilize()
    assert net["n2"].role is Role.LEADER
    rd_noop = net.disks["n2"].entries[-1]
    assert rd_noop.kind == EntryKind.NOOP and rd_noop.term == net["n2"].term
    # "old" commits only together with n2's NOOP of the new term
    assert net["n2"].commit_index == rd_noop.index
    assert [e.data for e in net.disks["n3"].applied if e.kind == EntryKind.NORMAL] == [b"old"]


def test_duplicated_and_reordered_appends_are_harmless() -> None:
    net = Net(3)
    net.elect("n1")
    for k in range(6):
        net["n1"].propose(b"%d" % k)
        net.handle("n1")
    msgs = list(net.inbox["n2"])
    net.inbox["n2"] = list(reversed(msgs)) + msgs + msgs[:2]
    net.stabilize()
    assert net.applied_data("n2") == [b"%d" % k for k in range(6)]


def test_stale_term_messages_are_ignored_or_answered_with_the_new_term() -> None:
    net = Net(3)
    net.elect("n1")
    old = AppendEntries("n3", "n2", 1, 3, 1, (Entry(1, 4, EntryKind.NORMAL, b"x"),), 5)
    net["n2"].step(old)
    rd = net["n2"].ready()
    assert rd.messages == (AppendResponse("n2", "n3", 2, False, 0),)
    assert net["n2"].last_index == 4 and net["n2"].commit_index == 4


def test_messages_for_another_node_or_from_self_are_ignored() -> None:
    net = Net(3)
    net.elect("n1")
    net["n2"].step(AppendEntries("n1", "n3", 9, 0, 0, (), 0))
    net["n2"].step(AppendEntries("n2", "n2", 9, 0, 0, (), 0))
    assert net["n2"].term == 2 and not net["n2"].has_ready()


def test_restart_resumes_from_durable_state_without_reapplying() -> None:
    net = Net(3)
    net.elect("n1")
    for k in range(3):
        net["n1"].propose(b"%d" % k)
    net.stabilize()
    before = net.applied_data("n2")
    core = net.restart("n2")
    assert core.term == 2 and core.commit_index == net["n1"].commit_index
    assert core.applied_index == net.disks["n2"].applied_index
    net.stabilize()
    assert net.applied_data("n2") == before
    net["n1"].propose(b"after")
    net.stabilize()
    assert net.applied_data("n2") == [*before, b"after"]


def test_ready_without_advance_does_not_hand_out_entries_twice() -> None:
    net = Net(1)
    core = net.elect("n1")
    core.propose(b"a")
    r1 = core.ready()
    core.propose(b"b")
    r2 = core.ready()
    assert [e.data for e in r1.entries] == [b"a"]
    assert [e.data for e in r2.entries] == [b"b"]
    assert [e.data for e in r1.committed] == [b"a"]
    assert [e.data for e in r2.committed] == [b"b"]
    core.advance(r1)
    core.advance(r2)
    assert core.applied_index == core.last_index


def test_compact_refuses_beyond_applied_and_wrong_meta() -> None:
    net = Net(1)
    core = net.elect("n1")
    index = core.propose(b"a")
    with pytest.raises(InvalidRequest):
        core.compact(Snapshot(core.snapshot_meta(index), b""))
    net.stabilize()
    meta = core.snapshot_meta(index)
    with pytest.raises(InvalidRequest):
        core.compact(Snapshot(type(meta)(index, meta.term + 1, meta.conf), b""))
    with pytest.raises(InvalidRequest):
        core.compact(Snapshot(type(meta)(index, meta.term, ConfState()), b""))
    core.compact(Snapshot(meta, b"image"))
    assert core.status().snapshot_index == index
