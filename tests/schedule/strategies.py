"""Hypothesis strategies for cron expressions and instants near DST transitions."""

from __future__ import annotations

import functools
import os
import zoneinfo
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.schedule.oracle import DAYS, MONTHS

HOUR = 3600
DAY = 86400

# Zones whose DST the tests cross: northern (Berlin, New York), a 30-minute
# shift (Lord Howe), southern hemisphere (Santiago changes at midnight,
# Auckland), a 2-hour shift (Troll), and zones with clock *corrections* of a
# day (Apia 2011, Kwajalein 1969 and 1993) that are not DST at all.
DST_ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Pacific/Auckland",
    "Antarctica/Troll",
)
CORRECTION_ZONES = ("Pacific/Apia", "Pacific/Kwajalein")
ALL_ZONES = ("UTC", *DST_ZONES, *CORRECTION_ZONES)

# Deterministic by default so CI is reproducible; DCROND_SCHEDULE_RANDOM=1
# explores fresh examples, DCROND_SCHEDULE_EXAMPLES scales the effort.
_RANDOM = os.environ.get("DCROND_SCHEDULE_RANDOM") == "1"
_SCALE = float(os.environ.get("DCROND_SCHEDULE_EXAMPLES", "1"))


def profile(examples: int) -> settings:
    """Settings for a property test: seeded unless DCROND_SCHEDULE_RANDOM=1."""
    return settings(
        max_examples=max(1, int(examples * _SCALE)),
        deadline=None,
        derandomize=not _RANDOM,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def _utc(year: int) -> int:
    return int(datetime(year, 1, 1, tzinfo=UTC).timestamp())


@functools.cache
def transitions(zone_name: str, first_year: int = 1960, last_year: int = 2045) -> list[int]:
    """UTC instants where the zone's offset changes (found by scanning, then bisecting)."""
    zone = zoneinfo.ZoneInfo(zone_name)

    def offset(instant: int) -> object:
        return datetime.fromtimestamp(instant, zone).utcoffset()

    found = []
    step = 6 * HOUR
    instant = _utc(first_year)
    end = _utc(last_year)
    previous = offset(instant)
    while instant < end:
        current = offset(instant + step)
        if current != previous:
            low, high = instant, instant + step
            while high - low > 1:
                middle = (low + high) // 2
                if offset(middle) == previous:
                    low = middle
                else:
                    high = middle
            found.append(high)
        previous = current
        instant += step
    return found


def _modern(zone_name: str) -> list[int]:
    if zone_name in CORRECTION_ZONES:
        return transitions(zone_name)
    return [t for t in transitions(zone_name) if t >= _utc(1996)]


@st.composite
def zone_and_instant(draw: st.DrawFn, zones: tuple[str, ...] = ALL_ZONES) -> tuple[str, int]:
    """A zone and an instant: mostly just before or inside a transition, sometimes anywhere."""
    zone_name, instant, _ = draw(_scenario(zones))
    return zone_name, instant


def _changed_hours(zone_name: str, switch: int) -> list[int]:
    """Wall-clock hours that a transition skips or repeats, and the hour it lands in."""
    zone = zoneinfo.ZoneInfo(zone_name)
    before = datetime.fromtimestamp(switch - 1, zone)
    after = datetime.fromtimestamp(switch, zone)
    low, high = sorted((before.replace(tzinfo=None), after.replace(tzinfo=None)))
    hours = {after.hour}
    while low < high and len(hours) < 24:
        hours.add(low.hour)
        low += timedelta(hours=1)
    return sorted(hours)


@st.composite
def _scenario(draw: st.DrawFn, zones: tuple[str, ...]) -> tuple[str, int, list[int]]:
    zone_name = draw(st.sampled_from(zones))
    near = _modern(zone_name) if zone_name != "UTC" else []
    if near and draw(st.integers(0, 9)) > 0:
        switch = draw(st.sampled_from(near))
        # Mostly within hours of the change, so fires land in the gap or fold.
        wide = draw(st.integers(0, 3)) == 0
        shift = draw(st.integers(-2 * DAY, DAY) if wide else st.integers(-4 * HOUR, 3 * HOUR))
        return zone_name, switch + shift, _changed_hours(zone_name, switch)
    return zone_name, draw(st.integers(_utc(1996), _utc(2045))), []


@st.composite
def dst_case(
    draw: st.DrawFn, seconds: bool = False, zones: tuple[str, ...] = ALL_ZONES
) -> tuple[str, str, int]:
    """An expression, a zone and an instant, the hours aimed at a nearby clock change."""
    zone_name, instant, hours = draw(_scenario(zones))
    expr = draw(six_field(hours) if seconds else five_field(hours))
    return expr, zone_name, instant


def _value(
    low: int, high: int, names: list[str] | None, favour: list[int]
) -> st.SearchStrategy[str]:
    numbers = st.integers(low, high)
    if favour:
        numbers = st.one_of(st.sampled_from(favour), numbers)
    if names is None:
        return numbers.map(str)
    named_high = low + len(names) - 1

    def render(value: int, as_name: bool, upper: bool) -> str:
        if not as_name or value > named_high:
            return str(value)
        name = names[value - low]
        return name.upper() if upper else name

    return st.builds(render, numbers, st.booleans(), st.booleans())


@st.composite
def _item(draw: st.DrawFn, low: int, high: int, names: list[str] | None, favour: list[int]) -> str:
    kind = draw(st.sampled_from(["star", "star-step", "value", "range", "range-step", "from"]))
    step = draw(st.integers(1, high - low))
    if kind == "star":
        return "*"
    if kind == "star-step":
        return f"*/{step}"
    value = _value(low, high, names, favour)
    first = draw(value)
    if kind == "value":
        return first
    if kind == "from":
        return f"{first}/{step}"
    last = draw(value)
    if _as_int(first, low, names) > _as_int(last, low, names):
        first, last = last, first
    return f"{first}-{last}" if kind == "range" else f"{first}-{last}/{step}"


def _as_int(text: str, low: int, names: list[str] | None) -> int:
    if names is not None and text.lower() in names:
        return names.index(text.lower()) + low
    return int(text)


def _field(
    low: int,
    high: int,
    names: list[str] | None = None,
    favour: list[int] | None = None,
    star_weight: int = 0,
) -> st.SearchStrategy[str]:
    listed = st.lists(_item(low, high, names, favour or []), min_size=1, max_size=3).map(",".join)
    if star_weight:
        return st.one_of(*([st.just("*")] * star_weight), listed)
    return listed


# Hours where the tested zones change their clocks (Santiago at midnight).
_DST_HOURS = [0, 1, 2, 3, 23]


@st.composite
def five_field(draw: st.DrawFn, hours: list[int] | None = None) -> str:
    """A valid 5-field expression that usually fires within a few days."""
    minute = draw(_field(0, 59, favour=[0, 15, 30, 45]))
    hour = draw(_field(0, 23, favour=hours or _DST_HOURS))
    dom = draw(_field(1, 31, star_weight=4))
    month = draw(_field(1, 12, MONTHS, star_weight=6))
    dow = draw(_field(0, 7, DAYS, star_weight=3))
    return f"{minute} {hour} {dom} {month} {dow}"


@st.composite
def six_field(draw: st.DrawFn, hours: list[int] | None = None) -> str:
    """A valid 6-field expression (seconds first)."""
    second = draw(_field(0, 59, favour=[0, 30]))
    return f"{second} {draw(five_field(hours))}"


KEYWORDS = st.sampled_from(
    ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]
)
