"""When jobs run: parse schedule expressions and compute their next fire instants.

``parse(expr, timezone)`` validates an expression and returns a frozen
:class:`Schedule`; ``Schedule.next_after(instant)`` gives the next fire
instant in UTC epoch seconds. Accepted syntax (docs/cron.md has the full
story):

* 5-field cron (``minute hour day-of-month month day-of-week``) and 6-field
  cron with seconds first;
* ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``,
  ``@hourly``;
* ``@every <duration>`` such as ``@every 90s`` or ``@every 1h30m``, anchored to
  the UNIX epoch: it fires at every multiple of the period in UTC epoch
  seconds, whatever the zone, so every node computes the same instants.

Cron expressions are read on the wall clock of the job's IANA zone (default
UTC, never the host's) with Debian cron's DST rules: a fixed-time job whose
time falls in the skipped hour runs right after the jump, one in the
repeated hour runs once (first occurrence); a wildcard job (minute or hour
field starting with ``*``, ``@hourly``) follows the wall clock, so it runs
in both repeated hours and not at all in the skipped one.

Errors: anything dcrond cannot honour raises :class:`~dcrond.errors.InvalidRequest`
(the caller's fault) with a message naming the problem. ``next_after`` raises
``ValueError`` for an instant outside years 1900..9000 (a bug in the caller).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Literal, final

from dcrond._schedule_cron import CronPlan
from dcrond._schedule_syntax import (
    MAX_EVERY_SECONDS,
    MIN_EVERY_SECONDS,
    CronSpec,
    EverySpec,
    parse_spec,
)
from dcrond._schedule_zone import load_zone
from dcrond.errors import InvalidRequest

__all__ = [
    "MAX_EVERY_SECONDS",
    "MAX_INSTANT",
    "MIN_EVERY_SECONDS",
    "MIN_INSTANT",
    "Schedule",
    "parse",
]

MIN_INSTANT: Final = -2_208_988_800  # 1900-01-01T00:00:00Z
MAX_INSTANT: Final = 221_845_392_000  # 9000-01-01T00:00:00Z


@final
@dataclass(frozen=True, slots=True)
class _Compiled:
    spec: CronSpec | EverySpec
    plan: CronPlan | None


@functools.lru_cache(maxsize=8192)
def _compile(expr: str, timezone: str) -> _Compiled:
    zone = load_zone(timezone)
    spec = parse_spec(expr)
    if isinstance(spec, EverySpec):
        return _Compiled(spec, None)
    return _Compiled(spec, CronPlan(spec, zone))


@final
@dataclass(frozen=True, slots=True)
class Schedule:
    """A validated schedule: an expression read in an IANA time zone.

    Constructing one validates it (same as :func:`parse`); two schedules are
    equal when their stripped expression and zone name are. Compiled forms
    are cached per ``(expr, timezone)``, so 100,000 jobs sharing a handful
    of expressions share a handful of croniter templates.
    """

    expr: str
    timezone: str = "UTC"
    _compiled: _Compiled = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.expr, str):
            raise InvalidRequest(f"a schedule must be a string, not {type(self.expr).__name__}")
        if not isinstance(self.timezone, str):
            raise InvalidRequest(
                f"a time zone must be a string such as 'Europe/Berlin', "
                f"not {type(self.timezone).__name__}"
            )
        expr = self.expr.strip(" \t")
        object.__setattr__(self, "expr", expr)
        object.__setattr__(self, "_compiled", _compile(expr, self.timezone))

    def __reduce__(self) -> tuple[type[Schedule], tuple[str, str]]:
        return (Schedule, (self.expr, self.timezone))

    @property
    def kind(self) -> Literal["cron", "every"]:
        """``"every"`` for ``@every`` schedules, ``"cron"`` for everything else."""
        return "every" if isinstance(self._compiled.spec, EverySpec) else "cron"

    @property
    def period(self) -> int | None:
        """The period in seconds of an ``@every`` schedule, else None."""
        spec = self._compiled.spec
        return spec.period if isinstance(spec, EverySpec) else None

    @property
    def fixed_time(self) -> bool:
        """True if Debian's DST rules apply (a cron job whose minute and hour are not ``*``)."""
        spec = self._compiled.spec
        return isinstance(spec, CronSpec) and spec.fixed_time

    @property
    def has_seconds(self) -> bool:
        """True if the schedule can fire at a second other than :00 of a minute."""
        spec = self._compiled.spec
        if isinstance(spec, EverySpec):
            return spec.period % 60 != 0
        return spec.has_seconds

    def next_after(self, instant: int) -> int:
        """Return the first fire instant strictly after ``instant`` (both UTC epoch seconds)."""
        instant = operator.index(instant)
        if not MIN_INSTANT <= instant <= MAX_INSTANT:
            raise ValueError(f"instant {instant} is outside years 1900..9000")
        compiled = self._compiled
        if compiled.plan is None:
            assert isinstance(compiled.spec, EverySpec)
            period = compiled.spec.period
            return (instant // period + 1) * period
        return compiled.plan.next_after(instant)

    def iter_after(self, instant: int, n: int | None = None) -> Iterator[int]:
        """Yield the next ``n`` fire instants after ``instant`` in order (all of them if None)."""
        count = 0
        while n is None or count < n:
            instant = self.next_after(instant)
            yield instant
            count += 1

    def describe(self) -> str:
        """Return one line saying how this schedule runs, for people."""
        spec = self._compiled.spec
        if isinstance(spec, EverySpec):
            return (
                f"every {_duration(spec.period)}, at UTC epoch multiples of {spec.period} s "
                f"(the time zone does not apply)"
            )
        where = f"{self.expr!r} on the wall clock of {self.timezone}"
        if self.timezone == "UTC":
            return f"{where} (no DST)"
        if spec.fixed_time:
            return (
                f"{where}; fixed-time job: a time in the skipped DST hour runs right after "
                f"the jump, a time in the repeated hour runs once"
            )
        return (
            f"{where}; wildcard job: runs by the wall clock, so in both repeated DST hours "
            f"and not at all in the skipped one"
        )


def _duration(seconds: int) -> str:
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            count, seconds = divmod(seconds, size)
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse(expr: str, timezone: str = "UTC") -> Schedule:
    """Validate ``expr`` in ``timezone`` and return its Schedule; raise InvalidRequest if bad."""
    return Schedule(expr, timezone)
