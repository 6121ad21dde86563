"""Waiting for wall-clock instants on trio's clock, precisely.

Runs are due at wall-clock instants (UTC epoch); trio sleeps on its own
monotonic clock. ``WallClock.sleep_until`` maps one to the other each time
it naps (at most ``MAX_NAP`` at a time, so a stepped wall clock is noticed
within a second) and never returns before the instant by the wall clock.

trio's timers wake up to a millisecond late (epoll rounds its timeout up to
whole milliseconds), which would be a fifth of the fire-lag budget. So
``wake_before`` returns ``SPIN`` seconds early and ``spin_until`` then
busy-waits the rest on the calling task -- at most ~2 ms of CPU per fire
instant, since every run due at the same instant starts after the first one
has spun.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, final

import trio

#: how long before an instant a precise wait wakes up and starts to spin
SPIN: Final = 0.002
#: the longest single nap (a wall clock that steps is noticed this soon)
MAX_NAP: Final = 1.0


@final
class WallClock:
    """The injected wall clock, and sleeping until its instants on trio's clock."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall

    def now(self) -> float:
        """Seconds since the UNIX epoch."""
        return self._wall()

    def now_ms(self) -> int:
        """Integer milliseconds since the UNIX epoch (what commands carry)."""
        return int(self._wall() * 1000)

    async def sleep_until(self, instant: float, *, early: float = 0.0) -> None:
        """Return at ``instant - early`` (wall clock) or later; a checkpoint in any case."""
        await trio.lowlevel.checkpoint()
        while True:
            left = instant - early - self._wall()
            if left <= 0:
                return
            await trio.sleep(min(left, MAX_NAP))

    async def wake_before(self, instant: float) -> None:
        """Return about ``SPIN`` seconds before ``instant`` (then call ``spin_until``)."""
        await self.sleep_until(instant, early=SPIN)

    def spin_until(self, instant: float) -> bool:
        """Busy-wait (no checkpoint) until the wall clock reaches ``instant``; True once it has.

        Spins only when the instant is at most ``2 * SPIN`` away, and for at
        most ``4 * SPIN`` of real time; otherwise it returns False at once
        (the caller waits again with ``wake_before``), so a wall clock that
        steps back or stands still cannot hang the daemon or start a run early.
        """
        if instant - self._wall() > 2 * SPIN:
            return False
        give_up = time.perf_counter() + 4 * SPIN
        while self._wall() < instant:
            if time.perf_counter() > give_up:
                return False
        return True
