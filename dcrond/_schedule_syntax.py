"""Parse and validate schedule expressions into plain field sets.

Theory of operation
-------------------
A schedule is either a cron expression (5 fields, minute first; or 6 fields,
seconds first), an ``@keyword`` that stands for one, or ``@every <duration>``.
This module turns the text into a frozen value -- :class:`CronSpec` or
:class:`EverySpec` -- and refuses anything dcrond cannot honour with an
:class:`~dcrond.errors.InvalidRequest` whose message names the problem and
shows a valid example. It never looks at clocks or time zones.

Field grammar follows Vixie/Debian cron: comma lists of ``*``, ``N``,
``A-B``, each optionally followed by ``/STEP``; ``N/STEP`` means
``N-<field max>/STEP``. Month and day-of-week also take three-letter English
names (any case), in ranges and lists too. Day-of-week 7 is Sunday, like 0.

Two flags are derived from the *text*, as Debian cron does, because they
change behaviour:

* ``fixed_time`` is true unless the minute or the hour field starts with
  ``*``. Only fixed-time jobs get the DST catch-up/no-repeat rules.
* ``day_or``: when both day fields are restricted and neither starts with
  ``*``, a day matches if EITHER matches; otherwise both must match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, final

from dcrond.errors import InvalidRequest

MAX_EXPRESSION_LENGTH: Final = 1024
MIN_EVERY_SECONDS: Final = 1
MAX_EVERY_SECONDS: Final = 366 * 86400

_EXAMPLES: Final = (
    "valid examples: '*/5 * * * *' (every 5 minutes), '30 2 * * 1-5' (02:30 on weekdays), "
    "'*/10 * * * * *' (every 10 seconds), '@daily', '@every 90s'"
)

_KEYWORDS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTH_NAMES: Final = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_DAY_NAMES: Final = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
# Longest month length for each month, February counted in leap years.
_MONTH_DAYS: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

_DIGITS: Final = re.compile(r"[0-9]+")
_NAME: Final = re.compile(r"[A-Za-z]+")
_FIELD_SEPARATOR: Final = re.compile(r"[ \t]+")
_DURATION: Final = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")


@final
@dataclass(frozen=True, slots=True)
class CronSpec:
    """A validated cron expression as sets of wall-clock field values.

    ``weekdays`` uses 0 = Sunday ... 6 = Saturday (7 is folded into 0).
    5-field expressions have ``seconds == (0,)`` and ``has_seconds`` false.
    """

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    has_seconds: bool
    fixed_time: bool
    day_or: bool


@final
@dataclass(frozen=True, slots=True)
class EverySpec:
    """``@every <duration>``: fires at every UTC epoch multiple of ``period`` seconds."""

    period: int


@final
@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None


_SECOND: Final = _Field("second", 0, 59, None)
_MINUTE: Final = _Field("minute", 0, 59, None)
_HOUR: Final = _Field("hour", 0, 23, None)
_DAY: Final = _Field("day-of-month", 1, 31, None)
_MONTH: Final = _Field("month", 1, 12, _MONTH_NAMES)
_WEEKDAY: Final = _Field("day-of-week", 0, 7, _DAY_NAMES)
_FIELDS_5: Final = (_MINUTE, _HOUR, _DAY, _MONTH, _WEEKDAY)
_FIELDS_6: Final = (_SECOND, _MINUTE, _HOUR, _DAY, _MONTH, _WEEKDAY)

# Syntax other cron dialects accept that dcrond refuses, with the reason.
_UNSUPPORTED_MARKS: Final = (
    ("#", "'#' (n-th weekday of the month) is not supported: Debian cron has no such syntax"),
    ("?", "'?' is not supported: use '*' instead"),
)
_UNSUPPORTED_LETTERS: Final = (
    ("L", "'L' (last day) is not supported: Debian cron has no such value"),
    ("W", "'W' (nearest weekday) is not supported: Debian cron has no such value"),
    ("H", "'H' (hashed value) is not supported: write the value you want"),
)


def _refuse(expr: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"invalid schedule {expr!r}: {problem}; {_EXAMPLES}")


def parse_spec(expr: str) -> CronSpec | EverySpec:
    """Parse ``expr`` (already stripped) or raise InvalidRequest naming the problem."""
    if not expr:
        raise _refuse(expr, "the expression is empty")
    if len(expr) > MAX_EXPRESSION_LENGTH:
        raise _refuse(expr[:40] + "...", f"longer than {MAX_EXPRESSION_LENGTH} characters")
    if not expr.isascii() or not expr.replace("\t", " ").isprintable():
        raise _refuse(expr, "it must be one line of printable ASCII")
    if expr.startswith("@"):
        return _parse_keyword(expr)
    fields = _FIELD_SEPARATOR.split(expr)
    if len(fields) == 5:
        return _parse_fields(expr, fields, _FIELDS_5)
    if len(fields) == 6:
        return _parse_fields(expr, fields, _FIELDS_6)
    if len(fields) == 7:
        raise _refuse(
            expr,
            "7 fields (with a year) are not supported; use 5 fields "
            "(minute hour day-of-month month day-of-week) or 6 with seconds first",
        )
    raise _refuse(
        expr,
        f"expected 5 fields (minute hour day-of-month month day-of-week) or 6 "
        f"(second minute hour day-of-month month day-of-week), got {len(fields)}",
    )


def _parse_keyword(expr: str) -> CronSpec | EverySpec:
    head, _, rest = expr.replace("\t", " ").partition(" ")
    keyword = head.lower()
    if keyword == "@every":
        return _parse_every(expr, rest.strip(" \t").lower())
    if keyword == "@reboot":
        raise _refuse(
            expr,
            "'@reboot' is not supported: a dcrond cluster has no single boot to run at "
            "(trigger the job from your own boot script with 'dcronctl job trigger')",
        )
    if keyword not in _KEYWORDS:
        known = ", ".join([*_KEYWORDS, "@every <duration>"])
        raise _refuse(expr, f"unknown keyword {head!r}; known keywords are {known}")
    if rest.strip(" \t"):
        raise _refuse(expr, f"{head!r} takes nothing after it")
    spec = _parse_fields(expr, _KEYWORDS[keyword].split(" "), _FIELDS_5)
    assert isinstance(spec, CronSpec)
    return spec


def _parse_every(expr: str, duration: str) -> EverySpec:
    if not duration:
        raise _refuse(expr, "'@every' needs a duration such as '30s', '90s' or '1h30m'")
    match = _DURATION.fullmatch(duration)
    if match is None or not any(match.groups()):
        raise _refuse(
            expr,
            f"bad duration {duration!r}: write whole numbers with units d, h, m, s "
            "in that order, such as '90s', '5m' or '1h30m' (no fractions, no 'ms')",
        )
    days, hours, minutes, seconds = (int(part) if part else 0 for part in match.groups())
    period = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if period < MIN_EVERY_SECONDS:
        raise _refuse(expr, f"the duration {duration!r} is shorter than 1 second")
    if period > MAX_EVERY_SECONDS:
        raise _refuse(expr, f"the duration {duration!r} is longer than 366 days")
    return EverySpec(period)


def _parse_fields(expr: str, texts: list[str], fields: tuple[_Field, ...]) -> CronSpec:
    values: list[tuple[int, ...]] = []
    for text, field in zip(texts, fields, strict=True):
        values.append(_parse_field(expr, text, field))
    has_seconds = len(fields) == 6
    if not has_seconds:
        values.insert(0, (0,))
        texts = ["0", *texts]
    seconds, minutes, hours, days, months, weekdays = values
    minute_text, hour_text, day_text, _, weekday_text = texts[1:]
    day_or = not (day_text.startswith("*") or weekday_text.startswith("*"))
    if not day_or and not any(day <= _MONTH_DAYS[month - 1] for day in days for month in months):
        raise _refuse(
            expr,
            f"it never fires: no month in the month field has day {_listing(days)}",
        )
    return CronSpec(
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=weekdays,
        has_seconds=has_seconds,
        fixed_time=not (minute_text.startswith("*") or hour_text.startswith("*")),
        day_or=day_or,
    )


def _listing(values: tuple[int, ...]) -> str:
    return ",".join(str(value) for value in values)


def _parse_field(expr: str, text: str, field: _Field) -> tuple[int, ...]:
    for mark, reason in _UNSUPPORTED_MARKS:
        if mark in text:
            raise _refuse(expr, f"in the {field.name} field {text!r}: {reason}")
    selected: set[int] = set()
    for item in text.split(","):
        selected.update(_parse_item(expr, item, field))
    if field is _WEEKDAY and 7 in selected:
        selected.discard(7)
        selected.add(0)
    return tuple(sorted(selected))


def _parse_item(expr: str, item: str, field: _Field) -> range:
    where = f"in the {field.name} field"
    if not item:
        raise _refuse(expr, f"{where}: an empty item in a list (two commas in a row?)")
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        span = field.high - field.low
        if not _DIGITS.fullmatch(step_text):
            raise _refuse(expr, f"{where} {item!r}: the step {step_text!r} is not a number")
        step = int(step_text)
        if not 1 <= step <= span:
            raise _refuse(
                expr,
                f"{where} {item!r}: the step {step} must be between 1 and {span} "
                f"(the field runs {field.low}-{field.high})",
            )
    if base == "*":
        return range(field.low, field.high + 1, step)
    if "-" in base:
        first_text, _, last_text = base.partition("-")
        first = _parse_value(expr, first_text, field, item)
        last = _parse_value(expr, last_text, field, item)
        if first > last:
            raise _refuse(
                expr,
                f"{where} {item!r}: the range runs backwards ({first} > {last}); "
                f"ranges do not wrap, write two ranges such as "
                f"'{first}-{field.high},{field.low}-{last}'",
            )
        return range(first, last + 1, step)
    first = _parse_value(expr, base, field, item)
    return range(first, (field.high if slash else first) + 1, step)


def _parse_value(expr: str, text: str, field: _Field, item: str) -> int:
    where = f"in the {field.name} field {item!r}"
    upper = text.upper()
    if upper in ("L", "W", "LW", "H") or (_NAME.search(text) and re.search("[0-9(]", text)):
        for letter, reason in _UNSUPPORTED_LETTERS:
            if letter in upper:
                raise _refuse(expr, f"{where}: {reason}")
    if _DIGITS.fullmatch(text):
        value = int(text)
        if not field.low <= value <= field.high:
            raise _refuse(
                expr,
                f"{where}: {value} is out of range {field.low}-{field.high}",
            )
        return value
    if _NAME.fullmatch(text):
        if field.names is None:
            raise _refuse(
                expr, f"{where}: names such as {text!r} are allowed only for months and days"
            )
        number = field.names.get(text.lower())
        if number is None:
            first, *_, last = field.names
            raise _refuse(
                expr,
                f"{where}: unknown name {text!r}; use three-letter English names "
                f"{first.upper()}..{last.upper()}",
            )
        return number
    if not text:
        raise _refuse(expr, f"{where}: a value is missing (negative numbers are not allowed)")
    if text == "*":
        raise _refuse(expr, f"{where}: '*' cannot be part of a range")
    raise _refuse(expr, f"{where}: {text!r} is not a number")
