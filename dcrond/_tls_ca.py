"""A small certificate authority for one dcrond cluster (behind ``dcronctl ca``).

Theory of operation
-------------------
One cluster has one CA: an EC P-256 key and a self-signed certificate valid
for ten years, kept in a folder (``ca.crt``, ``ca.key``) on the machine an
operator issues certificates from. Nothing in a running cluster needs
``ca.key``; every host needs ``ca.crt`` to verify its peers.

The CA issues two kinds of leaf certificates, each with its own fresh P-256
key:

- a **node** certificate (``ExtendedKeyUsage`` serverAuth *and* clientAuth:
  a node accepts connections and dials its peers), whose subject CN is the
  node's name (``node.name`` in the config, which the Raft transport checks),
  and whose SubjectAltName holds that name, the ``--dns`` names and ``--ip``
  addresses given, and ``localhost``/``127.0.0.1``/``::1`` so that
  ``dcronctl`` on the host itself can verify it;
- a **client** certificate (clientAuth only) whose CN is the person's or
  program's name; the RPC server records that name as the actor of every
  change the client makes.

What a certificate *is* (node or client) is read from its ExtendedKeyUsage,
which OpenSSL also enforces: a client certificate cannot serve TLS, and the
transports refuse it where only nodes belong.

``issue`` writes a ready-to-copy bundle folder: ``ca.crt`` plus
``node.crt``/``node.key`` (or ``client.crt``/``client.key``) — exactly the
file names the daemon and dcronctl look for by default. Keys are written
0600 through a temporary file and a rename; certificates 0644. Nothing is
overwritten unless ``force`` is given (re-issuing is how certificates are
rotated). The CA key may be encrypted with a passphrase.

Errors: ``InvalidRequest`` for the caller's mistakes (a bad name, a missing
CA, a file that exists, a wrong passphrase).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dcrond.errors import InvalidRequest

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CertInfo",
    "Issued",
    "Kind",
    "ca_key_encrypted",
    "cert_info",
    "init_ca",
    "issue",
    "kind_of",
]

Kind = Literal["node", "client"]

CA_CERT: Final = "ca.crt"
CA_KEY: Final = "ca.key"
CA_DAYS: Final = 3650
LEAF_DAYS: Final = 365
#: certificates start this long before "now", for hosts whose clocks lag a little
_BACKDATE: Final = dt.timedelta(minutes=5)
_LOOPBACK_NAMES: Final = ("localhost",)
_LOOPBACK_IPS: Final = ("127.0.0.1", "::1")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_CLIENT_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


@final
@dataclass(frozen=True, slots=True)
class Issued:
    """Where ``issue`` wrote a bundle: the folder and its three files."""

    folder: Path
    ca: Path
    cert: Path
    key: Path


@final
@dataclass(frozen=True, slots=True)
class CertInfo:
    """What dcrond needs to know about one certificate."""

    name: str  #: subject CN
    kind: Kind | None  #: None for a CA certificate
    not_after: dt.datetime  #: UTC
    fingerprint: str  #: sha256, hex


def _check_name(kind: Kind, name: str) -> None:
    if kind == "node":
        if len(name) > 253 or not _DNS_NAME.fullmatch(name):
            raise InvalidRequest(
                f"invalid node name {name!r}: use a host name (letters, digits, '-', '.')"
            )
    elif not _CLIENT_NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid client name {name!r}: 1-128 of letters, digits and . _ @ + -,"
            " starting with a letter or digit"
        )


def _write(path: Path, data: bytes, mode: int, *, force: bool) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the first byte on (temp file + rename)."""
    if path.exists() and not force:
        raise InvalidRequest(f"{path} exists; give --force to replace it")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # in case the umask took bits away
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pem_key(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None) -> bytes:
    algorithm: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, algorithm
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def init_ca(
    folder: Path, *, days: int = CA_DAYS, passphrase: bytes | None = None
) -> tuple[Path, Path]:
    """Create a CA in ``folder`` (made 0700 if new); returns (ca.crt, ca.key).

    Refuses to replace an existing CA: every certificate it issued would stop
    being trusted. ``passphrase`` encrypts the key (PKCS#8, best available).
    """
    if days < 1:
        raise InvalidRequest("--days must be at least 1")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    for path in (cert_path, key_path):
        if path.exists():
            raise InvalidRequest(
                f"{path} exists: this folder already holds a CA (remove it yourself to"
                " start over; every certificate it issued would stop working)"
            )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dcrond"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"dcrond CA {secrets.token_hex(4)}"),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _pem_key(key, passphrase), 0o600, force=False)
    _write(cert_path, _pem_cert(cert), 0o644, force=False)
    return cert_path, key_path


def ca_key_encrypted(folder: Path) -> bool:
    """Whether the CA key in ``folder`` needs a passphrase (False if there is none)."""
    try:
        head = (folder / CA_KEY).read_bytes()[:64]
    except OSError:
        return False
    return b"ENCRYPTED" in head


def _load_ca(
    folder: Path, passphrase: bytes | None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        raw_key = key_path.read_bytes()
    except FileNotFoundError as exc:
        raise InvalidRequest(
            f"no CA in {folder} ({exc.filename} is missing): run `dcronctl ca init` first"
            " or give --dir"
        ) from None
    except ValueError as exc:
        raise InvalidRequest(f"{cert_path} is not a PEM certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(raw_key, passphrase or None)
    except TypeError:
        raise InvalidRequest(
            f"{key_path} is encrypted: set $DCRON_CA_PASSPHRASE or run on a terminal"
        ) from None
    except ValueError:
        raise InvalidRequest(f"cannot read {key_path}: wrong passphrase or not a key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidRequest(f"{key_path} is not an EC key made by `dcronctl ca init`")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise InvalidRequest(f"{key_path} does not belong to {cert_path}")
    return cert, key


def issue(
    folder: Path,
    kind: Kind,
    name: str,
    *,
    ips: Iterable[str] = (),
    dns: Iterable[str] = (),
    days: int = LEAF_DAYS,
    out: Path | None = None,
    force: bool = False,
    passphrase: bytes | None = None,
) -> Issued:
    """Issue a ``kind`` certificate for ``name`` with the CA in ``folder``.

    The bundle goes to ``out`` (default ``folder/nodes/NAME`` or
    ``folder/clients/NAME``). ``ips``/``dns`` are extra SubjectAltNames of a
    node certificate (InvalidRequest for a client, which has none).
    """
    _check_name(kind, name)
    if days < 1:
        raise InvalidRequest("--days must be at least 1")
    ips, dns = list(ips), list(dns)
    if kind == "client" and (ips or dns):
        raise InvalidRequest("--ip and --dns are for node certificates")
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in [*ips, *_LOOPBACK_IPS] if kind == "node" else []:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            raise InvalidRequest(f"--ip {text!r} is not an IP address") from None
        if ip not in addresses:
            addresses.append(ip)
    names = [name, *dns, *_LOOPBACK_NAMES] if kind == "node" else []
    for extra in dns:
        if len(extra) > 253 or not _DNS_NAME.fullmatch(extra):
            raise InvalidRequest(f"--dns {extra!r} is not a DNS name")
    ca_cert, ca_key = _load_ca(folder, passphrase)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if kind == "node":
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dcrond"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if kind == "node":
        general: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(names)]
        general += [x509.IPAddress(ip) for ip in addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    target = out or folder / f"{kind}s" / name
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    issued = Issued(target, target / CA_CERT, target / f"{kind}.crt", target / f"{kind}.key")
    if not force:
        for path in (issued.cert, issued.key):
            if path.exists():
                raise InvalidRequest(f"{path} exists; give --force to replace it")
    _write(issued.key, _pem_key(key, None), 0o600, force=True)
    _write(issued.cert, _pem_cert(cert), 0o644, force=True)
    if issued.ca.resolve() != (folder / CA_CERT).resolve():
        _write(issued.ca, _pem_cert(ca_cert), 0o644, force=True)
    return issued


def kind_of(cert: x509.Certificate) -> Kind | None:
    """``node`` (serverAuth), ``client`` (clientAuth only) or None (a CA or a stranger)."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            return None
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.SERVER_AUTH in eku:
        return "node"
    if ExtendedKeyUsageOID.CLIENT_AUTH in eku:
        return "client"
    return None


def cert_info(cert: x509.Certificate) -> CertInfo:
    """The name (subject CN), kind, expiry and fingerprint of ``cert``."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = cns[0].value if cns else ""
    return CertInfo(
        name=name if isinstance(name, str) else name.decode("utf-8", "replace"),
        kind=kind_of(cert),
        not_after=cert.not_valid_after_utc,
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
    )
