"""The host view built from gossip members and the Raft configuration, and the module's purity."""

from __future__ import annotations

from dcrond.gossip import Member, MemberState, NodeMeta
from dcrond.placement import HostView, Requirements, hosts_from_cluster, place
from tests.raft.test_purity import FORBIDDEN, _imports, _source

CID = "c0ffee"


def member(
    name: str,
    state: MemberState = MemberState.ALIVE,
    cluster_id: str = CID,
    free: int = 4,
    **tags: str,
) -> Member:
    meta = NodeMeta(
        api_port=7300,
        raft_port=7301,
        tags=tuple(tags.items()),
        free_slots=free,
        cluster_id=cluster_id,
    )
    return Member(name, ("127.0.0.1", 7302), meta, 1, state, since=0.0)


def test_view_keeps_this_clusters_hosts_with_their_tags_states_and_raft_membership() -> None:
    members = [
        member("b", role="db", free=2),
        member("a", MemberState.SUSPECT, role="web"),
        member("c", MemberState.DEAD),
        member("d", MemberState.LEFT),
        member("new"),  # gossips, not yet added to the log
        member("other", cluster_id="another-cluster", role="db"),
        member("fresh", cluster_id=""),  # has not settled a cluster yet
    ]
    view = hosts_from_cluster(
        members, cluster_id=CID, voters={"a", "b", "c"}, learners={"d"}, behind={"b": 7}
    )
    assert view == (
        HostView("a", (("role", "web"),), "suspect", True, 4),
        HostView("b", (("role", "db"),), "alive", True, 2, behind=7),
        HostView("c", (), "dead", True, 4),
        HostView("d", (), "left", True, 4),
        HostView("new", (), "alive", False, 4),
    )


def test_a_configured_host_gossip_does_not_show_is_listed_unknown() -> None:
    view = hosts_from_cluster(
        [member("a"), member("b", cluster_id="another-cluster")],
        cluster_id=CID,
        voters={"a", "b", "gone"},
    )
    assert view == (
        HostView("a", (), "alive", True, 4),
        HostView("b", (), "unknown", True, 0),
        HostView("gone", (), "unknown", True, 0),
    )
    p = place(Requirements(on=3), view)
    assert (
        p.reason
        == "only 1 alive host is available; 3 wanted (b is not in gossip; gone is not in gossip)"
    )


def test_no_cluster_id_yet_means_no_gossip_host_counts() -> None:
    view = hosts_from_cluster([member("a", cluster_id="")], cluster_id="", voters={"a"})
    assert view == (HostView("a", (), "unknown", True, 0),)


def test_placement_imports_nothing_impure() -> None:
    """No I/O, clock, threads or randomness (the same check as the Raft and gossip cores)."""
    path = _source("dcrond.placement")
    assert path is not None
    names = _imports(path)
    assert {n for n in names if n.split(".")[0] in FORBIDDEN} == set()
    dcrond_deps = {n for n in names if n.startswith("dcrond.")}
    assert dcrond_deps <= {
        "dcrond.errors",
        "dcrond.errors.InvalidRequest",
        "dcrond.gossip._types",
        "dcrond.gossip._types.Member",
    }


def test_a_host_gossip_does_not_show_is_named_as_such_not_as_lacking_tags() -> None:
    view = hosts_from_cluster([member("a", role="web")], cluster_id=CID, voters={"a", "b"})
    p = place(Requirements({"role": "db"}), view)
    assert p.reason == "no alive host carries role=db (a has role=web; b is not in gossip)"
