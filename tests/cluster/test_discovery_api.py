"""Discovery's API without namespaces: join entries, the secret tag, and its refusals.

zeroconf itself is only exercised in namespaces (test_discovery.py): on this
host's own interfaces it would multicast onto a real network.
"""

from __future__ import annotations

import pytest
import trio

from dcrond.discovery import Discovery, Seed, parse_seed, secret_tag
from dcrond.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("h1", ("h1", 7302)),
        ("h1:7400", ("h1", 7400)),
        (" 10.1.2.3:1 ", ("10.1.2.3", 1)),
        ("fd00::1", ("fd00::1", 7302)),
        ("[fd00::1]", ("fd00::1", 7302)),
        ("[fd00::1]:7400", ("fd00::1", 7400)),
    ],
)
def test_join_entries_take_the_gossip_port_unless_they_name_one(
    text: str, expected: tuple[str, int]
) -> None:
    assert parse_seed(text, 7302) == expected


@pytest.mark.parametrize("text", ["", ":7302", "h1:", "h1:port", "h1:70000", "h1:0", "[fd00::1"])
def test_bad_join_entries_are_refused_with_the_key(text: str) -> None:
    with pytest.raises(ConfigError, match=r"discovery\.join"):
        parse_seed(text, 7302)


def test_the_secret_tag_separates_clusters_and_secrets_and_hides_the_secret() -> None:
    tag = secret_tag("prod", b"correct horse")
    assert tag == secret_tag("prod", b"correct horse")
    assert len(tag) == 16
    assert tag != secret_tag("prod", b"correct horsf")
    assert tag != secret_tag("test", b"correct horse")
    assert "horse" not in tag and b"correct horse".hex()[:8] not in tag


def test_a_wildcard_or_a_name_cannot_be_announced() -> None:
    with pytest.raises(ConfigError, match="wildcard"):
        Discovery(name="n1", cluster="c", secret=b"", gossip=("0.0.0.0", 7302))
    with pytest.raises(ConfigError, match="IP address"):
        Discovery(name="n1", cluster="c", secret=b"", gossip=("myhost", 7302))


async def test_join_seeds_resolve_leave_out_ourselves_and_count_what_fails() -> None:
    join = ["127.0.0.1:7302", "localhost:7303", "127.0.0.3", "nowhere.invalid:1"]
    with trio.fail_after(20):
        async with Discovery(
            name="n1", cluster="c", secret=b"s", gossip=("127.0.0.1", 7302), join=join
        ) as d:
            seeds = d.seeds()
            first = [await anext(seeds), await anext(seeds)]
            assert sorted(first) == [
                Seed(("127.0.0.1", 7303), None, "join"),
                Seed(("127.0.0.3", 7302), None, "join"),
            ]
            assert d.addresses() == (("127.0.0.1", 7303), ("127.0.0.3", 7302))
            while d.statistics().join_unresolved == 0:  # the bad name fails on its own time
                await d.wait_changed()
            stats = d.statistics()
            # zeroconf is skipped on loopback: it carries no multicast
            assert stats.zeroconf is False
            assert stats.join_unresolved == 1
            assert stats.peers == 2
            await seeds.aclose()


async def test_leaving_the_block_early_propagates_the_error_as_it_is() -> None:
    with pytest.raises(KeyError):
        async with Discovery(
            name="n1", cluster="c", secret=b"", gossip=("127.0.0.1", 7302), join=["127.0.0.2"]
        ):
            raise KeyError("boom")


async def test_run_serves_until_cancelled_for_nursery_start() -> None:
    d = Discovery(name="n1", cluster="c", secret=b"", gossip=("127.0.0.1", 7302), join=["h9"])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            started = await nursery.start(d.run)
            assert started is d
            while not d.statistics().join_unresolved:
                await d.wait_changed()  # still running after start() returned
            nursery.cancel_scope.cancel()
