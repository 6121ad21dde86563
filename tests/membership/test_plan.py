"""The voter-set policy: examples for each rule, and hypothesis for "never lose quorum"."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dcrond.membership import Health, HostView, Policy, apply_change, plan, quorum_kept
from dcrond.raft import ConfChange, ConfChangeType, ConfState

ALIVE, DEAD, LEFT, SUSPECT = Health.ALIVE, Health.DEAD, Health.LEFT, Health.SUSPECT
P = Policy(dead_grace=30.0, max_lag=10)


def conf(voters: str, learners: str = "") -> ConfState:
    return ConfState(frozenset(voters.split()), frozenset(learners.split()))


def hosts(**health: Health) -> dict[str, HostView]:
    return {name: HostView(h, 0.0, 100) for name, h in health.items()}


def converge(me: str, c: ConfState, view: dict[str, HostView], now: float = 0.0) -> ConfState:
    for _ in range(50):
        cc = plan(me, c, view, 100, now, policy=P)
        if cc is None:
            return c
        c = apply_change(c, cc)
    raise AssertionError("plan did not converge")


def test_a_lone_leader_grows_to_three_voters_and_the_rest_learn() -> None:
    view = hosts(b=ALIVE, c=ALIVE, d=ALIVE)
    final = converge("a", conf("a"), view)
    assert len(final.voters) == 3
    assert "a" in final.voters
    assert final.voters | final.learners == {"a", "b", "c", "d"}


def test_five_hosts_keep_three_voters_and_two_spare_learners() -> None:
    final = converge("a", conf("a"), hosts(b=ALIVE, c=ALIVE, d=ALIVE, e=ALIVE))
    assert (len(final.voters), len(final.learners)) == (3, 2)


def test_seven_healthy_hosts_make_five_voters() -> None:
    view = hosts(b=ALIVE, c=ALIVE, d=ALIVE, e=ALIVE, f=ALIVE, g=ALIVE)
    final = converge("a", conf("a"), view)
    assert (len(final.voters), len(final.learners)) == (5, 2)


def test_newcomers_are_learners_first() -> None:
    assert plan(
        "a", conf("a b c"), hosts(b=ALIVE, c=ALIVE, d=ALIVE), 100, 0.0, policy=P
    ) == ConfChange(ConfChangeType.ADD_LEARNER, "d")


def test_a_lagging_learner_is_not_promoted() -> None:
    view = {"b": HostView(ALIVE, 0.0, 100), "c": HostView(ALIVE, 0.0, 50)}
    assert plan("a", conf("a b", "c"), view, 100, 0.0, policy=P) is None


def test_a_dead_voter_is_replaced_after_the_grace_only() -> None:
    view = hosts(b=ALIVE, d=ALIVE) | {"c": HostView(DEAD, 0.0, 0)}
    c = conf("a b c", "d")
    assert plan("a", c, view, 100, 10.0, policy=P) == ConfChange(
        ConfChangeType.PROMOTE_LEARNER, "d"
    )
    c = apply_change(c, ConfChange(ConfChangeType.PROMOTE_LEARNER, "d"))
    assert plan("a", c, view, 100, 10.0, policy=P) is None  # still within the grace
    assert plan("a", c, view, 100, 31.0, policy=P) == ConfChange(ConfChangeType.REMOVE_NODE, "c")


def test_a_slow_voter_keeps_its_seat_until_it_has_been_dead_for_the_grace() -> None:
    """Suspect, or dead for less than the grace: no removal, and (suspect) no replacement.

    Under load a busy daemon is suspected, even declared dead, for a few seconds;
    a 3-host cluster used to remove it (the target fell to 2) and re-add it at once.
    """
    for health in (SUSPECT, DEAD):
        view = hosts(b=ALIVE) | {"c": HostView(health, 0.0, 100)}
        assert plan("a", conf("a b c"), view, 100, 10.0, policy=P) is None
    # five hosts, a suspect voter: the spare learners stay learners
    view = hosts(b=ALIVE, c=SUSPECT, d=ALIVE, e=ALIVE)
    assert plan("a", conf("a b c", "d e"), view, 100, 10.0, policy=P) is None
    # dead beyond the grace: the cluster has shrunk, the voter goes
    view = hosts(b=ALIVE) | {"c": HostView(DEAD, 0.0, 100)}
    assert plan("a", conf("a b c"), view, 100, 31.0, policy=P) == ConfChange(
        ConfChangeType.REMOVE_NODE, "c"
    )


def test_a_host_that_left_is_removed_and_replaced() -> None:
    view = hosts(b=ALIVE, c=LEFT, d=ALIVE)
    final = converge("a", conf("a b c", "d"), view)
    assert final.voters == {"a", "b", "d"}
    assert "c" not in final.learners


def test_the_leader_never_removes_itself() -> None:
    view = hosts(b=ALIVE, c=ALIVE)
    assert converge("a", conf("a b c"), view).voters == {"a", "b", "c"}


def test_no_removal_when_it_would_leave_no_alive_majority() -> None:
    # a, b, c voters; b and c dead long ago: removing either leaves {a, x} with 1 of 2 alive
    view = {"b": HostView(DEAD, 0.0, 0), "c": HostView(DEAD, 0.0, 0)}
    assert plan("a", conf("a b c"), view, 100, 1000.0, policy=P) is None


healths = st.sampled_from([ALIVE, ALIVE, ALIVE, SUSPECT, DEAD, LEFT])
names = ["a", "b", "c", "d", "e", "f", "g"]


@settings(max_examples=400, deadline=None)
@given(
    data=st.data(),
    n_voters=st.integers(1, 5),
    n_learners=st.integers(0, 2),
)
def test_no_planned_change_ever_leaves_the_alive_voters_without_a_majority(
    data: st.DataObject, n_voters: int, n_learners: int
) -> None:
    voters = frozenset(names[:n_voters])
    learners = frozenset(names[n_voters : n_voters + n_learners])
    c = ConfState(voters, learners)
    view: dict[str, HostView] = {}
    for name in names[1:]:
        if data.draw(st.booleans(), label=f"{name} known"):
            view[name] = HostView(
                data.draw(healths, label=f"{name} health"),
                data.draw(st.floats(0, 100), label=f"{name} since"),
                data.draw(st.integers(0, 100), label=f"{name} match"),
            )
    now = data.draw(st.floats(100, 200), label="now")
    alive = frozenset(n for n, h in view.items() if h.health is ALIVE) | {"a"}
    for _ in range(20):
        cc = plan("a", c, view, 100, now, policy=P)
        if cc is None:
            break
        before = c
        c = apply_change(c, cc)
        assert "a" in c.voters, "the leader removed or demoted itself"
        if quorum_kept(before.voters, alive):
            assert quorum_kept(c.voters, alive), f"{cc} broke quorum: {before} -> {c}"
        if cc.type is ConfChangeType.PROMOTE_LEARNER:
            assert view[cc.node].health is ALIVE
    else:
        raise AssertionError("plan kept changing the membership (no fixed point)")
