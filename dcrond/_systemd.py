"""Talking to systemd: notifications, the watchdog and the status line.

Theory of operation. A ``Type=notify`` service tells its manager about
itself by sending datagrams to the AF_UNIX socket named in
``$NOTIFY_SOCKET`` (a file system path, or ``@name`` for Linux's abstract
namespace, where the ``@`` stands for a leading NUL byte). Each datagram
holds newline-separated ``VAR=value`` assignments: ``READY=1`` once the
daemon serves, ``STATUS=…`` a line ``systemctl status`` shows,
``STOPPING=1`` when it begins to stop, ``WATCHDOG=1`` as a keep-alive.
That is the whole protocol, so it is a few lines here rather than a
library.

The watchdog: with ``WatchdogSec=`` set, systemd passes
``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, the pid it expects pings from)
and kills the service if no ``WATCHDOG=1`` arrives for that long once it
is ready. ``watchdog`` pings at half the period from a trio task, so a
ping proves the event loop still runs; a loop blocked in a call that
never returns stops the pings. A ``$WATCHDOG_PID`` naming another process
means the variables were inherited, not meant for us: no pings.

None of these variables may reach a job (a job could otherwise speak for
the daemon): the runner passes on only ``PATH`` and ``LANG`` of the
daemon's environment (docs/runs.md), and ``Host`` strips systemd's
variables before it hands that environment over.

Outside systemd every function here is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import final

import trio

from dcrond.engine import EngineStatistics
from dcrond.raft import NodeStatistics
from dcrond.store import StoreStatistics

log = logging.getLogger("dcrond")


@final
class Notifier:
    """Sends sd_notify datagrams to one socket; does nothing when there is none.

    ``send`` never blocks and never raises: the socket is non-blocking, and
    a failure (systemd gone, queue full) is logged once and otherwise
    ignored — the daemon's work does not depend on being heard.
    """

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None
    ) -> Notifier:
        """Read ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``.

        The watchdog period counts only when ``$WATCHDOG_PID`` is unset or
        names ``pid`` (default: this process).
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            log.warning("sd_notify_unsupported_address address=%r", address)
            address = None
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC", "")
        owner = env.get("WATCHDOG_PID", "")
        mine = not owner or (
            owner.isdigit() and int(owner) == (os.getpid() if pid is None else pid)
        )
        if raw.isdigit() and int(raw) > 0 and mine:
            usec = int(raw)
        return cls(address, watchdog_usec=usec)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half the period), or None for no pings."""
        if self.address is None or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2_000_000

    def send(self, state: str) -> bool:
        """Send one datagram of ``VAR=value`` lines; True if it left."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(state.encode(), target)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning(
                    "sd_notify_failed address=%r state=%r error=%r",
                    self.address,
                    state.split("\n", 1)[0],
                    str(exc),
                )
            return False
        return True

    def close(self) -> None:
        """Close the socket (a later ``send`` opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def watchdog(notifier: Notifier) -> None:
    """Send ``WATCHDOG=1`` every half period, for ever; return at once without a watchdog."""
    interval = notifier.watchdog_interval
    if interval is None:
        return
    while True:
        notifier.send("WATCHDOG=1")
        await trio.sleep(interval)


def status_line(
    node: NodeStatistics, store: StoreStatistics, engine: EngineStatistics, *, peers: int = 0
) -> str:
    """The one line ``systemctl status`` shows: role and term, jobs, runs here, peers.

    ``peers`` counts the other voters this node is connected to.
    """
    role = node.role.name.lower().replace("_", "-")
    if node.leader is not None and node.leader != node.node_id:
        role = f"{role} of {node.leader}"
    others = len([v for v in node.voters if v != node.node_id])
    return (
        f"{role}, term {node.term}; {_count(store.jobs, 'job')}; "
        f"{_count(engine.running, 'run')} running here; peers {peers}/{others} connected"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
