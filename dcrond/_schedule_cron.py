"""Next fire instant of a cron expression in an IANA zone, with Debian cron's DST rules.

Theory of operation
-------------------
croniter is used for one thing only: given a wall value (see
``_schedule_zone``), find the first wall value at or after it that the
expression matches. It is handed the wall reading as an aware datetime in
``ZoneInfo("UTC")`` -- a zone without transitions -- so its own DST code
(which fires ``30 2 * * *`` twice on Europe/Berlin's fall-back day) never
has anything to do and the host's zone is never consulted. Mapping wall
values back to instants, and the DST rules, are done here:

* a wall value that occurs once fires at its instant;
* a wall value in a gap (spring forward) fires, for a *fixed-time* job, at
  the transition instant -- the first instant after the jump; several such
  values collapse into that one instant. A *wildcard* job (minute or hour
  field starting with ``*``) does not fire for it;
* a wall value in a fold (fall back) fires at its first occurrence; a
  wildcard job fires at the second occurrence too.

Clock shifts of 3 hours or more are not DST but corrections of the zone
(Debian cron treats them so too): nothing fires for a gap's wall values, and
every job fires in both occurrences of a fold.

Search. Let ``s = instant + 1``. Unless ``s`` lies in the first pass of a
fold, every instant after ``s`` has a wall value at or after ``wall(s)``,
so walking the matches of the expression in wall order from ``wall(s)`` and
applying the rules above gives the answer at the first match that yields an
instant (:meth:`CronPlan._scan`). If ``s`` is in a fold's first pass, the
rest of that pass is tried first; failing that, the walk restarts at the
transition, where the second pass begins.
"""

from __future__ import annotations

import threading
import zoneinfo
from datetime import datetime
from typing import Final, final

from croniter import croniter

from dcrond._schedule_syntax import CronSpec
from dcrond._schedule_zone import offset_at, switch_instant, wall_offsets

LARGE_SHIFT: Final = 3 * 3600
_UTC: Final = zoneinfo.ZoneInfo("UTC")


def _render(values: tuple[int, ...], full: range, star: bool) -> str:
    if star and len(values) == len(full):
        return "*"
    return ",".join(str(value) for value in values)


def croniter_expression(spec: CronSpec) -> str:
    """Render ``spec`` as an explicit croniter expression (seconds last, if any).

    Every field is spelled out as a list, so croniter's own reading of ranges
    and steps never matters. Day fields stay lists under OR semantics, so
    croniter applies OR exactly when we pass ``day_or=True``.
    """
    days_star = not spec.day_or
    fields = [
        _render(spec.minutes, range(60), star=True),
        _render(spec.hours, range(24), star=True),
        _render(spec.days, range(1, 32), star=days_star),
        _render(spec.months, range(1, 13), star=True),
        _render(spec.weekdays, range(7), star=days_star),
    ]
    if spec.has_seconds:
        fields.append(_render(spec.seconds, range(60), star=True))
    return " ".join(fields)


@final
class CronPlan:
    """A compiled cron schedule in one zone; shared, so calls are serialized by a lock."""

    __slots__ = ("_fixed", "_lock", "_matcher", "_memo_from", "_memo_to", "_zone")

    def __init__(self, spec: CronSpec, zone: zoneinfo.ZoneInfo) -> None:
        self._zone = zone
        self._fixed = spec.fixed_time
        self._lock = threading.Lock()
        # The last answer: nothing fires in (_memo_from, _memo_to), so every
        # query in [_memo_from, _memo_to) is answered by _memo_to. Jobs sharing
        # an expression and zone fire in lockstep, so most queries hit.
        self._memo_from = 0
        self._memo_to = 0
        self._matcher = croniter(
            croniter_expression(spec),
            datetime(2000, 1, 1, tzinfo=_UTC),
            ret_type=float,
            day_or=spec.day_or,
            # The Gregorian calendar repeats every 400 years, so any date an
            # accepted expression can name recurs within this horizon.
            max_years_between_matches=400,
        )

    def _first_match_at_or_after(self, wall: int) -> int:
        # croniter returns the first match strictly after its current value.
        self._matcher.set_current(float(wall - 1))
        return int(self._matcher.get_next())

    def next_after(self, instant: int) -> int:
        """Return the first fire instant strictly after ``instant`` (UTC epoch seconds)."""
        with self._lock:
            if self._memo_from <= instant < self._memo_to:
                return self._memo_to
            answer = self._search(instant + 1)
            assert answer > instant, (instant, answer)
            self._memo_from, self._memo_to = instant, answer
            return answer

    def _search(self, start: int) -> int:
        zone = self._zone
        wall = start + offset_at(zone, start)
        first, second = wall_offsets(zone, wall)
        if first > second and wall - first == start:
            # ``start`` is in the first pass of a fold: finish that pass.
            switch = switch_instant(zone, start, wall - second)
            match = self._first_match_at_or_after(wall)
            if match < switch + first:
                return match - first
            start, wall = switch, switch + second
        return self._scan(start, wall)

    def _scan(self, start: int, wall: int) -> int:
        zone = self._zone
        match = self._first_match_at_or_after(wall)
        while True:
            first, second = wall_offsets(zone, match)
            if first == second:
                return match - first
            if first < second:
                # A gap: ``match`` never shows on the wall clock.
                switch = switch_instant(zone, match - second, match - first)
                if self._fixed and second - first < LARGE_SHIFT:
                    return switch
                match = self._first_match_at_or_after(switch + second)
                continue
            # A fold: ``match`` shows twice.
            earlier, later = match - first, match - second
            if earlier >= start:
                return earlier
            if not self._fixed or first - second >= LARGE_SHIFT:
                return later
            # A fixed-time job already ran in the first pass; skip the rest of the fold.
            switch = switch_instant(zone, earlier, later)
            match = self._first_match_at_or_after(switch + first)
