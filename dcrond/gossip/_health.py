"""Lifeguard's two timers: local health (how much to trust ourselves) and suspicion.

Theory of operation
-------------------
SWIM's weak spot is a member that is itself slow (CPU starved, paused, its
receive path backed up): its probes time out although the targets are fine,
and it accuses healthy members. Lifeguard (Dadgar, Phillips, Currey, 2018)
answers with three local measures; two of them live here.

**Local health multiplier** (LHM, :class:`Awareness`): a score in
``0 .. max-1``. A probe that succeeds lowers it by one; a probe that fails
raises it by the number of nacks that did *not* come back (helpers that
answered with a nack prove our own network path works, so silence from them
says the problem is us), or by one if nobody was asked to nack; having to
refute a suspicion about ourselves raises it by one. The probe interval and
the time a probe waits are multiplied by ``score + 1``: a member that is
probably the problem probes less and waits longer before accusing anyone.

**Suspicion timeout** (:class:`Suspicion`): a suspected member is declared
dead when its suspicion times out. The timeout starts at ``max`` and shrinks
towards ``min`` as independent members confirm the suspicion::

    min = suspicion_mult * max(1, log10(n)) * probe_interval
    max = suspicion_max_mult * min
    timeout(c) = max(min, max - (max - min) * log(c + 1) / log(k + 1))

where ``c`` is the number of confirmations so far (other members' Suspect
messages about the same member) and ``k = suspicion_mult - 2`` is how many
are expected (0 when the cluster is too small to supply them, which gives
``min`` at once). A healthy member accused by one slow member therefore has
``max`` to refute, while a member that really died is confirmed by several
probers and is declared dead close to ``min``. Without Lifeguard the timeout
is ``min``, fixed.

The third measure, the buddy system (a ping to a suspected member carries the
suspicion so it can refute at once), is in ``_core``.
"""

from __future__ import annotations

import math
from typing import final

__all__ = ["Awareness", "Suspicion", "suspicion_bounds", "suspicion_timeout"]


@final
class Awareness:
    """Lifeguard's local health score: 0 is healthy, ``limit - 1`` the worst."""

    __slots__ = ("_limit", "score")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("awareness_max must be at least 1")
        self._limit = limit
        self.score = 0

    def apply(self, delta: int) -> None:
        """Add ``delta`` to the score, clamped to ``0 .. limit - 1``."""
        self.score = min(self._limit - 1, max(0, self.score + delta))

    def scale(self, seconds: float) -> float:
        """``seconds`` multiplied by the current multiplier (``score + 1``)."""
        return seconds * (self.score + 1)


def suspicion_bounds(
    suspicion_mult: int, max_mult: int, n: int, probe_interval: float
) -> tuple[float, float]:
    """Lifeguard's (min, max) suspicion timeouts for a cluster of ``n`` members."""
    scale = max(1.0, math.log10(max(1, n)))
    lo = suspicion_mult * scale * probe_interval
    return lo, max_mult * lo


def suspicion_timeout(confirmations: int, k: int, lo: float, hi: float) -> float:
    """The suspicion timeout after ``confirmations`` of ``k`` expected ones."""
    if k < 1:
        return lo
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    return max(lo, hi - frac * (hi - lo))


@final
class Suspicion:
    """One running suspicion: when it started and who confirmed it.

    ``deadline`` is when the member is declared dead unless it refutes first.
    The member that started the suspicion does not count as a confirmation;
    each further distinct accuser does, up to ``k``.
    """

    __slots__ = ("_accusers", "deadline", "hi", "incarnation", "k", "lo", "start")

    def __init__(
        self, incarnation: int, accuser: str, *, start: float, k: int, lo: float, hi: float
    ) -> None:
        self.incarnation = incarnation
        self.start = start
        self.k = k
        self.lo = lo
        self.hi = hi
        self._accusers = {accuser}
        self.deadline = start + suspicion_timeout(0, k, lo, hi)

    @property
    def confirmations(self) -> int:
        """Distinct accusers beyond the first."""
        return len(self._accusers) - 1

    def confirm(self, accuser: str) -> bool:
        """Count ``accuser``; True if it was new and moved the deadline (re-gossip then)."""
        if self.confirmations >= self.k or accuser in self._accusers:
            return False
        self._accusers.add(accuser)
        self.deadline = self.start + suspicion_timeout(self.confirmations, self.k, self.lo, self.hi)
        return True
