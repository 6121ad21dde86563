"""A real S3 endpoint for tests: moto's standalone server as a subprocess on 127.0.0.1.

Theory of operation
-------------------
``MotoServer`` starts ``python -m moto.server`` on a free loopback port with
its output in a log file of its own temporary folder, waits until it answers
HTTP, and stops it (terminate, then kill) on ``stop()``. Everything it made
goes with it.

With ``auth=True`` the server checks credentials like S3 does: moto lets the
first few requests through unauthenticated (``INITIAL_NO_AUTH_ACTION_COUNT``),
which ``start()`` spends on creating an IAM user with an allow-all policy and
an access key; from then on a wrong key gets ``InvalidAccessKeyId`` and a wrong
secret ``SignatureDoesNotMatch``. With ``auth=False`` any key is accepted.

moto keeps everything in memory, so a restarted server has forgotten its
buckets. ``restart()`` (after ``kill()``) brings the server back on the same
port and re-creates the buckets made through ``create_bucket``, as a real S3
outage would leave them; it is offered for ``auth=False`` servers only,
because moto would mint new random keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, final

import boto3

REGION = "us-east-1"
_ANON_KEY = "testing"  # any key works before authentication is enforced
_SETUP_ACTIONS = 3  # create_user, put_user_policy, create_access_key


def spawn(args: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a server in its own process group, output appended to ``log``.

    A test run that is itself killed (a CI timeout) cannot stop its servers,
    so the kernel does: util-linux's ``setpriv --pdeathsig KILL`` makes the
    server die with the thread that started it. Start servers from a thread
    that lives as long as they should (the main one, in tests).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        args = [setpriv, "--pdeathsig", "KILL", "--", *args]
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, deadline: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``url`` until any HTTP answer; RuntimeError with the log if the process died."""
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer in time:\n{tail(log)}") from None
            time.sleep(0.05)


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file (for error messages)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """Send SIGTERM to the process group ``proc`` leads, if it still runs."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Terminate the process group ``proc`` leads; kill it if it lingers."""
    if proc.poll() is None:
        terminate(proc)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            kill_process(proc)
    proc.wait()


def kill_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group ``proc`` leads and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@final
class MotoServer:
    """moto's S3 server on 127.0.0.1; use as a context manager or start()/stop()."""

    def __init__(self, *, auth: bool = True) -> None:
        self.auth = auth
        self.port = 0
        self.access_key = _ANON_KEY
        self.secret_key = _ANON_KEY
        self.buckets: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def endpoint(self) -> str:
        """The server's URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server process's id (to pause it with SIGSTOP, say)."""
        assert self._proc is not None, "not started"
        return self._proc.pid

    def options(self) -> dict[str, Any]:
        """``Blobs`` options that reach this server with working credentials."""
        return {
            "endpoint_url": self.endpoint,
            "region": REGION,
            "key": self.access_key,
            "secret": self.secret_key,
        }

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and, with auth, create its user; returns once it serves."""
        self._dir = Path(tempfile.mkdtemp(prefix="dcrond-moto-"))
        self.port = free_port()
        self._spawn()
        if self.auth:
            self._create_user()

    def _spawn(self) -> None:
        assert self._dir is not None
        env = dict(os.environ)
        for name in list(env):
            if name.startswith("AWS_"):
                del env[name]
        if self.auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(_SETUP_ACTIONS)
        log = self._dir / "moto.log"
        self._proc = spawn(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            log,
            env=env,
        )
        wait_http(f"{self.endpoint}/moto-api/", time.monotonic() + 30, self._proc, log)

    def _client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def _create_user(self) -> None:
        iam = self._client("iam")
        iam.create_user(UserName="dcrond")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        iam.put_user_policy(
            UserName="dcrond", PolicyName="everything", PolicyDocument=json.dumps(policy)
        )
        key = iam.create_access_key(UserName="dcrond")["AccessKey"]
        self.access_key = key["AccessKeyId"]
        self.secret_key = key["SecretAccessKey"]

    def create_bucket(self, name: str) -> None:
        """Create a bucket (remembered, so ``restart()`` brings it back)."""
        self._client("s3").create_bucket(Bucket=name)
        if name not in self.buckets:
            self.buckets.append(name)

    def kill(self) -> None:
        """SIGKILL the server, as a crash or a pulled cable would stop it."""
        if self._proc is not None:
            kill_process(self._proc)

    def restart(self) -> None:
        """Start the server again on the same port, with the same buckets (empty)."""
        if self.auth:
            raise RuntimeError("restart() is for auth=False servers: moto would mint new keys")
        if self._proc is not None and self._proc.poll() is None:
            stop_process(self._proc)
        self._spawn()
        for name in self.buckets:
            self._client("s3").create_bucket(Bucket=name)

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
