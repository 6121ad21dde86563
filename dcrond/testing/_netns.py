"""Real hosts for tests: Linux network namespaces on one bridge (needs root).

Theory of operation
-------------------
A :class:`NetnsLab` of N hosts is N network namespaces, each with one veth
pair whose outer end is a port of one Linux bridge in the root namespace and
whose inner end is renamed ``eth0`` and given ``198.18.0.<i>/24`` (host i,
counted from 1; 198.18.0.0/15 is the benchmarking range, never routed). The
bridge has no address, so nothing in the root namespace can reach the hosts
and the hosts reach nothing but each other. Loopback is up in every host.
Each host resolves the names ``h1`` .. ``hN`` to the hosts' addresses:
``ip netns exec`` bind-mounts the files of ``/etc/netns/<netns>/`` over
those of ``/etc``, and the lab writes a ``hosts`` file there, and a
``resolv.conf`` naming 127.0.0.1 (where nothing listens) so that any other
name fails at once instead of waiting for an unreachable DNS server.

Multicast (zeroconf) works across the bridge: veth devices carry the
MULTICAST flag, and the bridge is made with ``mcast_snooping 0`` so it floods
every multicast frame to every port instead of waiting for IGMP reports it
may never see. It is also made with ``nf_call_iptables 0`` (and the ip6/arp
twins): a host whose firewall drops forwarded packets (docker sets FORWARD to
DROP) would otherwise drop bridged frames too.

Processes run inside a host through ``ip netns exec NAME argv``: :meth:`popen`
starts one in its own session, with ``setpriv --pdeathsig KILL`` so that it
dies with the test process even when the test run itself is killed.

**Faults**: :meth:`cut` sets the host's bridge port to *disabled*: the bridge
then drops every frame to and from it, while ``eth0`` inside stays up, as when
a switch port or a cable between two switches fails (a link-down event would
tell the host's software something a real partition does not).
:meth:`block_multicast` stops the bridge from flooding multicast frames
(``mcast_flood off`` on every port), as on a routed network or in a cloud
VPC: zeroconf then finds nobody while unicast still flows.
:meth:`partition` moves bridge ports onto extra bridges, one per group, so
the groups can talk within but not across. :meth:`heal` undoes both.

**Names**: every name starts with the lab's prefix ``dn<pid>x<k>`` (the
pid of the process that made it, in hex, and a counter below 100), so names
fit IFNAMSIZ (15 bytes): namespaces ``<prefix>h<i>``, the bridge
``<prefix>br``, extra bridges ``<prefix>g<j>``, outer veth ends
``<prefix>v<i>``.
:meth:`close` kills every process still in the lab's namespaces (found with
``ip netns pids``, so it also catches processes the test started some other
way), deletes the namespaces (which destroys the veth pairs) and the
bridges. :func:`remove_leftovers` removes what earlier runs left behind when
they were killed before they could clean up: anything named ``dn<pid>x…``
whose pid is no longer running.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, final

__all__ = [
    "Host",
    "NetnsError",
    "NetnsLab",
    "lab_objects",
    "netns_unavailable",
    "remove_leftovers",
]

SUBNET_PREFIX: Final = "198.18.0."
PREFIX_LEN: Final = 24
_BASE: Final = "dn"
_NAME = re.compile(r"^dn(?P<pid>[0-9a-f]+)x(?P<k>\d+)[a-z]")
_IFNAMSIZ: Final = 15
_ETC_NETNS: Final = Path("/etc/netns")
_PORT_FORWARDING: Final = "3"
_PORT_DISABLED: Final = "0"
_counter = 0


class NetnsError(RuntimeError):
    """An ``ip`` command failed while building or changing a lab."""


@final
@dataclass(frozen=True, slots=True)
class Host:
    """One namespace of a lab: ``netns`` is its name, ``address`` its IPv4 address."""

    index: int  #: 1..N
    netns: str
    address: str
    hostname: str  #: ``h<i>``, resolvable in every host of the lab
    port: str  #: the outer veth end, a port of the bridge


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


@functools.cache
def netns_unavailable() -> str | None:
    """Why this process cannot build a lab (a skip reason), or None when it can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI runs the tests as root)"
    if shutil.which("ip") is None or shutil.which("bridge") is None:
        return "needs iproute2's ip and bridge commands (apt-get install iproute2)"
    probe = f"{_BASE}{os.getpid():x}x0probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _links() -> list[str]:
    out = _ip("-o", "link", "show", check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def lab_objects(prefix: str = _BASE) -> list[str]:
    """Namespaces, links and /etc/netns folders whose name starts with ``prefix``."""
    etc = [f"/etc/netns/{p.name}" for p in _ETC_NETNS.iterdir()] if _ETC_NETNS.is_dir() else []
    names = [*_namespaces(), *_links(), *etc]
    return sorted(n for n in names if n.removeprefix("/etc/netns/").startswith(prefix))


def _kill_netns_processes(netns: str, timeout: float = 10.0) -> None:
    """SIGKILL every process in ``netns`` and wait until they are gone."""
    deadline = time.monotonic() + timeout
    while True:
        out = _ip("netns", "pids", netns, check=False).stdout
        pids = [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _delete_netns(netns: str) -> None:
    _kill_netns_processes(netns)
    _ip("netns", "del", netns, check=False)
    shutil.rmtree(_ETC_NETNS / netns, ignore_errors=True)


def remove_leftovers() -> list[str]:
    """Remove namespaces and links left by labs whose process is gone; their names."""
    removed = []
    etc = sorted(p.name for p in _ETC_NETNS.iterdir()) if _ETC_NETNS.is_dir() else []
    for netns in dict.fromkeys([*_namespaces(), *etc]):
        m = _NAME.match(netns)
        if m and not _alive(int(m["pid"], 16)):
            _delete_netns(netns)
            removed.append(netns)
    for link in _links():  # bridges, and veth ends whose namespace is already gone
        m = _NAME.match(link)
        if m and not _alive(int(m["pid"], 16)):
            _ip("link", "del", link, check=False)
            removed.append(link)
    return removed


@final
class NetnsLab:
    """N hosts in network namespaces on one bridge (see the module docstring).

    Use as a context manager: the lab is built on entry and everything it
    made is removed on exit, whatever happened inside. Not thread-safe.
    """

    def __init__(self, count: int) -> None:
        if not 1 <= count <= 250:
            raise ValueError(f"a lab has 1 to 250 hosts, not {count}")
        global _counter
        _counter += 1
        self.prefix = f"{_BASE}{os.getpid():x}x{_counter % 100}"
        self.bridge = f"{self.prefix}br"
        self.hosts = tuple(
            Host(
                index=i,
                netns=f"{self.prefix}h{i}",
                address=f"{SUBNET_PREFIX}{i}",
                hostname=f"h{i}",
                port=f"{self.prefix}v{i}",
            )
            for i in range(1, count + 1)
        )
        self._groups: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._built = False
        for name in (self.bridge, f"{self.prefix}g99", *(h.port for h in self.hosts)):
            assert len(name) <= _IFNAMSIZ, name

    # --- building and removing ---------------------------------------------

    def __enter__(self) -> NetnsLab:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def build(self) -> None:
        """Create the bridge and the hosts (the context manager does this)."""
        self._built = True
        self._add_bridge(self.bridge)
        hosts_file = "127.0.0.1\tlocalhost\n" + "".join(
            f"{h.address}\t{h.hostname}\n" for h in self.hosts
        )
        for host in self.hosts:
            etc = _ETC_NETNS / host.netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file, encoding="ascii")
            (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n", encoding="ascii")
            peer = f"{self.prefix}p{host.index}"
            _ip("netns", "add", host.netns)
            _ip("link", "add", host.port, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", host.netns)
            _ip("-n", host.netns, "link", "set", peer, "name", "eth0")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/{PREFIX_LEN}", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "multicast", "on", "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
            _ip("link", "set", host.port, "master", self.bridge, "up")

    def _add_bridge(self, name: str) -> None:
        _ip(
            "link", "add", name, "type", "bridge",
            "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0",
            "nf_call_iptables", "0", "nf_call_ip6tables", "0", "nf_call_arptables", "0",
        )  # fmt: skip
        _ip("link", "set", name, "up")

    def close(self) -> None:
        """Stop every process and remove every namespace and bridge of the lab."""
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._procs.clear()
        if not self._built:
            return
        for host in self.hosts:
            _delete_netns(host.netns)
        for link in [*self._groups, self.bridge]:
            if link in _links():
                _ip("link", "del", link, check=False)
        self._groups.clear()
        self._built = False

    # --- running things inside ---------------------------------------------

    def host(self, index: int) -> Host:
        """Host ``index`` (1..N)."""
        return self.hosts[index - 1]

    @staticmethod
    def argv(host: Host, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside ``host``'s namespace."""
        return ["ip", "netns", "exec", host.netns, *argv]

    def run(
        self, host: Host, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``host`` to completion; its output as text."""
        return subprocess.run(
            self.argv(host, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
        )

    def popen(self, host: Host, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``host``, in a session of its own; killed by :meth:`close`.

        ``kwargs`` go to ``subprocess.Popen`` (``stdout=``, ``env=``, ``text=`` ...).
        """
        full = self.argv(host, argv)
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            full = [setpriv, "--pdeathsig", "KILL", "--", *full]
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[Any] = subprocess.Popen(full, start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    # --- faults ------------------------------------------------------------

    def cut(self, host: Host) -> None:
        """Drop every frame to and from ``host`` at the bridge (its link stays up)."""
        _ip_bridge_port_state(host.port, _PORT_DISABLED)

    def partition(self, *groups: Iterable[Host]) -> None:
        """Split the hosts: each group on a bridge of its own, the rest stay on the main one."""
        for j, group in enumerate(groups, start=1):
            bridge = f"{self.prefix}g{j}"
            if bridge not in self._groups:
                self._add_bridge(bridge)
                self._groups.append(bridge)
            for host in group:
                _ip("link", "set", host.port, "master", bridge)
                _ip_bridge_port_state(host.port, _PORT_FORWARDING)

    def block_multicast(self, blocked: bool = True) -> None:
        """Stop (or, with ``blocked=False``, resume) multicast between the hosts."""
        for host in self.hosts:
            _bridge("link", "set", "dev", host.port, "mcast_flood", "off" if blocked else "on")

    def heal(self) -> None:
        """Undo every :meth:`cut` and :meth:`partition`: one bridge, all ports forwarding."""
        for host in self.hosts:
            _ip("link", "set", host.port, "master", self.bridge)
            _ip_bridge_port_state(host.port, _PORT_FORWARDING)


def _ip_bridge_port_state(port: str, state: str) -> None:
    _bridge("link", "set", "dev", port, "state", state)


def _bridge(*args: str) -> None:
    proc = subprocess.run(
        ["bridge", *args], capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise NetnsError(f"bridge {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
