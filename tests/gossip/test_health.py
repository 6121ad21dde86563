"""Lifeguard's arithmetic: the local health multiplier, the suspicion bounds and timeout,
and the broadcast queue's bounded retransmissions."""

from __future__ import annotations

import math

import pytest

from dcrond.gossip import Alive, NodeMeta, Suspect
from dcrond.gossip._broadcast import BroadcastQueue
from dcrond.gossip._codec import message_size
from dcrond.gossip._health import Awareness, Suspicion, suspicion_bounds, suspicion_timeout


def test_awareness_stays_within_its_range_and_scales_timeouts() -> None:
    a = Awareness(8)
    a.apply(-1)
    assert a.score == 0 and a.scale(0.5) == 0.5
    a.apply(3)
    assert a.score == 3 and a.scale(0.5) == 2.0
    a.apply(100)
    assert a.score == 7 and a.scale(1.0) == 8.0
    with pytest.raises(ValueError):
        Awareness(0)


@pytest.mark.parametrize(
    ("n", "lo"),
    [(1, 4.0), (10, 4.0), (100, 8.0), (1000, 12.0)],  # suspicion_mult 4, probe interval 1 s
)
def test_suspicion_bounds_grow_with_log10_of_the_cluster(n: int, lo: float) -> None:
    assert suspicion_bounds(4, 6, n, 1.0) == pytest.approx((lo, 6 * lo))


def test_suspicion_timeout_shrinks_from_max_to_min_as_confirmations_arrive() -> None:
    lo, hi = 8.0, 48.0
    timeouts = [suspicion_timeout(c, 2, lo, hi) for c in range(4)]
    assert timeouts[0] == hi
    assert timeouts[1] == pytest.approx(hi - (hi - lo) * math.log(2) / math.log(3))
    assert timeouts[2] == lo and timeouts[3] == lo
    assert suspicion_timeout(0, 0, lo, hi) == lo  # nobody to confirm: min at once


def test_a_suspicion_counts_each_accuser_once_and_only_up_to_k() -> None:
    s = Suspicion(3, "a", start=100.0, k=2, lo=8.0, hi=48.0)
    assert s.deadline == 148.0
    assert not s.confirm("a")  # the first accuser is not a confirmation
    assert s.confirm("b")
    first = s.deadline
    assert 108.0 < first < 148.0
    assert not s.confirm("b")
    assert s.confirm("c") and s.deadline == 108.0
    assert not s.confirm("d")  # k reached: nothing more to gain
    assert s.confirmations == 2


def _alive(name: str) -> Alive:
    return Alive(name, 0, ("10.0.0.1", 7946), NodeMeta())


def test_broadcasts_replace_older_news_about_the_same_member() -> None:
    q = BroadcastQueue()
    q.put(_alive("a"), 30)
    q.put(Suspect("a", 0, "b"), 20)
    assert len(q) == 1 and q.queued("a") == Suspect("a", 0, "b")


def test_broadcasts_are_sent_a_bounded_number_of_times_fewest_sent_first() -> None:
    q = BroadcastQueue()
    msgs = [_alive(f"m{i}") for i in range(5)]
    for m in msgs:
        q.put(m, message_size(m))
    size = message_size(msgs[0])
    sent: dict[str, int] = {}
    rounds = 0
    while len(q):
        chosen, used = q.take(2 * size, limit=3)
        assert 1 <= len(chosen) <= 2
        assert used <= 2 * size
        for u in chosen:
            sent[u.name] = sent.get(u.name, 0) + 1
        rounds += 1
    assert sent == {m.name: 3 for m in msgs}
    assert rounds <= 8  # 15 transmissions, two per packet
    assert q.sent == 15


def test_newest_news_goes_first_among_equals() -> None:
    q = BroadcastQueue()
    for i in range(3):
        m = _alive(f"m{i}")
        q.put(m, message_size(m))
    chosen, _ = q.take(message_size(_alive("m9")), limit=5)
    assert [m.name for m in chosen] == ["m2"]
