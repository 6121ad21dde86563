"""dcronctl over mutual TLS against a real RPC listener on 127.0.0.1.

dcronctl runs in a worker thread (it calls ``trio.run`` itself), so these
tests see its exit codes and stderr exactly as a person would.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dcrond import ctl, tls
from dcrond._wire import FrameStream
from dcrond.rpc import RpcClient, RpcServer
from tests.tls.conftest import Pki


@pytest.fixture(autouse=True)
def _no_ambient_tls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Certificates come only from what each test sets (never /etc/dcrond/tls)."""
    for name in ("DCRON_CA", "DCRON_CERT", "DCRON_KEY", "DCRON_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DCRON_TLS_DIR", str(tmp_path / "empty"))


class Seen:
    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []

    async def node_list(self, params: dict[str, Any]) -> list[Any]:
        self.params.append(params)
        return []


@pytest.fixture
async def endpoint(pki: Pki) -> AsyncIterator[tuple[str, Seen]]:
    seen = Seen()
    server = RpcServer({"node.list": seen.node_list}, ssl_context=pki.server(pki.n1))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(server.serve_tcp, "127.0.0.1", 0)
            yield f"127.0.0.1:{port}", seen
            nursery.cancel_scope.cancel()


async def _dcronctl(*argv: str) -> int:
    return await trio.to_thread.run_sync(ctl.main, list(argv))


async def test_dcronctl_with_ca_cert_and_key_is_served_as_the_certificate_name(
    pki: Pki, endpoint: tuple[str, Seen]
) -> None:
    ep, seen = endpoint
    code = await _dcronctl(
        "--endpoint", ep, "--ca", str(pki.alice.ca), "--cert", str(pki.alice.cert),
        "--key", str(pki.alice.key), "-o", "json", "node", "list",
    )  # fmt: skip
    assert code == 0
    assert seen.params == [{"actor": "alice"}]


async def test_environment_variables_and_the_key_beside_the_certificate_work(
    pki: Pki, endpoint: tuple[str, Seen], monkeypatch: pytest.MonkeyPatch
) -> None:
    ep, seen = endpoint
    monkeypatch.setenv("DCRON_CA", str(pki.alice.ca))
    monkeypatch.setenv("DCRON_CERT", str(pki.alice.cert))  # key: client.key beside it
    assert await _dcronctl("--endpoint", ep, "-o", "json", "node", "list") == 0
    assert seen.params[-1]["actor"] == "alice"


async def test_certificates_in_the_default_folder_are_found_and_no_tls_turns_them_off(
    pki: Pki,
    endpoint: tuple[str, Seen],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ep, seen = endpoint
    shutil.copytree(pki.alice.folder, tmp_path / "tls")  # as `ca issue client` wrote it
    monkeypatch.setenv("DCRON_TLS_DIR", str(tmp_path / "tls"))
    assert await _dcronctl("--endpoint", ep, "-o", "json", "node", "list") == 0
    assert seen.params[-1]["actor"] == "alice"
    assert await _dcronctl("--endpoint", ep, "--no-tls", "node", "list") == 3
    assert "requires mutual TLS" in capsys.readouterr().err


async def test_a_certificate_of_another_ca_exits_3_with_a_hint(
    pki: Pki, endpoint: tuple[str, Seen], capsys: pytest.CaptureFixture[str]
) -> None:
    ep, seen = endpoint
    code = await _dcronctl(
        "--endpoint", ep, "--ca", str(pki.alice.ca), "--cert", str(pki.other_eve.cert),
        "node", "list",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith("dcronctl: error: dcrond at 127.0.0.1:")
    assert "did not accept our certificate" in err and "docs/tls.md" in err
    assert len(err.splitlines()) == 1
    assert seen.params == []


async def test_plain_text_against_a_tls_dcrond_exits_3_saying_tls_is_required(
    endpoint: tuple[str, Seen], capsys: pytest.CaptureFixture[str]
) -> None:
    ep, seen = endpoint
    assert await _dcronctl("--endpoint", ep, "node", "list") == 3
    err = capsys.readouterr().err
    assert "requires mutual TLS but the client connected in plain text" in err
    assert "--ca/--cert/--key" in err
    assert seen.params == []


async def test_a_server_of_another_ca_exits_3(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    server = RpcServer({}, ssl_context=pki.server(pki.other_n1))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(server.serve_tcp, "127.0.0.1", 0)
            code = await _dcronctl(
                "--endpoint", f"127.0.0.1:{port}", "--ca", str(pki.alice.ca),
                "--cert", str(pki.alice.cert), "node", "list",
            )  # fmt: skip
            nursery.cancel_scope.cancel()
    assert code == 3
    assert "not signed by this cluster's CA" in capsys.readouterr().err


def test_a_missing_certificate_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = ctl.main(["--endpoint", "127.0.0.1:1", "--ca", str(tmp_path / "ca.crt"), "node", "list"])
    assert code == 2
    assert "no CA certificate at" in capsys.readouterr().err


def test_a_reset_before_the_first_answer_over_tls_reads_as_a_refused_certificate() -> None:
    """The server's refusal can reach the client as a reset instead of a closed stream (it
    closed with our request unread): the same hint, not "connection lost" (seen in CI)."""
    left, _right = trio.testing.memory_stream_pair()
    peer = tls.PeerIdentity("n1", "node", "00")
    client = RpcClient(FrameStream(left), endpoint="127.0.0.1:7300", peer=peer)
    try:
        raise trio.BrokenResourceError("socket connection broken") from ConnectionResetError(104)
    except trio.BrokenResourceError as exc:
        assert "did not accept our certificate" in str(client._lost(exc))
    plain = RpcClient(FrameStream(left), endpoint="127.0.0.1:7300")
    try:
        raise trio.BrokenResourceError("socket connection broken") from ConnectionResetError(104)
    except trio.BrokenResourceError as exc:
        assert "connection to dcrond lost" in str(plain._lost(exc))
