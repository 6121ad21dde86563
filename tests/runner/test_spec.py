"""A RunSpec refuses bad input with InvalidRequest and builds the argv the job runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcrond.errors import InvalidRequest
from dcrond.runner import INTERPRETERS, RunSpec


def test_command_line_runs_through_sh_with_args_as_positional_parameters() -> None:
    spec = RunSpec("backup@2026-11-22T03:00Z", command='echo "$1"', args=("a b",))
    assert spec.argv(None) == ["/bin/sh", "-c", 'echo "$1"', "backup", "a b"]
    assert spec.job == "backup"
    assert spec.instant == "2026-11-22T03:00Z"


@pytest.mark.parametrize(
    ("name", "program"),
    [("bash", "bash"), ("sh", "/bin/sh"), ("python", "python3"), ("ruby", "ruby")],
)
def test_known_interpreters_map_to_their_programs(name: str, program: str) -> None:
    spec = RunSpec("j@1", script=b"", interpreter=name, args=("x",))
    assert spec.argv("/s") == [program, "/s", "x"]
    assert INTERPRETERS[name] == program


def test_absolute_interpreter_path_is_used_as_is() -> None:
    spec = RunSpec("j@1", script=Path("/srv/s.pl"), interpreter="/usr/bin/perl")
    assert spec.argv("/srv/s.pl") == ["/usr/bin/perl", "/srv/s.pl"]


@pytest.mark.parametrize("name", ["perl", "./python", "python2", ""])
def test_unknown_interpreter_is_an_invalid_request(name: str) -> None:
    with pytest.raises(InvalidRequest, match="unknown interpreter"):
        RunSpec("j@1", script=b"x", interpreter=name)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"run_id": "no-instant", "command": "true"}, "job@instant"),
        ({"run_id": "@1", "command": "true"}, "job@instant"),
        ({"run_id": "a/b@1", "command": "true"}, "must not contain '/'"),
        ({"run_id": "j@1"}, "exactly one"),
        ({"run_id": "j@1", "command": "true", "script": b"x"}, "exactly one"),
        ({"run_id": "j@1", "command": "   "}, "empty"),
        ({"run_id": "j@1", "command": "true", "attempt": 0}, "attempt"),
        ({"run_id": "j@1", "command": "true", "env": {"A=B": "x"}}, "not valid"),
        ({"run_id": "j@1", "command": "true", "env": {"A": "x\0y"}}, "NUL"),
        ({"run_id": "j@1", "command": "true", "args": ("a\0",)}, "NUL"),
        ({"run_id": "j@1", "command": "true", "working_dir": "rel/dir"}, "absolute"),
        ({"run_id": "j@1", "command": "true", "timeout": 0}, "timeout"),
        ({"run_id": "j@1", "command": "true", "kill_grace": -1}, "grace"),
        ({"run_id": "j@1", "command": "true", "output_cap": -1}, "cap"),
        ({"run_id": "j@1", "command": "true", "user": ""}, "user"),
        ({"run_id": "j@1", "script": Path("rel.sh")}, "absolute"),
    ],
)
def test_bad_specs_are_refused_with_a_clear_message(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        RunSpec(**kwargs)  # type: ignore[arg-type]
