"""dcronctl's parsing and presentation, without a daemon."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dcrond import _ctl_render as render
from dcrond._ctl_render import log_state, relative
from dcrond.ctl import build_parser, job_spec, main, parse_duration
from dcrond.errors import InvalidRequest


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("2d", 172800)],
)
def test_durations_accept_the_usual_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "10 minutes", "1h30"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(InvalidRequest, match="duration"):
        parse_duration(text)


def test_relative_times_read_like_a_person_would_say_them() -> None:
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert relative("2026-11-23T11:55:00Z", now) == "5m ago"
    assert relative("2026-11-23T12:00:12Z", now) == "in 12s"
    assert relative("2026-11-21T12:00:00Z", now) == "2d ago"
    assert relative(None, now) == ""


def test_job_create_options_become_the_api_spec(tmp_path: Path) -> None:
    script = tmp_path / "backup.sh"
    script.write_bytes(b"#!/bin/bash\necho hi\n")
    args = build_parser().parse_args(
        ["job", "create", "backup", "--schedule", "0 3 * * *", "--script", str(script),
         "--interpreter", "bash", "--timezone", "Europe/Berlin", "--timeout", "1h",
         "--tag", "role=db", "--env", "A=1", "--env", "B=x=y", "--after", "dump"]
    )  # fmt: skip
    spec = job_spec(args)
    assert spec == {
        "schedule": "0 3 * * *",
        "script": b"#!/bin/bash\necho hi\n",
        "script_name": "backup.sh",
        "interpreter": "bash",
        "timezone": "Europe/Berlin",
        "timeout": 3600.0,
        "tags": {"role": "db"},
        "env": {"A": "1", "B": "x=y"},
        "after": ["dump"],
    }


def test_on_is_any_all_or_a_number_of_hosts() -> None:
    def on(value: str) -> object:
        args = build_parser().parse_args(["job", "update", "j", "--on", value])
        return job_spec(args)["on"]

    assert (on("any"), on("all"), on("3")) == ("any", "all", 3)
    assert on("some") == "some"  # the daemon refuses it with the allowed values


def test_command_and_script_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(
            ["job", "create", "x", "--schedule", "@hourly", "--command", "true", "--script", "f"]
        )
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_bad_env_pair_is_a_clear_error_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--endpoint", "127.0.0.1:1", "job", "create", "x", "--schedule", "@hourly",
                 "--command", "true", "--env", "NOEQUALS"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "--env must look like KEY=VALUE" in err
    assert err.startswith("dcronctl: error:")


@pytest.mark.parametrize(
    "argv",
    [
        ["--endpoint", "10.0.0.1:7300", "-o", "json", "--stale", "--no-tls", "job", "list"],
        ["job", "list", "--endpoint", "10.0.0.1:7300", "-o", "json", "--stale", "--no-tls"],
        ["-o", "json", "job", "list", "--stale", "--endpoint", "10.0.0.1:7300", "--no-tls"],
        ["--output", "wide", "job", "list", "--no-tls", "--output=json", "--stale",
         "--endpoint=10.0.0.1:7300"],
    ],
)  # fmt: skip
def test_global_options_work_before_the_noun_and_after_the_verb(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.endpoint, args.output, args.stale, args.tls) == (
        "10.0.0.1:7300",
        "json",
        True,
        False,
    )


def test_global_options_left_out_keep_their_defaults_or_the_value_before_the_noun() -> None:
    args = build_parser().parse_args(["run", "get", "r1"])
    assert (args.endpoint, args.output, args.stale, args.tls, args.ca) == (
        None,
        "table",
        False,
        None,
        None,
    )
    args = build_parser().parse_args(["--ca", "/ca.crt", "--tls", "run", "logs", "r1", "-f"])
    assert (args.ca, args.tls, args.follow) == ("/ca.crt", True, True)
    args = build_parser().parse_args(
        ["job", "create", "x", "--schedule", "@daily", "--command", "true", "--key", "/k.pem"]
    )
    assert (args.key, args.command) == ("/k.pem", "true")


def test_every_daemon_verb_takes_the_same_global_options_as_the_top_level() -> None:
    parser = build_parser()
    top = {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}
    nouns = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for noun, sub in nouns.choices.items():
        if noun == "ca":
            continue  # needs no daemon
        verbs = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction))
        for verb, leaf in verbs.choices.items():
            options = {s for a in leaf._actions for s in a.option_strings}
            assert top <= options, f"{noun} {verb} lacks {sorted(top - options)}"


def test_endpoint_after_the_verb_is_the_one_dialled(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["job", "list", "--no-tls", "--endpoint", "127.0.0.1:1"])
    assert code == 3  # unreachable: the option after the verb was used
    assert "127.0.0.1:1" in capsys.readouterr().err


def test_script_url_is_sent_for_the_daemon_to_read_and_excludes_the_others() -> None:
    args = build_parser().parse_args(
        ["job", "update", "x", "--script-url", "s3://bucket/prefix/report.sh"]
    )
    assert job_spec(args) == {"script_url": "s3://bucket/prefix/report.sh"}
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["job", "update", "x", "--script-url", "s3://b/x", "--command", "true"]
        )


def _run(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "backup@2026-11-23T03:00:00Z", "state": attempts[-1]["state"],
            "host": "h1", "attempts": attempts}  # fmt: skip


@pytest.mark.parametrize(
    ("attempts", "shown"),
    [
        ([{"state": "succeeded", "log_path": "logs/a", "log_pending": True}], "pending"),
        ([{"state": "failed", "log_path": "logs/a", "log_pending": True},
          {"state": "succeeded", "log_path": "logs/b", "log_pending": False}], "pending"),
        ([{"state": "succeeded", "log_path": "logs/a", "log_pending": False}], "stored"),
        ([{"state": "running", "log_path": None, "log_pending": False}], "live"),
        ([{"state": "succeeded", "log_path": None, "log_pending": False}], ""),
    ],
)  # fmt: skip
def test_run_tables_show_where_the_log_is(
    attempts: list[dict[str, Any]], shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert log_state(_run(attempts)) == shown
    render.runs([_run(attempts)], "table")
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split()[-1] == "LOG"
    assert row.split()[-1] == (shown or "h1")  # an empty cell leaves HOST last
    render.run(_run(attempts), "table")
    out = capsys.readouterr().out
    assert ("log=pending" in out) == (attempts[0].get("log_pending") is True)
    render.runs([_run(attempts)], "json")
    assert "LOG" not in capsys.readouterr().out  # -o json is the API's JSON, untouched
