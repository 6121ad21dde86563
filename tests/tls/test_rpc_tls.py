"""RPC over mutual TLS on real TCP: who gets served, who is refused, and what each side says.

Every refusal must leave the server serving the next client, put a
``tls_refused peer=… reason=…`` line in its log, and give the client a
``TlsError`` (dcronctl's exit code 3) that says what to fix.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dcrond import tls
from dcrond._wire import FrameStream
from dcrond.errors import PermissionDenied, TlsError, Unavailable
from dcrond.rpc import TLS_REQUIRED, RpcClient, RpcServer
from tests.tls.conftest import Pki

pytestmark = pytest.mark.usefixtures("_deadline")


@pytest.fixture
async def _deadline() -> AsyncIterator[None]:
    with trio.fail_after(20):
        yield


async def _whoami(params: dict[str, Any]) -> Any:
    return params.get("actor")


async def _propose(params: dict[str, Any]) -> Any:
    return b"applied"


@asynccontextmanager
async def _server(
    context: ssl.SSLContext | None, **kw: Any
) -> AsyncIterator[tuple[RpcServer, int]]:
    server = RpcServer({"whoami": _whoami, "raft.propose": _propose}, ssl_context=context, **kw)
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(server.serve_tcp, "127.0.0.1", 0)
        yield server, port
        nursery.cancel_scope.cancel()


async def _ask(
    port: int, context: ssl.SSLContext | None, method: str = "whoami", **params: Any
) -> Any:
    """Connect, call ``method`` once, close; the server's error is raised as is."""
    client = await RpcClient.connect("127.0.0.1", port, ssl_context=context)
    answer: list[Any] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            try:
                answer.append(await client.call(method, params))
            except Exception as exc:  # re-raised below, outside the nursery's group
                answer.append(exc)
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()
    if isinstance(answer[0], Exception):
        raise answer[0]
    return answer[0]


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("tls_refused")]


async def test_a_client_of_the_cluster_ca_is_served_and_acts_under_its_certificate_name(
    pki: Pki,
) -> None:
    async with _server(pki.server(pki.n1)) as (server, port):
        assert await _ask(port, pki.client(pki.alice)) == "alice"
        assert await _ask(port, pki.client(pki.alice), actor="root") == "alice"  # overridden
        assert (server.requests, server.tls_refused) == (2, 0)


async def test_a_node_may_name_the_actor_it_forwards_for_else_it_acts_as_itself(pki: Pki) -> None:
    async with _server(pki.server(pki.n1)) as (_, port):
        assert await _ask(port, pki.client(pki.n2), actor="bob") == "bob"
        assert await _ask(port, pki.client(pki.n2)) == "node:n2"


async def test_only_node_certificates_may_call_node_methods(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    async with _server(pki.server(pki.n1)) as (_, port):
        assert await _ask(port, pki.client(pki.n2), "raft.propose", data=b"x") == b"applied"
        with pytest.raises(PermissionDenied, match=r"raft\.propose is for nodes; client alice"):
            await _ask(port, pki.client(pki.alice), "raft.propose", data=b"x")
    assert any("rpc_permission_denied method=raft.propose" in m for m in caplog.messages)


def _no_certificate(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki.n1.ca))
    return ctx


def _foreign_certificate(pki: Pki) -> ssl.SSLContext:
    return pki.client(pki.other_eve, ca=pki.alice.ca)  # trusts our server, but is a stranger


@pytest.mark.parametrize(
    ("make_context", "client_says", "server_says"),
    [
        (_no_certificate, "hung up right after the TLS handshake", "the peer sent no certificate"),
        (
            _foreign_certificate,
            "hung up right after the TLS handshake",
            "not signed by this cluster's CA",
        ),
        (lambda pki: None, TLS_REQUIRED, "the client speaks plain text, not TLS"),
    ],
    ids=["no-certificate", "another-ca", "plain-text"],
)
async def test_refused_clients_get_a_clear_error_the_server_logs_it_and_keeps_serving(
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
    make_context: Callable[[Pki], ssl.SSLContext | None],
    client_says: str,
    server_says: str,
) -> None:
    async with _server(pki.server(pki.n1)) as (server, port):
        with pytest.raises(TlsError, match=client_says):
            await _ask(port, make_context(pki), actor="mallory")
        assert await _ask(port, pki.client(pki.alice)) == "alice"
        lines = _refusals(caplog)
        assert len(lines) == 1, lines
        assert lines[0].startswith("tls_refused peer=127.0.0.1:")
        assert server_says in lines[0]
        assert (server.tls_refused, server.requests) == (1, 1)  # mallory ran nothing


async def test_raw_bytes_and_silent_clients_are_refused_without_harm(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    async with _server(pki.server(pki.n1), handshake_timeout=0.3) as (server, port):
        http = await trio.open_tcp_stream("127.0.0.1", port)
        await http.send_all(b"GET / HTTP/1.0\r\n\r\n")
        assert await http.receive_some() == b""  # hung up, no answer
        await http.aclose()
        silent = await trio.open_tcp_stream("127.0.0.1", port)
        assert await silent.receive_some() == b""  # hung up after the handshake timeout
        await silent.aclose()
        assert await _ask(port, pki.client(pki.alice)) == "alice"
        lines = _refusals(caplog)
        assert len(lines) == 2, lines
        assert "plain text" in lines[0]
        assert "no TLS handshake within 0.3s" in lines[1]
        assert server.tls_refused == 2


async def test_a_client_refuses_a_server_whose_certificate_comes_from_another_ca(
    pki: Pki,
) -> None:
    async with _server(pki.server(pki.other_n1)) as (_, port):
        with pytest.raises(TlsError, match="not signed by this cluster's CA"):
            await _ask(port, pki.client(pki.alice))


async def test_a_client_refuses_a_server_presenting_a_client_certificate(pki: Pki) -> None:
    async with _server(pki.server(pki.alice)) as (_, port):
        with pytest.raises(TlsError, match="not meant for this use"):
            await _ask(port, pki.client(pki.n2))


async def test_the_server_certificate_must_name_the_host_dialled(pki: Pki) -> None:
    async with _server(pki.server(pki.n1)) as (_, port):
        # n1's certificate names 127.0.0.1 (loopback is always in a node's SAN)
        client = await RpcClient.connect("127.0.0.1", port, ssl_context=pki.client(pki.alice))
        await client.aclose()
        with pytest.raises(TlsError, match="does not name the host dialled"):
            await RpcClient.connect(
                "127.0.0.1",
                port,
                ssl_context=pki.client(pki.alice),
                server_hostname="db1.example.net",
            )


async def test_a_tls_client_at_a_plain_text_server_is_told_tls_is_probably_off(pki: Pki) -> None:
    async with _server(None) as (_, port):
        with pytest.raises(TlsError, match=r"during the TLS handshake \(is TLS on there"):
            await _ask(port, pki.client(pki.alice))


async def test_a_two_ca_bundle_admits_both_during_a_ca_rotation(pki: Pki, tmp_path: Path) -> None:
    """docs/tls.md: trust old+new CA everywhere, re-issue, then drop the old CA."""
    bundle = tmp_path / "ca.crt"
    bundle.write_bytes(pki.alice.ca.read_bytes() + pki.other_eve.ca.read_bytes())
    server = tls.server_context(bundle, pki.n1.cert, pki.n1.key)
    async with _server(server) as (_, port):
        assert await _ask(port, pki.client(pki.alice, ca=bundle)) == "alice"  # old CA
        assert await _ask(port, pki.client(pki.other_eve, ca=bundle)) == "eve"  # new CA


async def test_a_server_going_away_mid_session_is_unavailable_not_a_tls_refusal(
    pki: Pki,
) -> None:
    server = RpcServer({"whoami": _whoami}, ssl_context=pki.server(pki.n1))
    stop = trio.CancelScope()

    async def serve(*, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        with stop:
            await server.serve_tcp("127.0.0.1", 0, task_status=task_status)

    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve)
        client = await RpcClient.connect("127.0.0.1", port, ssl_context=pki.client(pki.alice))
        await nursery.start(client.run)
        assert await client.call("whoami") == "alice"
        stop.cancel()  # the server goes away without a close_notify
        with pytest.raises(Unavailable) as lost:
            await client.call("whoami")
        assert not isinstance(lost.value, TlsError)
        assert "connection to dcrond lost" in str(lost.value)
        nursery.cancel_scope.cancel()
    await client.aclose()


def _broken_by(err: BaseException) -> trio.BrokenResourceError:
    exc = trio.BrokenResourceError()
    exc.__cause__ = err
    return exc


async def test_how_a_broken_tls_connection_is_reported() -> None:
    """Unit: an EOF before any answer means our certificate was refused (TLS 1.3);
    after answers it is a lost connection; an alert is always a refusal."""
    left, _ = trio.testing.memory_stream_pair()
    client = RpcClient(FrameStream(left), endpoint="h1:7300")
    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    refused = client._lost(_broken_by(eof))
    assert isinstance(refused, TlsError) and "did not accept our certificate" in str(refused)
    client._answered = True
    lost = client._lost(_broken_by(eof))
    assert type(lost) is Unavailable
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    alert.reason = "TLSV1_ALERT_UNKNOWN_CA"
    told = client._lost(_broken_by(alert))
    assert isinstance(told, TlsError) and "does not trust our certificate" in str(told)
