"""dcrond's configuration: TOML read with tomllib into frozen dataclasses.

Lookup order: ``--config``, then ``$DCROND_CONFIG``, then
``/etc/dcrond/dcrond.toml``; with none of them, a single local node whose data
lives in a local folder. Unknown keys are refused with their dotted path
(``raft.tick_ms``); the daemon then exits with 78 (EX_CONFIG).
``dcrond.toml.example`` lists every key at its default; a test keeps the two
in step.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, final

from dcrond import __version__
from dcrond.errors import ConfigError, InvalidRequest

SYSTEM_CONFIG = Path("/etc/dcrond/dcrond.toml")
DEFAULT_API_PORT = 7300
DEFAULT_GOSSIP_PORT = 7302
DEFAULT_RAFT_PORT = 7301


def default_data_dir() -> Path:
    """Where a node keeps its data when the config does not say."""
    if os.geteuid() == 0:
        return Path("/var/lib/dcrond")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "dcrond"


def default_tls_dir() -> Path:
    """Where certificates live when neither the config nor the command line says
    (``/etc/dcrond/tls`` as root, else ``$XDG_CONFIG_HOME/dcrond/tls`` or
    ``~/.config/dcrond/tls``); docs/tls.md."""
    if os.geteuid() == 0:
        return Path("/etc/dcrond/tls")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dcrond" / "tls"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is reachable from this host only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name may resolve anywhere


@final
@dataclass(frozen=True, slots=True)
class NodeConfig:
    """[node]: who this host is and where it keeps its data."""

    name: str = field(default_factory=socket.gethostname)
    data_dir: str = ""
    #: placement labels, ``(key, value)`` pairs sorted by key (``[node] tags = { role = "db" }``
    #: in the file); gossiped to every host, matched against each job's ``tags``
    tags: tuple[tuple[str, str], ...] = field(default=(), metadata={"tags": True})

    def tag_map(self) -> dict[str, str]:
        """The tags as a dict."""
        return dict(self.tags)


@final
@dataclass(frozen=True, slots=True)
class ApiConfig:
    """[api]: where dcronctl and the HTTP API reach this node."""

    listen: str = f"127.0.0.1:{DEFAULT_API_PORT}"


@final
@dataclass(frozen=True, slots=True)
class RaftConfig:
    """[raft]: the consensus log's listener and timing."""

    listen: str = f"127.0.0.1:{DEFAULT_RAFT_PORT}"
    #: 50 ms x 8: an election timeout of 400-800 ms, so a new leader takes writes
    #: within a second of a kill -9 (docs/benchmarks.md, "Failover")
    tick_ms: int = 50
    election_ticks: int = 8
    snapshot_entries: int = 10_000
    fsync: bool = True


@final
@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """[cluster]: which cluster this node belongs to and how hosts find each other."""

    name: str = "dcrond"
    gossip_listen: str = f"127.0.0.1:{DEFAULT_GOSSIP_PORT}"  #: UDP and TCP, same port
    advertise: str = ""  #: host:port others reach our gossip at (empty: gossip_listen)
    bootstrap_wait_s: float = 3.0  #: a fresh host listens this long before founding a cluster
    dead_grace_s: float = 30.0  #: a voter dead this long is replaced by a learner
    heartbeat_s: float = 1.0  #: every host tells the leader it is alive this often
    #: a host that could not reach the leader this long stops the attempts that
    #: could otherwise run twice; the leader calls them lost a little later
    lease_s: float = 10.0
    #: a run no host can take (no match, or all full) waits this long, then is skipped
    placement_wait_s: float = 60.0
    #: join secret: gossip is encrypted with a key derived from it, and zeroconf
    #: announces only an HMAC tag of it (empty: gossip in clear, for one host or a lab)
    secret: str = ""


@final
@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """[discovery]: how a host finds its first peers (docs/cluster.md).

    ``join`` entries are ``host``, ``host:port`` or ``[v6]:port`` (the port
    defaults to the gossip port); names are resolved again every 30 s.
    """

    zeroconf: bool = True  #: announce and browse _dcrond._tcp by multicast DNS (not on loopback)
    join: tuple[str, ...] = ()  #: seeds for routed networks, where multicast does not reach
    interface: str = ""  #: address of the interface mDNS uses (empty: the advertised gossip host)


@final
@dataclass(frozen=True, slots=True)
class StorageConfig:
    """[storage]: where scripts and run logs are kept (docs/storage.md).

    Credentials never live here: they come from the AWS chain (environment
    variables, shared credentials file, ``profile``, instance role).
    """

    url: str = ""  #: file:///path, s3://bucket/prefix or swift://container/prefix
    cache_dir: str = ""  #: empty: <data_dir>/cache (scripts by sha256)
    endpoint_url: str = ""  #: S3-compatible endpoint or Swift proxy; empty: AWS
    region: str = ""  #: signing region; empty: botocore's default
    profile: str = ""  #: profile of the shared AWS credentials/config files
    #: multipart upload part size, 5 MiB to 5 GiB; 0: 8 MiB on S3, 32 MiB on Swift
    part_bytes: int = 0
    parts_in_flight: int = 4  #: parts uploaded at once (memory: ~2 x parts x part_bytes)
    timeout_s: float = 120.0  #: deadline of one storage call, plus its size at 256 KiB/s
    #: a running attempt's log goes up in pieces: after this many seconds with new output
    #: (0: only when the attempt ends)
    log_chunk_interval_s: float = 30.0
    log_chunk_bytes: int = 4 * 1024 * 1024  #: ... or as soon as this many new bytes are spooled

    def __post_init__(self) -> None:
        if self.log_chunk_interval_s < 0:
            raise ConfigError("storage.log_chunk_interval_s: must be >= 0 (0 turns pieces off)")
        if self.log_chunk_bytes < 1:
            raise ConfigError("storage.log_chunk_bytes: must be >= 1")
        if self.part_bytes != 0 and not 5 * 2**20 <= self.part_bytes <= 5 * 2**30:
            raise ConfigError(
                "storage.part_bytes: must be 0 (the default of the URL's scheme) "
                f"or 5 MiB to 5 GiB (5242880 to 5368709120), got {self.part_bytes}"
            )


@final
@dataclass(frozen=True, slots=True)
class TlsConfig:
    """[tls]: mutual TLS on the RPC and Raft listeners (docs/tls.md).

    ``mode``: ``auto`` turns TLS on unless every listener (API, Raft, gossip)
    is a loopback address (the single-host default stays plain); ``on`` and
    ``off`` force it. Plain text on a non-loopback address, and gossip there
    without ``cluster.secret``, also need ``insecure = true``.
    Empty paths mean ``ca.crt``, ``node.crt`` and ``node.key`` in the default
    TLS folder (``config.default_tls_dir``).
    """

    mode: str = "auto"
    ca: str = ""
    cert: str = ""
    key: str = ""
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    """[runner]: how this host runs attempts."""

    slots: int = 16  #: attempts this host runs at once
    output_cap_bytes: int = 16 * 1024 * 1024  #: spooled output kept per attempt
    kill_grace_s: float = 10.0  #: SIGTERM to SIGKILL on timeout or kill
    default_user: str = ""  #: user for jobs without --user when dcrond runs as root


@dataclass(frozen=True, slots=True)
class JobsConfig:
    """[jobs]: limits and defaults applied to every job."""

    max_script_bytes: int = 1024 * 1024
    keep_runs: int = 100  #: runs (and logs) kept per job; 0 keeps all
    keep_days: int = 30  #: runs older than this are pruned; 0 keeps all
    catch_up_cap: int = 10  #: most missed instants one "all" catch-up replays


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    node: NodeConfig = field(default_factory=NodeConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    raft: RaftConfig = field(default_factory=RaftConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    source: str = "defaults"

    @property
    def data_path(self) -> Path:
        """The data folder, resolved."""
        return Path(self.node.data_dir) if self.node.data_dir else default_data_dir()

    @property
    def storage_url(self) -> str:
        """The object store's URL, resolved (a local folder in the data dir by default)."""
        return self.storage.url or (self.data_path / "objects").resolve().as_uri()

    @property
    def storage_options(self) -> dict[str, str | int | float]:
        """The ``Blobs`` options the [storage] section sets (empty strings left out)."""
        given = {
            "endpoint_url": self.storage.endpoint_url,
            "region": self.storage.region,
            "profile": self.storage.profile,
        }
        options: dict[str, str | int | float] = {k: v for k, v in given.items() if v}
        options["part_size"] = self.storage.part_bytes
        options["max_concurrency"] = self.storage.parts_in_flight
        options["timeout"] = self.storage.timeout_s
        return options

    @property
    def tls_enabled(self) -> bool:
        """Whether the listeners use mutual TLS (``tls.mode``, ``auto`` resolved)."""
        if self.tls.mode == "auto":
            return not all(is_loopback(parse_address(a, "listen")[0]) for a in self._listens())
        return self.tls.mode == "on"

    @property
    def tls_files(self) -> tuple[Path, Path, Path]:
        """The CA certificate, this node's certificate and its key, resolved."""
        folder = default_tls_dir()
        return (
            Path(self.tls.ca) if self.tls.ca else folder / "ca.crt",
            Path(self.tls.cert) if self.tls.cert else folder / "node.crt",
            Path(self.tls.key) if self.tls.key else folder / "node.key",
        )

    def _listens(self) -> list[str]:
        return [self.api.listen, self.raft.listen, self.cluster.gossip_listen]

    @property
    def cache_path(self) -> Path:
        """Where fetched scripts are cached by sha256."""
        return Path(self.storage.cache_dir) if self.storage.cache_dir else self.data_path / "cache"


_SECTIONS: dict[str, type[Any]] = {
    "node": NodeConfig,
    "api": ApiConfig,
    "raft": RaftConfig,
    "cluster": ClusterConfig,
    "discovery": DiscoveryConfig,
    "storage": StorageConfig,
    "runner": RunnerConfig,
    "jobs": JobsConfig,
    "tls": TlsConfig,
}


def parse_address(text: str, key: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); ConfigError naming ``key`` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


def _section(name: str, cls: type[Any], raw: object) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a table, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, given in raw.items():
        value = given
        if key not in fields:
            raise ConfigError(f"{name}.{key}: unknown key")
        default = getattr(cls(), key)
        if fields[key].metadata.get("tags"):
            values[key] = _tags(f"{name}.{key}", value)
            continue
        if type(default) is float and type(value) is int:
            value = float(value)  # TOML's 10 for a float key
        if type(default) is tuple:  # a list of strings (the only kind of list a key takes)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name}.{key}: expected a list of strings, got {value!r}")
            value = tuple(value)
        if isinstance(default, bool) != isinstance(value, bool) or not isinstance(
            value, type(default)
        ):
            raise ConfigError(
                f"{name}.{key}: expected {type(default).__name__}, got {type(value).__name__}"
            )
        values[key] = value
    return cls(**values)


#: most tags a host carries (as many as a job may require, and gossip carries)
MAX_HOST_TAGS = 64


def _tags(key: str, raw: object) -> tuple[tuple[str, str], ...]:
    """A TOML table of tags checked by the rules of job tags; ConfigError naming ``key``."""
    # imported here, only when a file has tags: dcronctl imports this module too, and
    # loading the store package (apsw) at the top would double its start-up time
    from dcrond.store._validate import check_str, tag_key  # noqa: PLC0415

    if not isinstance(raw, dict):
        raise ConfigError(
            f'{key}: expected a table of strings (tags = {{ role = "db" }}), '
            f"got {type(raw).__name__}"
        )
    if len(raw) > MAX_HOST_TAGS:
        raise ConfigError(f"{key}: {len(raw)} tags is too many; at most {MAX_HOST_TAGS}")
    out: list[tuple[str, str]] = []
    for k in sorted(raw):
        try:
            tag_key(f"{key} key", k)
            out.append((k, check_str(f"{key}.{k}", raw[k], max_len=255)))
        except InvalidRequest as exc:
            raise ConfigError(str(exc)) from None
    return tuple(out)


def _check_tags_fit(config: Config) -> None:
    """Refuse tags too large for gossip: a host record must fit one UDP packet."""
    if not config.node.tags:
        return
    # imported here for the reason given in ``_tags``
    from dcrond.gossip._codec import MAX_META_BYTES, check_identity, dumps  # noqa: PLC0415
    from dcrond.gossip._types import NodeMeta  # noqa: PLC0415

    largest = NodeMeta(  # the longest record this host will announce
        api_port=65535,
        raft_port=65535,
        tags=config.node.tags,
        free_slots=max(0, config.runner.slots),
        version=__version__,
        raft_role="learner",
        cluster_id="0" * 32,
    )
    try:
        check_identity("tags-check", ("127.0.0.1", 1), largest)
    except InvalidRequest:
        size = sum(len(dumps(k)) + len(dumps(v)) for k, v in config.node.tags)
        raise ConfigError(
            f"node.tags: the tags take {size} bytes in gossip, too many for one host's record"
            f" ({MAX_META_BYTES} bytes with the ports, version and cluster id): use fewer or"
            " shorter tags"
        ) from None


def load_config(
    path: str | os.PathLike[str] | None = None, *, data_dir: str | None = None
) -> Config:
    """Find and read the configuration; ConfigError (exit 78) if it is invalid."""
    source: Path | None = None
    if path is not None:
        source = Path(path)
    elif os.environ.get("DCROND_CONFIG"):
        source = Path(os.environ["DCROND_CONFIG"])
    elif SYSTEM_CONFIG.exists():
        source = SYSTEM_CONFIG
    raw: dict[str, Any] = {}
    if source is not None:
        try:
            raw = tomllib.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{name}: unknown section")
        sections[name] = _section(name, _SECTIONS[name], value)
    config = Config(**sections, source=str(source) if source else "defaults")
    if data_dir is not None:
        config = dataclasses.replace(
            config, node=dataclasses.replace(config.node, data_dir=data_dir)
        )
    parse_address(config.api.listen, "api.listen")
    parse_address(config.raft.listen, "raft.listen")
    if config.raft.tick_ms <= 0 or config.raft.election_ticks < 2:
        raise ConfigError("raft.tick_ms must be > 0 and raft.election_ticks >= 2")
    if not 0 < config.cluster.heartbeat_s <= config.cluster.lease_s / 3:
        raise ConfigError(
            "cluster.heartbeat_s must be > 0 and at most a third of cluster.lease_s "
            f"(got {config.cluster.heartbeat_s:g} and {config.cluster.lease_s:g})"
        )
    if config.cluster.placement_wait_s < 0:
        raise ConfigError("cluster.placement_wait_s must be >= 0")
    _check_discovery(config.discovery)
    _check_tls(config)
    _check_tags_fit(config)
    return config


def _check_tls(config: Config) -> None:
    """Refuse plain text on an address other hosts can reach, unless told it is wanted."""
    if config.tls.mode not in ("auto", "on", "off"):
        raise ConfigError(f"tls.mode: expected 'auto', 'on' or 'off', got {config.tls.mode!r}")
    if config.tls.insecure:
        return
    gossip = config.cluster.gossip_listen
    if not config.cluster.secret and not is_loopback(parse_address(gossip, "gossip_listen")[0]):
        raise ConfigError(
            f"cluster.secret: gossip listens on {gossip}, reachable from other hosts, so it"
            " must be sealed: set a random secret (openssl rand -base64 32) on every host,"
            " or tls.insecure = true to gossip in plain text (docs/tls.md)"
        )
    if config.tls_enabled:
        return
    for key, text in (("api.listen", config.api.listen), ("raft.listen", config.raft.listen)):
        if not is_loopback(parse_address(text, key)[0]):
            raise ConfigError(
                f"{key}: {text} is reachable from other hosts but tls.mode is 'off': turn TLS"
                " on (docs/tls.md) or set tls.insecure = true to accept plain text"
            )


def parse_join_entry(text: str, default_port: int) -> tuple[str, int]:
    """A ``[discovery] join`` entry (``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a
    bare IPv6 address) to (host, port); ConfigError naming the key otherwise."""
    text = text.strip()
    host, port_text = text, str(default_port)
    if text.startswith("["):
        close = text.find("]")
        rest = text[close + 1 :] if close > 0 else "?"
        if rest and not rest.startswith(":"):
            raise ConfigError(f"discovery.join: expected host or host:port, got {text!r}")
        host = text[1:close]
        port_text = rest[1:] if rest else port_text
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ConfigError(f"discovery.join: expected host or host:port, got {text!r}")
    return host, int(port_text)


def _check_discovery(discovery: DiscoveryConfig) -> None:
    for entry in discovery.join:
        parse_join_entry(entry, 1)
    if discovery.interface:
        try:
            ipaddress.ip_address(discovery.interface)
        except ValueError:
            raise ConfigError(
                f"discovery.interface: expected an IP address, got {discovery.interface!r}"
            ) from None
