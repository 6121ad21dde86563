"""What parse accepts, what it refuses, and what the refusal says."""

from __future__ import annotations

import pickle

import pytest

import dcrond.schedule
from dcrond.errors import InvalidRequest
from dcrond.schedule import Schedule, parse


def _refusal(expr: str, timezone: str = "UTC") -> str:
    with pytest.raises(InvalidRequest) as info:
        parse(expr, timezone)
    return str(info.value)


def test_reboot_refused_with_clear_error() -> None:
    message = _refusal("@reboot")
    assert "'@reboot' is not supported" in message
    assert "dcronctl job trigger" in message
    assert "valid examples: '*/5 * * * *'" in message


def test_unknown_zone_refused() -> None:
    message = _refusal("*/5 * * * *", "Europe/Berln")
    assert "unknown time zone 'Europe/Berln'" in message
    assert "did you mean 'Europe/Berlin'?" in message
    assert "did you mean 'America/New_York'?" in _refusal("@daily", "america/new_york")
    assert "unknown time zone 'Mars/Olympus_Mons'" in _refusal("@daily", "Mars/Olympus_Mons")


@pytest.mark.parametrize("zone", ["localtime", "Factory", "", "/etc/localtime", "../UTC"])
def test_host_and_placeholder_zones_refused(zone: str) -> None:
    assert f"unknown time zone {zone!r}" in _refusal("@daily", zone)


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("", "the expression is empty"),
        ("   ", "the expression is empty"),
        ("61 * * * *", "minute field '61': 61 is out of range 0-59"),
        ("* 24 * * *", "hour field '24': 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month field '0': 0 is out of range 1-31"),
        ("* * 32 * *", "day-of-month field '32': 32 is out of range 1-31"),
        ("* * * 13 *", "month field '13': 13 is out of range 1-12"),
        ("* * * 0 *", "month field '0': 0 is out of range 1-12"),
        ("* * * * 8", "day-of-week field '8': 8 is out of range 0-7"),
        ("60 * * * * *", "second field '60': 60 is out of range 0-59"),
        ("* * * *", "expected 5 fields"),
        ("* * * * * * * *", "got 8"),
        ("0 0 12 * * * 2030", "7 fields (with a year) are not supported"),
        ("@reboot", "'@reboot' is not supported"),
        ("@REBOOT", "'@reboot' is not supported"),
        ("@fortnightly", "unknown keyword '@fortnightly'"),
        ("@daily 5", "'@daily' takes nothing after it"),
        ("0 0 L * *", "'L' (last day) is not supported"),
        ("0 0 * * 5L", "'L' (last day) is not supported"),
        ("0 0 LW * *", "'L' (last day) is not supported"),
        ("0 0 15W * *", "'W' (nearest weekday) is not supported"),
        ("0 0 * * 5#2", "'#' (n-th weekday of the month) is not supported"),
        ("0 0 ? * MON", "'?' is not supported: use '*' instead"),
        ("H * * * *", "'H' (hashed value) is not supported"),
        ("H(0-29)/10 * * * *", "'H' (hashed value) is not supported"),
        ("5-1 * * * *", "the range runs backwards (5 > 1)"),
        ("0 0 * * FRI-MON", "the range runs backwards (5 > 1)"),
        ("*/0 * * * *", "the step 0 must be between 1 and 59"),
        ("*/60 * * * *", "the step 60 must be between 1 and 59"),
        ("0 */24 * * *", "the step 24 must be between 1 and 23"),
        ("*/x * * * *", "the step 'x' is not a number"),
        ("*/5/2 * * * *", "the step '5/2' is not a number"),
        ("1,,2 * * * *", "an empty item in a list"),
        ("1, * * * *", "an empty item in a list"),
        ("-5 * * * *", "a value is missing (negative numbers are not allowed)"),
        ("1- * * * *", "a value is missing"),
        ("*-5 * * * *", "'*' cannot be part of a range"),
        ("1.5 * * * *", "'1.5' is not a number"),
        ("+5 * * * *", "'+5' is not a number"),
        ("abc * * * *", "names such as 'abc' are allowed only for months and days"),
        ("0 0 * JULY *", "unknown name 'JULY'; use three-letter English names JAN..DEC"),
        ("0 0 * * THUR", "unknown name 'THUR'; use three-letter English names SUN..SAT"),
        ("0 0 30 2 *", "it never fires: no month in the month field has day 30"),
        ("0 0 31 4,6,9,11 *", "it never fires: no month in the month field has day 31"),
        ("0 0 * * *\n0 1 * * *", "one line of printable ASCII"),
        ("0 0 * * \u00a0", "one line of printable ASCII"),
        ("\u0665 * * * *", "one line of printable ASCII"),
        ("@every", "'@every' needs a duration"),
        ("@every 0s", "shorter than 1 second"),
        ("@every 500ms", "bad duration '500ms'"),
        ("@every 1.5h", "bad duration '1.5h'"),
        ("@every 90", "bad duration '90'"),
        ("@every 30m1h", "bad duration '30m1h'"),
        ("@every -5s", "bad duration '-5s'"),
        ("@every 367d", "longer than 366 days"),
        ("* " * 600, "longer than 1024 characters"),
    ],
)
def test_invalid_expression_refused_naming_the_problem(expr: str, problem: str) -> None:
    message = _refusal(expr)
    assert problem in message
    assert message.startswith("invalid schedule ")
    assert "valid examples:" in message


@pytest.mark.parametrize(
    "expr",
    [
        "* * * * *",
        "*/5 * * * *",
        "0 0 1 1 *",
        "0,15,30,45 9-17 * * 1-5",
        "0 9-17/2 * * MON-FRI",
        "0 9 * * mon,Wed,FRI",
        "0 0 1 jan,jul *",
        "5/15 * * * *",
        "0-0/1 0 1 * *",
        "0 0 * * 0-7",
        "0 0 29 2 *",
        "0 0 31 * *",
        "0 0 31 2 MON",
        "0 0 * * 7",
        "*/10 * * * * *",
        "0 0 12 * * *",
        "  30\t2 * *   *  ",
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "@Daily",
        "@every 1s",
        "@every 90s",
        "@every 1h30m",
        "@every 2d12h",
        "@every   15M",
        "@every 366d",
    ],
)
def test_valid_expression_accepted(expr: str) -> None:
    schedule = parse(expr, "Europe/Berlin")
    assert schedule.expr == expr.strip()
    assert schedule.timezone == "Europe/Berlin"
    assert schedule.next_after(1_790_000_000) > 1_790_000_000


def test_keywords_are_the_expressions_they_stand_for() -> None:
    pairs = {
        "@yearly": "0 0 1 1 *",
        "@annually": "0 0 1 1 *",
        "@monthly": "0 0 1 * *",
        "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *",
        "@midnight": "0 0 * * *",
        "@hourly": "0 * * * *",
    }
    for keyword, expr in pairs.items():
        for zone in ("UTC", "Europe/Berlin"):
            ours = list(parse(keyword, zone).iter_after(1_792_800_000, 20))
            assert ours == list(parse(expr, zone).iter_after(1_792_800_000, 20)), keyword


def test_non_string_input_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="a schedule must be a string, not int"):
        parse(5, "UTC")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="a time zone must be a string"):
        parse("@daily", None)  # type: ignore[arg-type]


def test_schedule_is_a_frozen_value() -> None:
    a = parse("*/5 * * * *", "Europe/Berlin")
    b = Schedule(" */5 * * * * ", "Europe/Berlin")
    assert a == b
    assert hash(a) == hash(b)
    assert a != parse("*/5 * * * *", "UTC")
    assert repr(a) == "Schedule(expr='*/5 * * * *', timezone='Europe/Berlin')"
    with pytest.raises(AttributeError):
        a.expr = "@daily"  # type: ignore[misc]
    copy = pickle.loads(pickle.dumps(a))
    assert copy == a
    assert copy.next_after(1_790_000_000) == a.next_after(1_790_000_000)


def test_constructing_a_schedule_validates_it() -> None:
    with pytest.raises(InvalidRequest, match="minute field '99'"):
        Schedule("99 * * * *")


def test_instant_outside_supported_years_is_a_caller_bug() -> None:
    schedule = parse("@daily")
    with pytest.raises(ValueError, match=r"outside years 1900\.\.9000"):
        schedule.next_after(dcrond.schedule.MAX_INSTANT + 1)
    with pytest.raises(ValueError, match=r"outside years 1900\.\.9000"):
        schedule.next_after(dcrond.schedule.MIN_INSTANT - 1)
    with pytest.raises(TypeError):
        schedule.next_after(1.5)  # type: ignore[arg-type]


def test_describe_says_how_the_schedule_runs() -> None:
    assert parse("@every 1h30m", "Europe/Berlin").describe() == (
        "every 1h30m, at UTC epoch multiples of 5400 s (the time zone does not apply)"
    )
    assert "fixed-time job" in parse("30 2 * * *", "Europe/Berlin").describe()
    assert "wildcard job" in parse("*/15 * * * *", "Europe/Berlin").describe()
    assert parse("@daily").describe() == "'@daily' on the wall clock of UTC (no DST)"


def test_public_surface() -> None:
    assert sorted(dcrond.schedule.__all__) == [
        "MAX_EVERY_SECONDS",
        "MAX_INSTANT",
        "MIN_EVERY_SECONDS",
        "MIN_INSTANT",
        "Schedule",
        "parse",
    ]
    for name in dcrond.schedule.__all__:
        assert hasattr(dcrond.schedule, name)
