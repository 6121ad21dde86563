"""Discovery: the first gossip peers to contact, from zeroconf on the LAN and from ``join``.

Theory of operation
-------------------
Discovery only finds *seeds*: addresses worth one gossip push-pull. It never
decides who is a member (gossip does, and the Raft log decides who votes), so
a wrong or stale seed costs one failed connection and nothing else.

**zeroconf** (multicast DNS, RFC 6762/6763). Each node registers one service
of type ``_dcrond._tcp.local.``: the SRV record points at its gossip port, the
A record at its advertised address, and the TXT record carries

=========== =================================================================
``node``    the node's name
``cluster`` the cluster name (``[cluster] name``)
``tag``     :func:`secret_tag`: 16 hex digits of an HMAC of the cluster name
            keyed by the join secret
``gossip``  the gossip address others should use, ``host:port``
=========== =================================================================

and it browses for the same type. A service whose cluster or tag differs from
ours is counted (``statistics().foreign``) and never returned, so two
clusters on one LAN, or two with one name but different secrets, never learn
of each other. The tag is not a credential: anyone on the LAN can copy it.
Strangers are kept out by the gossip encryption and TLS, both keyed by the
join secret and the cluster's CA; the tag only saves honest nodes from
knocking on the wrong door. Being an HMAC, it reveals nothing about the
secret short of guessing it (so use a long random one).

The ``zeroconf`` library runs its own asyncio loop in a thread of its own
(plus one thread per browser). dcrond never blocks trio on it: starting,
registering, resolving and closing go through ``trio.to_thread.run_sync``,
and the browser's callbacks hand each change to trio with
``TrioToken.run_sync_soon`` (trio's thread-safe, non-blocking
``trio.from_thread`` primitive), so a busy trio loop can never stall
zeroconf's thread either. A trio task then resolves the service's TXT
record (``Zeroconf.get_service_info`` in a worker thread).

mDNS is bound to **one interface**, the one holding the address given as
``interface`` (by default the advertised gossip host): multicast is sent and
joined there only, so a host with several networks announces itself only on
the one the cluster uses, and test hosts in network namespaces see exactly
their own bridge. On a loopback address zeroconf is skipped (loopback
carries no multicast, and a single-host node has no one to find).

**join** covers routed networks, where multicast does not reach: a list of
``host`` or ``host:port`` entries (port defaults to the gossip port),
resolved with ``getaddrinfo`` when discovery starts and again every
``resolve_interval`` seconds (DNS names may move). An entry that does not
resolve is logged and retried; our own advertised address is left out, so
one list can be shared by every host.

Both sources end up behind one interface: :meth:`Discovery.peers` (the
seeds known now), :meth:`Discovery.wait_changed` and the async iterator
:meth:`Discovery.seeds` (each seed as it appears).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import socket
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, final

import trio
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from dcrond.config import parse_join_entry
from dcrond.errors import ConfigError

__all__ = [
    "SERVICE_TYPE",
    "Discovery",
    "DiscoveryStatistics",
    "Seed",
    "parse_seed",
    "secret_tag",
]

log = logging.getLogger("dcrond.discovery")

SERVICE_TYPE: Final = "_dcrond._tcp.local."
_TXT_VERSION: Final = "1"
_RESOLVE_TIMEOUT_MS: Final = 3000
_CLOSE_TIMEOUT: Final = 10.0
Address = tuple[str, int]


@final
@dataclass(frozen=True, slots=True, order=True)
class Seed:
    """An address worth a gossip push-pull, and where we heard of it.

    ``name`` is the node's name when zeroconf told it, None for a ``join``
    entry (its name is learnt from gossip).
    """

    address: Address
    name: str | None
    source: Literal["zeroconf", "join"]


@final
@dataclass(frozen=True, slots=True)
class DiscoveryStatistics:
    """What discovery has seen so far (for logs, metrics and tests)."""

    zeroconf: bool  #: zeroconf is running (not disabled, not skipped on loopback)
    registered: bool  #: our service is announced
    instance: str  #: our service instance name ("" until registered)
    services_seen: int  #: distinct _dcrond._tcp services resolved, ours included
    foreign: int  #: of them, of another cluster or join secret (never returned)
    malformed: int  #: of them, with a TXT record we could not read
    join_unresolved: int  #: join entries whose last lookup failed
    peers: int


def secret_tag(cluster: str, secret: bytes) -> str:
    """The public tag of (cluster name, join secret) that zeroconf announces."""
    mac = hmac.new(secret, b"dcrond discovery v1\x00" + cluster.encode(), hashlib.sha256)
    return mac.hexdigest()[:16]


def parse_seed(text: str, default_port: int) -> Address:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` to (host, port); ConfigError if not."""
    return parse_join_entry(text, default_port)


def _format(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _label(text: str) -> str:
    """A DNS label made of ``text``'s safe characters."""
    kept = "".join(c if c.isalnum() or c == "-" else "-" for c in text.lower()).strip("-")
    return kept or "dcrond"


@final
class Discovery:
    """Seeds from zeroconf and a ``join`` list (see the module docstring).

    ``gossip`` is this node's advertised gossip address (a concrete address,
    not a wildcard). ``interface`` is the address whose interface zeroconf
    uses (default: ``gossip``'s host). Use as ``async with Discovery(...) as
    d:``; leaving the block withdraws our announcement (others drop us at
    once instead of when the record expires) and stops zeroconf's threads.
    """

    def __init__(
        self,
        *,
        name: str,
        cluster: str,
        secret: bytes,
        gossip: Address,
        zeroconf: bool = True,
        join: Sequence[str] = (),
        interface: str | None = None,
        resolve_interval: float = 30.0,
    ) -> None:
        self.name = name
        self.cluster = cluster
        self.tag = secret_tag(cluster, secret)
        self.gossip = gossip
        self._join = [parse_seed(entry, gossip[1]) for entry in join]
        self._interface = interface or gossip[0]
        try:
            self._iface_ip = ipaddress.ip_address(self._interface)
        except ValueError:
            raise ConfigError(
                f"discovery: zeroconf needs an IP address to bind to, got {self._interface!r}"
            ) from None
        if self._iface_ip.is_unspecified:
            raise ConfigError(
                "discovery: a wildcard address cannot be announced; set discovery.advertise"
            )
        self._zeroconf_requested = zeroconf
        self._want_zeroconf = zeroconf and not self._iface_ip.is_loopback
        self._resolve_interval = resolve_interval
        self._zc: Any = None
        self._browser: Any = None
        self._info: Any = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._changed = trio.Event()
        self._pending: dict[str, bool] = {}  # instance name -> still present
        self._wakeup = trio.Event()
        self._by_instance: dict[str, Seed] = {}
        self._join_seeds: set[Seed] = set()
        self._seen: set[str] = set()
        self._foreign: set[str] = set()
        self._malformed: set[str] = set()
        self._join_unresolved = 0
        self._join_found: dict[Address, set[Address]] = {}
        self._join_failed: set[Address] = set()
        self._registered = False
        self._instance = ""
        self._stack = contextlib.AsyncExitStack()
        self._nursery: trio.Nursery | None = None

    # --- public ------------------------------------------------------------

    def peers(self) -> tuple[Seed, ...]:
        """The seeds known now, ourselves left out, sorted."""
        return tuple(sorted({*self._by_instance.values(), *self._join_seeds}))

    def addresses(self) -> tuple[Address, ...]:
        """The addresses of :meth:`peers`, each once."""
        return tuple(sorted({seed.address for seed in self.peers()}))

    async def wait_changed(self) -> None:
        """Sleep until :meth:`peers` or :meth:`statistics` may have changed."""
        await self._changed.wait()

    async def seeds(self) -> AsyncGenerator[Seed, None]:
        """Every seed once as it appears (again if it comes back or moves); runs forever."""
        given: set[Seed] = set()
        while True:
            now = set(self.peers())
            for seed in sorted(now - given):
                yield seed
            given = now
            await self.wait_changed()

    def statistics(self) -> DiscoveryStatistics:
        """Counters of what was seen (the module docstring says what is returned)."""
        return DiscoveryStatistics(
            zeroconf=self._zc is not None,
            registered=self._registered,
            instance=self._instance,
            services_seen=len(self._seen),
            foreign=len(self._foreign),
            malformed=len(self._malformed),
            join_unresolved=self._join_unresolved,
            peers=len(self.peers()),
        )

    async def run(
        self, *, task_status: trio.TaskStatus[Discovery] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Discover until cancelled, for ``await nursery.start(discovery.run)``.

        The same as ``async with discovery:`` around the rest of a task, for
        callers whose own block ends before the service should (a task that
        calls ``task_status.started()`` and returns, leaving its nursery
        running): leaving the ``async with`` block withdraws the announcement.
        """
        async with self:
            task_status.started(self)
            await trio.sleep_forever()

    async def __aenter__(self) -> Discovery:
        self._token = trio.lowlevel.current_trio_token()
        # Unwound in reverse: the tasks end first, then zeroconf stops.
        self._stack.push_async_callback(self._stop_zeroconf)
        nursery = await self._stack.enter_async_context(trio.open_nursery())
        self._nursery = nursery
        try:
            if self._join:
                nursery.start_soon(self._join_loop)
            if self._want_zeroconf:
                await trio.to_thread.run_sync(self._start_zeroconf)
                nursery.start_soon(self._register)
                nursery.start_soon(self._resolve_loop)
            elif self._zeroconf_requested:
                log.info("zeroconf_skipped reason=loopback address=%s", self._interface)
        except BaseException:
            nursery.cancel_scope.cancel()
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        # The body's own exception is not handed to the nursery (it would come
        # back wrapped in an ExceptionGroup); it propagates as it is.
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        await self._stack.aclose()
        return None

    # --- zeroconf (the sync halves run in worker threads) -------------------

    def _start_zeroconf(self) -> None:
        version = IPVersion.V4Only if self._iface_ip.version == 4 else IPVersion.V6Only
        self._zc = Zeroconf(interfaces=[self._interface], ip_version=version, use_asyncio=False)
        self._browser = ServiceBrowser(self._zc, SERVICE_TYPE, handlers=[self._on_change])

    def _register_sync(self) -> str:
        digest = hashlib.sha256(f"{self.cluster}\x00{self.name}".encode()).hexdigest()
        label = f"{_label(self.name)[:40]}-{digest[:8]}"
        host_digest = hashlib.sha256(f"{label}\x00{_format(self.gossip)}".encode()).hexdigest()
        self._info = ServiceInfo(
            SERVICE_TYPE,
            f"{label}.{SERVICE_TYPE}",
            port=self.gossip[1],
            properties={
                "v": _TXT_VERSION,
                "node": self.name,
                "cluster": self.cluster,
                "tag": self.tag,
                "gossip": _format(self.gossip),
            },
            server=f"dcrond-{host_digest[:12]}.local.",
            addresses=[self._iface_ip.packed],
        )
        self._zc.register_service(self._info, allow_name_change=True)
        self._registered = True
        return str(self._info.name)

    def _on_change(self, **kwargs: Any) -> None:
        """The browser's callback (its own thread): hand the change to trio, never wait."""
        state = kwargs["state_change"]
        name = str(kwargs["name"])
        present = state is not ServiceStateChange.Removed
        assert self._token is not None
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._note_change, name, present)

    def _note_change(self, name: str, present: bool) -> None:
        self._pending[name] = present
        self._wakeup.set()

    def _stop_zeroconf_sync(self) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        if self._browser is not None:
            self._browser.cancel()
        if self._registered and self._info is not None:
            with contextlib.suppress(Exception):
                zc.unregister_service(self._info)  # goodbye packets: the others drop us now
        zc.close()

    # --- trio tasks ---------------------------------------------------------

    async def _stop_zeroconf(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
            await trio.to_thread.run_sync(self._stop_zeroconf_sync)

    async def _register(self) -> None:
        self._instance = await trio.to_thread.run_sync(self._register_sync)
        self._notify()  # statistics changed; wait_changed() may wake spuriously anyway
        log.info("discovery_registered instance=%r gossip=%s", self._instance, self.gossip)

    async def _resolve_loop(self) -> None:
        assert self._nursery is not None
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            pending, self._pending = self._pending, {}
            for name, present in pending.items():
                if present:
                    self._nursery.start_soon(self._resolve, name)
                elif self._by_instance.pop(name, None) is not None:
                    log.info("discovery_gone instance=%r", name)
                    self._notify()

    async def _resolve(self, name: str) -> None:
        zc = self._zc
        if zc is None:
            return
        info = await trio.to_thread.run_sync(
            zc.get_service_info, SERVICE_TYPE, name, _RESOLVE_TIMEOUT_MS, abandon_on_cancel=True
        )
        if info is None:
            log.debug("discovery_unresolved instance=%r", name)
            return
        self._seen.add(name)
        seed = self._seed_from(name, info.decoded_properties)
        if seed is None:
            self._by_instance.pop(name, None)
            return
        if self._by_instance.get(name) != seed:
            self._by_instance[name] = seed
            log.info("discovery_found node=%s gossip=%s via=zeroconf", seed.name, seed.address)
            self._notify()

    def _seed_from(self, instance: str, txt: dict[str, str | None]) -> Seed | None:
        node, cluster, tag, gossip = (txt.get(k) for k in ("node", "cluster", "tag", "gossip"))
        if cluster != self.cluster or tag != self.tag:
            if instance not in self._foreign:
                self._foreign.add(instance)
                log.info("discovery_ignored instance=%r reason=other_cluster", instance)
            return None
        try:
            if not node or not gossip:
                raise ConfigError("missing node or gossip")
            address = parse_seed(gossip, 0)
        except ConfigError:
            if instance not in self._malformed:
                self._malformed.add(instance)
                log.warning("discovery_ignored instance=%r reason=malformed_txt", instance)
            return None
        if node == self.name or address == self.gossip:
            return None
        return Seed(address=address, name=node, source="zeroconf")

    async def _join_loop(self) -> None:
        async with trio.open_nursery() as nursery:
            for entry in dict.fromkeys(self._join):
                nursery.start_soon(self._follow_entry, entry)

    async def _follow_entry(self, entry: Address) -> None:
        """Resolve one join entry now and every ``resolve_interval`` (sooner after a failure).

        A failed lookup keeps the addresses of the last good one: a stale seed
        costs a failed push-pull, a forgotten one may cost the cluster.
        """
        host, port = entry
        while True:
            addresses: set[Address] | None = None
            with trio.move_on_after(_RESOLVE_TIMEOUT_MS / 1000):
                try:
                    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
                except OSError as exc:
                    log.warning("discovery_join_unresolved entry=%s error=%r", host, str(exc))
                else:
                    addresses = {
                        (str(sockaddr[0]), int(sockaddr[1]))
                        for family, *_, sockaddr in infos
                        if family in (socket.AF_INET, socket.AF_INET6)
                    }
            if addresses is None:
                self._join_failed.add(entry)
            else:
                self._join_failed.discard(entry)
                self._join_found[entry] = addresses
            self._publish_join()
            interval = self._resolve_interval
            await trio.sleep(min(interval, 5.0) if addresses is None else interval)

    def _publish_join(self) -> None:
        seeds = {
            Seed(address=address, name=None, source="join")
            for addresses in self._join_found.values()
            for address in addresses
            if address != self.gossip
        }
        changed = seeds != self._join_seeds or len(self._join_failed) != self._join_unresolved
        self._join_seeds = seeds
        self._join_unresolved = len(self._join_failed)
        if changed:
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
