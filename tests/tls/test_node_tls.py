"""A node's own TLS: loaded from [tls] as the daemon does it, and used to forward writes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from dcrond import _tls_ca, tls
from dcrond.config import Config, NodeConfig, TlsConfig
from dcrond.errors import ConfigError, Unavailable
from dcrond.forward import Forwarder
from dcrond.rpc import RpcServer
from tests.tls.conftest import Pki


def _config(issued: tls.Issued, name: str, mode: str = "on") -> Config:
    return Config(
        node=NodeConfig(name=name),
        tls=TlsConfig(mode=mode, ca=str(issued.ca), cert=str(issued.cert), key=str(issued.key)),
    )


def test_tls_off_loads_nothing_and_on_loads_this_nodes_certificate(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert tls.node_tls_for(_config(pki.n1, "n1", mode="auto")) is None  # loopback default
    loaded = tls.node_tls_for(_config(pki.n1, "n1"))
    assert loaded is not None and loaded.me.name == "n1"
    assert any(m.startswith("tls_on cert=") and "name=n1" in m for m in caplog.messages)


def test_a_certificate_for_another_node_or_a_missing_file_stops_the_daemon(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="issued for node 'n1' but this node is 'n2'"):
        tls.node_tls_for(_config(pki.n1, "n2"))
    config = _config(pki.n1, "n1")
    missing = dataclasses.replace(config, tls=dataclasses.replace(config.tls, key="/nonexistent"))
    with pytest.raises(ConfigError, match="no key at /nonexistent"):
        tls.node_tls_for(missing)


def _issue_at(
    monkeypatch: pytest.MonkeyPatch, ca: Path, name: str, *, ago: dt.timedelta, days: int
) -> tls.Issued:
    then = dt.datetime.now(dt.UTC).replace(microsecond=0) - ago
    monkeypatch.setattr(_tls_ca, "_now", lambda: then)
    issued = _tls_ca.issue(ca, "node", name, days=days, out=ca / name)
    monkeypatch.undo()
    return issued


def test_an_expired_certificate_stops_the_daemon_and_a_nearly_expired_one_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_tls_ca, "_now", lambda: dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    tls.init_ca(tmp_path)  # a CA from 2020, valid ten years
    monkeypatch.undo()
    old = _issue_at(monkeypatch, tmp_path, "h1", ago=dt.timedelta(days=400), days=365)
    with pytest.raises(ConfigError, match=r"expired on .*dcronctl ca issue node h1 --force"):
        tls.node_tls_for(_config(old, "h1"))
    soon = _issue_at(monkeypatch, tmp_path, "h2", ago=dt.timedelta(days=350), days=365)
    assert tls.node_tls_for(_config(soon, "h2")) is not None
    assert any("tls_certificate_expiring" in m and "name=h2" in m for m in caplog.messages)


async def test_a_follower_forwards_a_write_to_the_leader_over_tls(pki: Pki) -> None:
    async def propose(params: dict[str, Any]) -> bytes:
        data: bytes = params["data"]
        return b"applied " + data

    server = RpcServer({"raft.propose": propose}, ssl_context=pki.server(pki.n1))
    n2 = tls.node_tls(pki.n2.ca, pki.n2.cert, pki.n2.key, name="n2")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.serve_tcp, "127.0.0.1", 0)
            forwarder = Forwarder(lambda name: addr, ssl_context=n2.client)
            await nursery.start(forwarder.run)
            assert await forwarder("n1", b"cmd") == b"applied cmd"
            # an address that now belongs to another node is not written to
            with pytest.raises(Unavailable, match="is node n1, not n3"):
                await forwarder("n3", b"cmd")
            nursery.cancel_scope.cancel()
