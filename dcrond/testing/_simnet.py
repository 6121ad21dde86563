"""The simulated network: latency, loss, duplication, reordering and partitions.

Theory of operation: the network does not hold messages itself. When a node
sends, the simulator asks ``route(frm, to)`` for the delays (in simulated
microseconds) after which copies of the message arrive: none when the message
is lost, one normally, two when it is duplicated. Each copy's delay is drawn
independently, so messages overtake each other (reordering), and now and then a
copy is held back for a long "spike" (a stalled TCP connection, a congested
switch). When a copy is due, the simulator asks ``link_up(frm, to)`` again: a
partition that started while the message was in flight swallows it too.

Links are directed, so the same table expresses a symmetric partition (both
directions cut), a one-way cut (A hears B, B never hears A) and the shape of
the 2020 Cloudflare outage: A-B and B-C up, A-C down. All randomness comes
from the ``random.Random`` the simulator passes in.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import final

from dcrond.raft._types import NodeId


@final
@dataclass(frozen=True, slots=True)
class NetworkQuality:
    """How bad the links are right now (probabilities per message, delays in µs)."""

    drop: float = 0.0
    duplicate: float = 0.0
    min_delay_us: int = 200
    max_delay_us: int = 5_000
    spike: float = 0.0  #: chance that a copy is held back for up to ``spike_max_us``
    spike_max_us: int = 200_000


@final
class SimNetwork:
    """Which directed links are up, and how delivery over them behaves."""

    __slots__ = ("_blocked", "_rng", "quality")

    def __init__(self, rng: random.Random, quality: NetworkQuality | None = None) -> None:
        self._rng = rng
        self._blocked: set[tuple[NodeId, NodeId]] = set()
        self.quality = quality or NetworkQuality()

    # --- delivery -------------------------------------------------------

    def route(self, frm: NodeId, to: NodeId) -> list[int]:
        """Delays after which copies of one message from ``frm`` reach ``to`` (empty: lost)."""
        if (frm, to) in self._blocked:
            return []
        q = self.quality
        rng = self._rng
        if q.drop and rng.random() < q.drop:
            return []
        lo = q.min_delay_us
        span = q.max_delay_us - lo + 1
        delay = lo + int(rng.random() * span)
        if q.spike and rng.random() < q.spike:
            delay += int(rng.random() * q.spike_max_us)
        if q.duplicate and rng.random() < q.duplicate:
            return [delay, lo + int(rng.random() * span)]
        return [delay]

    def link_up(self, frm: NodeId, to: NodeId) -> bool:
        """Whether a message from ``frm`` can reach ``to`` at this instant."""
        return (frm, to) not in self._blocked

    # --- faults ---------------------------------------------------------

    def heal(self) -> None:
        """Bring every link up."""
        self._blocked.clear()

    def cut(self, frm: NodeId, to: NodeId) -> None:
        """Cut one direction of one link (a one-way partition)."""
        self._blocked.add((frm, to))

    def cut_both(self, a: NodeId, b: NodeId) -> None:
        """Cut both directions between two nodes."""
        self._blocked.add((a, b))
        self._blocked.add((b, a))

    def partition(self, groups: Sequence[Iterable[NodeId]]) -> None:
        """Split into groups that only talk inside themselves (symmetric)."""
        sets = [sorted(g) for g in groups]
        for i, g in enumerate(sets):
            for h in sets[i + 1 :]:
                for a in g:
                    for b in h:
                        self.cut_both(a, b)

    def bridge(self, a: NodeId, b: NodeId, c: NodeId) -> None:
        """The Cloudflare-2020 shape: A-B and B-C up, A-C down (both ways)."""
        self._blocked.discard((a, b))
        self._blocked.discard((b, a))
        self._blocked.discard((b, c))
        self._blocked.discard((c, b))
        self.cut_both(a, c)

    def blocked(self) -> list[tuple[NodeId, NodeId]]:
        """The cut directed links, sorted (for traces)."""
        return sorted(self._blocked)

    def describe(self) -> str:
        """One line for a trace: quality and cut links."""
        q = self.quality
        cuts = " ".join(f"{a}->{b}" for a, b in self.blocked()) or "none"
        return (
            f"drop={q.drop} dup={q.duplicate} delay={q.min_delay_us / 1000}-"
            f"{q.max_delay_us / 1000}ms spike={q.spike} cut={cuts}"
        )
