"""An independent oracle for cron schedules: simulate a Debian cron daemon minute by minute.

Written from first principles for the tests; it shares no code with
``dcrond.schedule`` and never touches croniter. Where the production code
searches forward through matching wall-clock values and maps them to
instants, this oracle does what Debian cron's main loop does:

* wake at every UTC minute ``x`` and read the zone's wall clock there,
  ``running`` (minutes since 1970-01-01 on the wall clock);
* keep a *virtual* wall-clock minute that advances by one per wake-up;
* ``running - virtual == 1``: normal, run every job matching ``running``;
* ``running`` jumped ahead (a gap, shorter than 3 hours): run wildcard jobs
  for ``running`` and fixed-time jobs for every virtual minute up to
  ``running`` -- the skipped ones at ``x`` itself;
* ``running`` went back (a fold, shorter than 3 hours): run only wildcard jobs
  until ``running`` catches up with ``virtual``;
* a jump of 3 hours or more: reset ``virtual`` and run everything for ``running``.

Fields are matched one value at a time against the text of each list item
(``*``, ``N``, ``A-B``, with optional ``/STEP``; ``N/STEP`` reaches the
field's end), not by expanding sets. For 6-field expressions a matching
minute fires at each matching second of it; a skipped minute fires once at
the jump. Offsets must be whole minutes (true for every zone the tests use
in the years they use).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

KEYWORDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
LIMITS = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "dom": (1, 31),
    "month": (1, 12),
    "dow": (0, 7),
}
THREE_HOURS_IN_MINUTES = 180


def number(text: str, field: str) -> int:
    low = text.lower()
    if field == "month" and low in MONTHS:
        return MONTHS.index(low) + 1
    if field == "dow" and low in DAYS:
        return DAYS.index(low)
    return int(text)


def _item_matches(item: str, value: int, field: str) -> bool:
    low, high = LIMITS[field]
    base, slash, step_text = item.partition("/")
    step = int(step_text) if slash else 1
    if base == "*":
        first, last = low, high
    elif "-" in base:
        left, right = base.split("-")
        first, last = number(left, field), number(right, field)
    else:
        first = number(base, field)
        last = high if slash else first
    return first <= value <= last and (value - first) % step == 0


def field_matches(text: str, value: int, field: str) -> bool:
    """Does the field text select ``value``? (day-of-week 0 also matches a listed 7)."""
    items = text.split(",")
    if any(_item_matches(item, value, field) for item in items):
        return True
    return field == "dow" and value == 0 and any(_item_matches(i, 7, field) for i in items)


@dataclass(frozen=True)
class Cron:
    """The six field texts of an expression (seconds "0" for 5-field ones)."""

    second: str
    minute: str
    hour: str
    dom: str
    month: str
    dow: str

    @classmethod
    def parse(cls, expr: str) -> Cron:
        expr = KEYWORDS.get(expr.strip().lower(), expr)
        parts = expr.split()
        if len(parts) == 5:
            parts.insert(0, "0")
        assert len(parts) == 6, expr
        return cls(*parts)

    @property
    def wildcard(self) -> bool:
        return self.minute.startswith("*") or self.hour.startswith("*")

    def day_matches(self, when: datetime) -> bool:
        dom = field_matches(self.dom, when.day, "dom")
        dow = field_matches(self.dow, (when.weekday() + 1) % 7, "dow")
        if self.dom.startswith("*") or self.dow.startswith("*"):
            return dom and dow
        return dom or dow

    def minute_matches(self, wall_minute: int) -> bool:
        when = datetime(1970, 1, 1) + timedelta(minutes=wall_minute)
        return (
            field_matches(self.minute, when.minute, "minute")
            and field_matches(self.hour, when.hour, "hour")
            and field_matches(self.month, when.month, "month")
            and self.day_matches(when)
        )

    def seconds(self) -> list[int]:
        return [s for s in range(60) if field_matches(self.second, s, "second")]

    def never_fires(self) -> bool:
        """True if the day fields can never match (only the AND case can be empty)."""
        if not (self.dom.startswith("*") or self.dow.startswith("*")):
            return False
        longest = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
        return not any(
            field_matches(self.dom, day, "dom") and field_matches(self.month, month, "month")
            for month in range(1, 13)
            for day in range(1, longest[month - 1] + 1)
        )


def _wall_minute(zone: zoneinfo.ZoneInfo, instant: int) -> int:
    offset = datetime.fromtimestamp(instant, UTC).astimezone(zone).utcoffset()
    assert offset is not None
    seconds = int(offset.total_seconds())
    assert seconds % 60 == 0, "the oracle needs whole-minute offsets"
    return (instant + seconds) // 60


def fires(expr: str, zone_name: str, after: int, until: int) -> Iterator[int]:
    """Yield, in order, every fire instant in ``(after, until]``."""
    cron = Cron.parse(expr)
    zone = zoneinfo.ZoneInfo(zone_name)
    seconds = cron.seconds()
    wildcard = cron.wildcard
    # Start well before ``after`` so the virtual clock has seen any fold's first pass.
    tick = (after - 6 * 3600) // 60 * 60
    previous = _wall_minute(zone, tick)
    virtual = previous
    while tick <= until:
        tick += 60
        running = _wall_minute(zone, tick)
        jump = running - previous - 1
        previous = running
        now: set[int] = set()
        if abs(jump) >= THREE_HOURS_IN_MINUTES or running - virtual == 1:
            # A clock correction (reset the virtual clock) or a normal minute.
            virtual = running
            if cron.minute_matches(running):
                now.update(tick + s for s in seconds)
        elif running - virtual > 1:
            # The clock jumped ahead: catch up on fixed-time jobs at this tick.
            if wildcard and cron.minute_matches(running):
                now.update(tick + s for s in seconds)
            if not wildcard:
                for minute in range(virtual + 1, running):
                    if cron.minute_matches(minute):
                        now.add(tick)
                if cron.minute_matches(running):
                    now.update(tick + s for s in seconds)
            virtual = running
        elif wildcard and cron.minute_matches(running):
            # The clock went back: only wildcard jobs run until it catches up.
            now.update(tick + s for s in seconds)
        for instant in sorted(now):
            if after < instant <= until:
                yield instant


def first_fires(expr: str, zone_name: str, after: int, window: int, limit: int) -> list[int]:
    """Return up to ``limit`` fire instants in ``(after, after + window]``."""
    result = []
    for instant in fires(expr, zone_name, after, after + window):
        result.append(instant)
        if len(result) == limit:
            break
    return result
