"""Jobs: create, update, pause, resume, delete, versions and diffs, and refusals of bad input."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from dcrond.errors import AlreadyExists, InvalidRequest, NotFound
from dcrond.store import (
    CreateJob,
    DeleteJob,
    JobSpec,
    JobStore,
    PauseJob,
    Rejected,
    ResumeJob,
    Script,
    UpdateJob,
    unwrap,
)
from tests.store.conftest import Proposer

SHA = "ab" * 32


def test_create_returns_the_job_as_get_and_list_show_it(p: Proposer, store: JobStore) -> None:
    job = p.create(
        "backup",
        schedule="30 2 * * *",
        timezone="Europe/Berlin",
        env={"B": "2", "A": "1"},
        tags={"zone": "eu"},
        timeout=600.0,
        retries=2,
        description="nightly\nbackup",
    )
    assert job["name"] == "backup"
    assert job["schedule"] == "30 2 * * *"
    assert job["timezone"] == "Europe/Berlin"
    assert job["paused"] is False
    assert job["version"] == 1
    assert job["timeout"] == 600  # 600.0 is kept as the integer it is
    assert list(job["env"]) == ["A", "B"]  # maps are canonical: sorted by key
    assert job["created_at"] == "2026-01-01T00:00:01Z"
    assert job["created_by"] == job["updated_by"] == "alice"
    assert store.get_job("backup") == job
    p.create("alpha")
    assert [j["name"] for j in store.list_jobs()] == ["alpha", "backup"]


def test_a_script_job_pins_the_script_hash_and_defaults_to_sh(p: Proposer) -> None:
    job = p.create("etl", script=Script(SHA, 120))
    assert job["script"] == {"sha256": SHA, "size": 120}
    assert job["command"] is None
    assert job["interpreter"] == "sh"
    job = p.create("etl2", script=Script(SHA, 1), interpreter="/opt/py/bin/python")
    assert job["interpreter"] == "/opt/py/bin/python"


def test_duplicate_name_is_refused_with_already_exists_and_changes_nothing(
    p: Proposer, store: JobStore
) -> None:
    p.create("backup")
    before = store.dump(data_only=True)
    result = p.apply(
        CreateJob(job=JobSpec(name="backup", schedule="@daily", command="x"), **p.common())
    )
    assert isinstance(result, Rejected) and result.code == "already_exists"
    with pytest.raises(AlreadyExists, match="'backup' already exists"):
        unwrap(result)
    assert store.dump(data_only=True) == before


# (field, bad value, words the message must contain)
BAD_FIELDS: list[tuple[str, Any, str]] = [
    ("name", "Bad Name", "name: 'Bad Name' is not allowed; use 1 to 63 characters"),
    ("name", "", "name:"),
    ("name", "a" * 64, "name:"),
    ("name", "-lead", "name:"),
    ("name", "a@b", "name:"),
    ("schedule", "61 * * * *", "schedule:"),
    ("schedule", "@reboot", "schedule:"),
    ("schedule", "", "schedule:"),
    ("timezone", "Not a zone!", "timezone:"),
    ("command", "", "command:"),
    ("command", "   ", "command:"),
    ("command", "a\0b", "command:"),
    ("interpreter", "sh", "interpreter: 'sh' is not allowed; an interpreter runs a script"),
    ("args", "not a list", "args:"),
    ("args", [1], "args[0]:"),
    ("env", {"1BAD": "x"}, "env key:"),
    ("env", {"A": 1}, "env[A]:"),
    ("env", ["A=1"], "env:"),
    ("working_dir", "relative/dir", "working_dir:"),
    ("user", "Root User", "user:"),
    ("timeout", 0, "timeout: 0 is not allowed; give a number of seconds > 0"),
    ("timeout", -5, "timeout:"),
    ("timeout", "10", "timeout:"),
    ("timeout", float("nan"), "timeout:"),
    ("timeout", 10**9, "timeout:"),
    ("retries", -1, "retries:"),
    ("retries", 101, "retries:"),
    ("retries", True, "retries:"),
    ("retries", 1.5, "retries:"),
    ("backoff", -1, "backoff:"),
    ("backoff_multiplier", 0.5, "backoff_multiplier:"),
    ("concurrency", "sometimes", "concurrency: 'sometimes' is not allowed; use one of allow"),
    ("catch_up", "maybe", "catch_up:"),
    ("catch_up_limit", 0, "catch_up_limit:"),
    ("tags", {"bad key": "v"}, "tags key:"),
    ("tags", {"k": "a\nb"}, "tags[k]:"),
    ("after", ["Bad"], "after[0]:"),
    ("after", "other", "after:"),
    ("after", ["job"], "after: 'job' is not allowed; a job cannot run after itself"),
    ("after", ["x", "x"], "after:"),
    ("paused", "yes", "paused:"),
    ("description", 5, "description:"),
    ("metadata", {"": "x"}, "metadata key:"),
]


@pytest.mark.parametrize(("field", "value", "words"), BAD_FIELDS)
def test_every_bad_field_is_refused_by_name_before_proposing(
    field: str, value: Any, words: str
) -> None:
    fields: dict[str, Any] = {"name": "job", "schedule": "@hourly", "command": "true"}
    fields[field] = value
    with pytest.raises(InvalidRequest) as err:
        JobSpec(**fields)
    assert words in str(err.value)


@pytest.mark.parametrize(("field", "value", "words"), BAD_FIELDS)
def test_every_bad_field_in_the_log_is_rejected_and_changes_nothing(
    p: Proposer, store: JobStore, field: str, value: Any, words: str
) -> None:
    """A replica re-validates what it applies: a bad field in a committed entry changes nothing."""
    p.create("other")
    before = store.dump(data_only=True)
    good = CreateJob(job=JobSpec(name="job", schedule="@hourly", command="true"), **p.common())
    kind, wire = msgpack.unpackb(good.encode())
    wire["job"][field] = value
    result = p.store.apply(p.entry(msgpack.packb([kind, wire])))
    assert isinstance(result, Rejected)
    assert result.code == "invalid"
    assert words in result.message
    assert store.dump(data_only=True) == before
    with pytest.raises(InvalidRequest, match=field):
        unwrap(result)


@pytest.mark.parametrize(
    ("script", "words"),
    [
        ({"sha256": "xyz", "size": 1}, "script.sha256:"),
        ({"sha256": SHA, "size": -1}, "script.size:"),
        ({"sha256": SHA}, "script:"),
        ("abc", "script:"),
    ],
)
def test_a_bad_script_reference_is_refused(script: Any, words: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        JobSpec(name="job", schedule="@hourly", script=script)
    assert words in str(err.value)


def test_command_and_script_are_exclusive_and_interpreters_are_a_closed_list() -> None:
    with pytest.raises(InvalidRequest, match="give exactly one of a command line or a script"):
        JobSpec(name="job", schedule="@hourly")
    with pytest.raises(InvalidRequest, match="both were given"):
        JobSpec(name="job", schedule="@hourly", command="x", script=Script(SHA, 1))
    with pytest.raises(InvalidRequest, match=r"interpreter: 'perl' .* bash, python, python3"):
        JobSpec(name="job", schedule="@hourly", script=Script(SHA, 1), interpreter="perl")


def test_unknown_time_zone_is_refused_by_the_proposer(p: Proposer) -> None:
    cmd = CreateJob(
        job=JobSpec(name="job", schedule="@daily", timezone="Mars/Olympus", command="x"),
        **p.common(),
    )
    with pytest.raises(InvalidRequest, match=r"timezone: .*Mars/Olympus"):
        p.store.precheck(cmd)


def test_an_oversized_script_is_refused_by_the_proposer(p: Proposer) -> None:
    big = CreateJob(
        job=JobSpec(name="big", schedule="@daily", script=Script(SHA, 2_000_001)), **p.common()
    )
    with pytest.raises(InvalidRequest, match=r"script.size: 2000001 bytes is over .* 2000000"):
        p.store.precheck(big, max_script_bytes=2_000_000)
    p.store.precheck(big, max_script_bytes=2_000_001)
    small = UpdateJob(name="big", changes={"script": {"sha256": SHA, "size": 9}}, **p.common())
    p.ok(big)
    p.store.precheck(small, max_script_bytes=10)
    huge = UpdateJob(name="big", changes={"script": {"sha256": SHA, "size": 11}}, **p.common())
    with pytest.raises(InvalidRequest, match=r"script\.size"):
        p.store.precheck(huge, max_script_bytes=10)


def test_precheck_gives_the_error_apply_would_give_and_changes_nothing(
    p: Proposer, store: JobStore
) -> None:
    p.create("a")
    before = store.dump()
    with pytest.raises(AlreadyExists):
        store.precheck(
            CreateJob(job=JobSpec(name="a", schedule="@daily", command="x"), **p.common())
        )
    with pytest.raises(NotFound):
        store.precheck(PauseJob(name="nope", **p.common()))
    with pytest.raises(InvalidRequest, match="timezone"):
        store.precheck(UpdateJob(name="a", changes={"timezone": "Nowhere/Land"}, **p.common()))
    store.precheck(UpdateJob(name="a", changes={"timezone": "Asia/Tokyo"}, **p.common()))
    assert store.dump() == before


def test_precheck_lets_a_retried_request_through_to_its_first_answer(
    p: Proposer, store: JobStore
) -> None:
    """A create retried with the same session and number (a forward retried across a leader
    change) is answered with the job it created, not "already exists"."""
    create = CreateJob(job=JobSpec(name="a", schedule="@daily", command="x"), **p.common())
    first = p.ok(create)
    store.precheck(create)  # no AlreadyExists: the session table answers it
    assert p.ok(create) == first
    with pytest.raises(AlreadyExists):  # a new request for the same name is still refused
        store.precheck(
            CreateJob(job=JobSpec(name="a", schedule="@daily", command="x"), **p.common())
        )


def test_update_changes_only_the_given_fields_and_keeps_a_version(
    p: Proposer, store: JobStore
) -> None:
    p.create("backup", env={"A": "1"}, timeout=60)
    job = p.ok(UpdateJob(name="backup", changes={"timeout": 120, "env": {"B": "2"}}, **p.common()))
    assert job["version"] == 2
    assert job["timeout"] == 120
    assert job["env"] == {"B": "2"}
    assert job["schedule"] == "@hourly"
    assert job["created_at"] == "2026-01-01T00:00:01Z"
    assert job["updated_at"] == "2026-01-01T00:00:02Z"


def test_update_can_switch_between_command_and_script(p: Proposer) -> None:
    p.create("j")
    job = p.ok(UpdateJob(name="j", changes={"script": {"sha256": SHA, "size": 9}}, **p.common()))
    assert (job["command"], job["interpreter"]) == (None, "sh")
    job = p.ok(UpdateJob(name="j", changes={"command": "date"}, **p.common()))
    assert (job["command"], job["script"], job["interpreter"]) == ("date", None, None)


def test_update_refuses_renames_unknown_fields_and_bad_values() -> None:
    common: dict[str, Any] = {"now": 1_767_225_600_000, "actor": "a", "session": "s", "seq": 1}
    with pytest.raises(InvalidRequest, match="cannot be renamed"):
        UpdateJob(name="j", changes={"name": "k"}, **common)
    with pytest.raises(InvalidRequest, match="unknown field 'colour'"):
        UpdateJob(name="j", changes={"colour": "red"}, **common)
    with pytest.raises(InvalidRequest, match="timeout:"):
        UpdateJob(name="j", changes={"timeout": -1}, **common)
    with pytest.raises(InvalidRequest, match="changes:"):
        UpdateJob(name="j", changes={}, **common)


def test_update_of_a_missing_job_is_not_found(p: Proposer) -> None:
    with pytest.raises(NotFound, match="no job named 'ghost'"):
        p.ok(UpdateJob(name="ghost", changes={"timeout": 5}, **p.common()))


def test_an_update_that_changes_nothing_adds_no_version(p: Proposer, store: JobStore) -> None:
    p.create("j", timeout=5)
    job = p.ok(UpdateJob(name="j", changes={"timeout": 5.0}, **p.common()))
    assert job["version"] == 1
    p.ok(PauseJob(name="j", **p.common()))
    assert p.ok(PauseJob(name="j", **p.common()))["version"] == 2
    assert len(store.history("j")) == 2


def test_pause_and_resume_are_versions_too(p: Proposer, store: JobStore) -> None:
    p.create("j")
    assert p.ok(PauseJob(name="j", **p.common()))["paused"] is True
    assert [j["name"] for j in store.list_jobs(paused=True)] == ["j"]
    assert p.ok(ResumeJob(name="j", **p.common()))["paused"] is False
    assert store.list_jobs(paused=True) == []
    assert [(v["version"], v["op"], v["changed"]) for v in store.history("j")] == [
        (1, "create", ["name", "schedule", "command"]),
        (2, "pause", ["paused"]),
        (3, "resume", ["paused"]),
    ]


def test_history_keeps_who_when_and_the_full_job_and_diff_compares_versions(
    p: Proposer, store: JobStore
) -> None:
    p.create("j", timeout=60, tags={"a": "1"})
    p.ok(UpdateJob(name="j", changes={"timeout": 90}, **p.common(actor="bob")))
    p.ok(UpdateJob(name="j", changes={"tags": {"a": "2"}, "retries": 3}, **p.common()))
    history = store.history("j")
    assert [h["version"] for h in history] == [1, 2, 3]
    assert history[1]["actor"] == "bob"
    assert history[1]["at"] == "2026-01-01T00:00:02Z"
    assert history[1]["changed"] == ["timeout"]
    assert history[1]["job"]["timeout"] == 90
    assert history[1]["job"]["tags"] == {"a": "1"}
    assert history[2]["job"] == store.get_job("j")
    diff = store.diff("j", 1, 3)
    assert diff["changes"] == [
        {"field": "timeout", "from": 60, "to": 90},
        {"field": "retries", "from": 0, "to": 3},
        {"field": "tags", "from": {"a": "1"}, "to": {"a": "2"}},
    ]
    assert store.diff("j", 3, 3)["changes"] == []
    with pytest.raises(NotFound, match="no version 9"):
        store.diff("j", 1, 9)
    with pytest.raises(NotFound):
        store.history("never")


def test_delete_keeps_history_and_a_recreated_job_goes_on_counting(
    p: Proposer, store: JobStore
) -> None:
    p.create("j")
    assert p.ok(DeleteJob(name="j", **p.common())) == {"name": "j", "version": 2, "deleted": True}
    with pytest.raises(NotFound):
        store.get_job("j")
    with pytest.raises(NotFound):
        p.ok(DeleteJob(name="j", **p.common()))
    assert p.create("j", schedule="@daily")["version"] == 3
    assert [v["op"] for v in store.history("j")] == ["create", "delete", "create"]


def test_after_must_name_existing_jobs(p: Proposer, store: JobStore) -> None:
    before = store.dump(data_only=True)
    with pytest.raises(InvalidRequest, match="after: no job named 'ghost'"):
        p.create("j", after=["ghost"])
    assert store.dump(data_only=True) == before


def test_a_dependency_cycle_is_refused_with_its_path(p: Proposer, store: JobStore) -> None:
    p.create("a")
    p.create("b", after=["a"])
    p.create("c", after=["b"])
    before = store.dump(data_only=True)
    with pytest.raises(InvalidRequest, match="would make a cycle: a -> c -> b -> a"):
        p.ok(UpdateJob(name="a", changes={"after": ["c"]}, **p.common()))
    assert store.dump(data_only=True) == before
    # a diamond is not a cycle
    p.create("d", after=["b", "c"])
    assert p.ok(UpdateJob(name="d", changes={"after": ["a", "c"]}, **p.common()))["after"] == [
        "a",
        "c",
    ]


def test_a_job_others_run_after_cannot_be_deleted(p: Proposer, store: JobStore) -> None:
    p.create("a")
    p.create("b", after=["a"])
    with pytest.raises(InvalidRequest, match="'b' run after it"):
        p.ok(DeleteJob(name="a", **p.common()))
    p.ok(UpdateJob(name="b", changes={"after": []}, **p.common()))
    p.ok(DeleteJob(name="a", **p.common()))


def test_jobs_can_be_listed_in_pages_and_as_schedules(p: Proposer, store: JobStore) -> None:
    for name in ("d", "a", "c", "b"):
        p.create(name, schedule="*/5 * * * *", timezone="Europe/Berlin")
    p.ok(PauseJob(name="c", **p.common()))
    page = store.list_jobs(limit=2)
    assert [j["name"] for j in page] == ["a", "b"]
    assert [j["name"] for j in store.list_jobs(after="b", limit=2)] == ["c", "d"]
    assert [j["name"] for j in store.list_jobs(after="b", paused=False)] == ["d"]
    schedules = store.list_schedules()
    assert [(s.name, s.version, s.paused) for s in schedules] == [
        ("a", 1, False),
        ("b", 1, False),
        ("c", 2, True),
        ("d", 1, False),
    ]
    assert {(s.schedule, s.timezone) for s in schedules} == {("*/5 * * * *", "Europe/Berlin")}
    p.ok(UpdateJob(name="a", changes={"schedule": "@daily", "timezone": "UTC"}, **p.common()))
    assert store.list_schedules()[0].schedule == "@daily"
    assert store.list_schedules()[0].timezone == "UTC"
