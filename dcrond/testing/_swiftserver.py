"""A real OpenStack Swift for tests: Debian's Swift servers on 127.0.0.1, one replica.

Theory of operation
-------------------
``SwiftServer.start()`` makes a temporary folder holding everything a small
Swift cluster needs — ``swift.conf`` (hash prefix and suffix, one storage
policy), account, container and object rings of one device and one replica
built with ``swift-ring-builder``, the device folder, and one config file per
server — then starts the account, container, object and proxy servers from
Debian's packages (``workers = 0``: one process each, no daemonizing) on free
loopback ports, each in its own process group with its output in a log file.

The proxy's pipeline is ``catch_errors healthcheck proxy-logging cache s3api
tempauth copy slo dlo proxy-logging proxy-server``: tempauth knows one user,
``test:tester`` with key ``testing``, and s3api gives it an S3 API, which is
how dcrond talks to Swift (docs/storage.md says why). s3api's multipart
uploads are built from SLO, hence ``slo``. No memcached runs: S3 requests are
signed and checked per request, so tempauth needs no token cache (the proxy
logs that memcached is unreachable; native Swift tokens would need it).

``stop()`` terminates every server (kill after a grace period) and removes
the folder. ``swift_missing()`` names what is not installed, for a skip.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, final

import boto3
import botocore.config
import botocore.exceptions

from dcrond.testing._s3server import (
    free_port,
    spawn,
    stop_process,
    tail,
    terminate,
    wait_http,
)

ACCESS_KEY = "test:tester"
SECRET_KEY = "testing"
REGION = "us-east-1"
SERVERS = ("account", "container", "object")
PROGRAMS = (
    "swift-ring-builder",
    "swift-account-server",
    "swift-container-server",
    "swift-object-server",
    "swift-proxy-server",
)
#: the Debian packages that provide PROGRAMS
PACKAGES = ("swift", "swift-account", "swift-container", "swift-object", "swift-proxy")
_PART_POWER = 6  # 64 partitions: plenty for one device, and quick to build


def swift_missing() -> str | None:
    """Why a real Swift cannot be started here, or None when it can."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        return (
            f"OpenStack Swift is not installed (missing {', '.join(missing)}; "
            f"apt-get install {' '.join(PACKAGES)}, or run .ci/install-system-packages)"
        )
    return None


_PROXY_CONF = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
swift_dir = {etc}
log_level = WARNING

[pipeline:main]
pipeline = catch_errors healthcheck proxy-logging cache s3api tempauth copy slo dlo \
proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcache_port}

[filter:s3api]
use = egg:swift#s3api
location = {region}

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = {secret} .admin

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo
"""

_SERVER_CONF = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
swift_dir = {etc}
devices = {devices}
mount_check = false
recon_cache_path = {run}
log_level = WARNING

[pipeline:main]
pipeline = {kind}-server

[app:{kind}-server]
use = egg:swift#{kind}
"""


@final
class SwiftServer:
    """A one-replica Swift on 127.0.0.1 with tempauth and s3api."""

    def __init__(self) -> None:
        self.port = 0
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self._dir: Path | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def endpoint(self) -> str:
        """The proxy's URL (S3 API and native API alike)."""
        return f"http://127.0.0.1:{self.port}"

    def options(self) -> dict[str, Any]:
        """``Blobs`` options for a ``swift://`` URL on this server."""
        return {
            "endpoint_url": self.endpoint,
            "region": REGION,
            "key": self.access_key,
            "secret": self.secret_key,
        }

    def __enter__(self) -> SwiftServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        """Build the rings, start the four servers, and return once S3 requests work."""
        reason = swift_missing()
        if reason is not None:
            raise RuntimeError(reason)
        self._dir = Path(tempfile.mkdtemp(prefix="dcrond-swift-"))
        try:
            self._start(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, deadline: float) -> None:
        assert self._dir is not None
        etc, devices, run = self._dir / "etc", self._dir / "srv", self._dir / "run"
        for d in (etc, devices / "d1", run):
            d.mkdir(parents=True)
        (etc / "swift.conf").write_text(
            "[swift-hash]\n"
            "swift_hash_path_suffix = dcrond-tests\n"
            "swift_hash_path_prefix = dcrond-tests\n\n"
            "[storage-policy:0]\nname = Policy-0\ndefault = yes\n"
        )
        user = getpass.getuser()
        ports = {kind: free_port() for kind in SERVERS}
        self.port = free_port()
        for kind in SERVERS:
            builder = str(etc / f"{kind}.builder")
            for args in (
                ["create", str(_PART_POWER), "1", "1"],
                ["add", f"r1z1-127.0.0.1:{ports[kind]}/d1", "100"],
                ["rebalance"],
            ):
                done = subprocess.run(
                    ["swift-ring-builder", builder, *args],
                    capture_output=True,
                    check=False,
                )
                if done.returncode not in (0, 1):  # 1: "warning" (e.g. rebalance notes)
                    raise RuntimeError(f"swift-ring-builder {args}: {done.stdout!r}")
            conf = etc / f"{kind}-server.conf"
            conf.write_text(
                _SERVER_CONF.format(
                    port=ports[kind], user=user, etc=etc, devices=devices, run=run, kind=kind
                )
            )
        (etc / "proxy-server.conf").write_text(
            _PROXY_CONF.format(
                port=self.port,
                user=user,
                etc=etc,
                memcache_port=free_port(),
                region=REGION,
                secret=SECRET_KEY,
            )
        )
        for kind in (*SERVERS, "proxy"):
            self._procs[kind] = spawn(
                [f"swift-{kind}-server", str(etc / f"{kind}-server.conf"), "--verbose"],
                run / f"{kind}.log",
                cwd=self._dir,
            )
        for kind in SERVERS:
            wait_http(
                f"http://127.0.0.1:{ports[kind]}/", deadline, self._procs[kind], run / f"{kind}.log"
            )
        wait_http(f"{self.endpoint}/healthcheck", deadline, self._procs["proxy"], run / "proxy.log")

    def create_container(self, name: str) -> None:
        """Create a container (an S3 bucket through s3api), retrying while Swift settles."""
        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
            ),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.create_bucket(Bucket=name)
                return
            except botocore.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == "BucketAlreadyOwnedByYou":
                    return
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if status < 500 or time.monotonic() > deadline:
                    raise RuntimeError(f"cannot create container {name}: {exc}") from exc
            except botocore.exceptions.ConnectionError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot create container {name}: {exc}") from exc
            time.sleep(0.2)

    def logs(self) -> str:
        """The tails of the servers' logs (for failure messages)."""
        if self._dir is None:
            return ""
        run = self._dir / "run"
        return "\n".join(f"== {kind}\n{tail(run / f'{kind}.log', 10)}" for kind in self._procs)

    def stop(self) -> None:
        """Stop every server and remove the folder."""
        for proc in self._procs.values():
            terminate(proc)
        for proc in self._procs.values():
            stop_process(proc)
        self._procs.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
