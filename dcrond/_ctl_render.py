"""How dcronctl shows the API's objects: rich tables, JSON, or names.

Presentation stays here, at the edge: the objects are the API's plain JSON
dicts. ``json`` bypasses rich entirely (a Console not attached to a terminal
wraps at 80 columns); ``name`` prints one id per line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

_out = Console(highlight=False)

#: (field, heading) shown by ``table``; ``wide`` adds the second list.
JOB_COLUMNS = [("name", "NAME"), ("schedule", "SCHEDULE"), ("timezone", "TZ"), ("paused", "PAUSED"),
               ("next_run", "NEXT"), ("last_state", "LAST")]  # fmt: skip
JOB_WIDE = [("version", "VERSION"), ("concurrency", "CONCURRENCY"), ("tags", "TAGS"), ("on", "ON"),
            ("updated_at", "UPDATED")]  # fmt: skip
RUN_COLUMNS = [("id", "ID"), ("state", "STATE"), ("host", "HOST"), ("started_at", "STARTED"),
               ("duration", "DURATION"), ("exit_code", "EXIT"), ("log", "LOG")]  # fmt: skip
RUN_WIDE = [("attempts", "ATTEMPTS"), ("scheduled_at", "SCHEDULED"), ("reason", "REASON")]
NODE_COLUMNS = [("name", "NAME"), ("address", "ADDRESS"), ("state", "STATE"),
                ("raft_role", "ROLE"), ("last_seen", "LAST SEEN")]  # fmt: skip
NODE_WIDE = [("tags", "TAGS"), ("free_slots", "FREE SLOTS"), ("version", "VERSION")]


def print_json(value: Any) -> None:
    """Exactly the API's JSON on stdout."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"not JSON: {type(value).__name__}")


def relative(iso: str | None, now: datetime | None = None) -> str:
    """``2026-11-23T10:00:00Z`` -> ``5m ago`` / ``in 12s``."""
    if not iso:
        return ""
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    future, secs = delta > 0, abs(int(delta))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            text = f"{secs // size}{unit}"
            break
    else:
        text = f"{secs}s"
    return f"in {text}" if future else f"{text} ago"


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key.endswith("_at") or key in ("next_run", "last_seen"):
        return relative(str(value))
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    if isinstance(value, list):
        return str(len(value)) if key == "attempts" else ",".join(map(str, value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "duration" and isinstance(value, int | float):
        return f"{value:.1f}s"
    return str(value)


def _table(rows: Sequence[dict[str, Any]], output: str, cols: list[tuple[str, str]],
           wide: list[tuple[str, str]], name_key: str = "name") -> None:  # fmt: skip
    if output == "json":
        print_json(list(rows))
        return
    if output == "name":
        for row in rows:
            sys.stdout.write(f"{row[name_key]}\n")
        return
    columns = cols + (wide if output == "wide" else [])
    table = Table(box=None, header_style="bold")
    for _, heading in columns:
        table.add_column(heading, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(key, row.get(key)) for key, _ in columns))
    _out.print(table)


def _one(obj: dict[str, Any], output: str, name_key: str = "name") -> None:
    if output == "json":
        print_json(obj)
        return
    if output == "name":
        sys.stdout.write(f"{obj[name_key]}\n")
        return
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in obj.items():
        if key == "attempts" and isinstance(value, list):
            table.add_row(key, f"{len(value)}")
            for a in value:
                table.add_row("", _attempt(a))
        else:
            table.add_row(key, _cell(key, value) if key.endswith("_at") else _plain(value))
    _out.print(table)


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=_jsonable)
    return str(value)


def _attempt(a: dict[str, Any]) -> str:
    log = _attempt_log(a)
    return (
        f"#{a.get('attempt')} {a.get('state')} on {a.get('host')}"
        f" exit={_plain(a.get('exit_code'))} {relative(a.get('started_at'))}"
        + (f" log={log}" if log else "")
    )


def _attempt_log(a: dict[str, Any]) -> str:
    """Where an attempt's log is: ``pending`` (not in storage yet), ``live``, ``stored``, or ''."""
    if a.get("log_pending"):
        return "pending"
    if a.get("state") == "running":
        return "live"
    return "stored" if a.get("log_path") else ""


def log_state(run: dict[str, Any]) -> str:
    """The LOG cell of a run: ``pending`` while any attempt's log waits for its upload,
    else where the current attempt's log is (``live`` while it runs, ``stored``, or
    empty for an attempt that printed nothing)."""
    attempts = [a for a in run.get("attempts") or [] if isinstance(a, dict)]
    if any(a.get("log_pending") for a in attempts):
        return "pending"
    return _attempt_log(attempts[-1]) if attempts else ""


def job(obj: dict[str, Any], output: str) -> None:
    """One job."""
    _one(obj, output)


def jobs(rows: list[dict[str, Any]], output: str) -> None:
    """A list of jobs."""
    _table(rows, output, JOB_COLUMNS, JOB_WIDE)


def run(obj: dict[str, Any], output: str) -> None:
    """One run with its attempts (tables add its LOG state)."""
    _one(obj if output in ("json", "name") else {**obj, "log": log_state(obj)}, output, "id")


def runs(rows: list[dict[str, Any]], output: str) -> None:
    """A list of runs (tables add a LOG column: see ``log_state``)."""
    if output not in ("json", "name"):
        rows = [{**row, "log": log_state(row)} for row in rows]
    _table(rows, output, RUN_COLUMNS, RUN_WIDE, "id")


def nodes(rows: list[dict[str, Any]], output: str) -> None:
    """Every host."""
    _table(rows, output, NODE_COLUMNS, NODE_WIDE)


def cluster(obj: dict[str, Any], output: str) -> None:
    """The cluster's status."""
    _one(obj, output, "cluster")


def history(rows: list[dict[str, Any]], output: str) -> None:
    """Every version of a job and what changed."""
    if output in ("json", "name"):
        _table(rows, output, [], [], "version")
        return
    table = Table(box=None, header_style="bold")
    for heading in ("VERSION", "WHEN", "WHO", "CHANGED"):
        table.add_column(heading, overflow="fold")
    for row in rows:
        changes = row.get("changes") or {}
        if isinstance(changes, dict):
            text = "; ".join(
                f"{k}: {_plain(v[0]) if isinstance(v, list) else ''} -> "
                f"{_plain(v[1]) if isinstance(v, list) else _plain(v)}"
                for k, v in sorted(changes.items())
            )
        else:
            text = ", ".join(map(str, changes))
        table.add_row(str(row.get("version")), relative(row.get("at")), str(row.get("actor")), text)
    _out.print(table)


def instants(rows: list[str], output: str) -> None:
    """Upcoming instants."""
    if output == "json":
        print_json(rows)
        return
    for iso in rows:
        sys.stdout.write(f"{iso}\t{relative(iso)}\n" if output != "name" else f"{iso}\n")


def message(result: Any, output: str, text: str) -> None:
    """A command that returns nothing much."""
    if output == "json":
        print_json(result)
    else:
        sys.stdout.write(text + "\n")
