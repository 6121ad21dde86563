"""Placement by example: who is asked first, who never is, and the reason a run is skipped.

Each test reads as a small scenario: a few hosts with tags, states and free
slots, a job's requirements, and the order :func:`dcrond.placement.place`
hands back. The properties over arbitrary inputs are in test_properties.py.
"""

from __future__ import annotations

import pytest

from dcrond.errors import InvalidRequest
from dcrond.placement import MAX_BEHIND, HostView, Requirements, order, place


def host(
    name: str,
    free: int = 4,
    state: str = "alive",
    in_raft: bool = True,
    behind: int = 0,
    **tags: str,
) -> HostView:
    return HostView(name, tuple(tags.items()), state, in_raft, free, behind)  # type: ignore[arg-type]


def test_only_hosts_carrying_every_required_tag_are_candidates() -> None:
    hosts = [
        host("a", role="web", zone="eu"),
        host("b", role="db", zone="us"),
        host("c", role="db", zone="eu"),
    ]
    p = place(Requirements({"role": "db", "zone": "eu"}), hosts)
    assert p.chosen == ("c",)
    assert p.spares == ()
    assert p.met and p.reason == ""


def test_a_job_without_tags_may_run_on_any_alive_host() -> None:
    p = place(Requirements(), [host("a", role="web"), host("b")])
    assert set(p.candidates) == {"a", "b"}


def test_most_free_slots_first_and_full_hosts_last_but_still_asked() -> None:
    hosts = [host("full", free=0), host("busy", free=1), host("idle", free=9)]
    p = place(Requirements(), hosts)
    assert p.chosen == ("idle",)
    assert p.spares == ("busy", "full")  # a full host may have freed a slot by then


def test_equal_hosts_take_turns_as_the_cursor_advances() -> None:
    hosts = [host("a"), host("b"), host("c"), host("d", free=1)]
    firsts = [place(Requirements(), hosts, cursor=c).chosen[0] for c in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]
    assert place(Requirements(), hosts, cursor=1).candidates == ("b", "c", "a", "d")


def test_hosts_not_alive_not_in_raft_or_excluded_are_never_candidates() -> None:
    hosts = [
        host("ok"),
        host("sus", state="suspect"),
        host("gone", state="dead"),
        host("bye", state="left"),
        host("ghost", state="unknown"),
        host("new", in_raft=False),
        host("refused"),
        host("joining", behind=MAX_BEHIND + 1),  # its log is still catching up
        host("busy", behind=MAX_BEHIND),  # a busy follower's entries in flight
    ]
    p = place(Requirements(on="all"), hosts, exclude={"refused": "refused (no free slot)"})
    assert p.chosen == ("busy", "ok")
    assert place(Requirements(on="all"), [host("j", behind=5000)]).reason == (
        "no alive host is available (j is still catching up on the log (5000 entries behind))"
    )


def test_reason_names_the_tag_nobody_carries_and_what_each_host_lacks() -> None:
    hosts = [host("a", role="web"), host("b", state="dead", role="db")]
    p = place(Requirements({"role": "db"}), hosts)
    assert p.chosen == () and not p.met
    assert p.reason == "no alive host carries role=db (a has role=web; b is dead)"


def test_reason_lists_every_kind_of_unsuitable_host() -> None:
    hosts = [
        host("a", zone="eu"),
        host("b", role="db", zone="us"),
        host("c", state="suspect", role="db", zone="eu"),
        host("d", in_raft=False, role="db", zone="eu"),
        host("e", role="db", zone="eu"),
        host("f", state="unknown"),
        host("g", state="left", role="db", zone="eu"),
    ]
    p = place(Requirements({"role": "db", "zone": "eu"}), hosts, exclude={"e": "refused (full)"})
    assert p.reason == (
        "no alive host carries role=db, zone=eu (a has no role; b has zone=us; c is suspect;"
        " d is not in the Raft configuration yet; e refused (full); f is not in gossip;"
        " g has left)"
    )


def test_reason_with_no_hosts_and_no_tags() -> None:
    assert place(Requirements(), []).reason == "no alive host is available (no hosts known)"
    p = place(Requirements(), [host("a")], exclude=["a"])
    assert p.reason == "no alive host is available (a is excluded)"


def test_reason_counts_the_hosts_it_does_not_name() -> None:
    hosts = [host(f"h{i:02}", role="web") for i in range(12)]
    reason = place(Requirements({"role": "db"}), hosts).reason
    assert reason.endswith("h07 has role=web; 4 more)")


def test_on_n_asks_n_distinct_hosts_and_keeps_the_rest_as_spares() -> None:
    hosts = [host("a", free=1), host("b", free=3), host("c", free=2), host("d", free=0)]
    p = place(Requirements(on=2), hosts)
    assert p.chosen == ("b", "c")
    assert p.spares == ("a", "d")
    assert p.wanted == 2 and p.met


def test_on_n_with_too_few_matching_hosts_says_how_many_were_wanted() -> None:
    hosts = [host("a", role="db"), host("b", role="db", state="dead"), host("c", role="web")]
    p = place(Requirements({"role": "db"}, on=3), hosts)
    assert p.chosen == ("a",)
    assert p.reason == "only 1 alive host carries role=db; 3 wanted (b is dead; c has role=web)"
    p = place(Requirements({"role": "db"}, on=3), [*hosts, host("d", role="db")])
    assert p.reason.startswith("only 2 alive hosts carry role=db; 3 wanted (")


def test_on_all_targets_every_matching_host_with_no_spares() -> None:
    hosts = [host("a", role="db", free=0), host("b", role="db"), host("c", role="web")]
    p = place(Requirements({"role": "db"}, on="all"), hosts)
    assert p.chosen == ("b", "a")  # full hosts too: each matching host gets its own run
    assert p.spares == () and p.wanted == 2 and p.met


def test_on_all_with_no_matching_host_has_a_reason() -> None:
    p = place(Requirements({"role": "db"}, on="all"), [host("c", role="web")])
    assert p.chosen == () and p.reason == "no alive host carries role=db (c has role=web)"


@pytest.mark.parametrize("on", [0, -1, True, "some", "ALL", 1.5, None])
def test_bad_on_is_the_callers_fault(on: object) -> None:
    with pytest.raises(InvalidRequest, match=r"on: .* is not allowed"):
        Requirements(on=on)  # type: ignore[arg-type]


def test_a_host_listed_twice_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="'a' appears twice"):
        place(Requirements(), [host("a"), host("a")])


def test_tags_given_as_a_dict_or_pairs_are_the_same_requirement() -> None:
    assert Requirements({"z": "1", "a": "2"}) == Requirements([("a", "2"), ("z", "1")])
    assert Requirements({"a": "2"}).describe() == "a=2"


def test_order_alone_sorts_by_free_slots_and_rotates_ties() -> None:
    hosts = [host("a", free=2), host("b", free=2), host("c", free=5), host("d", free=-1)]
    assert order(hosts, cursor=0) == ("c", "a", "b", "d")
    assert order(hosts, cursor=1) == ("c", "b", "a", "d")
