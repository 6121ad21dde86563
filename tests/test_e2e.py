"""One host, end to end: a real ``dcrond`` process driven by the real ``dcronctl``.

What a user does after ``make run``: create jobs, watch them run on schedule,
read logs, kill a run, pause, update, delete; and what they must be able to
rely on when the daemon restarts with runs in flight: no run stuck
"running", no instant run twice, missed instants caught up per policy.
"""

from __future__ import annotations

import calendar
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dcrond.testing._cluster import free_ports

FINAL = {"succeeded", "failed", "timed_out", "killed", "skipped", "lost"}


class Daemon:
    """A dcrond process with its own data folder and ports; restartable."""

    def __init__(self, tmp_path: Path) -> None:
        api, raft, gossip = free_ports(3)
        self.endpoint = f"127.0.0.1:{api}"
        self.config = tmp_path / "dcrond.toml"
        self.config.write_text(
            f"[node]\nname = 'solo'\ndata_dir = '{tmp_path / 'data'}'\n"
            f"[api]\nlisten = '{self.endpoint}'\n[raft]\nlisten = '127.0.0.1:{raft}'\n"
            f"[cluster]\ngossip_listen = '127.0.0.1:{gossip}'\n"
            "[runner]\nkill_grace_s = 2.0\n",
            encoding="utf-8",
        )
        self.log = tmp_path / "dcrond.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dcrond", "--config", str(self.config)],
                stdout=log,
                stderr=log,
            )
        _until(lambda: self.ctl("cluster", "status").returncode == 0, 30, "dcrond answers")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self.proc = None
        return code

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dcrond.ctl", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "DCRON_ENDPOINT": self.endpoint},
        )

    def json(self, *args: str) -> Any:
        res = self.ctl("-o", "json", *args)
        assert res.returncode == 0, f"dcronctl {' '.join(args)}: {res.stderr}"
        return json.loads(res.stdout)

    def ok(self, *args: str) -> str:
        res = self.ctl(*args)
        assert res.returncode == 0, f"dcronctl {' '.join(args)}: {res.stderr}"
        return res.stdout

    def runs(self, job: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.json("run", "list", "--job", job, "--limit", "1000")
        return sorted(runs, key=lambda r: r["scheduled_at"])


def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting until {what}")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    d.start()
    try:
        yield d
    finally:
        if d.proc is not None:
            d.proc.kill()
            d.proc.wait(timeout=30)
        if os.environ.get("E2E_SHOW_LOG"):
            sys.stderr.write(d.log.read_text(errors="replace"))


def _seconds(iso: str) -> int:
    return calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))


def test_jobs_run_on_schedule_with_logs_and_are_paused_updated_killed_and_deleted(
    daemon: Daemon,
) -> None:
    job = daemon.json("job", "create", "tick", "--schedule", "@every 1s", "--command", "echo tick")
    assert (job["name"], job["schedule"], job["timezone"], job["paused"], job["version"]) == (
        "tick",
        "@every 1s",
        "UTC",
        False,
        1,
    )
    _until(lambda: sum(r["state"] == "succeeded" for r in daemon.runs("tick")) >= 3, 20, "3 runs")
    runs = daemon.runs("tick")
    instants = [_seconds(r["scheduled_at"]) for r in runs]
    assert len(set(instants)) == len(instants), "an instant ran twice"
    assert instants == list(range(instants[0], instants[0] + len(instants))), "an instant skipped"
    for field in ("id", "job", "scheduled_at", "state", "host", "started_at", "finished_at"):
        assert field in runs[0]
    done = next(r for r in runs if r["state"] == "succeeded")
    assert (done["host"], done["exit_code"]) == ("solo", 0)
    assert done["id"] == f"tick@{done['scheduled_at']}"
    assert daemon.ok("run", "logs", done["id"]) == "tick\n"
    assert daemon.json("run", "get", done["id"])["attempts"]
    assert daemon.json("--stale", "run", "get", done["id"])["id"] == done["id"]

    # pause: no new instant after the pause (one may have been due at that moment)
    paused = daemon.json("job", "pause", "tick")
    assert paused["paused"] is True
    time.sleep(0.5)
    count = len(daemon.runs("tick"))
    time.sleep(2.2)
    assert len(daemon.runs("tick")) == count

    # update, resume: the new version runs
    updated = daemon.json("job", "update", "tick", "--command", "echo tock")
    assert updated["version"] == paused["version"] + 1  # pausing is a version too
    daemon.ok("job", "resume", "tick")
    _until(
        lambda: any(
            r["state"] == "succeeded" and daemon.ok("run", "logs", r["id"]) == "tock\n"
            for r in daemon.runs("tick")[-2:]
        ),
        10,
        "a run of version 2",
    )
    history = daemon.json("job", "history", "tick")
    assert [v["version"] for v in history][:2] == [1, 2]

    # trigger a long run, follow its log live, kill it
    daemon.ok(
        "job", "create", "sleeper", "--schedule", "@yearly",
        "--command", "echo started; sleep 60; echo never",
    )  # fmt: skip
    run = daemon.json("job", "trigger", "sleeper")
    _until(lambda: daemon.json("run", "get", run["id"])["state"] == "running", 10, "running")
    _until(lambda: daemon.ok("run", "logs", run["id"]) == "started\n", 10, "live output")
    killed = daemon.json("run", "kill", run["id"])
    assert killed["state"] == "killed"
    assert daemon.ok("run", "logs", run["id"]).startswith("started\n")

    # trigger --wait reports a failing run with exit code 4
    daemon.ok("job", "create", "bad", "--schedule", "@yearly", "--command", "exit 3")
    res = daemon.ctl("-o", "json", "job", "trigger", "bad", "--wait")
    assert res.returncode == 4, res.stderr
    assert (json.loads(res.stdout)["state"], json.loads(res.stdout)["exit_code"]) == ("failed", 3)

    # job next: upcoming instants, one second apart
    upcoming = daemon.json("job", "next", "tick", "-n", "3")
    assert [_seconds(b) - _seconds(a) for a, b in itertools.pairwise(upcoming)] == [
        1,
        1,
    ]

    # delete: gone, and asking for it again is "not found" (exit code 1)
    daemon.ok("job", "delete", "tick")
    res = daemon.ctl("job", "get", "tick")
    assert res.returncode == 1
    assert "tick" in res.stderr


def test_bad_input_through_dcronctl_is_refused_clearly(daemon: Daemon) -> None:
    cases = [
        (["--schedule", "61 * * * *", "--command", "x"], "schedule"),
        (["--schedule", "@hourly", "--command", "x", "--timezone", "Mars/Base"], "Mars/Base"),
        (["--schedule", "@hourly", "--command", "x", "--concurrency", "sometimes"], "concurrency"),
    ]
    for args, text in cases:
        res = daemon.ctl("job", "create", "j", *args)
        assert res.returncode in (1, 2), res
        assert text in res.stderr
    daemon.ok("job", "create", "j", "--schedule", "@hourly", "--command", "x")
    res = daemon.ctl("job", "create", "j", "--schedule", "@hourly", "--command", "x")
    assert res.returncode == 1
    assert "already exists" in res.stderr
    assert [j["name"] for j in daemon.json("job", "list")] == ["j"]


def test_a_restart_with_a_run_in_flight_leaves_nothing_running_and_catches_up(
    daemon: Daemon, tmp_path: Path
) -> None:
    marker = tmp_path / "finished"
    daemon.ok(
        "job", "create", "long", "--schedule", "@yearly",
        "--command", f"sleep 4; echo done > {marker}",
    )  # fmt: skip
    daemon.ok(
        "job", "create", "every2", "--schedule", "@every 2s", "--command", "true",
        "--catch-up", "latest",
    )  # fmt: skip
    _until(lambda: len(daemon.runs("every2")) >= 1, 10, "every2 runs")
    run = daemon.json("job", "trigger", "long")
    _until(lambda: daemon.json("run", "get", run["id"])["state"] == "running", 10, "running")
    assert daemon.stop(signal.SIGTERM) == 0
    stopped_at = time.time()
    time.sleep(12)  # six instants of every2 fall in the downtime
    restarted_at = time.time()
    daemon.start()
    # the run in flight ends accurately: re-adopted (and then succeeded) or lost; never stuck
    _until(lambda: daemon.json("run", "get", run["id"])["state"] in FINAL, 20, "a final state")
    final = daemon.json("run", "get", run["id"])
    assert final["state"] in ("succeeded", "lost"), final
    if final["state"] == "succeeded":
        assert marker.exists()
    # every2: no instant twice; of the missed ones, only the latest is caught up
    _until(
        lambda: any(_seconds(r["scheduled_at"]) > restarted_at + 1 for r in daemon.runs("every2")),
        10,
        "on schedule again",
    )
    runs = daemon.runs("every2")
    instants = [_seconds(r["scheduled_at"]) for r in runs]
    assert len(set(instants)) == len(instants)
    # of the instants in the downtime, those older than the engine's grace (5 s) at
    # the restart were missed and 'latest' runs only the newest of them; the few
    # within the grace run late: so some ran, and not all
    window = [t for t in range(int(stopped_at), int(restarted_at) + 1) if t % 2 == 0]
    window = [t for t in window if stopped_at < t < restarted_at]  # the same bounds as `ran`
    ran = [t for t in instants if stopped_at < t < restarted_at]
    assert 1 <= len(ran) <= len(window) - 2, f"downtime instants {window}, ran {ran}"
    assert all(r["state"] in FINAL | {"running", "scheduled"} for r in runs)


def test_a_script_job_runs_its_pinned_version_and_keeps_non_utf8_output_exact(
    daemon: Daemon, tmp_path: Path
) -> None:
    script = tmp_path / "emit.py"
    script.write_text(
        "import sys\nsys.stdout.buffer.write(b'v1 \\xff\\xfe raw\\n')\n", encoding="utf-8"
    )
    job = daemon.json(
        "job", "create", "emit", "--schedule", "@yearly", "--script", str(script),
        "--interpreter", "python",
    )  # fmt: skip
    assert job["script"]["size"] == script.stat().st_size
    run = daemon.json("job", "trigger", "emit", "--wait")
    assert run["state"] == "succeeded"

    def logs(run_id: str) -> bytes:
        return subprocess.run(
            [sys.executable, "-m", "dcrond.ctl", "run", "logs", run_id],
            capture_output=True,
            timeout=60,
            check=True,
            env={**os.environ, "DCRON_ENDPOINT": daemon.endpoint},
        ).stdout

    assert logs(run["id"]) == b"v1 \xff\xfe raw\n"
    # editing the file changes nothing until the job is updated: the version pins the hash
    script.write_text("print('v2')\n", encoding="utf-8")
    second = daemon.json("job", "trigger", "emit", "--wait")
    assert logs(second["id"]).startswith(b"v1")
    updated = daemon.json("job", "update", "emit", "--script", str(script))
    assert updated["script"]["sha256"] != job["script"]["sha256"]
    third = daemon.json("job", "trigger", "emit", "--wait")
    assert daemon.ok("run", "logs", third["id"]) == "v2\n"
