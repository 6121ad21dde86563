"""dcronctl's TLS side: the connection options, the client context, and ``ca``.

Kept apart from ``ctl.py`` so the command tree there only gains hooks.
``dcronctl ca init`` / ``ca issue node|client NAME`` write files and need no
daemon (``dcrond.tls`` does the X.509 work). ``client_tls`` decides how
dcronctl connects: ``--ca``/``--cert``/``--key`` (or ``$DCRON_CA``,
``$DCRON_CERT``, ``$DCRON_KEY``) turn TLS on; with none given it is on when
the default TLS folder (``$DCRON_TLS_DIR``, else ``config.default_tls_dir``)
holds ``ca.crt`` and ``client.crt`` (or, on a node, ``node.crt``); ``--tls``
and ``--no-tls`` force it.
"""

from __future__ import annotations

import argparse
import getpass
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from dcrond import tls
from dcrond.config import default_tls_dir
from dcrond.errors import InvalidRequest

__all__ = ["add_ca_parser", "add_tls_options", "client_tls", "run_ca"]


def add_tls_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--ca", help="the cluster's CA certificate (default $DCRON_CA)")
    ap.add_argument("--cert", help="our client certificate (default $DCRON_CERT)")
    ap.add_argument("--key", help="its key (default $DCRON_KEY, else the --cert path as .key)")
    ap.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force mutual TLS on or off (default: on when certificates are given or found)",
    )


def add_ca_parser(nouns: Any) -> None:
    ca = nouns.add_parser("ca", help="the cluster's certificate authority (no daemon needed)")
    verbs = ca.add_subparsers(dest="verb", required=True)
    where = f"folder of the CA (default $DCRON_TLS_DIR or {_home(default_tls_dir())})"
    p = verbs.add_parser("init", help="create the CA: a P-256 key and a 10-year certificate")
    p.add_argument("--dir", help=where)
    p.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    p.add_argument(
        "--encrypt",
        action="store_true",
        help="encrypt the CA key ($DCRON_CA_PASSPHRASE, else asked for)",
    )
    kinds = verbs.add_parser("issue", help="issue a certificate").add_subparsers(
        dest="kind", required=True
    )
    for kind, text in (
        ("node", "a node's certificate (serverAuth + clientAuth); NAME = its node.name"),
        ("client", "a client's certificate (clientAuth); NAME becomes the actor of its changes"),
    ):
        p = kinds.add_parser(kind, help=text)
        p.add_argument("name")
        if kind == "node":
            p.add_argument("--ip", action="append", default=[], help="an IP it is reached at")
            p.add_argument("--dns", action="append", default=[], help="a DNS name it is reached at")
        p.add_argument("--dir", help=where)
        p.add_argument("--out", help=f"write the bundle here (default DIR/{kind}s/NAME)")
        p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
        p.add_argument("--force", action="store_true", help="replace an existing certificate")


def _home(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home) :] if text.startswith(home + os.sep) else text


def _ca_dir(args: argparse.Namespace) -> Path:
    return Path(args.dir or os.environ.get("DCRON_TLS_DIR") or default_tls_dir())


def _passphrase(*, confirm: bool) -> bytes:
    given = os.environ.get("DCRON_CA_PASSPHRASE")
    if given:
        return given.encode()
    if not sys.stdin.isatty():
        raise InvalidRequest("the CA key is encrypted: set $DCRON_CA_PASSPHRASE")
    first = getpass.getpass("CA passphrase: ")
    if confirm and getpass.getpass("again: ") != first:
        raise InvalidRequest("the passphrases differ")
    if not first:
        raise InvalidRequest("an empty passphrase encrypts nothing")
    return first.encode()


def run_ca(args: argparse.Namespace) -> int:
    """``dcronctl ca init`` and ``dcronctl ca issue``: files only, no daemon."""
    folder = _ca_dir(args)
    if args.verb == "init":
        secret = _passphrase(confirm=True) if args.encrypt else None
        cert, key = tls.init_ca(folder, days=args.days, passphrase=secret)
        sys.stdout.write(
            f"CA created: {cert} and {key} (0600; keep it here, no host needs it)\n"
            f"next: dcronctl ca issue node NAME --ip ADDRESS  (one per host)\n"
        )
        return 0
    secret = _passphrase(confirm=False) if tls.ca_key_encrypted(folder) else None
    issued = tls.issue(
        folder,
        args.kind,
        args.name,
        ips=getattr(args, "ip", []),
        dns=getattr(args, "dns", []),
        days=args.days,
        out=Path(args.out) if args.out else None,
        force=args.force,
        passphrase=secret,
    )
    info = tls.read_cert(issued.cert)
    where = "/etc/dcrond/tls/ on that host" if args.kind == "node" else "~/.config/dcrond/tls/"
    sys.stdout.write(
        f"{args.kind} certificate for {args.name!r} (valid until"
        f" {info.not_after:%Y-%m-%d}) in {issued.folder}/: {issued.ca.name},"
        f" {issued.cert.name}, {issued.key.name} (0600)\n"
        f"next: copy those three files to {where}\n"
    )
    return 0


def client_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context dcronctl connects with, or None for plain text (see the module doc)."""
    if args.tls is False:
        return None
    ca = args.ca or os.environ.get("DCRON_CA")
    cert = args.cert or os.environ.get("DCRON_CERT")
    key = args.key or os.environ.get("DCRON_KEY")
    folder = Path(os.environ.get("DCRON_TLS_DIR") or default_tls_dir())
    found = [folder / f"{k}.crt" for k in ("client", "node") if (folder / f"{k}.crt").is_file()]
    ca_path = Path(ca) if ca else folder / "ca.crt"
    cert_path = Path(cert) if cert else (found[0] if found else folder / "client.crt")
    explicit = args.tls is True or bool(ca or cert or key)
    if not explicit and not (found and ca_path.is_file()):
        return None  # no certificates anywhere: plain text (the single-host default)
    key_path = Path(key) if key else cert_path.with_suffix(".key")
    return tls.client_context(ca_path, cert_path, key_path)
