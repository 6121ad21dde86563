"""What a job is: ``JobSpec``, the user-editable fields of one job, validated on construction.

A ``JobSpec`` is built from keyword arguments (``JobSpec(name=..., schedule=...)``)
or from its wire form (``JobSpec.from_wire(mapping)``, as a command carries
it); both validate every field and refuse bad input with
:class:`~dcrond.errors.InvalidRequest` naming the field. Validation here is
host-independent -- a replica re-checking a committed command must reach the
same verdict -- so whether the time zone exists in this host's tzdata is not
checked here but by the proposer (``check_on_host``).

``to_wire()`` gives the canonical form (every field, maps sorted by key),
which is what the log carries and what the job table stores.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, final

from dcrond import schedule as _schedule
from dcrond.errors import InvalidRequest
from dcrond.store._validate import (
    USER_RE,
    ZONE_RE,
    bad,
    check_bool,
    check_choice,
    check_int,
    check_job_name,
    check_number,
    check_optional_str,
    check_pattern,
    check_str,
    check_str_list,
    check_str_map,
    env_name,
    metadata_key,
    show,
    tag_key,
)

#: interpreter names a script may use (the runner maps them to programs); or an absolute path
INTERPRETERS: Final = ("bash", "python", "python3", "ruby", "sh")
CONCURRENCY: Final = ("allow", "forbid", "replace")
CATCH_UP: Final = ("none", "latest", "all")

MAX_TIMEOUT: Final = 30 * 86400  # seconds
MAX_BACKOFF: Final = 86400  # seconds
MAX_RETRIES: Final = 100
MAX_SCRIPT_BYTES: Final = 1 << 40  # a hard ceiling; the configured limit is checked at upload
MAX_AFTER: Final = 32
#: the most hosts ``on`` may ask for by number
MAX_ON_HOSTS: Final = 1000
MAX_SCRIPT_URL: Final = 4096
_SHA256: Final = re.compile(r"[0-9a-f]{64}")


@final
@dataclass(frozen=True, slots=True)
class Script:
    """A script kept in object storage by content: its sha256 (lowercase hex) and size in bytes.

    ``url`` is set when the script was taken from an object already in storage
    (``dcronctl job create/update --script-url``): where its bytes were read
    when this version was made. The version runs the pinned hash, never
    whatever the object holds later.
    """

    sha256: str
    size: int
    url: str | None = None

    def __post_init__(self) -> None:
        check_pattern("script.sha256", self.sha256, _SHA256, "64 lowercase hex digits")
        check_int("script.size", self.size, 0, MAX_SCRIPT_BYTES, "a size in bytes")
        if self.url is not None:
            check_str("script.url", self.url, max_len=MAX_SCRIPT_URL, min_len=1)

    def to_wire(self) -> dict[str, object]:
        """The map form: ``{"sha256": ..., "size": ...}`` (and ``"url"`` when set)."""
        wire: dict[str, object] = {"sha256": self.sha256, "size": self.size}
        if self.url is not None:
            wire["url"] = self.url
        return wire

    @staticmethod
    def from_wire(value: object) -> Script:
        """Read the map form; InvalidRequest if it is anything else."""
        if (
            not isinstance(value, Mapping)
            or not {"sha256", "size"} <= set(value)
            or not set(value) <= {"sha256", "size", "url"}
        ):
            raise bad(
                "script",
                value,
                'give {"sha256": <64 hex digits>, "size": <bytes>} (and optionally "url")',
            )
        return Script(value["sha256"], value["size"], value.get("url"))


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """The fields of one job that users set (timestamps and version are the table's).

    Exactly one of ``command`` (a shell command line) or ``script`` is set;
    ``interpreter`` runs a script and is None for command lines (it
    defaults to ``sh`` for scripts). Durations are seconds; ``timeout`` None
    means no limit. ``after`` is kept sorted; maps are kept sorted by key.
    """

    name: str
    schedule: str
    timezone: str = "UTC"
    command: str | None = None
    script: Script | None = None
    interpreter: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None
    timeout: int | float | None = None
    retries: int = 0
    backoff: int | float = 10
    backoff_multiplier: int | float = 2
    concurrency: str = "allow"
    catch_up: str = "latest"
    catch_up_limit: int = 10
    tags: Mapping[str, str] = field(default_factory=dict)
    #: how many matching hosts run each instant: "any" (one), "all", or a number
    on: str | int = "any"
    after: tuple[str, ...] = ()
    paused: bool = False
    description: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = object.__setattr__
        check_job_name("name", self.name)
        check_str("schedule", self.schedule, max_len=256, min_len=1)
        check_pattern(
            "timezone", self.timezone, ZONE_RE, "an IANA zone name such as 'UTC' or 'Europe/Berlin'"
        )
        try:  # the syntax only: the expression read in UTC needs no tzdata but UTC's
            _schedule.parse(self.schedule, "UTC")
        except InvalidRequest as exc:
            raise InvalidRequest(f"schedule: {exc}") from None
        if self.command is not None:
            check_str("command", self.command, max_len=65536, min_len=1, multiline=True)
            if not self.command.strip():
                raise bad("command", self.command, "give a non-blank command line")
        script: object = self.script
        if script is not None and not isinstance(script, Script):
            s(self, "script", Script.from_wire(script))
        if (self.command is None) == (self.script is None):
            raise InvalidRequest(
                "command, script: give exactly one of a command line or a script"
                + (" (both were given)" if self.command is not None else "")
            )
        if self.command is not None and self.interpreter is not None:
            raise bad(
                "interpreter",
                self.interpreter,
                "an interpreter runs a script; command lines always run with /bin/sh -c",
            )
        if self.script is not None:
            if self.interpreter is None:
                s(self, "interpreter", "sh")
            elif self.interpreter not in INTERPRETERS and not _absolute(self.interpreter):
                raise bad(
                    "interpreter",
                    self.interpreter,
                    "use one of " + ", ".join(INTERPRETERS) + " or an absolute path",
                )
        s(self, "args", check_str_list("args", self.args, max_items=256, max_len=8192))
        s(
            self,
            "env",
            check_str_map("env", self.env, key=env_name, max_items=256, max_value_len=32768),
        )
        if self.working_dir is not None and not _absolute(self.working_dir):
            raise bad("working_dir", self.working_dir, "give an absolute path, or null")
        if self.user is not None:
            check_pattern(
                "user", self.user, USER_RE, "a unix user name (such as 'backup') or a numeric uid"
            )
        if self.timeout is not None:
            s(
                self,
                "timeout",
                check_number(
                    "timeout", self.timeout, lo=0, lo_open=True, hi=MAX_TIMEOUT, unit=" of seconds"
                ),
            )
        check_int("retries", self.retries, 0, MAX_RETRIES, "a count")
        s(
            self,
            "backoff",
            check_number("backoff", self.backoff, lo=0, hi=MAX_BACKOFF, unit=" of seconds"),
        )
        multiplier = check_number("backoff_multiplier", self.backoff_multiplier, lo=1, hi=10)
        s(self, "backoff_multiplier", multiplier)
        check_choice("concurrency", self.concurrency, CONCURRENCY)
        check_choice("catch_up", self.catch_up, CATCH_UP)
        check_int("catch_up_limit", self.catch_up_limit, 1, 10_000, "a count of runs")
        s(
            self,
            "tags",
            check_str_map("tags", self.tags, key=tag_key, max_items=64, max_value_len=255),
        )
        if isinstance(self.on, bool) or not (
            self.on in ("any", "all") or (isinstance(self.on, int) and 1 <= self.on <= MAX_ON_HOSTS)
        ):
            raise bad(
                "on",
                self.on,
                f"use 'any' (one host), 'all' (every matching host) or a number 1-{MAX_ON_HOSTS}",
            )
        s(self, "after", _check_after(self.name, self.after))
        check_bool("paused", self.paused)
        check_str("description", self.description, max_len=4096, multiline=True)
        s(
            self,
            "metadata",
            check_str_map(
                "metadata", self.metadata, key=metadata_key, max_items=64, max_value_len=4096
            ),
        )

    # --- wire form ----------------------------------------------------------

    def to_wire(self) -> dict[str, object]:
        """Every field, in declaration order, as plain msgpack-able values."""
        return {
            "name": self.name,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "command": self.command,
            "script": None if self.script is None else self.script.to_wire(),
            "interpreter": self.interpreter,
            "args": list(self.args),
            "env": dict(self.env),
            "working_dir": self.working_dir,
            "user": self.user,
            "timeout": self.timeout,
            "retries": self.retries,
            "backoff": self.backoff,
            "backoff_multiplier": self.backoff_multiplier,
            "concurrency": self.concurrency,
            "catch_up": self.catch_up,
            "catch_up_limit": self.catch_up_limit,
            "tags": dict(self.tags),
            "on": self.on,
            "after": list(self.after),
            "paused": self.paused,
            "description": self.description,
            "metadata": dict(self.metadata),
        }

    @staticmethod
    def from_wire(value: object) -> JobSpec:
        """Build and validate a spec from a map; absent fields take their defaults.

        Unknown fields are refused by name.
        """
        if not isinstance(value, Mapping):
            raise bad("job", value, "give a map of job fields")
        unknown = sorted(str(k) for k in value if k not in SPEC_FIELDS)
        if unknown:
            raise InvalidRequest(
                f"job: unknown field {show(unknown[0])}; known fields: " + ", ".join(SPEC_FIELDS)
            )
        for required in ("name", "schedule"):
            if required not in value:
                raise InvalidRequest(f"{required}: missing; every job needs a {required}")
        kwargs: dict[str, Any] = {str(k): _from_wire_value(str(k), v) for k, v in value.items()}
        return JobSpec(**kwargs)

    def updated(self, changes: Mapping[str, object]) -> JobSpec:
        """Return the spec with ``changes`` (field -> wire value) applied and validated.

        Setting ``command`` clears ``script`` and ``interpreter`` and setting
        ``script`` clears ``command``, unless the change sets those too.
        """
        return JobSpec.from_wire(merge_changes(self.to_wire(), changes))


def merge_changes(wire: Mapping[str, object], changes: Mapping[str, object]) -> dict[str, object]:
    """The wire form ``wire`` with ``changes`` applied (see ``JobSpec.updated``); not validated."""
    values = dict(wire)
    if "command" in changes and changes["command"] is not None:
        if "script" not in changes:
            values["script"] = None
        if "interpreter" not in changes:
            values["interpreter"] = None
    if "script" in changes and changes["script"] is not None and "command" not in changes:
        values["command"] = None
    values.update(changes)
    return values


#: the spec's fields in their canonical order
SPEC_FIELDS: Final = tuple(f.name for f in dataclasses.fields(JobSpec))
#: fields an UpdateJob may change (all but the name)
UPDATABLE_FIELDS: Final = tuple(f for f in SPEC_FIELDS if f != "name")


def _default(f: dataclasses.Field[object]) -> object:
    if f.default is not dataclasses.MISSING:
        value: object = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return None
    return list(value) if isinstance(value, tuple) else value


#: each field's default in wire form (None for name and schedule, which have none)
SPEC_DEFAULTS: Final[dict[str, object]] = {f.name: _default(f) for f in dataclasses.fields(JobSpec)}


def _absolute(path: object) -> bool:
    return (
        isinstance(path, str)
        and 1 <= len(path) <= 4096
        and os.path.isabs(path)
        and "\0" not in path
        and "\n" not in path
    )


def _check_after(name: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise bad("after", value, f"give a list of at most {MAX_AFTER} job names")
    if len(value) > MAX_AFTER:
        raise InvalidRequest(f"after: {len(value)} jobs is too many; at most {MAX_AFTER}")
    names = [check_job_name(f"after[{i}]", v) for i, v in enumerate(value)]
    if name in names:
        raise bad("after", name, "a job cannot run after itself")
    if len(set(names)) != len(names):
        dup = sorted(n for n in names if names.count(n) > 1)[0]
        raise bad("after", dup, "name each job once")
    return tuple(sorted(names))


def _from_wire_value(name: str, value: object) -> object:
    if name == "script" and value is not None:
        return Script.from_wire(value)
    if name in ("args", "after") and isinstance(value, list):
        return tuple(value)
    return value


def check_change(name: object, value: object) -> None:
    """Check one field of an UpdateJob on its own (the whole job is checked when applied)."""
    if not isinstance(name, str) or name not in UPDATABLE_FIELDS:
        if name == "name":
            raise InvalidRequest("name: a job cannot be renamed; create a new job instead")
        raise InvalidRequest(
            f"unknown field {show(name)}; fields that can be updated: "
            + ", ".join(UPDATABLE_FIELDS)
        )
    if name in ("command", "script", "interpreter", "after"):
        # These depend on other fields; the merged spec checks them. Only
        # check what can be checked alone.
        if name == "script" and value is not None:
            Script.from_wire(value)
        if name == "command" and value is not None:
            check_str("command", value, max_len=65536, min_len=1, multiline=True)
        if name == "interpreter":
            check_optional_str("interpreter", value, max_len=4096)
        return
    probe = JobSpec(name="probe", schedule="@daily", command="true")
    probe.updated({name: value})


def check_on_host(spec: JobSpec, *, max_script_bytes: int | None = None) -> None:
    """Check what depends on this host: the job's time zone in its tzdata, the script limit.

    The proposer calls this before proposing (replicas do not, so that hosts
    with different tzdata or configuration cannot disagree on a committed
    command).
    """
    script = spec.script
    if max_script_bytes is not None and script is not None and script.size > max_script_bytes:
        raise InvalidRequest(
            f"script.size: {script.size} bytes is over this cluster's limit of "
            f"{max_script_bytes} bytes (max_script_bytes in the configuration)"
        )
    try:
        _schedule.parse(spec.schedule, spec.timezone)
    except InvalidRequest as exc:
        raise InvalidRequest(f"timezone: {exc}") from None
