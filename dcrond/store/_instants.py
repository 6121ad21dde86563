"""Instants as text: ISO-8601 UTC with ``Z``, and run ids (``job@instant``, ``job@instant~host``).

The table keeps instants as integer milliseconds since the UNIX epoch. As
text they are ``YYYY-MM-DDTHH:MM:SSZ``, with ``.mmm`` before the ``Z`` only
when the milliseconds are not zero -- so a run id is the same string on
every node and for every reader. Integer arithmetic only: no float rounding.
"""

from __future__ import annotations

import functools
import re
from datetime import date
from typing import Final

from dcrond.errors import InvalidRequest
from dcrond.store._validate import JOB_NAME_RE, show

_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_ISO: Final = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{3})?Z"
#: a host name as it may end a run id (the run of a job that runs on several hosts)
HOST_IN_RUN_ID: Final = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
RUN_ID_RE: Final = re.compile(rf"({JOB_NAME_RE.pattern})@({_ISO})(?:~({HOST_IN_RUN_ID}))?")


def format_instant(ms: int) -> str:
    """``1764212400000`` -> ``"2025-11-27T03:00:00Z"`` (``.mmm`` only when non-zero)."""
    seconds, millis = divmod(ms, 1000)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{_day(days)}T{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{text}.{millis:03d}Z" if millis else text + "Z"


@functools.lru_cache(maxsize=4096)
def _day(days: int) -> str:
    # cached: listing 100,000 jobs formats 200,000 instants over a few days
    return date.fromordinal(_EPOCH_ORDINAL + days).isoformat()


def format_optional(ms: int | None) -> str | None:
    """``format_instant`` that passes None through."""
    return None if ms is None else format_instant(ms)


def make_run_id(job: str, scheduled_at_ms: int, host: str | None = None) -> str:
    """The id of ``job``'s run for the instant ``scheduled_at_ms``: ``job@<ISO instant>``.

    A job that runs on several hosts per instant (``on`` = ``all`` or a
    number) has one run per host: ``job@<ISO instant>~<host>``.
    """
    base = f"{job}@{format_instant(scheduled_at_ms)}"
    return base if host is None else f"{base}~{host}"


def run_host(run_id: str) -> str | None:
    """The host a per-host run id names (``job@instant~host``), else None."""
    _, _, tail = run_id.rpartition("@")
    _, sep, host = tail.partition("~")
    return host if sep else None


def check_run_id(field: str, value: object) -> str:
    """Return ``value`` if it has the shape of a run id; InvalidRequest otherwise."""
    if not isinstance(value, str) or RUN_ID_RE.fullmatch(value) is None:
        raise InvalidRequest(
            f"{field}: {show(value)} is not allowed; a run id is <job>@<ISO-8601 UTC instant>, "
            "such as backup@2026-11-22T03:00:00Z (with ~<host> after it for a job that runs "
            "on several hosts)"
        )
    return value


def run_job(run_id: str) -> str:
    """The job part of a run id."""
    return run_id.rpartition("@")[0]
