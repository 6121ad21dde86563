"""One simulated dcrond host for the engine simulator: its daemon's life, clocks and processes.

Theory of operation
-------------------
A ``SimHost`` is what ``dcrond.host.Host`` assembles, minus gossip and
sockets: the Raft node (real core and driver, ``LogStorage`` on SQLite with
``sync=False`` and snapshots taken on the loop, so nothing runs in a worker
thread), the job table
(``JobStore`` on SQLite), a ``Replica`` whose writes on a follower are
forwarded to the leader over the simulated network (``raft.propose``), the
``Engine`` with a ``FakeProcessRunner`` and an in-memory object store, and a
``Service`` whose handlers answer the other hosts' RPC calls.

``start`` opens everything from the host's folder, as a daemon start does;
``crash`` cancels the daemon's tasks and closes its files -- as ``kill -9``
leaves them: the Raft log, the job table, the engine's outbox and upload
queue stay on disk, and the ``FakeHost``'s processes keep running, to be
re-adopted (or found ended) by the next ``start``.

**Clocks.** Trio's ``MockClock`` is the true time. The host's wall clock is
``BASE + skew + t * (1 + drift)``. Every read of it costs ``READ_COST`` of
true time (``MockClock.jump``): real time passes while a process reads its
clock, and the engine's precise start busy-waits on the wall clock, which
would otherwise never move. (The ``FakeHost`` stamps process start and end
with ``BASE + skew + t``: without the drift.)
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import trio
import trio.testing

from dcrond.config import Config, JobsConfig, NodeConfig, RunnerConfig
from dcrond.engine import Engine
from dcrond.errors import BlobNotFound
from dcrond.raft._node import RaftNode, open_node
from dcrond.raft._storage import LogStorage
from dcrond.raft._types import Config as RaftConfig
from dcrond.raft._types import ConfState
from dcrond.replica import Replica, ReplicatedTable
from dcrond.runner import RunSpec
from dcrond.service import Service
from dcrond.store import JobStore
from dcrond.testing._enginenet import EngineNet, SimTransport
from dcrond.testing._fakerunner import Behaviour, FakeHost, FakeProcess, FakeProcessRunner

#: wall-clock epoch of true time 0 (a multiple of every period the workload uses)
BASE: Final = 1_800_000_000.0
#: true seconds one read of a wall clock takes
READ_COST: Final = 20e-6


@final
class MemoryBlobs:
    """Object storage in memory, shared by every host (no threads, so deterministic)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put_script(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.objects[f"scripts/{sha}"] = data
        await trio.lowlevel.checkpoint()
        return sha

    async def get_script(self, sha: str) -> bytes:
        await trio.lowlevel.checkpoint()
        try:
            return self.objects[f"scripts/{sha}"]
        except KeyError:
            raise BlobNotFound(f"memory://scripts/{sha}: no such object") from None

    async def put_log(self, key: str, source: Path) -> int:
        data = source.read_bytes()  # noqa: ASYNC240 - no threads: they break determinism
        self.objects[key] = data
        await trio.lowlevel.checkpoint()
        return len(data)

    async def read(self, key: str, offset: int = 0, size: int = -1) -> bytes:
        await trio.lowlevel.checkpoint()
        try:
            data = self.objects[key]
        except KeyError:
            raise BlobNotFound(f"memory://{key}: no such object") from None
        return data[offset:] if size < 0 else data[offset : offset + size]

    async def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.objects.pop(key, None)
        await trio.lowlevel.checkpoint()


@final
@dataclass(frozen=True, slots=True)
class ProcRecord:
    """One simulated process, as the host saw it (times are true seconds)."""

    host: str
    run_id: str
    attempt: int
    start: float
    end: float | None  #: None: still running when the run ended
    outcome: str  #: the runner's outcome, or "running"


@final
class SimHost:
    """One host of the simulated cluster (see the module doc)."""

    def __init__(
        self,
        name: str,
        folder: Path,
        *,
        voters: frozenset[str],
        tags: Mapping[str, str],
        skew: float,
        drift: float,
        clock: trio.testing.MockClock,
        net: EngineNet,
        blobs: MemoryBlobs,
        behaviour: Callable[[str, RunSpec], Behaviour],
        raft_config: RaftConfig,
        rng: random.Random,
        snapshot_entries: int,
        engine_options: dict[str, Any],
        on_applied: Callable[[SimHost, object, object], None],
        on_death: Callable[[SimHost, str], None],
        rpc_timeout: float,
        hosts_view: Callable[[], tuple[Any, ...]] | None = None,
    ) -> None:
        self.name = name
        self.folder = folder
        self.voters = voters
        self.tags = dict(tags)
        self.skew = skew
        self.drift = drift
        self._clock = clock
        self._net = net
        self._blobs = blobs
        self._behaviour = behaviour
        self._raft_config = raft_config
        self._rng = rng
        self._snapshot_entries = snapshot_entries
        self._engine_options = engine_options
        self._on_applied = on_applied
        self._on_death = on_death
        self._hosts_view = hosts_view
        self._rpc_timeout = rpc_timeout
        self.fake = FakeHost(wall_offset=BASE + skew)
        self.archive: list[FakeProcess] = []  #: processes whose key a later start reused
        self.starts: list[tuple[float, str, int]] = []  #: (true time, run id, attempt)
        self.config = Config(
            node=NodeConfig(name=name, data_dir=str(folder), tags=tuple(sorted(tags.items()))),
            runner=RunnerConfig(slots=8, kill_grace_s=2.0),
            jobs=JobsConfig(keep_runs=0, keep_days=0),
        )
        self.up = False
        self.running = False  #: a daemon task exists (starting, up or stopping)
        self.deaths: list[tuple[float, str]] = []  #: the daemon raised: (true time, what)
        self.lives = 0
        self.node: RaftNode | None = None
        self.replica: Replica | None = None
        self.engine: Engine | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None

    # --- clocks and processes ----------------------------------------------------------------

    def wall(self) -> float:
        """This host's wall clock (each read costs ``READ_COST`` of true time)."""
        self._clock.jump(READ_COST)
        return BASE + self.skew + trio.current_time() * (1.0 + self.drift)

    def _pick(self, spec: RunSpec) -> Behaviour:
        key = (spec.run_id, spec.attempt)
        old = self.fake.processes.get(key)
        if old is not None:
            self.archive.append(old)
        self.starts.append((trio.current_time(), spec.run_id, spec.attempt))
        return self._behaviour(self.name, spec)

    def processes(self) -> list[ProcRecord]:
        """Every process this host ever started, in start order."""
        self.fake.advance(trio.current_time())
        out = []
        for p in [*self.archive, *self.fake.processes.values()]:
            end = None if p.result is None else p.end_time()
            outcome = "running" if p.result is None else str(p.result.state)
            out.append(
                ProcRecord(self.name, p.spec.run_id, p.spec.attempt, p.started, end, outcome)
            )
        out.sort(key=lambda r: (r.start, r.run_id, r.attempt))
        return out

    # --- the daemon ------------------------------------------------------------------------

    async def forward(self, leader: str, data: bytes) -> bytes:
        """``Replica``'s forwarder: ``raft.propose`` on the leader over the network."""
        answer = await self._net.call(
            self.name, leader, "raft.propose", {"data": data}, timeout=self._rpc_timeout
        )
        if not isinstance(answer, bytes):
            raise TypeError(f"raft.propose answered {type(answer).__name__}")
        return answer

    async def peer_call(self, host: str, method: str, params: dict[str, Any]) -> Any:
        """The engine's calls to other hosts (heartbeats, kills, logs)."""
        return await self._net.call(self.name, host, method, params, timeout=self._rpc_timeout)

    def _make_engine(self, replica: Replica, runner: FakeProcessRunner) -> Engine:
        """The engine, with whatever cluster seams this version of it has."""
        options = dict(self._engine_options)
        accepted = inspect.signature(Engine).parameters
        if "peer_call" in accepted:
            options["peer_call"] = self.peer_call
        if "hosts" in accepted and self._hosts_view is not None:
            options["hosts"] = self._hosts_view
        if "lease" in accepted and "lease" not in options:
            try:
                lease_mod = importlib.import_module("dcrond.engine._lease")
                lease_times: Any = lease_mod.LeaseTimes
                options["lease"] = lease_times(
                    heartbeat=1.0, lease=5.0, kill_grace=self.config.runner.kill_grace_s
                )
            except (ImportError, AttributeError):
                pass
        return Engine(
            replica,
            runner,
            self._blobs,  # type: ignore[arg-type,unused-ignore]
            self.config,
            host=self.name,
            wall_clock=self.wall,
            state_dir=self.folder / "engine",
            **options,
        )

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the daemon (from what its folder holds) and wait until it serves."""
        if self.running:
            return
        self.running = True
        self._stopped = trio.Event()
        await nursery.start(self._daemon)

    async def _daemon(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        assert self._stopped is not None
        stopped = self._stopped
        self.folder.mkdir(parents=True, exist_ok=True)
        store = JobStore.open(self.folder / "jobs.db")
        storage = LogStorage.open(self.folder / "raft.db", sync=False)
        self.lives += 1
        died: str | None = None
        serving = False
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                table = ReplicatedTable(store)
                transport = SimTransport(self._net, self.name)
                node = open_node(
                    self.name,
                    storage,
                    transport,
                    table,
                    bootstrap=ConfState(voters=self.voters),
                    config=self._raft_config,
                    rng=random.Random(self._rng.getrandbits(64)),
                    tick_seconds=0.05,
                    snapshot_entries=self._snapshot_entries,
                    snapshot_in_thread=False,  # a worker thread would break the replay
                )
                replica = Replica(
                    node,
                    table,
                    name=self.name,
                    wall_clock=self.wall,
                    forward=self.forward,
                    propose_timeout=10.0,
                )
                # a fresh session per life, as a restarted daemon has (drawn from the seed)
                replica.session = f"{self.name}/{self._rng.getrandbits(48):012x}"
                host = self

                def watch(cmd: object, result: object) -> None:
                    self._on_applied(host, cmd, result)

                replica.watch(watch)
                runner = FakeProcessRunner(self.fake, self._pick)
                engine = self._make_engine(replica, runner)
                service = Service(replica, engine, self._blobs, self.config)  # type: ignore[arg-type]
                async with trio.open_nursery() as nursery:
                    self._net.attach(self.name, transport.inbox, service.handlers(), nursery)
                    self.node, self.replica, self.engine = node, replica, engine
                    self.up = True
                    await nursery.start(node.run)
                    await nursery.start(engine.run)
                    serving = True
                    task_status.started()
        except Exception as exc:  # the daemon died (a real one would exit; systemd restarts it)
            died = describe_error(exc)
            self.deaths.append((trio.current_time(), died))
            if not serving:
                task_status.started()
        finally:
            self.running = False
            self.up = False
            self._net.detach(self.name)
            self.node = self.replica = self.engine = None
            self._scope = None
            storage.close()
            store.close()
            stopped.set()
        if died is not None:
            self._on_death(self, died)

    async def crash(self) -> None:
        """Stop the daemon at once (``kill -9``); its processes run on."""
        if self._scope is not None:
            self._scope.cancel()
        if self._stopped is not None:
            await self._stopped.wait()

    def is_leader(self) -> bool:
        """This host's daemon is up and leads the log."""
        return self.up and self.replica is not None and self.replica.is_leader()

    def term(self) -> int:
        """The Raft term this host is in (0 when down)."""
        return self.replica.term if self.up and self.replica is not None else 0


def describe_error(exc: BaseException) -> str:
    """The first leaf of an exception (group), with the innermost dcrond frame that raised it."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "/dcrond/" in name and "/dcrond/testing/" not in name:
            code = tb.tb_frame.f_code.co_name
            where = f" at {name.rpartition('/dcrond/')[2]}:{tb.tb_lineno} ({code})"
        tb = tb.tb_next
    return f"{type(exc).__name__}: {exc}{where}"
