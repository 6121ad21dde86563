"""The user-visible rules of schedules, each on a worked example a person can check."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from dcrond.schedule import parse


def _runs(expr: str, zone: str, start: str, n: int) -> list[str]:
    """The next ``n`` runs after local time ``start`` in ``zone``, as local ISO strings."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)
    first = int(datetime.fromisoformat(start).replace(tzinfo=tz).timestamp())
    return [
        datetime.fromtimestamp(t, tz).isoformat() for t in parse(expr, zone).iter_after(first, n)
    ]


def test_spring_forward_skipped_hour_job_runs_right_after_jump() -> None:
    # Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 never happens.
    assert _runs("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00", 2) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    # New York, 2026-03-08: 02:00 EST becomes 03:00 EDT.
    assert _runs("30 2 * * *", "America/New_York", "2026-03-07T12:00", 2) == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
    ]


def test_several_skipped_times_of_one_job_run_once_after_the_jump() -> None:
    assert _runs("0,20,40 2 * * *", "Europe/Berlin", "2026-03-28T12:00", 2) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:00:00+02:00",
    ]


def test_fall_back_repeated_hour_job_runs_once() -> None:
    # Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    assert _runs("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00", 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    # New York, 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens twice.
    assert _runs("30 1 * * *", "America/New_York", "2026-10-31T12:00", 2) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
    ]


def test_fixed_time_job_asked_during_the_repeated_hour_waits_for_the_next_day() -> None:
    # It is 02:10 CET, the second 02:10 of the day; 02:30 already ran at 02:30 CEST.
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Berlin")
    now = int(datetime(2026, 10, 25, 2, 10, fold=1, tzinfo=tz).timestamp())
    [run] = parse("30 2 * * *", "Europe/Berlin").iter_after(now, 1)
    assert datetime.fromtimestamp(run, tz).isoformat() == "2026-10-26T02:30:00+01:00"


def test_every_15_minutes_runs_in_both_repeated_hours() -> None:
    assert _runs("*/15 * * * *", "Europe/Berlin", "2026-10-25T01:50", 10) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:15:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:45:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:15:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T02:45:00+01:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:15:00+01:00",
    ]


def test_every_15_minutes_has_nothing_in_the_skipped_hour() -> None:
    assert _runs("*/15 * * * *", "Europe/Berlin", "2026-03-29T01:40", 3) == [
        "2026-03-29T01:45:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:15:00+02:00",
    ]


def test_hourly_is_a_wildcard_job_and_runs_in_both_repeated_hours() -> None:
    expected = [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]
    assert _runs("@hourly", "Europe/Berlin", "2026-10-25T01:30", 3) == expected
    assert _runs("0 * * * *", "Europe/Berlin", "2026-10-25T01:30", 3) == expected


def test_wildcard_means_the_field_text_starts_with_a_star_as_in_debian_cron() -> None:
    # "0-59 2" is a fixed-time job (no '*'): the repeated 02:xx run only once...
    fixed = _runs("0-59 2 * * *", "Europe/Berlin", "2026-10-25T01:59", 61)
    assert fixed[59] == "2026-10-25T02:59:00+02:00"
    assert fixed[60] == "2026-10-26T02:00:00+01:00"
    # ...while "*/1 2" selects the same minutes but is a wildcard job: both passes.
    wild = _runs("*/1 2 * * *", "Europe/Berlin", "2026-10-25T01:59", 61)
    assert wild[59] == "2026-10-25T02:59:00+02:00"
    assert wild[60] == "2026-10-25T02:00:00+01:00"
    assert parse("0-59 2 * * *").fixed_time
    assert not parse("*/1 2 * * *").fixed_time


def test_lord_howe_half_hour_shift() -> None:
    # 2026-10-04: 02:00 +10:30 becomes 02:30 +11:00, so 02:15 is skipped.
    assert _runs("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:00", 2) == [
        "2026-10-04T02:30:00+11:00",
        "2026-10-05T02:15:00+11:00",
    ]
    # 2026-04-05: 02:00 +11:00 becomes 01:30 +10:30, so 01:30-01:59 repeats.
    assert _runs("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T12:00", 2) == [
        "2026-04-05T01:45:00+11:00",
        "2026-04-06T01:45:00+10:30",
    ]
    assert _runs("*/15 * * * *", "Australia/Lord_Howe", "2026-04-05T01:20", 6) == [
        "2026-04-05T01:30:00+11:00",
        "2026-04-05T01:45:00+11:00",
        "2026-04-05T01:30:00+10:30",
        "2026-04-05T01:45:00+10:30",
        "2026-04-05T02:00:00+10:30",
        "2026-04-05T02:15:00+10:30",
    ]


def test_southern_hemisphere_changes_run_by_the_same_rules() -> None:
    # Santiago, 2026-09-06: midnight -04 becomes 01:00 -03; 00:30 is skipped.
    assert _runs("30 0 * * *", "America/Santiago", "2026-09-05T12:00", 2) == [
        "2026-09-06T01:00:00-03:00",
        "2026-09-07T00:30:00-03:00",
    ]
    # Auckland, 2026-04-05: 03:00 +13 becomes 02:00 +12; 02:30 runs once.
    assert _runs("30 2 * * *", "Pacific/Auckland", "2026-04-04T12:00", 2) == [
        "2026-04-05T02:30:00+13:00",
        "2026-04-06T02:30:00+12:00",
    ]


def test_clock_corrections_of_three_hours_or_more_are_not_dst() -> None:
    # Samoa skipped 2011-12-30 entirely: the day's noon run is not made up.
    assert _runs("0 12 * * *", "Pacific/Apia", "2011-12-29T00:00", 2) == [
        "2011-12-29T12:00:00-10:00",
        "2011-12-31T12:00:00+14:00",
    ]
    # Kwajalein lived 1969-09-30 twice: a fixed-time job runs on both.
    assert _runs("0 12 * * *", "Pacific/Kwajalein", "1969-09-30T00:00", 2) == [
        "1969-09-30T12:00:00+11:00",
        "1969-09-30T12:00:00-12:00",
    ]


def test_six_field_seconds() -> None:
    assert _runs("*/20 * * * * *", "UTC", "2026-01-01T00:00:00", 4) == [
        "2026-01-01T00:00:20+00:00",
        "2026-01-01T00:00:40+00:00",
        "2026-01-01T00:01:00+00:00",
        "2026-01-01T00:01:20+00:00",
    ]
    assert _runs("30 0 12 * * MON", "UTC", "2026-01-01T00:00:00", 2) == [
        "2026-01-05T12:00:30+00:00",
        "2026-01-12T12:00:30+00:00",
    ]
    # A fixed-time 6-field job follows the same DST rules as a 5-field one.
    assert _runs("15 30 2 * * *", "Europe/Berlin", "2026-03-28T12:00", 2) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:15+02:00",
    ]
    assert _runs("15 30 2 * * *", "Europe/Berlin", "2026-10-24T12:00", 2) == [
        "2026-10-25T02:30:15+02:00",
        "2026-10-26T02:30:15+01:00",
    ]
    assert parse("*/10 * * * * *").has_seconds
    assert not parse("*/10 * * * *").has_seconds


def test_next_after_is_strictly_after_even_on_a_matching_instant() -> None:
    schedule = parse("*/5 * * * *")
    on_the_dot = 1_790_000_100  # a multiple of 300
    assert schedule.next_after(on_the_dot) == on_the_dot + 300
    assert schedule.next_after(on_the_dot - 1) == on_the_dot


def test_every_duration() -> None:
    every_90s = parse("@every 90s", "Europe/Berlin")
    assert list(every_90s.iter_after(1_000_000_000, 3)) == [
        1_000_000_080,
        1_000_000_170,
        1_000_000_260,
    ]
    assert all(t % 90 == 0 for t in every_90s.iter_after(1_790_000_000, 50))
    assert every_90s.kind == "every"
    assert every_90s.period == 90
    assert parse("@every 1h30m").period == 5400
    assert parse("@every 30s").next_after(59) == 60
    assert parse("@every 1d").period == 86400
    # Anchored to the epoch, not to the zone: the same instants everywhere.
    for zone in ("UTC", "Australia/Lord_Howe", "America/Santiago"):
        assert list(parse("@every 1h30m", zone).iter_after(1_792_886_400, 3)) == [
            1_792_886_400 + 5400 - 1_792_886_400 % 5400 + k * 5400 for k in range(3)
        ]


def test_day_of_month_and_day_of_week_are_or_when_both_restricted() -> None:
    # 1st and 15th AND every Monday: January 2026 starts on a Thursday.
    assert [run[:10] for run in _runs("0 0 1,15 * MON", "UTC", "2026-01-01T00:00", 5)] == [
        "2026-01-05",
        "2026-01-12",
        "2026-01-15",
        "2026-01-19",
        "2026-01-26",
    ]


def test_a_day_field_starting_with_a_star_makes_them_and_as_in_debian_cron() -> None:
    # "*/2" (odd days) starts with '*': only odd days that are Mondays.
    assert [run[:10] for run in _runs("0 0 */2 * MON", "UTC", "2026-01-01T00:00", 3)] == [
        "2026-01-05",
        "2026-01-19",
        "2026-02-09",
    ]


def test_names_sunday_seven_and_n_slash_step() -> None:
    assert _runs("0 9 * * sun", "UTC", "2026-01-01T00:00", 1) == _runs(
        "0 9 * * 7", "UTC", "2026-01-01T00:00", 1
    )
    assert _runs("0 9 1 jan-MAR/2 *", "UTC", "2026-01-02T00:00", 2) == [
        "2026-03-01T09:00:00+00:00",
        "2027-01-01T09:00:00+00:00",
    ]
    assert _runs("50/5 10 * * *", "UTC", "2026-01-01T00:00", 3) == [
        "2026-01-01T10:50:00+00:00",
        "2026-01-01T10:55:00+00:00",
        "2026-01-02T10:50:00+00:00",
    ]


def test_leap_day_schedule_waits_for_a_leap_year() -> None:
    assert _runs("0 0 29 2 *", "UTC", "2026-01-01T00:00", 2) == [
        "2028-02-29T00:00:00+00:00",
        "2032-02-29T00:00:00+00:00",
    ]


def test_host_timezone_is_never_used(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _runs("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00", 3)
    every = list(parse("@every 1h").iter_after(1_792_886_400, 3))
    try:
        for host_zone in ("America/New_York", "Asia/Kolkata"):
            monkeypatch.setenv("TZ", host_zone)
            time.tzset()
            assert _runs("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00", 3) == expected
            assert list(parse("@every 1h").iter_after(1_792_886_400, 3)) == every
    finally:
        monkeypatch.undo()
        time.tzset()


def test_rare_schedule_decades_apart_is_still_found() -> None:
    # Day-of-week "*/7" starts with '*', so it is AND: Feb 29 that is a Sunday.
    assert [run[:10] for run in _runs("0 0 29 2 */7", "UTC", "2089-01-01T00:00", 2)] == [
        "2128-02-29",
        "2156-02-29",
    ]
