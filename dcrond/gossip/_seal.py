"""The seam where gossip bytes get sealed before they leave and opened when they arrive.

Theory of operation
-------------------
The driver passes every encoded UDP packet through ``Sealer.seal`` before
``sendto`` and every received datagram through ``Sealer.open`` before
decoding; push-pull frames over TCP carry sealed bytes too. ``overhead`` is
how many bytes sealing adds, so the core packs its packets within
``packet_bytes - overhead`` and a sealed datagram still fits the MTU budget.

``open`` is the first trust boundary: it raises ``ProtocolError`` for bytes
that are not authentic (wrong key, tampered, truncated, not ours), and the
driver drops the datagram and counts it in ``rejected_packets``; nothing
from it reaches the core.

:data:`PLAINTEXT` seals nothing. An AEAD sealer keyed from the cluster's join
secret (ChaCha20-Poly1305 with a random 96-bit nonce per packet: 28 bytes of
overhead) slots in here without touching the core or the codec.
"""

from __future__ import annotations

from typing import Final, Protocol, final

__all__ = ["PLAINTEXT", "PlainText", "Sealer"]


class Sealer(Protocol):
    """Seals outgoing gossip bytes and opens incoming ones."""

    @property
    def overhead(self) -> int:
        """Bytes ``seal`` adds to its input."""
        ...

    def seal(self, data: bytes) -> bytes:
        """``data`` as it should travel."""
        ...

    def open(self, data: bytes) -> bytes:
        """The original bytes; ProtocolError if ``data`` is not authentic."""
        ...


@final
class PlainText:
    """No sealing: bytes travel as they are (trusted networks and tests)."""

    __slots__ = ()

    @property
    def overhead(self) -> int:
        """Nothing is added."""
        return 0

    def seal(self, data: bytes) -> bytes:
        """``data`` unchanged."""
        return data

    def open(self, data: bytes) -> bytes:
        """``data`` unchanged."""
        return data


PLAINTEXT: Final = PlainText()
