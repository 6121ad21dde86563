"""Discovery between real processes in network namespaces on one bridge (needs root).

Each host runs ``tests.cluster._probe``: one ``Discovery`` (zeroconf bound to
the host's ``eth0`` address, and/or a ``join`` list) that prints its peers
and statistics as JSON lines whenever they change.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from dcrond.testing._netns import NetnsLab
from tests.cluster._harness import Probe, drain, wait_for

pytestmark = pytest.mark.root

#: the issue asks for "within a few seconds"; zeroconf's own probing takes ~1.3 s
FIND_WITHIN_S = 5.0


def test_three_hosts_find_each_other_by_zeroconf_within_seconds(
    make_lab: Callable[[int], NetnsLab],
) -> None:
    lab = make_lab(3)
    probes = [Probe(lab, h, f"n{h.index}") for h in lab.hosts]
    names = {p.name for p in probes}

    def everyone_found() -> bool:
        return all(p.peer_names() == names - {p.name} for p in probes)

    took = wait_for(probes, everyone_found, timeout=15)
    # the probe's own clock: from its process start to the line listing every peer
    found_at = max(p.last["t"] for p in probes)
    print(f"\nzeroconf discovery, 3 hosts: {found_at:.2f} s after start ({took:.2f} s wall)")
    assert found_at < FIND_WITHIN_S
    for p in probes:
        peers = {name: (host, port, source) for name, host, port, source in p.last["peers"]}
        for other in probes:
            if other is not p:
                assert peers[other.name] == (other.host.address, 7302, "zeroconf")
    # a graceful stop says goodbye: the others drop the stopped host at once
    start = time.monotonic()
    probes[2].stop()
    wait_for(probes[:2], lambda: all("n3" not in p.peer_names() for p in probes[:2]), 5)
    print(f"stopped host dropped by the others {time.monotonic() - start:.2f} s after SIGTERM")


def test_another_cluster_or_secret_on_the_same_lan_is_never_returned(
    make_lab: Callable[[int], NetnsLab],
) -> None:
    lab = make_lab(4)
    h1, h2, h3, h4 = lab.hosts
    probes = [
        Probe(lab, h1, "a1", "--cluster", "alpha", "--secret", "one"),
        Probe(lab, h2, "a2", "--cluster", "alpha", "--secret", "one"),
        Probe(lab, h3, "b3", "--cluster", "beta", "--secret", "one"),
        Probe(lab, h4, "x4", "--cluster", "alpha", "--secret", "two"),
    ]
    a1, a2, b3, x4 = probes

    def settled() -> bool:
        # every probe has resolved all four services (so it has seen the strangers)
        return all(p.last["stats"].get("services_seen") == 4 for p in probes)

    wait_for(probes, settled, timeout=15)
    drain(probes, 1.0)
    assert a1.peer_names() == {"a2"}
    assert a2.peer_names() == {"a1"}
    assert b3.peer_names() == set()
    assert x4.peer_names() == set()
    # not merely slow to show up: each saw the others' services and refused them
    assert [p.last["stats"]["foreign"] for p in probes] == [2, 2, 3, 3]
    assert a1.ever_seen() == {"a2"}
    assert a2.ever_seen() == {"a1"}
    assert b3.ever_seen() == x4.ever_seen() == set()


def test_join_seeds_make_one_gossip_cluster_where_multicast_is_blocked(
    make_lab: Callable[[int], NetnsLab],
) -> None:
    lab = make_lab(3)
    lab.block_multicast()
    # the same list on every host, by name and by address, itself included,
    # plus a name that does not resolve
    join = ["h1", "h2:7302", "198.18.0.3", "nowhere.invalid"]
    args = [arg for entry in join for arg in ("--join", entry)]
    probes = [Probe(lab, h, f"n{h.index}", "--gossip-run", *args) for h in lab.hosts]
    names = {"n1", "n2", "n3"}

    def one_cluster() -> bool:
        return all(set(p.last["members"]) == names for p in probes)

    took = wait_for(probes, one_cluster, timeout=15)
    print(f"\njoin list + gossip, 3 hosts, no multicast: one cluster after {took:.2f} s")
    drain(probes, 2.0)  # zeroconf had time to find something if multicast leaked
    for p in probes:
        own = (p.host.address, 7302)
        seeds = {(host, port, source) for _name, host, port, source in p.last["peers"]}
        assert seeds == {(h.address, 7302, "join") for h in lab.hosts} - {(*own, "join")}
        stats = p.last["stats"]
        assert stats["join_unresolved"] == 1  # nowhere.invalid
        assert stats["zeroconf"] is True
        assert stats["services_seen"] <= 1  # only its own service: multicast is blocked
