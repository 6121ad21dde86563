"""A real dcrond with [tls] mode = "on" on 127.0.0.1, driven by a real dcronctl process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcrond import tls
from dcrond.testing._cluster import free_ports


def _config(tmp_path: Path, name: str, bundle: Path) -> tuple[Path, str]:
    api, raft, gossip = free_ports(3)
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"[node]\nname = '{name}'\ndata_dir = '{tmp_path / name}'\n"
        f"[api]\nlisten = '127.0.0.1:{api}'\n[raft]\nlisten = '127.0.0.1:{raft}'\nfsync = false\n"
        f"[cluster]\ngossip_listen = '127.0.0.1:{gossip}'\n"
        f"[tls]\nmode = 'on'\nca = '{bundle / 'ca.crt'}'\ncert = '{bundle / 'node.crt'}'\n"
        f"key = '{bundle / 'node.key'}'\n",
        encoding="utf-8",
    )
    return path, f"127.0.0.1:{api}"


def _ctl(endpoint: str, tls_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DCRON_")}
    env |= {"DCRON_ENDPOINT": endpoint, "DCRON_TLS_DIR": str(tls_dir)}
    return subprocess.run(
        [sys.executable, "-m", "dcrond.ctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    tls.init_ca(tmp_path / "ca")
    tls.issue(tmp_path / "ca", "node", "solo")
    tls.issue(tmp_path / "ca", "client", "alice")
    return tmp_path / "ca"


@pytest.fixture
def daemon(tmp_path: Path, ca: Path) -> Iterator[tuple[str, Path]]:
    config, endpoint = _config(tmp_path, "solo", ca / "nodes" / "solo")
    log = tmp_path / "dcrond.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dcrond", "--config", str(config)], stderr=out
        )
    try:
        yield endpoint, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def test_dcrond_serves_dcronctl_over_tls_and_records_the_certificate_name(
    daemon: tuple[str, Path], ca: Path
) -> None:
    endpoint, log = daemon
    alice = ca / "clients" / "alice"  # found as the default folder: no flags at all
    deadline = time.monotonic() + 30
    while True:
        res = _ctl(endpoint, alice, "-o", "json", "cluster", "status")
        if res.returncode == 0 and json.loads(res.stdout)["role"] == "leader":
            break
        assert time.monotonic() < deadline, res.stderr
        time.sleep(0.2)
    made = _ctl(endpoint, alice, "-o", "json", "job", "create", "hello", "--schedule",
                "@yearly", "--command", "true")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["created_by"] == "alice"

    plain = _ctl(endpoint, ca / "nowhere", "job", "list")
    assert plain.returncode == 3
    assert "requires mutual TLS" in plain.stderr
    assert "tls_refused" in log.read_text()
    assert _ctl(endpoint, alice, "job", "list").returncode == 0  # still serving


def test_dcrond_stops_with_78_when_its_certificate_names_another_node(
    tmp_path: Path, ca: Path
) -> None:
    config, _ = _config(tmp_path, "other", ca / "nodes" / "solo")
    res = subprocess.run(
        [sys.executable, "-m", "dcrond", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 78, res.stderr
    assert "issued for node 'solo' but this node is 'other'" in res.stderr
