"""The daemon's log formats: journal, plain, json, and rich on a terminal.

Every log line dcrond writes starts with a stable event name in
snake_case, followed by ``key=value`` fields (strings with spaces are
quoted the way Python's ``repr`` quotes them):

    run_started job=backup run=backup@2026-11-22T03:00Z node=h2

The formats differ only in the frame around that text:

- ``journal``: ``<6>`` and friends (sd-daemon priority prefixes), no
  timestamp: journald adds its own and keeps the priority, so
  ``journalctl -p warning`` works. Every line of a multi-line record (a
  traceback) carries the prefix, so no line is misfiled as info.
- ``plain``: an ISO-8601 UTC timestamp, the level and the logger's name.
- ``json``: one object per line for log shippers: ``ts``, ``level``,
  ``logger``, ``event``, every field as a string, the whole ``msg`` and,
  for an exception, ``exc``. Fields are parsed back out of the text, so
  ``msg`` is the authority when a message does not follow the convention.
- ``rich``: rich's handler, for a person at a terminal.

The default is ``journal`` when stderr is the stream systemd's
``$JOURNAL_STREAM`` names (checked by device and inode, as systemd asks,
so a daemon whose stderr was redirected elsewhere does not write
prefixes), ``rich`` when stderr is a terminal, else ``plain``.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from typing import IO, Any, final

FORMATS = ("journal", "plain", "json")

#: an event name: snake_case with at least one underscore (``run_started``)
_EVENT = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+")
#: ``key=value`` with a bare or a repr-quoted value
_FIELD = re.compile(
    r"""(?<!\S)([A-Za-z_][A-Za-z0-9_.]*)=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S*)"""
)
_RESERVED = frozenset({"ts", "level", "logger", "event", "msg", "exc"})


def _priority(levelno: int) -> int:
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def _utc(created: float) -> str:
    whole = int(created)
    ms = int((created - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


def parse_event(message: str) -> tuple[str | None, dict[str, str]]:
    """Split ``event key=value …`` into the event name and its fields (all strings)."""
    first = message.split(None, 1)[0] if message.strip() else ""
    event = first if _EVENT.fullmatch(first) else None
    fields: dict[str, str] = {}
    for key, raw in _FIELD.findall(message):
        if raw[:1] in ("'", '"') and len(raw) >= 2:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
            fields[key] = value if isinstance(value, str) else str(value)
        else:
            # "run=x: why" — a colon closing the field list is not part of the value
            fields[key] = raw[:-1] if raw.endswith(":") else raw
    return event, fields


@final
class JournalFormatter(logging.Formatter):
    """Plain lines with sd-daemon priority prefixes (``<3>``…``<7>``) for journald."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


@final
class PlainFormatter(logging.Formatter):
    """``2026-11-22T03:00:00.012Z INFO dcrond.engine run_started job=backup …``."""

    def format(self, record: logging.LogRecord) -> str:
        head = f"{_utc(record.created)} {record.levelname} {record.name} "
        return head + super().format(record)


@final
class JsonFormatter(logging.Formatter):
    """One JSON object per record and line."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        event, fields = parse_event(msg)
        out: dict[str, Any] = {
            "ts": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event,
        }
        for key, value in fields.items():
            if key not in _RESERVED:
                out[key] = value
        out["msg"] = msg
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def stream_is_journal(stream: IO[str], environ: Mapping[str, str]) -> bool:
    """``stream`` is the journal connection ``$JOURNAL_STREAM`` (``DEV:INODE``) names."""
    dev, _, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def default_format(stream: IO[str], environ: Mapping[str, str]) -> str:
    """``journal`` under systemd, ``rich`` on a terminal, else ``plain``."""
    if stream_is_journal(stream, environ):
        return "journal"
    with contextlib.suppress(AttributeError, ValueError):
        if stream.isatty():
            return "rich"
    return "plain"


def make_handler(fmt: str, stream: IO[str]) -> logging.Handler:
    """A handler writing ``fmt`` (one of ``FORMATS`` or ``rich``) to ``stream``."""
    if fmt == "rich":
        from rich.console import Console  # noqa: PLC0415 (only on a terminal)
        from rich.logging import RichHandler  # noqa: PLC0415

        rich = RichHandler(console=Console(file=stream), show_path=False, markup=False)
        # rich draws time and level itself; without a formatter of its own,
        # logging.basicConfig would give it "LEVEL:logger:message"
        rich.setFormatter(logging.Formatter("%(message)s"))
        return rich
    handler = logging.StreamHandler(stream)
    formatter: logging.Formatter
    if fmt == "journal":
        formatter = JournalFormatter()
    elif fmt == "json":
        formatter = JsonFormatter()
    elif fmt == "plain":
        formatter = PlainFormatter()
    else:
        raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(FORMATS)}")
    handler.setFormatter(formatter)
    return handler
