"""Properties of placement over arbitrary clusters (hypothesis).

Hosts draw their tags from a small alphabet so requirements often match some
hosts and not others; states, Raft membership, free slots and exclusions
vary freely. What must hold for every input:

* no candidate lacks a required tag, is not alive, is outside the Raft
  configuration, is far behind on the log or is excluded; every eligible host is a candidate, once;
* ``all`` chooses every eligible host exactly once; ``N`` chooses
  ``min(N, eligible)`` distinct hosts; ``any`` one when there is one;
* candidates come most free slots first;
* equal hosts take turns: over ``g`` consecutive cursors, each of ``g`` hosts
  with equal free slots holds each position of its group exactly once;
* the same input -- in any order -- gives the same output;
* the reason is empty exactly when enough hosts are eligible, and otherwise
  names each required tag and the hosts it does not fit.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from dcrond.placement import MAX_BEHIND, REASON_HOSTS, HostState, HostView, Requirements, place

KEYS = ("role", "zone", "arch")
VALUES = ("db", "web", "eu")
STATES: tuple[HostState, ...] = ("alive", "alive", "alive", "suspect", "dead", "left", "unknown")

tag_maps = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)


@st.composite
def host_views(draw: st.DrawFn, max_hosts: int = 10) -> list[HostView]:
    names = draw(
        st.lists(st.sampled_from([f"h{i}" for i in range(12)]), unique=True, max_size=max_hosts)
    )
    return [
        HostView(
            name,
            tuple(draw(tag_maps).items()),
            draw(st.sampled_from(STATES)),
            draw(st.booleans() | st.just(True)),
            draw(st.integers(-1, 4)),
            draw(st.just(0) | st.sampled_from([MAX_BEHIND, MAX_BEHIND + 1, 10**6])),
        )
        for name in names
    ]


requirements = st.builds(
    Requirements,
    st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=2),
    st.sampled_from(["any", "all"]) | st.integers(1, 12),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Requirements, list[HostView], dict[str, str], int]:
    hosts = draw(host_views())
    excluded = draw(st.sets(st.sampled_from([h.name for h in hosts]))) if hosts else set()
    exclude = {name: f"refused run {i}" for i, name in enumerate(sorted(excluded))}
    return draw(requirements), hosts, exclude, draw(st.integers(0, 10**9))


def eligible(req: Requirements, hosts: list[HostView], exclude: dict[str, str]) -> set[str]:
    """The definition, written independently of the module."""
    return {
        h.name
        for h in hosts
        if set(req.tags) <= set(h.tags)
        and h.state == "alive"
        and h.in_raft
        and h.behind <= MAX_BEHIND
        and h.name not in exclude
    }


@given(scenarios())
def test_candidates_are_exactly_the_eligible_hosts_each_once(
    case: tuple[Requirements, list[HostView], dict[str, str], int],
) -> None:
    req, hosts, exclude, cursor = case
    p = place(req, hosts, cursor=cursor, exclude=exclude)
    assert len(set(p.candidates)) == len(p.candidates)
    assert set(p.candidates) == eligible(req, hosts, exclude)
    by_name = {h.name: h for h in hosts}
    for name in p.candidates:
        h = by_name[name]
        assert h.state == "alive" and h.in_raft and name not in exclude
        assert all(h.tag_map().get(k) == v for k, v in req.tags)


@given(scenarios())
def test_how_many_are_chosen_follows_on(
    case: tuple[Requirements, list[HostView], dict[str, str], int],
) -> None:
    req, hosts, exclude, cursor = case
    p = place(req, hosts, cursor=cursor, exclude=exclude)
    n = len(eligible(req, hosts, exclude))
    if req.on == "all":
        assert sorted(p.chosen) == sorted(eligible(req, hosts, exclude))
        assert p.spares == ()
    elif req.on == "any":
        assert len(p.chosen) == min(1, n)
    else:
        assert isinstance(req.on, int)
        assert len(p.chosen) == min(req.on, n)
        assert len(set(p.chosen)) == len(p.chosen)


@given(scenarios())
def test_most_free_slots_come_first(
    case: tuple[Requirements, list[HostView], dict[str, str], int],
) -> None:
    req, hosts, exclude, cursor = case
    free = {h.name: max(0, h.free_slots) for h in hosts}
    slots = [free[n] for n in place(req, hosts, cursor=cursor, exclude=exclude).candidates]
    assert slots == sorted(slots, reverse=True)


@given(host_views(), st.integers(0, 10**6), st.sampled_from(["any", "all", 2]))
def test_equal_hosts_take_each_position_equally_often(
    hosts: list[HostView], start: int, on: str | int
) -> None:
    req = Requirements(on=on)  # type: ignore[arg-type]
    groups: dict[int, list[str]] = {}
    for name in place(req, hosts).candidates:
        free = next(max(0, h.free_slots) for h in hosts if h.name == name)
        groups.setdefault(free, []).append(name)
    for members in groups.values():
        g = len(members)
        seen: Counter[tuple[str, int]] = Counter()
        for cursor in range(start, start + g):
            within = [n for n in place(req, hosts, cursor=cursor).candidates if n in members]
            seen.update((n, i) for i, n in enumerate(within))
        assert seen == Counter({(n, i): 1 for n in members for i in range(g)})


@given(host_views(max_hosts=6), st.integers(1, 6), st.integers(0, 1000))
def test_over_many_placements_equal_hosts_are_chosen_equally_often(
    hosts: list[HostView], rounds: int, start: int
) -> None:
    same = [HostView(h.name, h.tags, "alive", True, 3) for h in hosts]  # all equal
    firsts = Counter(
        place(Requirements(), same, cursor=c).chosen[0]
        for c in range(start, start + rounds * len(same))
    )
    assert firsts == Counter({h.name: rounds for h in same})


@given(scenarios(), st.randoms(use_true_random=False))
def test_same_input_in_any_order_gives_the_same_placement(
    case: tuple[Requirements, list[HostView], dict[str, str], int], rnd: object
) -> None:
    req, hosts, exclude, cursor = case
    shuffled = list(hosts)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    first = place(req, hosts, cursor=cursor, exclude=exclude)
    assert place(req, hosts, cursor=cursor, exclude=exclude) == first
    assert place(req, shuffled, cursor=cursor, exclude=dict(reversed(exclude.items()))) == first


@given(scenarios())
def test_reason_is_given_exactly_when_too_few_hosts_and_names_what_is_missing(
    case: tuple[Requirements, list[HostView], dict[str, str], int],
) -> None:
    req, hosts, exclude, cursor = case
    p = place(req, hosts, cursor=cursor, exclude=exclude)
    wanted = req.on if isinstance(req.on, int) else 1
    assert p.met == (len(p.chosen) >= wanted)
    assert (p.reason == "") == p.met
    if p.met:
        return
    for k, v in req.tags:
        assert f"{k}={v}" in p.reason
    others = sorted(h.name for h in hosts if h.name not in p.candidates)
    for name in others[:REASON_HOSTS]:
        assert f"{name} " in p.reason
    by_name = {h.name: h for h in hosts}
    for name in others[:REASON_HOSTS]:
        lacking = [k for k, v in req.tags if by_name[name].tag_map().get(k) != v]
        if by_name[name].state == "unknown":  # no tags known: that is what is said
            assert f"{name} is not in gossip" in p.reason
        elif lacking:  # the unmet constraint of this host is spelled out
            k = lacking[0]
            have = by_name[name].tag_map().get(k)
            assert (f"{k}={have}" if have is not None else f"no {k}") in p.reason
        elif by_name[name].state != "alive":
            assert f"{name} is " in p.reason or f"{name} has left" in p.reason
        elif not by_name[name].in_raft:
            assert f"{name} is not in the Raft configuration yet" in p.reason
        elif by_name[name].behind > MAX_BEHIND:
            assert f"{name} is still catching up on the log" in p.reason
        else:  # the one reason left: it was excluded, with the caller's phrase
            assert f"{name} {exclude[name]}" in p.reason
    if len(others) > REASON_HOSTS:
        assert f"; {len(others) - REASON_HOSTS} more)" in p.reason
