"""A real dcrond process driven by a real dcronctl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcrond.testing._cluster import free_ports


def _ctl(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from dcrond.ctl import main; raise SystemExit(main())", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "DCRON_ENDPOINT": endpoint},
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    api, raft, gossip = free_ports(3)
    config = tmp_path / "dcrond.toml"
    config.write_text(
        f"[node]\nname = 'solo'\ndata_dir = '{tmp_path / 'data'}'\n"
        f"[api]\nlisten = '127.0.0.1:{api}'\n[raft]\nlisten = '127.0.0.1:{raft}'\n"
        f"[cluster]\ngossip_listen = '127.0.0.1:{gossip}'\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcrond", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, f"127.0.0.1:{api}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()


def _wait_leader(endpoint: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        res = _ctl(endpoint, "-o", "json", "cluster", "status")
        if res.returncode == 0:
            status: dict[str, object] = json.loads(res.stdout)
            if status["role"] == "leader":
                return status
        time.sleep(0.2)
    raise AssertionError(f"no leader: {res.stdout} {res.stderr}")


def test_single_node_elects_itself_and_answers_dcronctl(
    daemon: tuple[subprocess.Popen[str], str],
) -> None:
    _, endpoint = daemon
    status = _wait_leader(endpoint)
    assert status["node"] == "solo"
    assert status["voters"] == ["solo"]
    table = _ctl(endpoint, "cluster", "status")
    assert table.returncode == 0
    assert "solo" in table.stdout
    nodes = json.loads(_ctl(endpoint, "-o", "json", "node", "list").stdout)
    assert [n["name"] for n in nodes] == ["solo"]


def test_sigterm_stops_cleanly_and_a_restart_keeps_the_durable_term(
    daemon: tuple[subprocess.Popen[str], str],
) -> None:
    proc, endpoint = daemon
    first = _wait_leader(endpoint)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert proc.args is not None
    again = subprocess.Popen(proc.args, stderr=subprocess.DEVNULL)
    try:
        second = _wait_leader(endpoint)
        # The term was durable: a restarted node never goes back in time.
        assert isinstance(first["term"], int)
        assert isinstance(second["term"], int)
        assert second["term"] > first["term"]
    finally:
        again.kill()
        again.wait(timeout=30)


def test_dcronctl_says_the_daemon_is_unreachable_with_exit_3() -> None:
    (port,) = free_ports(1)
    res = _ctl(f"127.0.0.1:{port}", "cluster", "status")
    assert res.returncode == 3
    assert res.stderr.startswith("dcronctl: error: cannot reach dcrond")


def test_a_weak_join_secret_stops_dcrond_with_exit_78(tmp_path: Path) -> None:
    config = tmp_path / "dcrond.toml"
    api, raft, gossip = free_ports(3)
    config.write_text(
        f"[node]\ndata_dir = '{tmp_path / 'data'}'\n[api]\nlisten = '127.0.0.1:{api}'\n"
        f"[raft]\nlisten = '127.0.0.1:{raft}'\n"
        f"[cluster]\ngossip_listen = '127.0.0.1:{gossip}'\nsecret = 'short'\n",
        encoding="utf-8",
    )
    res = subprocess.run(
        [sys.executable, "-m", "dcrond", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 78, res.stderr
    assert "cluster.secret" in res.stderr
