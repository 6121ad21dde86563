"""A cluster's CA with two nodes and a client, and a stranger's CA, made once per session."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from dcrond import tls


@dataclass(frozen=True)
class Pki:
    """Certificates for the TLS tests; ``other_*`` come from a second, foreign CA."""

    ca_dir: Path
    n1: tls.Issued
    n2: tls.Issued
    alice: tls.Issued
    other_dir: Path
    other_n1: tls.Issued  #: a node named n1, but from the foreign CA
    other_eve: tls.Issued

    def server(self, issued: tls.Issued) -> ssl.SSLContext:
        return tls.server_context(issued.ca, issued.cert, issued.key)

    def client(self, issued: tls.Issued, *, ca: Path | None = None) -> ssl.SSLContext:
        return tls.client_context(ca or issued.ca, issued.cert, issued.key)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca_dir, other_dir = root / "ca", root / "other"
    tls.init_ca(ca_dir)
    tls.init_ca(other_dir)
    return Pki(
        ca_dir=ca_dir,
        n1=tls.issue(ca_dir, "node", "n1"),
        n2=tls.issue(ca_dir, "node", "n2"),
        alice=tls.issue(ca_dir, "client", "alice"),
        other_dir=other_dir,
        other_n1=tls.issue(other_dir, "node", "n1"),
        other_eve=tls.issue(other_dir, "client", "eve"),
    )
