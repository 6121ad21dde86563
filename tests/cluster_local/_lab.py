"""Real hosts in one process on 127.0.0.1: their configs, and waiting on what they do."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import trio

from dcrond.config import ApiConfig, ClusterConfig, Config, NodeConfig, RaftConfig, RunnerConfig
from dcrond.testing._cluster import free_ports

#: the join secret every test host shares
SECRET = "a-lab-secret-of-32-characters-ok"


def loopback_config(
    tmp: Path,
    name: str,
    *,
    tags: Mapping[str, str] | None = None,
    runner: RunnerConfig | None = None,
    **cluster: Any,
) -> Config:
    """A host on free loopback ports, its data in ``tmp/name``; ``cluster``: more [cluster] keys."""
    api, raft, gossip = free_ports(3)
    return dataclasses.replace(
        Config(),
        node=NodeConfig(name=name, data_dir=str(tmp / name), tags=tuple((tags or {}).items())),
        api=ApiConfig(listen=f"127.0.0.1:{api}"),
        raft=RaftConfig(listen=f"127.0.0.1:{raft}", tick_ms=50, fsync=False),
        cluster=ClusterConfig(
            gossip_listen=f"127.0.0.1:{gossip}", bootstrap_wait_s=1.0, secret=SECRET, **cluster
        ),
        runner=runner or RunnerConfig(),
    )


async def until(
    check: Callable[[], Awaitable[bool]], seconds: float, what: str, *, poll: float = 0.1
) -> None:
    """Poll ``check`` (state many tasks change: no single event to wait on) until it holds."""
    deadline = trio.current_time() + seconds
    while not await check():
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await trio.sleep(poll)
