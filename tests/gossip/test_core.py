"""GossipCore, one member at a time: probes, Lifeguard, precedence, refutation, dissemination.

Each test builds one core that already knows a few members, feeds it
packets and ticks by hand, and reads what it hands back in ``Ready``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from dcrond.errors import InvalidRequest
from dcrond.gossip import (
    Ack,
    Address,
    Alive,
    Dead,
    EventKind,
    GossipConfig,
    GossipCore,
    IndirectPing,
    MemberState,
    Message,
    Nack,
    NodeMeta,
    Ping,
    PushPull,
    Ready,
    StateEntry,
    Suspect,
)
from dcrond.gossip._codec import encode_packet

CFG = GossipConfig()  # probe every 0.5 s, direct timeout 0.25 s, k = 3


def addr(name: str) -> Address:
    return (f"10.0.0.{ord(name[0])}", 7946)


def make(
    name: str = "a",
    others: Sequence[str] = ("b", "c", "d", "e"),
    cfg: GossipConfig = CFG,
    *,
    seed: int = 1,
) -> GossipCore:
    known = [StateEntry(o, addr(o), NodeMeta(), 0, MemberState.ALIVE) for o in others]
    return GossipCore(name, addr(name), NodeMeta(), cfg, random.Random(seed), now=0.0, known=known)


def take(c: GossipCore) -> Ready:
    rd = c.ready()
    c.advance(rd)
    return rd


def msgs(rd: Ready, kind: type) -> list[tuple[Address, Message]]:
    return [(p.to, m) for p in rd.packets for m in p.messages if isinstance(m, kind)]


def start_probe(c: GossipCore) -> tuple[float, Address, Ping]:
    """Tick until the core pings someone; (when, to whom, the ping)."""
    for _ in range(20):
        t = c.next_deadline()
        c.tick(t)
        pings = msgs(take(c), Ping)
        if pings:
            return t, pings[0][0], pings[0][1]  # type: ignore[return-value]
    raise AssertionError("no probe")


def state(c: GossipCore, name: str) -> tuple[MemberState, int]:
    m = c.member(name)
    assert m is not None
    return m.state, m.incarnation


# --- probing and Lifeguard -----------------------------------------------------------


def test_an_answered_probe_suspects_nobody_and_keeps_health() -> None:
    c = make()
    t, to, ping = start_probe(c)
    c.receive(t + 0.01, to, [Ack(ping.seq)])
    c.tick(t + CFG.probe_interval)
    assert not msgs(take(c), IndirectPing)
    assert all(m.state == MemberState.ALIVE for m in c.members())
    assert c.health == 0 and c.statistics().probes_failed == 0
    assert c.member(ping.target).last_seen == t + 0.01  # type: ignore[union-attr]


def test_a_silent_target_gets_k_indirect_probes_then_becomes_suspect() -> None:
    c = make()
    t, _, ping = start_probe(c)
    assert c.next_deadline() == pytest.approx(t + CFG.probe_timeout)
    c.tick(t + CFG.probe_timeout)
    ind = msgs(take(c), IndirectPing)
    assert len(ind) == CFG.indirect_checks
    assert {m.target for _, m in ind} == {ping.target}  # type: ignore[union-attr]
    assert all(m.nack for _, m in ind)  # type: ignore[union-attr]
    assert addr(ping.target) not in {to for to, _ in ind}
    c.tick(t + CFG.probe_interval)
    rd = take(c)
    assert [(e.kind, e.member.name) for e in rd.events] == [(EventKind.SUSPECT, ping.target)]
    assert state(c, ping.target) == (MemberState.SUSPECT, 0)
    # No helper sent a nack: each missing one counts against our own health.
    assert c.health == CFG.indirect_checks
    assert c.statistics().nacks_missed == CFG.indirect_checks


def test_nacks_from_helpers_show_our_network_works_so_health_is_spared() -> None:
    c = make()
    t, _, ping = start_probe(c)
    c.tick(t + CFG.probe_timeout)
    for to, _ in msgs(take(c), IndirectPing):
        c.receive(t + 0.3, to, [Nack(ping.seq)])
    c.tick(t + CFG.probe_interval)
    assert state(c, ping.target)[0] == MemberState.SUSPECT
    assert c.health == 0


def test_an_indirect_ack_forwarded_by_a_helper_counts_as_an_answer() -> None:
    c = make()
    t, _, ping = start_probe(c)
    c.tick(t + CFG.probe_timeout)
    helper = msgs(take(c), IndirectPing)[0][0]
    c.receive(t + 0.3, helper, [Ack(ping.seq)])
    c.tick(t + CFG.probe_interval)
    assert state(c, ping.target)[0] == MemberState.ALIVE


def test_a_poor_health_score_stretches_the_probe_period() -> None:
    c = make()
    t, _, _ = start_probe(c)
    c.tick(t + CFG.probe_timeout)
    take(c)
    c.tick(t + CFG.probe_interval)  # fails: health 3, and the next probe starts
    assert msgs(take(c), Ping)
    assert c.health == 3
    t2 = t + CFG.probe_interval
    # Unanswered again: the next probe starts (3 + 1) periods later, not one.
    now = t2
    while True:
        now = c.next_deadline()
        c.tick(now)
        if msgs(take(c), Ping):
            break
    assert now == pytest.approx(t2 + 4 * CFG.probe_interval)


def test_without_lifeguard_there_are_no_nacks_and_no_health_score() -> None:
    cfg = GossipConfig(lifeguard=False)
    c = make(cfg=cfg)
    t, _, _ = start_probe(c)
    c.tick(t + cfg.probe_timeout)
    assert not any(m.nack for _, m in msgs(take(c), IndirectPing))  # type: ignore[union-attr]
    c.tick(t + cfg.probe_interval)
    take(c)
    assert c.health == 0


def test_a_helper_pings_the_target_and_forwards_the_ack_or_a_nack() -> None:
    c = make()
    c.receive(1.0, addr("b"), [IndirectPing(41, "c", addr("c"), True)])
    (to, ping), *_ = msgs(take(c), Ping)
    assert to == addr("c") and ping.target == "c"  # type: ignore[union-attr]
    c.receive(1.01, addr("c"), [Ack(ping.seq)])  # type: ignore[union-attr]
    assert msgs(take(c), Ack) == [(addr("b"), Ack(41))]
    # A target that stays silent: a nack after the probe timeout, once.
    c.receive(2.0, addr("b"), [IndirectPing(42, "d", addr("d"), True)])
    take(c)
    c.tick(2.0 + CFG.probe_timeout)
    assert msgs(take(c), Nack) == [(addr("b"), Nack(42))]
    c.tick(3.0)
    assert msgs(take(c), Nack) == []


def test_a_ping_meant_for_someone_else_is_not_answered() -> None:
    c = make()
    c.receive(1.0, addr("b"), [Ping(5, "z", "b")])
    assert msgs(take(c), Ack) == []
    c.receive(1.0, addr("b"), [Ping(6, "a", "b")])
    assert msgs(take(c), Ack) == [(addr("b"), Ack(6))]


def test_a_ping_to_a_suspect_carries_the_suspicion_so_it_can_refute_at_once() -> None:
    c = make(others=("b",))
    c.receive(0.0, addr("c"), [Suspect("b", 0, "c")])
    take(c)
    _, to, _ = start_probe(c)
    assert to == addr("b")
    c2 = make(others=("b",))
    c2.receive(0.0, addr("c"), [Suspect("b", 0, "c")])
    take(c2)
    for _ in range(5):
        c2.tick(c2.next_deadline())
        rd = take(c2)
        if msgs(rd, Ping):
            assert (addr("b"), Suspect("b", 0, "a")) in msgs(rd, Suspect)
            return
    raise AssertionError("no ping")


def test_a_member_believed_dead_that_pings_us_is_told_so() -> None:
    c = make()
    c.receive(0.0, addr("c"), [Dead("b", 0, "c")])
    take(c)
    c.receive(1.0, addr("b"), [Ping(9, "a", "b")])
    assert (addr("b"), Suspect("b", 0, "a")) in msgs(take(c), Suspect)


# --- suspicion ------------------------------------------------------------------------


def _suspect_b(c: GossipCore, now: float = 0.0) -> None:
    c.receive(now, addr("c"), [Suspect("b", 0, "c")])
    take(c)


def test_an_unconfirmed_suspicion_runs_for_max_and_a_confirmed_one_for_min() -> None:
    names = [chr(ord("b") + i) for i in range(10)]  # 11 members: k = 3 can be met
    m = CFG.suspicion_mult  # k = m - 2 confirmations expected
    lo, hi = m * 1.0414 * 0.5, 6 * m * 1.0414 * 0.5  # log10(11) = 1.0414
    c = make(others=names)
    _suspect_b(c)
    assert c.suspicion_deadline("b") == pytest.approx(hi, rel=1e-3)
    c2 = make(others=names)
    _suspect_b(c2)
    for who in ("d", "e", "f", "g"):
        c2.receive(0.1, addr(who), [Suspect("b", 0, who)])
    take(c2)
    assert c2.suspicion_deadline("b") == pytest.approx(lo, rel=1e-3)
    # A new confirmation is passed on (so others can count it too); beyond k, none is news.
    c2.tick(c2._next_gossip)
    assert {x.frm for _, x in msgs(take(c2), Suspect)} == {"e"}  # type: ignore[union-attr]
    c2.tick(lo + 1e-6)
    rd = take(c2)
    assert (EventKind.DEAD, "b") in [(e.kind, e.member.name) for e in rd.events]
    assert state(c2, "b") == (MemberState.DEAD, 0)


def test_without_lifeguard_every_suspicion_runs_for_min() -> None:
    names = [chr(ord("b") + i) for i in range(10)]
    c = make(others=names, cfg=GossipConfig(lifeguard=False))
    _suspect_b(c)
    assert c.suspicion_deadline("b") == pytest.approx(CFG.suspicion_mult * 1.0414 * 0.5, rel=1e-3)


def test_too_few_members_to_confirm_means_min_at_once() -> None:
    c = make(others=("b",))  # n = 2: n - 2 < k
    _suspect_b(c)
    assert c.suspicion_deadline("b") == pytest.approx(CFG.suspicion_mult * 0.5)
    assert c.suspicion_deadline("c") is None


# --- precedence -------------------------------------------------------------------------

A = MemberState.ALIVE
S = MemberState.SUSPECT
D = MemberState.DEAD
L = MemberState.LEFT


def _in_state(st: MemberState, inc: int) -> GossipCore:
    c = make()
    if inc:
        c.receive(0.0, addr("c"), [Alive("b", inc, addr("b"), NodeMeta())])
    if st == S:
        c.receive(0.0, addr("c"), [Suspect("b", inc, "c")])
    elif st == D:
        c.receive(0.0, addr("c"), [Dead("b", inc, "c")])
    elif st == L:
        c.receive(0.0, addr("c"), [Dead("b", inc, "b")])
    take(c)
    assert state(c, "b") == (st, inc)
    return c


@pytest.mark.parametrize(
    ("before", "msg", "after"),
    [
        ((A, 2), Alive("b", 1, addr("b"), NodeMeta()), (A, 2)),  # old news
        ((A, 2), Alive("b", 3, addr("b"), NodeMeta()), (A, 3)),
        ((A, 2), Suspect("b", 1, "c"), (A, 2)),  # about an older incarnation
        ((A, 2), Suspect("b", 2, "c"), (S, 2)),
        ((A, 2), Suspect("b", 3, "c"), (S, 3)),
        ((A, 2), Dead("b", 2, "c"), (D, 2)),
        ((A, 2), Dead("b", 2, "b"), (L, 2)),
        ((S, 2), Alive("b", 2, addr("b"), NodeMeta()), (S, 2)),  # a refutation must be newer
        ((S, 2), Alive("b", 3, addr("b"), NodeMeta()), (A, 3)),
        ((S, 2), Dead("b", 1, "c"), (S, 2)),
        ((S, 2), Dead("b", 2, "c"), (D, 2)),
        ((D, 2), Alive("b", 2, addr("b"), NodeMeta()), (D, 2)),
        ((D, 2), Alive("b", 3, addr("b"), NodeMeta()), (A, 3)),
        ((D, 2), Suspect("b", 5, "c"), (D, 2)),  # nothing to suspect
        ((D, 2), Dead("b", 2, "b"), (L, 2)),  # a leave explains a death
        ((L, 2), Dead("b", 3, "c"), (L, 2)),  # a leave is final for that life
        ((L, 2), Alive("b", 3, addr("b"), NodeMeta()), (A, 3)),  # ... until it rejoins
    ],
)
def test_precedence(
    before: tuple[MemberState, int], msg: Message, after: tuple[MemberState, int]
) -> None:
    c = _in_state(*before)
    c.receive(1.0, addr("c"), [msg])
    assert state(c, "b") == after


def test_a_second_member_cannot_take_a_live_members_name() -> None:
    c = make()
    c.receive(1.0, ("10.9.9.9", 7946), [Alive("b", 7, ("10.9.9.9", 7946), NodeMeta())])
    assert c.member("b").address == addr("b")  # type: ignore[union-attr]


def test_a_dead_member_may_come_back_from_a_new_address_with_a_new_incarnation() -> None:
    c = _in_state(D, 2)
    c.receive(1.0, ("10.9.9.9", 7946), [Alive("b", 3, ("10.9.9.9", 7946), NodeMeta())])
    assert c.member("b").address == ("10.9.9.9", 7946)  # type: ignore[union-attr]
    assert state(c, "b") == (A, 3)


# --- about ourselves ----------------------------------------------------------------------


def test_a_suspicion_about_us_is_refuted_with_a_higher_incarnation() -> None:
    c = make()
    c.receive(1.0, addr("b"), [Suspect("a", 0, "b")])
    assert c.incarnation == 1 and c.health == 1
    c.receive(1.1, addr("b"), [Dead("a", 4, "b")])
    assert c.incarnation == 5
    c.tick(c.next_deadline())
    sent = [m for _, m in msgs(take(c), Alive)]
    assert Alive("a", 5, addr("a"), NodeMeta()) in sent
    assert c.statistics().refutations == 2


def test_stale_news_about_us_is_answered_with_our_current_incarnation_without_a_bump() -> None:
    c = make()
    c.receive(1.0, addr("b"), [Suspect("a", 3, "b")])
    assert c.incarnation == 4
    take(c)
    c.tick(c.next_deadline())
    take(c)
    c.receive(2.0, addr("b"), [Dead("a", 2, "b")])
    assert c.incarnation == 4


def test_an_earlier_life_of_ours_is_outdated_by_a_new_incarnation() -> None:
    c = make()  # we just restarted at incarnation 0; the cluster remembers incarnation 6
    c.merge_state(1.0, [StateEntry("a", addr("a"), NodeMeta(free_slots=9), 6, A)])
    assert c.incarnation == 7


# --- dissemination ------------------------------------------------------------------------


def test_packets_stay_within_budget_and_each_update_is_sent_a_bounded_number_of_times() -> None:
    c = make(others=())
    big = NodeMeta(tags=tuple((f"key{i}", "v" * 40) for i in range(8)))
    for i in range(60):
        c.receive(0.0, addr("b"), [Alive(f"m{i:02d}", 0, (f"10.1.0.{i}", 7946), big)])
    limit = CFG.retransmit_mult * 2  # ceil(log10(61 + 1)) = 2
    counts: dict[str, int] = {}
    t = 0.0
    for _ in range(400):
        t = max(t, c.next_deadline())
        c.tick(t)
        for p in take(c).packets:
            assert len(encode_packet(p.messages, 1 << 20)) <= CFG.packet_bytes
            for m in p.messages:
                if isinstance(m, Alive):
                    counts[m.name] = counts.get(m.name, 0) + 1
                elif isinstance(m, Ping):  # everyone answers: nobody gets suspected
                    c.receive(t, p.to, [Ack(m.seq)])
    assert counts == {f"m{i:02d}": limit for i in range(60)}


def test_gossip_goes_to_at_most_gossip_nodes_members_and_only_when_there_is_news() -> None:
    c = make(others=[chr(ord("b") + i) for i in range(10)])
    while c.next_deadline() < 0.2:  # probes only so far (no answer is late yet): no gossip
        c.tick(c.next_deadline())
        assert all(msgs(Ready(packets=(p,)), Ping) for p in take(c).packets)
    c.receive(0.2, addr("b"), [Alive("z", 1, addr("z"), NodeMeta())])
    take(c)
    for _ in range(10):
        c.tick(c.next_deadline())
        packets = take(c).packets
        gossip = [p for p in packets if all(isinstance(m, Alive | Suspect) for m in p.messages)]
        if gossip:
            assert len(gossip) <= CFG.gossip_nodes
            assert all(Alive("z", 1, addr("z"), NodeMeta()) in p.messages for p in gossip)
            break
    else:
        raise AssertionError("the news was never gossiped")


def test_a_leave_is_gossiped_then_the_core_goes_quiet() -> None:
    c = make()
    c.leave(1.0)
    rd = take(c)
    assert {m for _, m in msgs(rd, Dead)} == {Dead("a", 0, "a")}
    assert c.myself().state == MemberState.LEFT
    t = 1.0
    while not c.leave_sent():
        t = c.next_deadline()
        c.tick(t)
        assert not msgs(take(c), Ping)
    assert t < 5.0
    c.receive(t, addr("b"), [Suspect("a", 0, "b")])
    assert c.incarnation == 0  # no refuting while leaving


def test_new_metadata_gets_a_new_incarnation_and_oversized_metadata_is_refused() -> None:
    c = make()
    c.update_meta(1.0, NodeMeta(free_slots=3))
    assert c.incarnation == 1
    assert c.myself().meta.free_slots == 3
    with pytest.raises(InvalidRequest):
        c.update_meta(1.0, NodeMeta(tags=tuple((f"k{i}", "v" * 100) for i in range(8))))
    assert c.incarnation == 1


# --- push-pull, seeds, reaping -----------------------------------------------------------


def test_a_remote_dead_verdict_is_merged_as_a_suspicion() -> None:
    c = make()
    c.merge_state(1.0, [StateEntry("b", addr("b"), NodeMeta(), 0, D)])
    assert state(c, "b") == (S, 0)
    c.merge_state(1.0, [StateEntry("c", addr("c"), NodeMeta(), 0, L)])
    assert state(c, "c") == (L, 0)
    c.merge_state(1.0, [StateEntry("y", addr("y"), NodeMeta(), 0, L)])
    assert c.member("y") is None  # never heard of it: nothing to record


def test_seeds_are_retried_until_they_are_live_members() -> None:
    cfg = CFG
    c = GossipCore("a", addr("a"), NodeMeta(), cfg, random.Random(1), now=0.0)
    c.join([addr("s"), addr("a")])
    assert take(c).push_pulls == (PushPull(addr("s"), join=True),)
    t = c.next_deadline()
    while t < 2 * cfg.reconnect_interval:
        c.tick(t)
        pps = take(c).push_pulls
        if pps:
            assert pps == (PushPull(addr("s"), join=True),)
            break
        t = c.next_deadline()
    else:
        raise AssertionError("seed not retried")
    c.merge_state(t, [StateEntry("s", addr("s"), NodeMeta(), 0, A)], join=True)
    take(c)
    t2 = t + cfg.reconnect_interval + 1
    c.tick(t2)
    assert all(not pp.join for pp in take(c).push_pulls)


def test_dead_members_are_forgotten_after_reap_after() -> None:
    cfg = GossipConfig(reap_after=100.0)
    c = make(cfg=cfg)
    c.receive(0.0, addr("c"), [Dead("b", 0, "c")])
    t = 0.0
    while t < 150.0:
        t = c.next_deadline()
        c.tick(t)
        take(c)
    assert c.member("b") is None
    assert c.statistics().dead == 0


def test_push_pull_period_grows_beyond_32_members() -> None:
    small = make(others=[f"m{i}" for i in range(30)])
    big = make(others=[f"m{i}" for i in range(127)])
    assert small._push_pull_period() == CFG.push_pull_interval
    assert big._push_pull_period() == 3 * CFG.push_pull_interval  # log2(128) - log2(32) + 1


def test_every_tick_moves_the_next_deadline_into_the_future() -> None:
    c = make()
    t = 0.0
    for _ in range(500):
        t = c.next_deadline()
        c.tick(t)
        take(c)
        assert c.next_deadline() > t


def test_configuration_mistakes_are_refused() -> None:
    with pytest.raises(ValueError):
        make(cfg=GossipConfig(probe_timeout=1.0, probe_interval=1.0))
    with pytest.raises(ValueError):
        make(cfg=GossipConfig(packet_bytes=512))
    with pytest.raises(InvalidRequest):
        GossipCore("", addr("a"), NodeMeta(), CFG, random.Random(), now=0.0)
