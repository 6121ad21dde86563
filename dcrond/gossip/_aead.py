"""Gossip sealed with ChaCha20-Poly1305 under a key derived from the cluster's join secret.

Theory of operation
-------------------
Every host of a cluster knows its name and its join secret, so every host
derives the same 32-byte key, and nobody else can:

    key = HKDF-SHA256(ikm = join secret, salt = cluster name, info = "dcrond gossip seal v1")

The cluster name as salt keeps two clusters that share a secret apart; the
info string keeps this key apart from anything else ever derived from the
same secret. HKDF does not stretch: the secret must be random (at least 16
characters; ``openssl rand -base64 32``), not a password.

A sealed packet (a UDP datagram, or a push-pull frame over TCP) is::

    version (1 byte, 0x01) | nonce (12 random bytes) | ciphertext | tag (16 bytes)

with the version byte as the associated data, so it cannot be changed
either. That is 29 bytes of :attr:`AeadSealer.overhead`, which the driver
subtracts from the packet budget. Nonces are random (``os.urandom``): with
96 bits the chance of a repeat stays below 2^-32 for the first 2^32 packets
under one key, years of gossip for a large cluster (docs/tls.md).

:meth:`AeadSealer.open` tries the current key, then any ``also_accept`` keys
(for changing the secret without a flag day: docs/tls.md), and raises
``ProtocolError("not authentic: …")`` for anything that does not open —
truncated, tampered, another version, another secret, another cluster. The
driver drops such a packet before decoding it; :meth:`statistics` counts them.

AEAD proves a packet came from a holder of the secret and was not changed;
it does not stop a holder of the secret, nor a replay of a recorded packet
(gossip tolerates replays: incarnation numbers order every claim).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dcrond.errors import InvalidRequest, ProtocolError

__all__ = [
    "MIN_SECRET_CHARS",
    "SEAL_OVERHEAD",
    "SEAL_VERSION",
    "AeadSealer",
    "SealStatistics",
    "derive_key",
]

SEAL_VERSION: Final = 1
_VERSION_BYTE: Final = bytes([SEAL_VERSION])
_NONCE: Final = 12
_TAG: Final = 16
SEAL_OVERHEAD: Final = 1 + _NONCE + _TAG
MIN_SECRET_CHARS: Final = 16
_INFO: Final = b"dcrond gossip seal v1"


def derive_key(secret: str | bytes, cluster: str) -> bytes:
    """The 32-byte gossip key of ``cluster`` for ``secret`` (InvalidRequest if too short)."""
    raw = secret.encode() if isinstance(secret, str) else secret
    if len(raw) < MIN_SECRET_CHARS:
        raise InvalidRequest(
            f"the join secret needs at least {MIN_SECRET_CHARS} characters of randomness"
            " (e.g. `openssl rand -base64 32`)"
        )
    if not cluster:
        raise InvalidRequest("the cluster name is empty")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=cluster.encode(), info=_INFO)
    return hkdf.derive(raw)


@final
@dataclass(frozen=True, slots=True)
class SealStatistics:
    """What one sealer did since it was made."""

    sealed: int
    opened: int
    refused: int  #: packets that were not authentic under any key


@final
class AeadSealer:
    """A :class:`dcrond.gossip.Sealer` for one cluster (see the module docstring)."""

    __slots__ = ("_aeads", "_n")

    def __init__(
        self, secret: str | bytes, cluster: str, *, also_accept: Iterable[str | bytes] = ()
    ) -> None:
        keys = [derive_key(secret, cluster)]
        keys += [derive_key(s, cluster) for s in also_accept]
        self._aeads = [ChaCha20Poly1305(k) for k in dict.fromkeys(keys)]
        self._n = [0, 0, 0]

    @property
    def overhead(self) -> int:
        """Bytes ``seal`` adds: version, nonce and tag."""
        return SEAL_OVERHEAD

    def seal(self, data: bytes) -> bytes:
        """``data`` encrypted and authenticated under the current key."""
        nonce = os.urandom(_NONCE)
        self._n[0] += 1
        return _VERSION_BYTE + nonce + self._aeads[0].encrypt(nonce, data, _VERSION_BYTE)

    def open(self, data: bytes) -> bytes:
        """The original bytes; ProtocolError("not authentic: …") if ``data`` does not open."""
        if len(data) < SEAL_OVERHEAD:
            self._n[2] += 1
            raise ProtocolError(f"not authentic: {len(data)} bytes is too short to be sealed")
        if data[0] != SEAL_VERSION:
            self._n[2] += 1
            raise ProtocolError(f"not authentic: unknown seal version {data[0]}")
        nonce, body = data[1 : 1 + _NONCE], data[1 + _NONCE :]
        for aead in self._aeads:
            try:
                plain = aead.decrypt(nonce, body, _VERSION_BYTE)
            except InvalidTag:
                continue
            self._n[1] += 1
            return plain
        self._n[2] += 1
        raise ProtocolError("not authentic: another key (secret or cluster name) or tampered")

    def statistics(self) -> SealStatistics:
        """Counters since this sealer was made."""
        return SealStatistics(*self._n)
