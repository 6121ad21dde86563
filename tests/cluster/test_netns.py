"""The namespace lab itself: hosts reach each other, faults cut what they should, and
nothing is left behind (needs root)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dcrond.testing._netns import (
    Host,
    NetnsLab,
    lab_objects,
    netns_unavailable,
    remove_leftovers,
)

pytestmark = pytest.mark.root

_ECHO = textwrap.dedent(
    """
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 9999))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(100)
        s.sendto(data, peer)
    """
)
_ASK = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.3)
    for _ in range(3):
        s.sendto(b"hi", (sys.argv[1], 9999))
        try:
            s.recvfrom(100)
        except TimeoutError:
            continue
        print("yes")
        break
    else:
        print("no")
    """
)


def _start_echo(lab: NetnsLab, host: Host) -> None:
    proc = lab.popen(host, [sys.executable, "-c", _ECHO], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"


def _reaches(lab: NetnsLab, src: Host, dst: Host) -> bool:
    """A UDP datagram from ``src`` to ``dst`` gets an answer (by the host name ``dst`` has)."""
    out = lab.run(src, [sys.executable, "-c", _ASK, dst.hostname]).stdout.strip()
    assert out in ("yes", "no")
    return out == "yes"


def test_hosts_reach_each_other_by_name_and_faults_cut_exactly_what_they_say(
    make_lab: Callable[[int], NetnsLab],
) -> None:
    lab = make_lab(4)
    h1, h2, h3, h4 = lab.hosts
    for h in lab.hosts:
        _start_echo(lab, h)
    assert _reaches(lab, h1, h2)
    assert _reaches(lab, h3, h4)

    lab.cut(h2)
    assert not _reaches(lab, h1, h2)
    assert not _reaches(lab, h2, h3)
    assert _reaches(lab, h1, h3)
    ip = lab.run(h2, ["ip", "-o", "link", "show", "eth0"]).stdout
    assert "state UP" in ip  # the cut host's link stays up, as behind a failed switch

    lab.heal()
    assert _reaches(lab, h1, h2)

    lab.partition([h1, h2], [h3, h4])
    assert _reaches(lab, h1, h2)
    assert _reaches(lab, h3, h4)
    assert not _reaches(lab, h1, h3)
    assert not _reaches(lab, h4, h2)

    lab.heal()
    assert _reaches(lab, h1, h4)
    assert _reaches(lab, h3, h2)


def test_the_lab_removes_everything_it_made_even_when_the_test_fails() -> None:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    lab = NetnsLab(2)
    with pytest.raises(RuntimeError, match="the test failed"), lab:
        assert len(lab_objects(lab.prefix)) == 2 + 1 + 2 + 2  # namespaces, bridge, veths, /etc
        tracked = lab.popen(lab.host(1), ["sleep", "600"])
        # a process the lab did not start itself, detached from everything
        out = lab.run(lab.host(2), ["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"])
        stray = int(out.stdout)
        os.kill(stray, 0)
        raise RuntimeError("the test failed")
    assert lab_objects(lab.prefix) == []
    assert tracked.returncode is not None
    assert _gone_within(stray, 5.0)


def test_leftovers_of_a_crashed_run_are_removed_and_live_labs_are_not(
    make_lab: Callable[[int], NetnsLab],
) -> None:
    live = make_lab(1)
    gone_pid = _a_dead_pid()
    prefix = f"dn{gone_pid:x}x7"
    subprocess.run(["ip", "netns", "add", f"{prefix}h1"], check=True)
    subprocess.run(["ip", "link", "add", f"{prefix}br", "type", "bridge"], check=True)
    assert len(lab_objects(prefix)) == 2
    removed = remove_leftovers()
    assert sorted(removed) == [f"{prefix}br", f"{prefix}h1"]
    assert lab_objects(prefix) == []
    assert len(lab_objects(live.prefix)) == 1 + 1 + 1 + 1


def _a_dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _gone_within(pid: int, seconds: float) -> bool:
    """Whether ``pid`` has exited (or is a zombie nobody reaped yet) within ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rpartition(")")[2].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False
