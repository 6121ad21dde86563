"""cronsim as a second opinion, wherever its semantics are meant to agree with ours.

cronsim 2.8 mimics Debian cron's DST handling for 5-field expressions, like
dcrond. It differs (see docs/cron.md), so those cases are left out here:

* started inside a repeated hour it forgets which pass it is in, and can
  return an instant *before* its start;
* 6-field fixed-time expressions get no DST rules (twice in a fold, skipped
  in a gap);
* clock corrections of 3 hours or more are treated like DST;
* wildcard jobs in a zone with a 30-minute shift (Lord Howe): it steps
  hours as whole UTC hours, so on the fall-back day ``* */2 * * *`` skips
  02:00-02:29;
* wildcard jobs in a zone that changes its clocks at midnight (Santiago):
  moving to the next day it lands on the skipped 00:00 and fires at 01:00,
  even for ``* */2 6 * *`` whose hours are even;
* a stepped range of one value, such as ``5-5/10``, is read as ``5/10``
  (5 and every 10th after it); Debian cron and dcrond read it as 5.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from cronsim import CronSim
from hypothesis import assume, given

from dcrond.schedule import parse
from tests.schedule import oracle
from tests.schedule.strategies import DST_ZONES, five_field, profile, six_field, zone_and_instant

COUNT = 12


def _cronsim_after(expr: str, zone_name: str, instant: int, count: int) -> list[int]:
    zone = UTC if zone_name == "UTC" else ZoneInfo(zone_name)
    found: list[int] = []
    for moment in CronSim(expr, datetime.fromtimestamp(instant, zone)):
        stamp = int(moment.timestamp())
        if stamp > instant and (not found or stamp > found[-1]):
            found.append(stamp)
        if len(found) == count:
            break
    return found


def _comparable(expr: str) -> bool:
    cron = oracle.Cron.parse(expr)
    texts = (cron.second, cron.minute, cron.hour, cron.dom, cron.month, cron.dow)
    fields = zip(oracle.LIMITS, texts, strict=True)
    for field, text in fields:
        for item in text.split(","):
            base, slash, _ = item.partition("/")
            if slash and "-" in base:
                first, last = base.split("-")
                if oracle.number(first, field) == oracle.number(last, field):
                    return False
    return not cron.never_fires()


def _known_wildcard_difference(expr: str, zone_name: str) -> bool:
    """Wildcard jobs where cronsim's stepping goes wrong (see the module docstring)."""
    odd_zones = ("Australia/Lord_Howe", "America/Santiago")
    return zone_name in odd_zones and oracle.Cron.parse(expr).wildcard


def _in_second_pass(zone_name: str, instant: int) -> bool:
    return datetime.fromtimestamp(instant, ZoneInfo(zone_name)).fold == 1


def _ours(expr: str, zone_name: str, instant: int) -> list[int]:
    return list(parse(expr, zone_name).iter_after(instant, COUNT))


@profile(150)
@given(five_field(), zone_and_instant(zones=("UTC", *DST_ZONES)))
def test_five_field_agrees_with_cronsim(expr: str, where: tuple[str, int]) -> None:
    zone_name, instant = where
    assume(_comparable(expr))
    assume(not _in_second_pass(zone_name, instant))
    assume(not _known_wildcard_difference(expr, zone_name))
    assert _ours(expr, zone_name, instant) == _cronsim_after(expr, zone_name, instant, COUNT)


@profile(60)
@given(six_field(), zone_and_instant(zones=("UTC",)))
def test_six_field_agrees_with_cronsim_in_utc(expr: str, where: tuple[str, int]) -> None:
    zone_name, instant = where
    assume(_comparable(expr))
    assert _ours(expr, zone_name, instant) == _cronsim_after(expr, zone_name, instant, COUNT)


@profile(60)
@given(six_field(), zone_and_instant(zones=DST_ZONES))
def test_six_field_wildcard_jobs_agree_with_cronsim(expr: str, where: tuple[str, int]) -> None:
    zone_name, instant = where
    assume(oracle.Cron.parse(expr).wildcard and _comparable(expr))
    assume(not _known_wildcard_difference(expr, zone_name))
    assert _ours(expr, zone_name, instant) == _cronsim_after(expr, zone_name, instant, COUNT)


def test_where_cronsim_differs_six_field_fixed_time_runs_twice_in_cronsim() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = int(datetime(2026, 10, 24, 12, tzinfo=berlin).timestamp())
    theirs = _cronsim_after("0 30 2 * * *", "Europe/Berlin", start, 2)
    ours = _ours("0 30 2 * * *", "Europe/Berlin", start)[:2]
    assert [datetime.fromtimestamp(t, berlin).isoformat() for t in theirs] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",
    ]
    assert [datetime.fromtimestamp(t, berlin).isoformat() for t in ours] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_where_cronsim_differs_lord_howe_wildcard_hour_steps() -> None:
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    start = int(datetime(2026, 4, 5, 1, 59, 59, tzinfo=lord_howe).timestamp())  # +11:00
    theirs = _cronsim_after("* */2 * * *", "Australia/Lord_Howe", start, 1)
    ours = _ours("* */2 * * *", "Australia/Lord_Howe", start)[:1]
    assert [datetime.fromtimestamp(t, lord_howe).isoformat() for t in theirs] == [
        "2026-04-05T02:30:00+10:30"
    ]
    assert [datetime.fromtimestamp(t, lord_howe).isoformat() for t in ours] == [
        "2026-04-05T02:00:00+10:30"
    ]


def test_where_cronsim_differs_santiago_midnight_gap() -> None:
    santiago = ZoneInfo("America/Santiago")
    start = int(datetime(2026, 9, 5, 23, 30, tzinfo=santiago).timestamp())
    theirs = _cronsim_after("* */2 6 * *", "America/Santiago", start, 1)
    ours = _ours("* */2 6 * *", "America/Santiago", start)[:1]
    assert [datetime.fromtimestamp(t, santiago).isoformat() for t in theirs] == [
        "2026-09-06T01:00:00-03:00"
    ]
    assert [datetime.fromtimestamp(t, santiago).isoformat() for t in ours] == [
        "2026-09-06T02:00:00-03:00"
    ]
