"""dcronctl's parsing and presentation, without a daemon."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dcrond._ctl_render import relative
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
