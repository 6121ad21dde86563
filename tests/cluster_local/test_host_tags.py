"""Host tags travel by gossip: three real hosts on 127.0.0.1, each configured with its own tags.

Every host's ``node list`` (through ``dcronctl -o json``, the way a user
reads it) shows every host's tags and free slots, and the placement view the
leader builds from its real gossip members and Raft configuration puts a
``role=db`` job on the db hosts only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import trio

from dcrond.config import Config
from dcrond.host import Host
from dcrond.placement import Requirements, hosts_from_cluster, place
from tests.cluster_local._lab import loopback_config, until

TAGS = {
    "h1": {"role": "db", "zone": "eu"},
    "h2": {"role": "web", "zone": "eu"},
    "h3": {"role": "db", "zone": "us"},
}


def _config(tmp: Path, name: str) -> Config:
    return loopback_config(tmp, name, tags=TAGS[name])


async def _node_list(host: Host) -> list[dict[str, Any]]:
    assert host.api_address is not None
    endpoint = "{}:{}".format(*host.api_address)
    proc = await trio.run_process(
        [sys.executable, "-m", "dcrond.ctl", "--endpoint", endpoint, "-o", "json", "node", "list"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


async def test_every_host_lists_every_hosts_tags_and_placement_uses_them(tmp_path: Path) -> None:
    configs = {n: _config(tmp_path, n) for n in TAGS}
    seed = configs["h1"].cluster.gossip_listen.split(":")
    hosts = {n: Host(configs[n], seeds=[(seed[0], int(seed[1]))]) for n in TAGS}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for h in hosts.values():
                nursery.start_soon(h.run)

            async def all_up() -> bool:
                return all(h.api_address is not None for h in hosts.values())

            await until(all_up, 20, "all hosts serve", poll=0.2)
            lists: dict[str, list[dict[str, Any]]] = {}

            async def every_host_sees_every_tag() -> bool:
                for n, h in hosts.items():
                    lists[n] = await _node_list(h)
                return all(
                    {r["name"]: r["tags"] for r in rows} == TAGS
                    and all(r["state"] == "alive" for r in rows)
                    and all(r["raft_role"] is not None for r in rows)
                    for rows in lists.values()
                )

            await until(
                every_host_sees_every_tag, 30, "every host lists every host's tags", poll=0.2
            )
            for rows in lists.values():
                assert all(r["free_slots"] == 16 for r in rows), rows

            leader = next(
                h for h in hosts.values() if h.node and h.node.statistics().role.name == "LEADER"
            )
            assert leader.gossip is not None and leader.node is not None
            st = leader.node.statistics()
            view = hosts_from_cluster(
                leader.gossip.members(),
                cluster_id=leader.cluster_id,
                voters=st.voters,
                learners=st.learners,
            )
            assert {v.name: v.tag_map() for v in view} == TAGS
            db = place(Requirements({"role": "db"}, on="all"), view)
            assert sorted(db.chosen) == ["h1", "h3"]
            eu_db = place(Requirements({"role": "db", "zone": "eu"}), view)
            assert eu_db.chosen == ("h1",) and eu_db.spares == ()
            none = place(Requirements({"role": "cache"}), view)
            assert none.reason == (
                "no alive host carries role=cache (h1 has role=db; h2 has role=web; h3 has role=db)"
            )
            nursery.cancel_scope.cancel()
