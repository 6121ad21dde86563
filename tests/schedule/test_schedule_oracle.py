"""next_after agrees with an independent brute-force oracle across DST changes."""

from __future__ import annotations

import bisect
import itertools

from hypothesis import assume, event, example, given
from hypothesis import strategies as st

from dcrond.schedule import parse
from tests.schedule import oracle
from tests.schedule.strategies import (
    DAY,
    DST_ZONES,
    HOUR,
    KEYWORDS,
    dst_case,
    five_field,
    profile,
    six_field,
    transitions,
    zone_and_instant,
)

LIMIT = 120


def _check_against_oracle(expr: str, zone_name: str, instant: int, window: int) -> None:
    assume(not oracle.Cron.parse(expr).never_fires())
    expected = oracle.first_fires(expr, zone_name, instant, window, LIMIT)
    schedule = parse(expr, zone_name)
    got = list(schedule.iter_after(instant, len(expected) + 1))
    assert got[: len(expected)] == expected, (expr, zone_name, instant)
    _describe(expr, zone_name, expected)
    if len(expected) < LIMIT:
        assert got[len(expected)] > instant + window, (expr, zone_name, instant)


def _describe(expr: str, zone_name: str, fires: list[int]) -> None:
    """Label the example so --hypothesis-show-statistics shows what was covered."""
    kind = "wildcard" if oracle.Cron.parse(expr).wildcard else "fixed-time"
    switches = transitions(zone_name) if zone_name != "UTC" else []
    near = False
    for fire in fires:
        index = bisect.bisect_left(switches, fire - 3 * HOUR)
        near = near or (index < len(switches) and switches[index] <= fire + 3 * HOUR)
    event(f"{kind} job, {'a fire within 3 h of a clock change' if near else 'no DST in play'}")


@profile(300)
@given(dst_case())
@example(("30 2 * * *", "Europe/Berlin", 1774659600))  # 2026-03-28T01:00Z, spring forward
@example(("30 2 * * *", "Europe/Berlin", 1792886400))  # 2026-10-25T00:00Z, fall back
@example(("*/15 * * * *", "Europe/Berlin", 1792888200))  # inside the repeated hour
@example(("15 2 * * *", "Australia/Lord_Howe", 1791034200))  # 30-minute gap
@example(("45 1 * * *", "Australia/Lord_Howe", 1775313000))  # 30-minute fold
@example(("30 0 * * *", "America/Santiago", 1788660000))  # gap at midnight
@example(("0 12 * * *", "Pacific/Apia", 1325152800))  # the day Samoa skipped
def test_five_field_matches_oracle(case: tuple[str, str, int]) -> None:
    expr, zone_name, instant = case
    _check_against_oracle(expr, zone_name, instant, 3 * DAY)


@profile(120)
@given(dst_case(seconds=True, zones=("UTC", *DST_ZONES)))
def test_six_field_matches_oracle(case: tuple[str, str, int]) -> None:
    expr, zone_name, instant = case
    _check_against_oracle(expr, zone_name, instant, DAY + 6 * HOUR)


@profile(60)
@given(KEYWORDS, zone_and_instant())
def test_keywords_match_oracle(expr: str, where: tuple[str, int]) -> None:
    zone_name, instant = where
    _check_against_oracle(expr, zone_name, instant, 3 * DAY)


@profile(150)
@given(st.one_of(five_field(), six_field()), zone_and_instant(), st.integers(2, 40))
def test_iterating_never_repeats_or_goes_back(expr: str, where: tuple[str, int], n: int) -> None:
    zone_name, instant = where
    assume(not oracle.Cron.parse(expr).never_fires())
    got = list(parse(expr, zone_name).iter_after(instant, n))
    assert got[0] > instant
    assert all(a < b for a, b in itertools.pairwise(got))
