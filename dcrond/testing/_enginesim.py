"""The engine simulator: schedulers and runners of 3 or 5 hosts over Raft, in one trio run.

Theory of operation
-------------------
Where the Raft simulator (``_sim``) steps pure cores from its own event
queue, this one runs the real trio code of every host -- Raft driver,
replica and forwarding, engine (scheduler and worker), RPC service -- in
**one** ``trio.run`` under ``MockClock(autojump_threshold=0)``: time only
moves when every task waits, and then straight to the next deadline. What
stands in for the outside world is deterministic: the network
(``_enginenet``: one delivery heap, a generator per link), processes
(``FakeHost``), object storage (in memory), disks (SQLite files in a temp
folder, written synchronously) and clocks (``_enginehost``: true time plus a
per-host skew and drift).

**One seed drives everything**: the job mix and the faults (``_engineplan``),
skews, Raft's election timers, sessions, link delays and losses, process
behaviours -- and trio's own scheduler. Trio shuffles each batch of ready
tasks; ``deterministic()`` switches on the mode trio keeps for Hypothesis
(sort the batch by task creation, then shuffle with ``trio._core._run._r``,
which it seeds) and swaps the ``time`` module the engine reads
``perf_counter`` from (its load slices and spin give-up) for one that reads
the mock clock. So one seed replays the same run, event for event; the
trace digest proves it (tests/enginesim/test_determinism.py).

A run has three phases: the **window** (``window`` seconds: the workload
creates and edits jobs through random hosts, the nemesis injects faults),
the **quiet** phase (the network heals, every host is up; ``settle``
seconds), and the **drain** (every job is paused, as an operator would,
and the run waits until no run is unfinished and every host applied the
same log). Then every host's table is read and the checkers
(``_enginecheck``) judge it with the processes every ``FakeHost`` ran.

``simulate_engines(cfg)`` returns the result (checks judged, not
asserted); ``assert_engines(result)`` raises ``EngineSimFailure`` naming
the seed, the command that replays it, the broken checks and the last
events. A crash of the simulation itself is raised the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import random
import sys
import tempfile
import time as _time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final, final

import trio
import trio._core._run as trio_run
import trio.testing

from dcrond.errors import DcronError, NotLeader, Unavailable
from dcrond.raft._types import Config as RaftConfig
from dcrond.runner import RunSpec
from dcrond.store import (
    FINAL_STATES,
    Applied,
    CreateJob,
    JobSpec,
    PauseJob,
    Rejected,
    ResumeJob,
    UpdateJob,
)
from dcrond.testing._enginecheck import (
    CHECKS,
    Observed,
    check_all,
    excused_instants,
    reduce_job,
    reduce_run,
)
from dcrond.testing._enginehost import BASE, MemoryBlobs, SimHost
from dcrond.testing._enginenet import CALM, EngineNet, LinkQuality
from dcrond.testing._engineplan import (
    DURATIONS,
    FAIL_CHANCE,
    Fault,
    JobPlan,
    Op,
    job_kind,
    plan_faults,
    plan_jobs,
)
from dcrond.testing._fakerunner import Behaviour

#: the tables whose rows make the compared digest (what users see)
_TABLES: Final = ("jobs", "job_versions", "job_deps", "runs", "attempts")
_FINAL_SQL: Final = ", ".join(f"'{s}'" for s in sorted(FINAL_STATES))
#: the engine's grace (s): a run this late is due, not missed (``Engine(grace=...)``)
GRACE: Final = 5
#: a daemon that died is started again after this long (systemd ``RestartSec``)
RESTART_SEC: Final = 1.0


class EngineSimFailure(AssertionError):
    """A check failed or the simulation crashed; the message says how to replay it."""


@final
@dataclass(frozen=True, slots=True)
class EngineSimConfig:
    """One run's parameters; everything else is drawn from ``seed``."""

    seed: int
    hosts: int = 3
    window: float = 60.0  #: simulated seconds of workload and faults
    settle: float = 20.0  #: quiet seconds before the jobs are paused
    drain: float = 60.0  #: the most seconds to wait for every run to end
    faults: bool = True
    skew: float = 0.05  #: each host's wall clock is off by up to this (s)
    drift: float = 0.0  #: and runs fast or slow by up to this rate (0.0001 = 100 ppm)
    rpc_timeout: float = 15.0  #: a forwarded write or peer call gives up after (s)
    trace_keep: int = 60
    replay: str = "pytest tests/enginesim/test_enginesim.py --enginesim-seeds={seed}:1 -x"


def config_for_seed(seed: int, window: float = 60.0, **kw: Any) -> EngineSimConfig:
    """The standard run of a seed: even seeds simulate 3 hosts, odd seeds 5."""
    return EngineSimConfig(seed=seed, hosts=3 if seed % 2 == 0 else 5, window=window, **kw)


@dataclass(slots=True)
class EngineSimResult:
    """What one run did and what the checkers found."""

    cfg: EngineSimConfig
    observed: Observed
    violations: dict[str, list[str]]
    trace_hash: str
    events: int
    last_events: list[str]
    faults: list[Fault]
    hosts: list[str]
    notes: list[str] = field(default_factory=list)

    def failed(self, checks: tuple[str, ...] = CHECKS) -> list[str]:
        """The names of the given checks that found something."""
        return [c for c in checks if self.violations.get(c)]

    def report(self, checks: tuple[str, ...] = CHECKS, *, title: str = "checks failed") -> str:
        """The failure message: seed, replay command, violations, setup, last events."""
        cfg = self.cfg
        cmd = cfg.replay.format(seed=cfg.seed)
        if cfg.window != 60.0:
            cmd += f" --enginesim-seconds={cfg.window:g}"
        lines = [
            f"engine simulation seed {cfg.seed} ({cfg.hosts} hosts): {title}",
            f"  replay: {cmd}",
            f"  hosts: {'; '.join(self.hosts)}",
            f"  judged: {len(self.observed.runs)} runs, {len(self.observed.processes)} processes; "
            f"due instants without a run excused: {excused_instants(self.observed) or 'none'}",
        ]
        for name in checks:
            found = self.violations.get(name, [])
            if found:
                lines.append(f"  ({name}) {len(found)} violation(s):")
                lines.extend(f"    {v}" for v in found[:12])
                if len(found) > 12:
                    lines.append(f"    ... and {len(found) - 12} more")
        lines.extend(f"  note: {n}" for n in self.notes)
        lines.append("  faults:")
        lines.extend(f"    {f.describe()}" for f in self.faults)
        lines.append(f"  last {len(self.last_events)} events:")
        lines.extend(f"    {e}" for e in self.last_events)
        return "\n".join(lines)


def simulate_engines(cfg: EngineSimConfig) -> EngineSimResult:
    """Run one simulation and judge it (EngineSimFailure only if the run itself broke)."""
    with tempfile.TemporaryDirectory(prefix="dcrond-enginesim-") as tmp:
        sim = EngineSimulation(cfg, Path(tmp))
        with deterministic(cfg.seed):
            try:
                trio.run(sim.main, clock=sim.clock)
            except BaseException as exc:  # reported with the seed
                raise EngineSimFailure(sim.crash_report(exc)) from exc
        return sim.result()


def assert_engines(result: EngineSimResult, checks: tuple[str, ...] = CHECKS) -> None:
    """Raise EngineSimFailure (with the replay command) if any of ``checks`` failed."""
    if result.failed(checks):
        raise EngineSimFailure(result.report(checks))


# --- determinism --------------------------------------------------------------------------


class _VirtualTime(ModuleType):
    """``time`` as the engine sees it in a simulation: its interval clocks read the mock clock."""

    def __init__(self) -> None:
        super().__init__("time")

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)

    @staticmethod
    def perf_counter() -> float:
        try:
            return trio.current_time()
        except RuntimeError:
            return _time.perf_counter()

    monotonic = perf_counter

    @staticmethod
    def time() -> float:
        try:
            return BASE + trio.current_time()
        except RuntimeError:
            return _time.time()


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed trio's scheduler and give dcrond's modules a mock-clock ``time`` (undone after)."""
    flag = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    state = trio_run._r.getstate()
    swapped: list[ModuleType] = []
    shim = _VirtualTime()
    setattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", True)  # noqa: B010 - a Final
    trio_run._r.seed(f"enginesim/{seed}")
    for name, mod in sorted(sys.modules.items()):
        if (
            name.startswith("dcrond.")
            and not name.startswith("dcrond.testing")
            and getattr(mod, "time", None) is _time
        ):
            mod.time = shim  # type: ignore[attr-defined]
            swapped.append(mod)
    try:
        yield
    finally:
        for mod in swapped:
            mod.time = _time  # type: ignore[attr-defined]
        trio_run._r.setstate(state)
        setattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", flag)  # noqa: B010


# --- the simulation ---------------------------------------------------------------------


@final
class EngineSimulation:
    """One simulated cluster, its workload and its nemesis (see the module doc)."""

    def __init__(self, cfg: EngineSimConfig, folder: Path) -> None:
        self.cfg = cfg
        self.clock = trio.testing.MockClock(autojump_threshold=0)
        rng = random.Random(f"enginesim/{cfg.seed}")
        self._rng = rng
        names = [f"h{i + 1}" for i in range(cfg.hosts)]
        self.net = EngineNet(cfg.seed, names)
        self.blobs = MemoryBlobs()
        self.jobs, self.ops = plan_jobs(random.Random(rng.getrandbits(64)), cfg.window)
        self.faults = (
            plan_faults(random.Random(rng.getrandbits(64)), names, cfg.window) if cfg.faults else []
        )
        self._client_rng = random.Random(rng.getrandbits(64))
        self._nemesis_rng = random.Random(rng.getrandbits(64))
        self._behaviour_seed = rng.getrandbits(64)
        raft_config = RaftConfig(election_ticks=8, send_appends_early=True)
        snapshot_entries = rng.choice((300, 1000, 100_000))
        voters = frozenset(names)
        self.hosts: dict[str, SimHost] = {}
        for i, name in enumerate(names):
            tags = {"role": "db" if i % 2 == 1 else "web"}
            self.hosts[name] = SimHost(
                name,
                folder / name,
                voters=voters,
                tags=tags,
                skew=rng.uniform(-cfg.skew, cfg.skew),
                drift=rng.uniform(-cfg.drift, cfg.drift),
                clock=self.clock,
                net=self.net,
                blobs=self.blobs,
                behaviour=self._behaviour,
                raft_config=raft_config,
                rng=random.Random(rng.getrandbits(64)),
                snapshot_entries=snapshot_entries,
                engine_options={"grace": GRACE, "upload_retry": (0.1, 1.0)},
                on_applied=self._on_applied,
                on_death=self._on_death,
                hosts_view=self._hosts_view,
                rpc_timeout=cfg.rpc_timeout,
            )
        self._digest = hashlib.blake2b(digest_size=16)
        self._recent: deque[str] = deque(maxlen=cfg.trace_keep)
        self.events = 0
        self.leader_commits: list[float] = []
        self.acked: list[tuple[str, int, str]] = []
        self.created_acked: dict[str, float] = {}  #: job -> when its create was acknowledged
        self.pauses: dict[str, list[tuple[float, float]]] = {}
        self._pause_sent: dict[str, float] = {}
        self.notes: list[str] = []
        self._observed: Observed | None = None
        self._root: trio.Nursery | None = None

    # --- trace ---------------------------------------------------------------------------

    def note(self, who: str, what: str) -> None:
        """One event of the trace (digested; the newest kept for reports)."""
        try:
            now = trio.current_time()
        except RuntimeError:
            now = -1.0
        line = f"{now:10.4f} {who:>4} {what}"
        self._digest.update(line.encode() + b"\n")
        self._recent.append(line)
        self.events += 1

    def _on_applied(self, host: SimHost, cmd: object, result: object) -> None:
        if host.is_leader():
            self.leader_commits.append(trio.current_time())
        if cmd is None:
            self.note(host.name, "restored a snapshot")
            return
        parts = [type(cmd).__name__]
        for attr in ("run_id", "name", "attempt", "host", "state"):
            value = getattr(cmd, attr, None)
            if value is not None:
                parts.append(f"{attr}={value}")
        self.note(host.name, "applied " + " ".join(parts))

    def _hosts_view(self) -> tuple[Any, ...]:
        """The hosts as placement sees them: an ideal gossip view (alive while the daemon is up)."""
        try:
            view: Any = importlib.import_module("dcrond.placement").HostView
        except (ImportError, AttributeError):
            return ()
        return tuple(
            view(
                name=h.name,
                tags=tuple(sorted(h.tags.items())),
                state="alive" if h.up else "dead",
                in_raft=True,
                free_slots=max(
                    0,
                    h.config.runner.slots
                    - sum(1 for p in h.fake.processes.values() if p.result is None),
                ),
            )
            for h in self.hosts.values()
        )

    def _on_death(self, host: SimHost, what: str) -> None:
        self.note(host.name, f"daemon died: {what}")
        if self._root is not None:
            self._root.start_soon(self._restart_later, host)

    async def _restart_later(self, host: SimHost) -> None:
        await trio.sleep(RESTART_SEC)
        await self._restart(host)

    def _behaviour(self, host: str, spec: RunSpec) -> Behaviour:
        kind = job_kind(spec.run_id.rpartition("@")[0])
        rng = random.Random(f"{self._behaviour_seed}/{spec.run_id}/{spec.attempt}")
        lo, hi = DURATIONS.get(kind, (0.1, 1.0))
        after = round(rng.uniform(lo, hi), 3)
        if kind == "slow":
            after = rng.choice((0.5, 2.0))
        code = 1 if rng.random() < FAIL_CHANCE.get(kind, 0.0) else 0
        self.note(host, f"process start {spec.run_id}#{spec.attempt} ({after}s, exit {code})")
        return Behaviour.exits(code, after=after)

    # --- phases ------------------------------------------------------------------------------

    async def main(self) -> None:
        """The whole run (``trio.run`` target)."""
        cfg = self.cfg
        async with trio.open_nursery() as root:
            self._root = root
            root.start_soon(self.net.run)
            for host in self.hosts.values():
                await host.start(root)
                self.note(host.name, f"up (skew {host.skew * 1000:+.1f} ms, tags {host.tags})")
            root.start_soon(self._workload)
            root.start_soon(self._nemesis)
            await trio.sleep_until(cfg.window)
            self.note("sim", "window over: heal the network, start every host")
            self.net.heal()
            for host in self.hosts.values():
                if not host.running:
                    await self._restart(host)
            await trio.sleep(cfg.settle)
            self.note("sim", "pause every job")
            async with trio.open_nursery() as pausing:
                for plan in self.jobs:
                    pausing.start_soon(self._write, Op(0.0, "pause", plan.name), False)
            await self._drain()
            self._observed = self._observe()
            root.cancel_scope.cancel()

    async def _drain(self) -> None:
        deadline = trio.current_time() + self.cfg.drain
        while trio.current_time() < deadline:
            if self._settled():
                self.note("sim", "settled")
                return
            await trio.sleep(0.25)
        self.notes.append(f"not settled after {self.cfg.drain:g}s of drain")
        self.note("sim", "drain timed out")

    def _settled(self) -> bool:
        hosts = list(self.hosts.values())
        if not all(h.up and h.node is not None and h.replica is not None for h in hosts):
            return False
        leaders = [h for h in hosts if h.is_leader()]
        if len(leaders) != 1:
            return False
        leader = leaders[0]
        assert leader.node is not None and leader.replica is not None
        unfinished = leader.replica.store.db.execute(
            f"SELECT count(*) FROM runs WHERE state NOT IN ({_FINAL_SQL})"
        ).fetchone()
        if unfinished is None or unfinished[0]:
            return False
        commit = leader.node.statistics().commit_index
        return all(
            h.node is not None and h.node.statistics().applied_index == commit for h in hosts
        )

    # --- workload ----------------------------------------------------------------------------

    async def _workload(self) -> None:
        items: list[tuple[float, int, JobPlan | Op]] = [
            (j.at, i, j) for i, j in enumerate(self.jobs)
        ]
        items += [(o.at, len(self.jobs) + i, o) for i, o in enumerate(self.ops)]
        items.sort(key=lambda x: (x[0], x[1]))
        async with trio.open_nursery() as nursery:
            for at, _i, item in items:
                await trio.sleep_until(at)
                nursery.start_soon(self._write, item, True)

    def _command(self, host: SimHost, item: JobPlan | Op) -> Any:
        replica = host.replica
        assert replica is not None
        stamp: dict[str, Any] = replica.stamp("user")
        if isinstance(item, JobPlan):
            return CreateJob(**stamp, job=JobSpec(name=item.name, command="true", **item.fields))
        if item.kind == "update":
            changes = {"description": f"edited at {trio.current_time():.3f}"}
            return UpdateJob(**stamp, name=item.job, changes=changes)
        if item.kind == "pause":
            return PauseJob(**stamp, name=item.job)
        return ResumeJob(**stamp, name=item.job)

    async def _write(self, item: JobPlan | Op, record: bool) -> None:
        """One user write through a random up host, retried elsewhere until acknowledged."""
        what = "create" if isinstance(item, JobPlan) else item.kind
        job = item.name if isinstance(item, JobPlan) else item.job
        sent = trio.current_time()
        if what == "pause" and record:
            self._pause_sent[job] = sent
        give_up = sent + 40.0
        while trio.current_time() < give_up:
            up = [h for h in self.hosts.values() if h.up and h.replica is not None]
            if not up:
                await trio.sleep(0.2)
                continue
            host = self._client_rng.choice(up)
            try:
                cmd = self._command(host, item)
                with trio.move_on_after(20.0):
                    result = await host.replica.propose(cmd) if host.replica else None
                    if isinstance(result, Applied):
                        version = int(result.value.get("version", 0))
                        self.acked.append((job, version, what))
                        if what == "create":
                            self.created_acked.setdefault(job, BASE + trio.current_time())
                        self.note("user", f"{what} {job} acknowledged v{version} via {host.name}")
                        if what == "resume" and record:
                            start = self._pause_sent.pop(job, sent)
                            self.pauses.setdefault(job, []).append(
                                (BASE + start, BASE + trio.current_time())
                            )
                        return
                    if isinstance(result, Rejected):
                        self.note("user", f"{what} {job} refused via {host.name}: {result.code}")
                        if result.code == "already_exists":
                            return  # an earlier try committed after all
                        self.notes.append(f"{what} {job} refused: {result.message}")
                        return
            except (NotLeader, Unavailable) as exc:
                self.note("user", f"{what} {job} via {host.name} failed: {type(exc).__name__}")
            except DcronError as exc:
                self.notes.append(f"{what} {job} failed: {exc!r}")
                return
            await trio.sleep(0.3)
        self.notes.append(f"{what} {job}: no host acknowledged it within 40 s")

    # --- nemesis ------------------------------------------------------------------------------

    def leader(self) -> SimHost | None:
        """The host that leads in the highest term, if any."""
        leaders = [h for h in self.hosts.values() if h.is_leader()]
        return max(leaders, key=lambda h: (h.term(), h.name)) if leaders else None

    async def _restart(self, host: SimHost) -> None:
        if host.running or self._root is None:
            return
        await host.start(self._root)
        self.note(host.name, f"restarted (life {host.lives})")

    async def _nemesis(self) -> None:
        assert self._root is not None
        for fault in self.faults:
            await trio.sleep_until(fault.at)
            await self._inject(fault)

    async def _inject(self, fault: Fault) -> None:
        assert self._root is not None
        names = list(self.hosts)
        cuts: list[tuple[str, str]] = []
        target: SimHost | None = None
        if fault.kind in ("crash", "crash_leader"):
            target = self.hosts[fault.hosts[0]] if fault.hosts else self.leader()
            if target is None:
                target = self.hosts[self._nemesis_rng.choice(names)]
            if target.up:
                self.note("nem", f"crash {target.name} for {fault.length:.2f}s")
                await target.crash()
        elif fault.kind in ("partition", "isolate_leader"):
            if fault.kind == "partition":
                side = set(fault.hosts)
            else:
                lead = self.leader()
                side = {lead.name if lead else self._nemesis_rng.choice(names)}
            cuts = [(a, b) for a in names for b in names if (a in side) != (b in side)]
            self.note("nem", f"{fault.kind} {sorted(side)} for {fault.length:.2f}s")
        elif fault.kind == "one_way":
            cuts = [(fault.hosts[0], fault.hosts[1])]
            self.note("nem", f"cut {fault.hosts[0]}->{fault.hosts[1]} for {fault.length:.2f}s")
        elif fault.kind == "stall":
            self.net.stall(fault.hosts[0], trio.current_time() + fault.length)
            self.note("nem", f"stall {fault.hosts[0]} for {fault.length:.2f}s")
        elif fault.kind == "degrade":
            drop, delay, spike, dup = fault.quality
            self.net.quality = LinkQuality(
                min_delay=0.0005, max_delay=delay, drop=drop, duplicate=dup, spike=spike
            )
            self.note("nem", f"degrade links: {self.net.quality.describe()}")
        for a, b in cuts:
            self.net.cut(a, b)
        self._root.start_soon(self._undo, fault, target, cuts)

    async def _undo(
        self, fault: Fault, target: SimHost | None, cuts: list[tuple[str, str]]
    ) -> None:
        await trio.sleep(fault.length)
        for a, b in cuts:
            self.net.uncut(a, b)
        if cuts:
            self.note("nem", f"end of {fault.kind}")
        if fault.kind == "degrade":
            self.net.quality = CALM
            self.note("nem", "links calm again")
        if target is not None:
            await self._restart(target)

    # --- the end -------------------------------------------------------------------------

    def _observe(self) -> Observed:
        digests: dict[str, str] = {}
        host_jobs: dict[str, dict[str, int]] = {}
        reference = self.leader() or next(h for h in self.hosts.values() if h.up)
        for name, host in self.hosts.items():
            if host.replica is None:
                digests[name] = "down"
                host_jobs[name] = {}
                continue
            db = host.replica.store.db
            d = hashlib.blake2b(digest_size=16)
            for table in _TABLES:
                rows = sorted(repr(r) for r in db.execute(f"SELECT * FROM {table}"))
                d.update(f"{table}:{len(rows)}\n".encode())
                for r in rows:
                    d.update(r.encode() + b"\n")
            digests[name] = d.hexdigest()
            host_jobs[name] = {
                str(n): int(v) for n, v in db.execute("SELECT name, version FROM jobs")
            }
        assert reference.replica is not None
        store = reference.replica.store
        jobs = {j["name"]: reduce_job(j) for j in store.list_jobs()}
        run_ids = [str(r[0]) for r in store.db.execute("SELECT id FROM runs ORDER BY id")]
        runs = {rid: reduce_run(store.get_run(rid)) for rid in run_ids}
        processes = [p for h in self.hosts.values() for p in h.processes()]
        processes.sort(key=lambda p: (p.start, p.host, p.run_id, p.attempt))
        for p in processes:
            end = "open" if p.end is None else f"{p.end:.4f}"
            self.note(p.host, f"process {p.run_id}#{p.attempt} {p.start:.4f}-{end} {p.outcome}")
        for name, digest in sorted(digests.items()):
            self.note(name, f"table {digest}")
        return Observed(
            window_end=BASE + self.cfg.window,
            grace=float(GRACE),
            jobs=jobs,
            runs=runs,
            processes=processes,
            host_tags={n: dict(h.tags) for n, h in self.hosts.items()},
            pauses={
                job: [
                    *spans,
                    *(
                        [(BASE + self._pause_sent[job], float("inf"))]
                        if job in self._pause_sent
                        else []
                    ),
                ]
                for job, spans in {**{j: [] for j in self._pause_sent}, **self.pauses}.items()
            },
            leader_commits=list(self.leader_commits),
            acked=list(self.acked),
            created_acked=dict(self.created_acked),
            host_jobs=host_jobs,
            table_digests=digests,
            daemon_errors=[
                f"{h.name} at {t:.3f}s: {what}" for h in self.hosts.values() for t, what in h.deaths
            ],
            notes=list(self.notes),
        )

    def result(self) -> EngineSimResult:
        """The judged result of a finished run."""
        assert self._observed is not None
        return EngineSimResult(
            cfg=self.cfg,
            observed=self._observed,
            violations=check_all(self._observed),
            trace_hash=self._digest.hexdigest(),
            events=self.events,
            last_events=list(self._recent),
            faults=list(self.faults),
            hosts=[
                f"{h.name} tags={h.tags} skew={h.skew * 1000:+.1f}ms lives={h.lives}"
                for h in self.hosts.values()
            ],
            notes=list(self.notes),
        )

    def crash_report(self, exc: BaseException) -> str:
        """The message for a simulation that raised instead of finishing."""
        cfg = self.cfg
        lines = [
            f"engine simulation seed {cfg.seed} ({cfg.hosts} hosts): crashed: {exc!r}",
            f"  replay: {cfg.replay.format(seed=cfg.seed)}",
            f"  network: {self.net.describe()}",
            "  faults:",
            *(f"    {f.describe()}" for f in self.faults),
            f"  last {len(self._recent)} events:",
            *(f"    {e}" for e in self._recent),
        ]
        return "\n".join(lines)
