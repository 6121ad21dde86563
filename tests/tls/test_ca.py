"""`dcronctl ca`: the files it writes, what the certificates say, and that they load."""

from __future__ import annotations

import ipaddress
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from dcrond import tls
from dcrond.ctl import main
from dcrond.errors import ConfigError, InvalidRequest


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_ca_init_and_issue_write_keys_0600_and_certificates_0644(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "ca"
    assert main(["ca", "init", "--dir", str(ca)]) == 0
    assert main(["ca", "issue", "node", "h1", "--dir", str(ca), "--ip", "198.18.0.1"]) == 0
    assert main(["ca", "issue", "client", "alice", "--dir", str(ca)]) == 0
    out = capsys.readouterr().out
    assert "next: dcronctl ca issue node NAME" in out
    assert "copy those three files" in out
    assert _mode(ca) == 0o700
    assert (_mode(ca / "ca.key"), _mode(ca / "ca.crt")) == (0o600, 0o644)
    for kind, name in (("node", "h1"), ("client", "alice")):
        bundle = ca / f"{kind}s" / name
        assert sorted(p.name for p in bundle.iterdir()) == ["ca.crt", f"{kind}.crt", f"{kind}.key"]
        assert _mode(bundle / f"{kind}.key") == 0o600
        assert _mode(bundle / f"{kind}.crt") == 0o644
        assert (bundle / "ca.crt").read_bytes() == (ca / "ca.crt").read_bytes()
        assert b"PRIVATE KEY" in (bundle / f"{kind}.key").read_bytes()
    assert not list(ca.rglob(".*.tmp")), "a temporary file was left behind"


def test_the_ca_is_a_ten_year_p256_ca_that_signs_only_certificates(tmp_path: Path) -> None:
    cert_path, _ = tls.init_ca(tmp_path)
    cert = _load(cert_path)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    years = (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365
    assert 9.9 < years < 10.1
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert tls.cert_info(cert).kind is None


def test_node_certificate_serves_and_dials_and_names_its_host_and_addresses(tmp_path: Path) -> None:
    tls.init_ca(tmp_path)
    issued = tls.issue(
        tmp_path, "node", "h1", ips=["198.18.0.1", "2001:db8::1"], dns=["h1.example.net"]
    )
    cert = _load(issued.cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["h1", "h1.example.net", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [
        "198.18.0.1",
        "2001:db8::1",
        "127.0.0.1",
        "::1",
    ]
    info = tls.read_cert(issued.cert)
    assert (info.name, info.kind) == ("h1", "node")
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_client_certificate_is_for_clients_only_and_carries_the_name(tmp_path: Path) -> None:
    tls.init_ca(tmp_path)
    issued = tls.issue(tmp_path, "client", "alice@example.com")
    cert = _load(issued.cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert tls.read_cert(issued.cert).name == "alice@example.com"
    assert tls.read_cert(issued.cert).kind == "client"


def test_a_ca_is_never_replaced_and_a_certificate_only_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = str(tmp_path)
    assert main(["ca", "init", "--dir", ca]) == 0
    before = (tmp_path / "ca.crt").read_bytes()
    assert main(["ca", "init", "--dir", ca]) == 1
    assert "already holds a CA" in capsys.readouterr().err
    assert (tmp_path / "ca.crt").read_bytes() == before
    assert main(["ca", "issue", "node", "h1", "--dir", ca]) == 0
    first = tls.read_cert(tmp_path / "nodes" / "h1" / "node.crt").fingerprint
    assert main(["ca", "issue", "node", "h1", "--dir", ca]) == 1
    assert "--force" in capsys.readouterr().err
    assert tls.read_cert(tmp_path / "nodes" / "h1" / "node.crt").fingerprint == first
    assert main(["ca", "issue", "node", "h1", "--dir", ca, "--force"]) == 0
    assert tls.read_cert(tmp_path / "nodes" / "h1" / "node.crt").fingerprint != first


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["node", "bad_name!"], "invalid node name"),
        (["node", "h1", "--ip", "300.1.1.1"], "not an IP address"),
        (["node", "h1", "--dns=-x-"], "not a DNS name"),
        (["client", "al ice"], "invalid client name"),
        (["node", "h1", "--days", "0"], "--days"),
    ],
)
def test_bad_names_and_addresses_are_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    tls.init_ca(tmp_path)
    assert main(["ca", "issue", *argv, "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dcronctl: error:") and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "ca.key"]


def test_issue_without_a_ca_says_to_run_ca_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ca", "issue", "client", "alice", "--dir", str(tmp_path / "none")]) == 1
    assert "run `dcronctl ca init` first" in capsys.readouterr().err


def test_an_encrypted_ca_key_issues_only_with_its_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DCRON_CA_PASSPHRASE", "correct horse")
    assert main(["ca", "init", "--encrypt", "--dir", str(tmp_path)]) == 0
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "ca.key").read_bytes()
    assert tls.ca_key_encrypted(tmp_path)
    monkeypatch.setenv("DCRON_CA_PASSPHRASE", "wrong")
    assert main(["ca", "issue", "client", "alice", "--dir", str(tmp_path)]) == 1
    assert "wrong passphrase" in capsys.readouterr().err
    monkeypatch.setenv("DCRON_CA_PASSPHRASE", "correct horse")
    assert main(["ca", "issue", "client", "alice", "--dir", str(tmp_path)]) == 0
    with pytest.raises(InvalidRequest, match="encrypted"):
        tls.issue(tmp_path, "client", "bob")  # no passphrase given


def test_issued_files_build_contexts_and_a_node_must_hold_its_own_name(
    tmp_path: Path,
) -> None:
    tls.init_ca(tmp_path)
    node = tls.issue(tmp_path, "node", "h1")
    client = tls.issue(tmp_path, "client", "alice")
    both = tls.node_tls(node.ca, node.cert, node.key, name="h1")
    assert both.me.name == "h1"
    assert both.server.verify_mode == both.client.verify_mode == ssl.CERT_REQUIRED
    assert both.server.minimum_version == ssl.TLSVersion.TLSv1_3
    assert not both.client.check_hostname  # nodes check the peer's name, not its address
    assert tls.client_context(client.ca, client.cert, client.key).check_hostname
    with pytest.raises(ConfigError, match="issued for node 'h1' but this node is 'h2'"):
        tls.node_tls(node.ca, node.cert, node.key, name="h2")
    with pytest.raises(ConfigError, match="not a node certificate"):
        tls.node_tls(client.ca, client.cert, client.key)
    with pytest.raises(ConfigError, match="does the key belong"):
        tls.server_context(node.ca, node.cert, client.key)
    with pytest.raises(ConfigError, match="no certificate at"):
        tls.server_context(node.ca, tmp_path / "missing.crt", node.key)


def test_the_default_folder_is_etc_for_root_and_under_xdg_config_home_for_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert tls.default_tls_dir() == Path("/etc/dcrond/tls")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("DCRON_TLS_DIR", raising=False)
    assert main(["ca", "init"]) == 0
    assert (tmp_path / "dcrond" / "tls" / "ca.key").is_file()
    assert tls.default_tls_dir() == tmp_path / "dcrond" / "tls"


def test_ip_addresses_in_the_san_are_normalised(tmp_path: Path) -> None:
    tls.init_ca(tmp_path)
    issued = tls.issue(tmp_path, "node", "h1", ips=["2001:DB8:0::1", "127.0.0.1"])
    san = _load(issued.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    ips = san.value.get_values_for_type(x509.IPAddress)
    assert ips == [ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("127.0.0.1"),
                   ipaddress.ip_address("::1")]  # fmt: skip
