"""IANA time zones for schedules: validation, and wall clock <-> UTC instants.

Theory of operation
-------------------
Two integer time lines are used, both in seconds:

* an *instant* is UTC epoch seconds -- what the scheduler sleeps until;
* a *wall* value is the reading of the zone's wall clock, counted as if that
  reading were UTC (``wall = instant + utc_offset``). A cron expression
  matches wall values; croniter only ever sees wall values.

Between two transitions of a zone the two lines are one constant shift
apart. At a transition the shift changes: a forward change leaves a *gap*
of wall values that never occur, a backward change a *fold* of wall values
that occur twice. :func:`wall_offsets` tells them apart the way PEP 495
does: a wall value has offset ``o0`` for ``fold=0`` and ``o1`` for
``fold=1``; equal means normal, ``o0 < o1`` a gap, ``o0 > o1`` a fold.

The host's time zone is never consulted: every conversion names its zone.
"""

from __future__ import annotations

import difflib
import functools
import zoneinfo
from datetime import datetime, timedelta
from typing import Final

from dcrond.errors import InvalidRequest

_EPOCH: Final = datetime(1970, 1, 1)
_ZONE_EXAMPLES: Final = "valid examples: 'UTC', 'Europe/Berlin', 'America/New_York'"
# tzdata entries that are not a place's rules: "localtime" is the host's own
# zone (never used, by design) and "Factory" is a placeholder offset.
_NOT_A_PLACE: Final = frozenset({"localtime", "Factory", "posixrules"})


@functools.cache
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NOT_A_PLACE


@functools.cache
def load_zone(name: str) -> zoneinfo.ZoneInfo:
    """Return the zone named ``name`` or raise InvalidRequest naming it."""
    known = _known_zones()
    if name not in known:
        raise InvalidRequest(_unknown_zone_message(name, known))
    try:
        return zoneinfo.ZoneInfo(name)
    except (ValueError, OSError) as exc:  # a broken tzdata file
        raise InvalidRequest(f"time zone {name!r} cannot be loaded: {exc}") from exc


def _unknown_zone_message(name: str, known: frozenset[str]) -> str:
    if name in _NOT_A_PLACE:
        return (
            f"unknown time zone {name!r}: dcrond does not use the host's zone or "
            f"placeholder zones, name the place; {_ZONE_EXAMPLES}"
        )
    by_lower = {zone.lower(): zone for zone in known}
    guess = by_lower.get(name.lower())
    if guess is None:
        close = difflib.get_close_matches(name, known, n=1)
        guess = close[0] if close else None
    hint = f" (did you mean {guess!r}?)" if guess else ""
    return f"unknown time zone {name!r}: not an IANA time zone name{hint}; {_ZONE_EXAMPLES}"


def offset_at(zone: zoneinfo.ZoneInfo, instant: int) -> int:
    """Return the zone's UTC offset in seconds at ``instant``."""
    delta = datetime.fromtimestamp(instant, zone).utcoffset()
    assert delta is not None
    return delta.days * 86400 + delta.seconds


def wall_offsets(zone: zoneinfo.ZoneInfo, wall: int) -> tuple[int, int]:
    """Return the offsets ``(o0, o1)`` of wall value ``wall`` for fold 0 and 1.

    Equal: the wall value occurs once, at ``wall - o0``. ``o0 < o1``: it falls
    in a gap and never occurs. ``o0 > o1``: it occurs twice, first at
    ``wall - o0`` and again at ``wall - o1``.
    """
    naive = _EPOCH + timedelta(seconds=wall)
    first = zone.utcoffset(naive)
    second = zone.utcoffset(naive.replace(fold=1))
    assert first is not None
    assert second is not None
    return (
        first.days * 86400 + first.seconds,
        second.days * 86400 + second.seconds,
    )


def switch_instant(zone: zoneinfo.ZoneInfo, before: int, after: int) -> int:
    """Return the first instant in ``(before, after]`` whose offset differs from ``before``'s.

    The caller knows the offsets of ``before`` and ``after`` differ and that
    one transition lies between them (they are at most a few hours apart).
    """
    old = offset_at(zone, before)
    low, high = before, after
    while high - low > 1:
        middle = (low + high) // 2
        if offset_at(zone, middle) == old:
            low = middle
        else:
            high = middle
    return high
