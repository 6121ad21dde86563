"""Field checkers shared by job specs and commands: each names the field and what is allowed.

Every checker is a pure function of its arguments (no clock, no host state),
so a replica that re-validates a committed command reaches the same verdict
as the proposer. Each raises :class:`~dcrond.errors.InvalidRequest` with a
message of the form ``"<field>: <value> is not allowed; <what is>"``.

Types are checked strictly: ``True`` is not an integer, ``1.5`` is not a
count, and a list is not a string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Final

from dcrond.errors import InvalidRequest

#: job names: DNS-label-like, safe in run ids (``job@instant``), paths and URLs
JOB_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
JOB_NAME_RULE: Final = (
    "1 to 63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
)
#: environment variable names, as POSIX shells accept them
ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: tag keys (placement labels, like node tags)
TAG_KEY_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
#: unix user names (Debian's default NAME_REGEX, plus '.'), or a numeric uid
USER_RE: Final = re.compile(r"[a-z_][a-z0-9._-]{0,31}\$?|[0-9]{1,10}")
#: the syntax of an IANA zone name; whether the zone exists is checked by the proposer
ZONE_RE: Final = re.compile(r"[A-Za-z0-9_+-]{1,30}(/[A-Za-z0-9_+-]{1,30}){0,3}")

#: instants are integer milliseconds since the UNIX epoch, within these bounds
MIN_INSTANT_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_INSTANT_MS: Final = 221_845_392_000_000  # 9000-01-01T00:00:00Z

_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def show(value: object) -> str:
    """Return a short repr of a rejected value for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def bad(field: str, value: object, allowed: str) -> InvalidRequest:
    """Build the InvalidRequest for ``field`` holding ``value``, saying what is allowed."""
    return InvalidRequest(f"{field}: {show(value)} is not allowed; {allowed}")


def check_str(
    field: str,
    value: object,
    *,
    max_len: int,
    min_len: int = 0,
    multiline: bool = False,
) -> str:
    """Return ``value`` if it is a string of ``min_len..max_len`` characters without NUL.

    Control characters other than tab are refused unless ``multiline``
    (which allows newlines too).
    """
    allowed = f"give a string of {min_len} to {max_len} characters" + (
        "" if multiline else " on one line"
    )
    if not isinstance(value, str):
        raise bad(field, value, allowed)
    if not min_len <= len(value) <= max_len or "\0" in value:
        raise bad(field, value, allowed + " (no NUL)")
    if not multiline and ("\n" in value or "\r" in value or _CONTROL.search(value)):
        raise bad(field, value, allowed + " without control characters")
    if multiline and _CONTROL.search(value.replace("\r", "")):
        raise bad(field, value, allowed + " without control characters other than tab and newline")
    return value


def check_optional_str(field: str, value: object, *, max_len: int) -> str | None:
    """``check_str`` that also accepts None (meaning "not set")."""
    if value is None:
        return None
    return check_str(field, value, max_len=max_len, min_len=1)


def check_pattern(field: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    """Return ``value`` if it is a string that fully matches ``pattern``."""
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise bad(field, value, f"use {rule}")
    return value


def check_job_name(field: str, value: object) -> str:
    """Return a valid job name (see ``JOB_NAME_RULE``)."""
    return check_pattern(field, value, JOB_NAME_RE, JOB_NAME_RULE)


def check_int(field: str, value: object, lo: int, hi: int, what: str = "an integer") -> int:
    """Return ``value`` if it is an int (not a bool) in ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise bad(field, value, f"give {what} from {lo} to {hi}")
    return value


def check_optional_int(field: str, value: object, lo: int, hi: int, what: str) -> int | None:
    """``check_int`` that also accepts None."""
    if value is None:
        return None
    return check_int(field, value, lo, hi, what)


def check_bool(field: str, value: object) -> bool:
    """Return ``value`` if it is exactly True or False."""
    if not isinstance(value, bool):
        raise bad(field, value, "give true or false")
    return value


def check_number(
    field: str, value: object, *, lo: float, hi: float, lo_open: bool = False, unit: str = ""
) -> int | float:
    """Return a finite number in range, normalised: an integral float becomes an int.

    The normalisation makes ``30`` and ``30.0`` the same value, so they
    encode to the same bytes and compare equal in version diffs.
    """
    low = f"> {_num(lo)}" if lo_open else f">= {_num(lo)}"
    allowed = f"give a number{unit} {low} and <= {_num(hi)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(field, value, allowed)
    if isinstance(value, float) and not math.isfinite(value):
        raise bad(field, value, allowed)
    if value > hi or value < lo or (lo_open and value == lo):
        raise bad(field, value, allowed)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def check_choice(field: str, value: object, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise bad(field, value, "use one of " + ", ".join(choices))
    return value


def check_instant(field: str, value: object) -> int:
    """Return an instant: integer milliseconds since the UNIX epoch (UTC), years 2000..9000.

    The lower bound catches seconds passed where milliseconds are expected.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not MIN_INSTANT_MS <= value <= MAX_INSTANT_MS
    ):
        raise bad(
            field,
            value,
            "give integer milliseconds since the UNIX epoch (UTC) between "
            "2000-01-01 and 9000-01-01",
        )
    return value


def check_optional_instant(field: str, value: object) -> int | None:
    """``check_instant`` that also accepts None."""
    return None if value is None else check_instant(field, value)


def check_str_map(
    field: str,
    value: object,
    *,
    key: Callable[[str, object], str],
    max_items: int,
    max_value_len: int,
) -> dict[str, str]:
    """Return a copy of a str->str mapping, sorted by key, each key checked by ``key``."""
    if not isinstance(value, Mapping):
        raise bad(field, value, "give a map of string keys to string values")
    if len(value) > max_items:
        raise InvalidRequest(f"{field}: {len(value)} entries is too many; at most {max_items}")
    out: dict[str, str] = {}
    for k in sorted(value, key=lambda k: (not isinstance(k, str), str(k))):
        v = value[k]
        name = key(f"{field} key", k)
        out[name] = check_str(f"{field}[{name}]", v, max_len=max_value_len)
    return out


def check_str_list(
    field: str, value: object, *, max_items: int, max_len: int, item: str = "string"
) -> tuple[str, ...]:
    """Return a list of strings (a list or tuple; a string alone is refused) as a tuple."""
    if not isinstance(value, list | tuple):
        raise bad(field, value, f"give a list of at most {max_items} {item}s")
    if len(value) > max_items:
        raise InvalidRequest(f"{field}: {len(value)} items is too many; at most {max_items}")
    return tuple(
        check_str(f"{field}[{i}]", v, max_len=max_len, multiline=True) for i, v in enumerate(value)
    )


def env_name(field: str, value: object) -> str:
    """Check an environment variable name."""
    return check_pattern(
        field,
        value,
        ENV_NAME_RE,
        "a letter or '_' followed by letters, digits or '_' (at most 128 characters)",
    )


def tag_key(field: str, value: object) -> str:
    """Check a tag key."""
    return check_pattern(
        field,
        value,
        TAG_KEY_RE,
        "1 to 63 characters of letters, digits, '.', '_', '/' and '-', "
        "starting with a letter or digit",
    )


def metadata_key(field: str, value: object) -> str:
    """Check a metadata key: any one-line string of 1..128 characters."""
    return check_str(field, value, max_len=128, min_len=1)
