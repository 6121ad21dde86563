"""``dcrond``: the daemon every host runs.

It runs one ``dcrond.host.Host``: gossip, a Raft member whose state machine
is the job table, the engine (scheduler on the leader, runner on every host)
and the RPC server ``dcronctl`` talks to. With no config it founds a
one-host cluster in a local data folder and listens on 127.0.0.1 only.

Under systemd (``dist/dcrond.service``, ``Type=notify``) it says
``READY=1`` once the API listens, keeps ``STATUS=`` current, pings the
watchdog and says ``STOPPING=1`` on SIGTERM (``dcrond._systemd``); its log
lines carry journald priorities (``dcrond._logfmt``). A stop leaves running
jobs running for the next start to re-adopt (docs/runs.md).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

import trio

from dcrond import __version__
from dcrond._logfmt import FORMATS, default_format, make_handler
from dcrond._systemd import Notifier, status_line, watchdog
from dcrond.config import Config, load_config
from dcrond.errors import ConfigError
from dcrond.host import Host

log = logging.getLogger("dcrond")

EX_CONFIG = 78
#: how long a stop waits for the engine to hand over (the unit's TimeoutStopSec is longer)
SHUTDOWN_GRACE_S = 30.0
#: how often the STATUS= line is recomputed (it is sent only when it changed)
STATUS_PERIOD_S = 2.0


def notify(state: str) -> None:
    """Tell systemd (``Type=notify``) about our state; a no-op outside systemd."""
    notifier = Notifier.from_environ()
    notifier.send(state)
    notifier.close()


async def _report_status(notifier: Notifier, line: Callable[[], str], first: str) -> None:
    """Send ``STATUS=`` whenever ``line()`` changes (polled every ``STATUS_PERIOD_S``)."""
    last = first
    while True:
        await trio.sleep(STATUS_PERIOD_S)
        now = line()
        if now != last:
            notifier.send(f"STATUS={now}")
            last = now


async def serve(
    config: Config,
    *,
    notifier: Notifier | None = None,
    seeds: Sequence[tuple[str, int]] = (),
) -> None:
    """Run the daemon until SIGTERM or SIGINT.

    ``notifier`` is where systemd notifications go (default: from the
    environment; a no-op outside systemd).
    """
    if notifier is None:
        notifier = Notifier.from_environ()
    notifier.send("STATUS=starting: opening the Raft log and the job table")
    host = Host(config, seeds=seeds)
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(host.run)
                node, replica, engine = host.node, host.replica, host.engine
                assert node is not None and replica is not None and engine is not None
                transport = host.transport
                assert transport is not None

                def line() -> str:
                    return status_line(
                        node.statistics(),
                        replica.store.statistics(),
                        engine.statistics(),
                        peers=len(transport.statistics().connected_peers),
                    )

                if notifier.address is not None:
                    first = line()
                    notifier.send(f"READY=1\nSTATUS={first}")
                    nursery.start_soon(_report_status, notifier, line, first)
                    nursery.start_soon(watchdog, notifier)
                async for signum in signals:
                    log.info("dcrond_stopping signal=%s", signal.Signals(signum).name)
                    notifier.send("STOPPING=1\nSTATUS=stopping; running jobs keep running")
                    await host.stop(SHUTDOWN_GRACE_S)
                    nursery.cancel_scope.cancel()
                    break
    finally:
        notifier.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dcrond``."""
    ap = argparse.ArgumentParser(prog="dcrond", description="distributed cron daemon")
    ap.add_argument(
        "--config", help="config file (default: $DCROND_CONFIG, /etc/dcrond/dcrond.toml)"
    )
    ap.add_argument("--data-dir", help="override node.data_dir")
    ap.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="least severe level logged (default INFO)",
    )
    ap.add_argument(
        "--log-format",
        choices=FORMATS,
        help="journal (priority prefixes), plain or json (default: journal when stderr "
        "is systemd's journal stream, rich on a terminal, else plain)",
    )
    ap.add_argument("--version", action="version", version=f"dcrond {__version__}")
    args = ap.parse_args(argv)
    fmt = args.log_format or default_format(sys.stderr, os.environ)
    logging.basicConfig(level=args.log_level, handlers=[make_handler(fmt, sys.stderr)])
    # a hang the watchdog ends with SIGABRT (or a crash) leaves the stack of the thread that
    # got the signal in the log: the event loop's, for the watchdog (the kernel hands a
    # process-wide signal to the main thread first). Not every thread's: dumping a worker
    # thread while it runs (an fsync, a snapshot copy) crashed faulthandler itself with
    # SIGSEGV in 1 of 4 aborts, and then no stack was written at all.
    faulthandler.enable(sys.stderr, all_threads=False)
    try:
        config = load_config(args.config, data_dir=args.data_dir)
    except ConfigError as exc:
        log.error("dcrond_config_invalid error=%r", str(exc))
        return EX_CONFIG
    try:
        trio.run(serve, config)
    except (ConfigError, BaseExceptionGroup) as exc:  # found while starting (a weak secret…)
        found = exc if isinstance(exc, ConfigError) else exc.split(ConfigError)[0]
        if found is None:
            raise
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        log.error("dcrond_config_invalid error=%r", str(found))
        return EX_CONFIG
    return 0
