"""The Raft transport over mutual TLS, on real sockets on 127.0.0.1.

Two nodes of one CA exchange messages; a node of another CA, a client
certificate, a node claiming another node's name, and a plain-text peer are
each refused, counted and logged, and deliver nothing.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from dcrond import tls
from dcrond.raft._transport import Address, RaftTransport
from dcrond.raft._types import NodeId, VoteRequest
from tests.tls.conftest import Pki

LOCAL = "127.0.0.1"
TIMEOUT = 10


def _node_tls(issued: tls.Issued, ca: Path | None = None) -> tls.NodeTls:
    """Contexts from any certificate (``tls.node_tls`` itself refuses non-node ones)."""
    ca = ca or issued.ca
    return tls.NodeTls(
        server=tls.server_context(ca, issued.cert, issued.key),
        client=tls.client_context(ca, issued.cert, issued.key, check_hostname=False),
        me=tls.read_cert(issued.cert),
    )


def _make(
    node: NodeId, peers: Mapping[NodeId, Address], node_tls: tls.NodeTls | None
) -> RaftTransport:
    return RaftTransport(
        node,
        "c",
        (LOCAL, 0),
        peers,
        rng=random.Random(1),
        backoff_base=0.02,
        backoff_cap=0.1,
        handshake_timeout=2.0,
        tls=node_tls,
    )


@asynccontextmanager
async def _serving(*transports: RaftTransport) -> AsyncIterator[list[Address]]:
    async with trio.open_nursery() as nursery:
        yield [await nursery.start(t.serve) for t in transports]
        nursery.cancel_scope.cancel()


async def _wait_until(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.005)


def _logged(caplog: pytest.LogCaptureFixture, *parts: str) -> list[str]:
    return [m for m in caplog.messages if all(p in m for p in parts)]


async def test_two_nodes_of_one_ca_exchange_messages_over_tls(pki: Pki) -> None:
    with trio.fail_after(TIMEOUT):
        n1 = _make("n1", {}, tls.node_tls(pki.n1.ca, pki.n1.cert, pki.n1.key, name="n1"))
        n2 = _make("n2", {}, tls.node_tls(pki.n2.ca, pki.n2.cert, pki.n2.key, name="n2"))
        async with _serving(n1, n2) as [a1, a2]:
            n1.update_peers({"n2": a2})
            n2.update_peers({"n1": a1})
            n1.send_nowait(VoteRequest("n1", "n2", 3, 10, 2))
            n2.send_nowait(VoteRequest("n2", "n1", 4, 11, 3))
            assert await n2.receive_channel.receive() == VoteRequest("n1", "n2", 3, 10, 2)
            assert await n1.receive_channel.receive() == VoteRequest("n2", "n1", 4, 11, 3)
            for t, other in ((n1, "n2"), (n2, "n1")):
                s = t.statistics()
                assert s.connected_peers == {other}
                assert (s.rejected_connections, s.rejected_frames) == (0, 0)


async def _assert_refused(
    caplog: pytest.LogCaptureFixture,
    intruder: RaftTransport,
    victim_tls: tls.NodeTls,
    victim_knows: NodeId,
    *expected: str,
) -> RaftTransport:
    """``intruder`` dials a real node n2 that lists it as ``victim_knows``; nothing gets in."""
    caplog.set_level(logging.INFO)
    victim = _make("n2", {}, victim_tls)
    async with _serving(victim) as [addr]:
        victim.update_peers({victim_knows: (LOCAL, 1)})
        intruder.update_peers({"n2": addr})
        async with _serving(intruder):
            intruder.send_nowait(VoteRequest(intruder.node_id, "n2", 9, 9, 9))
            await _wait_until(lambda: victim.statistics().rejected_connections >= 2)  # retries
            assert victim.statistics().received == 0
            assert intruder.statistics().connected_peers == frozenset()
    assert _logged(caplog, *expected), caplog.messages
    return victim


async def test_a_node_of_another_ca_is_refused(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(TIMEOUT):
        stranger = _make("n1", {}, _node_tls(pki.other_n1, ca=pki.n1.ca))
        await _assert_refused(
            caplog,
            stranger,
            _node_tls(pki.n2),
            "n1",
            "tls_refused addr=127.0.0.1:",
            "not signed by this cluster's CA",
        )
        # the stranger hears of it, and says so once, not on every retry
        told = _logged(caplog, "raft_connection_refused peer=n2", "refused: tls: the peer hung up")
        assert len(told) == 1, caplog.messages


async def test_a_node_refuses_to_dial_into_another_ca(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(TIMEOUT):
        stranger = _make("n2", {}, _node_tls(pki.other_n1))  # serves a foreign certificate
        n1 = _make("n1", {}, _node_tls(pki.n1))
        async with _serving(stranger) as [addr]:
            n1.update_peers({"n2": addr})
            async with _serving(n1):
                n1.send_nowait(VoteRequest("n1", "n2", 1, 1, 1))
                await _wait_until(lambda: bool(_logged(caplog, "raft_connection_refused peer=n2")))
                assert stranger.statistics().received == 0
    assert _logged(caplog, "refused: tls: the peer's certificate is not signed by this cluster's")


async def test_a_client_certificate_cannot_join_the_raft_transport(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        alice = _make("alice", {}, _node_tls(pki.alice))
        await _assert_refused(
            caplog, alice, _node_tls(pki.n2), "alice", "tls_refused", "client alice is not a node"
        )


async def test_a_node_cannot_speak_as_another_node(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        impostor = _make("n3", {}, _node_tls(pki.n1))  # n1's certificate, says it is n3
        await _assert_refused(
            caplog,
            impostor,
            _node_tls(pki.n2),
            "n3",
            "raft_connection_refused addr=",
            "node_id 'n3' is not the name in its certificate ('n1')",
        )


async def test_a_dialer_refuses_a_peer_whose_certificate_names_another_node(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(TIMEOUT):
        n2 = _make("n2", {}, _node_tls(pki.n2))
        n1 = _make("n1", {}, _node_tls(pki.n1))
        async with _serving(n2) as [addr]:
            n1.update_peers({"n9": addr})  # n1 believes n9 lives where n2 does
            async with _serving(n1):
                n1.send_nowait(VoteRequest("n1", "n9", 1, 1, 1))
                await _wait_until(lambda: bool(_logged(caplog, "peer=n9", "refused: tls")))
                assert n2.statistics().received == 0
    assert _logged(caplog, "reached node n2, not node 'n9'")


async def test_a_plain_text_peer_is_refused_and_a_tls_dialer_to_plain_text_fails(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        plain = _make("n1", {}, None)
        await _assert_refused(
            caplog, plain, _node_tls(pki.n2), "n1", "tls_refused", "does not speak TLS"
        )


def test_node_contexts_trust_only_the_cluster_ca(pki: Pki) -> None:
    both = tls.node_tls(pki.n1.ca, pki.n1.cert, pki.n1.key)
    for ctx in (both.server, both.client):
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        trusted = ctx.get_ca_certs()
        assert len(trusted) == 1  # ca.crt, not the system's store
        assert ("organizationName", "dcrond") in [rdn[0] for rdn in trusted[0]["subject"]]
