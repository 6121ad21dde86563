"""Mutual TLS for dcrond's TCP connections: contexts, handshakes and the peer's identity.

Theory of operation
-------------------
With TLS on, every TCP connection dcrond makes or accepts — ``dcronctl`` to
the RPC listener, node to node on the Raft transport — is TLS 1.3 with a
certificate on *both* sides, each issued by the cluster's own CA
(``dcronctl ca``, :mod:`dcrond._tls_ca`):

- :func:`server_context`: presents this node's certificate; requires a client
  certificate that chains to ``ca.crt`` and is meant for clientAuth.
- :func:`client_context`: presents our certificate; requires the server's to
  chain to ``ca.crt`` and be meant for serverAuth (so only node
  certificates can serve). ``dcronctl`` also checks that it names the host it
  dialled (SubjectAltName). A node dialling a peer does not check host names
  (addresses come and go); it checks that the certificate's *name* is the
  node id it meant to reach, which is what Raft knows peers by
  (:func:`node_tls`).

Only ``ca.crt`` is trusted: never the system's CA store. X.509 strict
checking is on, the handshake has a deadline, and the server sends no
session tickets (nothing resumes).

After the handshake :func:`peer_identity` reads the peer's verified
certificate: its name (subject CN) and its kind (``node`` if it may serve,
else ``client``). The callers decide what an identity may do: the RPC server
records a client's name as the actor of its changes; the Raft transport
admits only node certificates whose name matches the hello.

Failures raise :class:`dcrond.errors.TlsError` with a reason a person can act
on (:func:`describe`). In TLS 1.3 a client finishes its handshake *before*
the server has judged the client's certificate, so a refused client learns of
it on its first read; :func:`describe` reads the alert it then gets.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket as _socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import trio
from cryptography import x509

from dcrond._tls_ca import (
    CA_CERT,
    CA_KEY,
    CertInfo,
    Issued,
    Kind,
    ca_key_encrypted,
    cert_info,
    init_ca,
    issue,
)
from dcrond.config import Config, default_tls_dir
from dcrond.errors import ConfigError, TlsError

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "HANDSHAKE_TIMEOUT",
    "CertInfo",
    "Issued",
    "Kind",
    "NodeTls",
    "PeerIdentity",
    "accept",
    "ca_key_encrypted",
    "cert_info",
    "client_context",
    "connect",
    "default_tls_dir",
    "describe",
    "init_ca",
    "issue",
    "node_tls",
    "node_tls_for",
    "peer_identity",
    "read_cert",
    "sent_plain_text",
    "server_context",
    "ssl_failure",
]

log = logging.getLogger("dcrond.tls")

HANDSHAKE_TIMEOUT: Final = 10.0
#: a node warns in its log when its certificate expires sooner than this
EXPIRY_WARNING: Final = dt.timedelta(days=30)
_TLS_HANDSHAKE_RECORD: Final = 0x16


@final
@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """Who is on the other end, as its verified certificate says."""

    name: str
    kind: Kind
    fingerprint: str  #: sha256 of the certificate, hex

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@final
@dataclass(frozen=True, slots=True)
class NodeTls:
    """A node's two contexts (accepting, dialling) and its own certificate."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    me: CertInfo


def read_cert(path: Path) -> CertInfo:
    """Name, kind and expiry of the PEM certificate at ``path``; ConfigError if unreadable."""
    try:
        return cert_info(x509.load_pem_x509_certificate(path.read_bytes()))
    except OSError as exc:
        raise ConfigError(f"cannot read certificate {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM certificate: {exc}") from None


def _load(ctx: ssl.SSLContext, ca: Path, cert: Path, key: Path) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    for what, path in (("CA certificate", ca), ("certificate", cert), ("key", key)):
        if not path.is_file():
            raise ConfigError(
                f"no {what} at {path}: issue one with `dcronctl ca issue` (docs/tls.md)"
            )
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA certificate {ca}: {exc}") from None
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load {cert} with key {key}: {exc} (does the key belong to the certificate?)"
        ) from None
    mode = key.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("tls_key_readable_by_others path=%s mode=%o (chmod 600 it)", key, mode)


def server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Accept TLS 1.3 only from peers with a certificate from ``ca`` (ConfigError if unloadable)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load(ctx, ca, cert, key)
    ctx.num_tickets = 0
    return ctx


def client_context(
    ca: Path, cert: Path, key: Path, *, check_hostname: bool = True
) -> ssl.SSLContext:
    """Dial with our certificate; trust only servers with a node certificate from ``ca``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = check_hostname
    _load(ctx, ca, cert, key)
    return ctx


def node_tls(ca: Path, cert: Path, key: Path, *, name: str | None = None) -> NodeTls:
    """A node's contexts; ConfigError unless ``cert`` is a node certificate (named ``name``)."""
    me = read_cert(cert)
    if me.kind != "node":
        raise ConfigError(
            f"{cert} is not a node certificate (it is for a {me.kind or 'CA'}):"
            " issue one with `dcronctl ca issue node NAME`"
        )
    if name is not None and me.name != name:
        raise ConfigError(
            f"{cert} was issued for node {me.name!r} but this node is {name!r}:"
            f" set node.name = {me.name!r} or issue a certificate for {name!r}"
        )
    return NodeTls(
        server=server_context(ca, cert, key),
        client=client_context(ca, cert, key, check_hostname=False),
        me=me,
    )


def node_tls_for(config: Config) -> NodeTls | None:
    """This node's TLS as ``config`` says: None when TLS is off, else its contexts.

    ConfigError (dcrond exits 78) when a file is missing or unreadable, the
    certificate is not a node certificate for ``node.name``, or it has
    expired; a certificate that expires within 30 days is logged as a warning.
    """
    if not config.tls_enabled:
        return None
    ca, cert, key = config.tls_files
    ntls = node_tls(ca, cert, key, name=config.node.name)
    left = ntls.me.not_after - dt.datetime.now(dt.UTC)
    if left <= dt.timedelta(0):
        raise ConfigError(
            f"{cert} expired on {ntls.me.not_after:%Y-%m-%d %H:%M}Z: issue a new one with"
            f" `dcronctl ca issue node {ntls.me.name} --force` (docs/tls.md)"
        )
    if left < EXPIRY_WARNING:
        log.warning(
            "tls_certificate_expiring cert=%s name=%s expires=%s days_left=%d",
            cert,
            ntls.me.name,
            f"{ntls.me.not_after:%Y-%m-%dT%H:%M}Z",
            left.days,
        )
    log.info(
        "tls_on cert=%s name=%s expires=%s ca=%s",
        cert,
        ntls.me.name,
        f"{ntls.me.not_after:%Y-%m-%dT%H:%M}Z",
        ca,
    )
    return ntls


def peer_identity(stream: trio.SSLStream[Any]) -> PeerIdentity:
    """The identity in the peer's verified certificate (TlsError if it has none usable)."""
    der = stream.getpeercert(binary_form=True)
    if not der:
        raise TlsError("the peer sent no certificate")
    info = cert_info(x509.load_der_x509_certificate(der))
    if info.kind is None or not info.name:
        raise TlsError("the peer's certificate is neither a node's nor a client's")
    return PeerIdentity(info.name, info.kind, info.fingerprint)


async def accept(
    stream: trio.abc.Stream, context: ssl.SSLContext, *, timeout: float = HANDSHAKE_TIMEOUT
) -> tuple[trio.SSLStream[trio.abc.Stream], PeerIdentity]:
    """Run the server side of the handshake on an accepted ``stream``.

    Returns the TLS stream and the client's identity; on failure closes
    ``stream`` and raises TlsError saying why.
    """
    tls = trio.SSLStream(stream, context, server_side=True)
    try:
        with trio.fail_after(timeout):
            await tls.do_handshake()
        return tls, peer_identity(tls)
    except trio.TooSlowError:
        await trio.aclose_forcefully(stream)
        raise TlsError(f"no TLS handshake within {timeout:g}s") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError, TlsError) as exc:
        await trio.aclose_forcefully(stream)
        raise TlsError(describe(exc)) from None


async def connect(
    stream: trio.abc.Stream,
    context: ssl.SSLContext,
    *,
    server_hostname: str | None = None,
    timeout: float = HANDSHAKE_TIMEOUT,
) -> tuple[trio.SSLStream[trio.abc.Stream], PeerIdentity]:
    """Run the client side of the handshake on a dialled ``stream`` (see :func:`accept`)."""
    tls = trio.SSLStream(stream, context, server_hostname=server_hostname)
    try:
        with trio.fail_after(timeout):
            await tls.do_handshake()
        return tls, peer_identity(tls)
    except trio.TooSlowError:
        await trio.aclose_forcefully(stream)
        raise TlsError(f"no TLS handshake within {timeout:g}s") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError, TlsError) as exc:
        await trio.aclose_forcefully(stream)
        raise TlsError(describe(exc)) from None


async def sent_plain_text(stream: trio.SocketStream, *, timeout: float = HANDSHAKE_TIMEOUT) -> bool:
    """Whether the client's first byte is *not* the start of a TLS handshake.

    Peeks (the byte stays in the socket for the handshake to read). False on
    a clean close or a timeout, which the handshake then reports itself.
    """
    with trio.move_on_after(timeout):
        try:
            first = await stream.socket.recv(1, _socket.MSG_PEEK)
        except OSError:
            return False
        return bool(first) and first[0] != _TLS_HANDSHAKE_RECORD
    return False


# --- turning OpenSSL's reasons into sentences ---------------------------------------

_REASONS: Final = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the peer sent no certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a certificate and we sent none",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust our certificate (issued by another CA?)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer says our certificate has expired",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "the peer refused our certificate for this use",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the peer refused our certificate",
    "TLSV1_ALERT_DECRYPT_ERROR": "the peer could not verify our certificate's signature",
    "WRONG_VERSION_NUMBER": "the peer does not speak TLS (plain text?)",
    "HTTP_REQUEST": "the peer sent plain HTTP, not TLS",
    "UNSUPPORTED_PROTOCOL": "the peer does not speak TLS 1.3",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the peer does not speak TLS 1.3",
    "NO_PROTOCOLS_AVAILABLE": "the peer does not speak TLS 1.3",
    "UNEXPECTED_EOF_WHILE_READING": (
        "the peer closed the connection during the TLS handshake (is TLS on there?)"
    ),
}
_VERIFY: Final = {
    2: "the peer's certificate is not signed by this cluster's CA",
    18: "the peer's certificate is self-signed, not issued by this cluster's CA",
    19: "the peer's certificate is not signed by this cluster's CA",
    20: "the peer's certificate is not signed by this cluster's CA",
    21: "the peer's certificate is not signed by this cluster's CA",
    9: "the peer's certificate is not valid yet (check the clocks)",
    10: "the peer's certificate has expired",
    26: "the peer's certificate is not meant for this use (a client certificate serving?)",
}


def ssl_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind ``exc`` (its causes and contexts), if any."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def describe(exc: BaseException) -> str:
    """Why a TLS connection failed, in words an operator can act on."""
    if isinstance(exc, TlsError):
        return str(exc)
    err = ssl_failure(exc)
    if err is None:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ConnectionResetError):
            return "the peer reset the connection during the TLS handshake"
        if isinstance(exc, trio.ClosedResourceError):
            return "the connection was closed"
        return (
            "the peer closed the connection during the TLS handshake (is TLS on there, and"
            " does it accept our certificate?)"
        )
    if isinstance(err, ssl.SSLCertVerificationError):
        code, message = err.verify_code, str(err.verify_message)
        if code == 62:
            return f"the peer's certificate does not name the host dialled ({message})"
        return _VERIFY.get(code, f"the peer's certificate was refused ({message})")
    reason = str(getattr(err, "reason", "") or "")
    if reason in _REASONS:
        return _REASONS[reason]
    if isinstance(err, ssl.SSLEOFError):
        return _REASONS["UNEXPECTED_EOF_WHILE_READING"]
    return f"TLS failed: {reason or err}"
