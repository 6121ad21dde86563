"""Object storage as a user meets it: a real ``dcrond`` on moto's S3, driven by ``dcronctl``.

* ``--script-url``: a job runs the object's bytes as of the version; a later
  change of the object changes nothing until ``job update --script-url``
  again, which is a new version (and a no-op when the bytes are the same);
  a missing object or a URL outside the storage changes nothing.
* A long run's log is in storage in pieces while it runs (another host could
  read it), and the whole log lands identical to the output.
* Faults: S3 stops mid-run; the runs still run and finish, show their log as
  pending (JSON and tables), and every log arrives byte for byte once S3 is
  back -- also when dcrond itself was restarted while the uploads were pending.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from dcrond.errors import BlobNotFound
from dcrond.store._blobs import Blobs, log_key
from dcrond.testing._s3server import MotoServer
from tests.test_e2e import Daemon, _until

BUCKET = "dcrond-e2e"


@pytest.fixture
def moto() -> Iterator[MotoServer]:
    """A moto server of this test's own (it may be killed and restarted)."""
    with MotoServer(auth=False) as server:
        server.create_bucket(BUCKET)
        yield server


class S3Daemon(Daemon):
    """A dcrond whose object storage is ``s3://BUCKET/<prefix>`` on ``moto``."""

    def __init__(self, tmp_path: Path, moto: MotoServer, prefix: str, **storage: Any) -> None:
        super().__init__(tmp_path)
        self.url = f"s3://{BUCKET}/{prefix}"
        keys = {"url": self.url, "endpoint_url": moto.endpoint, "region": "us-east-1", **storage}
        lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
        self.config.write_text(self.config.read_text() + "[storage]\n" + lines)
        self.blobs = Blobs(self.url, **moto.options())

    def stored(self, key: str) -> bytes:
        """An object's bytes, read straight from S3 (not through dcrond)."""
        data: bytes = self.blobs.backend.read(key, 0, None)
        return data


@pytest.fixture
def s3_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """dcrond finds its S3 credentials where operators put them: the AWS variables."""
    opts = moto.options()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", opts["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", opts["secret"])


@pytest.fixture
def make_daemon(tmp_path: Path, moto: MotoServer, s3_env: None) -> Iterator[Any]:
    made: list[S3Daemon] = []

    def make(**storage: Any) -> S3Daemon:
        d = S3Daemon(tmp_path, moto, "e2e", **storage)
        made.append(d)
        d.start()
        return d

    yield make
    for d in made:
        if d.proc is not None:
            d.proc.kill()
            d.proc.wait(timeout=30)
        d.blobs.backend.close()
        if os.environ.get("E2E_SHOW_LOG"):
            print(d.log.read_text(errors="replace"))


def _wait_ended(d: Daemon, run_id: str, seconds: float = 30) -> dict[str, Any]:
    ended = ("succeeded", "failed")
    _until(lambda: d.json("run", "get", run_id)["state"] in ended, seconds, run_id)
    run: dict[str, Any] = d.json("run", "get", run_id)
    return run


def test_a_script_url_pins_the_object_as_it_was_until_updated_again(make_daemon: Any) -> None:
    d = make_daemon()
    url = f"{d.url}/shared/report.sh"
    v1, v2 = b"echo report v1\n", b"echo report v2\n"
    d.blobs.backend.put_bytes("shared/report.sh", v1)

    job = d.json("job", "create", "report", "--schedule", "@yearly", "--script-url", url)
    assert job["script"] == {"sha256": hashlib.sha256(v1).hexdigest(), "size": len(v1), "url": url}
    assert job["version"] == 1
    run = d.json("job", "trigger", "report", "--wait")
    assert d.ok("run", "logs", run["id"]) == "report v1\n"

    d.blobs.backend.put_bytes("shared/report.sh", v2)  # changed behind dcrond's back
    run = d.json("job", "trigger", "report", "--wait")
    assert d.ok("run", "logs", run["id"]) == "report v1\n", "a changed object must not swap in"

    job = d.json("job", "update", "report", "--script-url", url)
    assert (job["version"], job["script"]["sha256"]) == (2, hashlib.sha256(v2).hexdigest())
    history = d.json("job", "history", "report")
    assert "script" in json.dumps(history[-1]), history[-1]
    run = d.json("job", "trigger", "report", "--wait")
    assert d.ok("run", "logs", run["id"]) == "report v2\n"

    same = d.ctl("job", "update", "report", "--script-url", url, "-o", "json")
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["version"] == 2
    assert "unchanged (the object's content is the same): still version 2" in same.stderr

    missing = d.ctl("job", "update", "report", "--script-url", f"{d.url}/shared/gone.sh")
    assert missing.returncode == 1
    assert "no object there" in missing.stderr
    outside = d.ctl("job", "create", "x", "--schedule", "@daily", "--script-url", "s3://other/x")
    assert outside.returncode == 1
    assert "not in this cluster's object storage" in outside.stderr
    assert d.json("job", "get", "report")["version"] == 2
    assert d.ctl("job", "get", "x").returncode == 1


def test_a_long_runs_log_is_in_storage_in_pieces_before_it_ends(make_daemon: Any) -> None:
    d = make_daemon(log_chunk_interval_s=0.3)
    script = "for i in $(seq 1 40); do echo line $i; sleep 0.1; done"
    d.ok("job", "create", "long", "--schedule", "@yearly", "--command", script)
    run = d.json("job", "trigger", "long")
    key = log_key("long", run["id"], 1)
    expected = "".join(f"line {i}\n" for i in range(1, 41)).encode()
    seen: list[bytes] = []

    def read_while_running() -> bool:
        if d.json("run", "get", run["id"])["state"] != "running":
            return False
        try:
            data, whole = _read_pieces(d.blobs, key)
        except BlobNotFound:
            return False
        if data and not whole:
            seen.append(data)
        return len(seen) > 0 and len(seen[-1]) >= 40

    _until(read_while_running, 20, "a piece of the running attempt's log in S3")
    assert expected.startswith(seen[-1]), seen[-1]
    assert len(seen[-1]) < len(expected)

    done = _wait_ended(d, run["id"])
    assert done["state"] == "succeeded"
    _until(lambda: not d.json("run", "get", run["id"])["attempts"][0]["log_pending"], 30, "upload")
    assert d.stored(key) == expected
    assert d.ok("run", "logs", run["id"]).encode() == expected
    pieces = d.blobs.backend.list(f"{key}.parts/")
    assert pieces == [], "the pieces go once the whole log is stored"


def _read_pieces(blobs: Blobs, key: str) -> tuple[bytes, bool]:
    """What a reader on another host gets: Blobs.read_log, run to completion here."""

    async def read() -> tuple[bytes, bool]:
        got, offset, whole = b"", 0, False
        while True:
            data, whole = await blobs.read_log(key, offset, 1 << 16)
            if not data:
                return got, whole
            got += data
            offset += len(data)

    return trio.run(read)


def _job(name: str) -> list[str]:
    script = f"for i in $(seq 1 25); do echo {name} line $i; sleep 0.1; done"
    return ["job", "create", name, "--schedule", "@yearly", "--command", script]


def _output(name: str) -> str:
    return "".join(f"{name} line {i}\n" for i in range(1, 26))


def _pending(d: Daemon, run_id: str) -> bool:
    return bool(d.json("run", "get", run_id)["attempts"][-1]["log_pending"])


def _wait_uploaded(d: Daemon, run_id: str) -> None:
    _until(lambda: not _pending(d, run_id), 60, f"the log of {run_id} uploaded")


def test_runs_finish_while_s3_is_down_and_every_log_arrives_after_it_and_a_restart(
    make_daemon: Any, moto: MotoServer
) -> None:
    d = make_daemon(log_chunk_interval_s=0.5, timeout_s=5.0)
    for name in ("alpha", "beta", "gamma", "delta"):
        d.ok(*_job(name))

    # S3 dies while two runs are going: they keep running and finish
    runs = {name: d.json("job", "trigger", name)["id"] for name in ("alpha", "beta")}
    _until(
        lambda: all(d.json("run", "get", r)["state"] == "running" for r in runs.values()),
        15,
        "both runs running",
    )
    moto.kill()
    for run_id in runs.values():
        assert _wait_ended(d, run_id)["state"] == "succeeded"
        assert _pending(d, run_id), "storage is down: the log must show as pending"
    table = d.ok("run", "list")
    assert "LOG" in table and "pending" in table
    assert "log=pending" in d.ok("run", "get", runs["alpha"])
    for name, run_id in runs.items():  # readable meanwhile, from the local spool
        assert d.ok("run", "logs", run_id) == _output(name)

    moto.restart()  # empty, as an outage may leave it: what was pending must all land
    for name, run_id in runs.items():
        _wait_uploaded(d, run_id)
        assert d.stored(log_key(name, run_id, 1)) == _output(name).encode()
        assert d.ok("run", "logs", run_id) == _output(name)
    assert "pending" not in d.ok("run", "list")

    # S3 down again; the runs end; dcrond stops with the uploads pending; S3 returns;
    # dcrond starts again and resumes the uploads from its queue on disk
    moto.kill()
    runs = {name: d.json("job", "trigger", name)["id"] for name in ("gamma", "delta")}
    for run_id in runs.values():
        assert _wait_ended(d, run_id)["state"] == "succeeded"
        assert _pending(d, run_id)
    assert d.stop() == 0
    moto.restart()
    d.start()
    for name, run_id in runs.items():
        _wait_uploaded(d, run_id)
        assert d.stored(log_key(name, run_id, 1)) == _output(name).encode()
        assert d.ok("run", "logs", run_id) == _output(name)
