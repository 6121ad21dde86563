"""Runs across hosts: fire lag, runs started per second, and the failover gap, on 3 real daemons.

    .venv/bin/python bench/cluster.py [--seconds 30] [--table 100000] [--rates 100,200,...]
                                      [--window 20] [--kills 10] [--dir DIR]

Three real ``dcrond`` processes on 127.0.0.1 (each its own data folder and
ports, fsync on, zeroconf off, d2 and d3 joining d1 through ``[discovery]
join``; one shared ``file://`` object store so every host can fetch a job's
script). Each host carries the tag ``id=<its name>``. The job is the clock
program of ``bench/fire.py``: a static C program whose first act is to read
CLOCK_REALTIME and append ``<instant> <clock>`` to ``$FIRE_OUT``, run as the
interpreter of a one-byte script (one exec, no shell). Lag is the child's
clock minus the run's instant. Everything below runs in one invocation, one
phase after the other:

0. **Anchors**: the floor (this process spins to an instant and ``Popen``\\ s
   the program, as fire.py); the **spawn floor**: starts per second of the
   program from one Python process, one after the other, with
   ``trio.run_process`` (measured.md's ~1,400/s) and with ``subprocess.Popen``
   + ``wait``; and the **single-host** figure: one ``dcrond`` alone, one job
   every second for ``--seconds``.
1. **Fire lag across hosts**, once every host has applied the log the
   leader had committed when the third joined (and 1 s more): one job per host
   (tag ``id=dN``) every second
   for ``--seconds``: p50/p99/max over all starts, per host, and for the
   leader's host against the followers' (a follower learns its claim through
   the log, ``lead_time`` before the instant).
2. **Failover gap** (before the big table): one untagged job every second;
   ``--kills`` times: wait until the three agree on a leader, ``kill -9`` it
   at a random moment within a second, restart it ``--down`` seconds later.
   Per kill: the time from the kill to the next start anywhere (a child's
   first instruction), the longest pause between two consecutive starts
   around it, and the worst lag of the instants due in the 3 s after the
   kill. Then the job is paused and, once nothing is scheduled or running,
   its run list must hold exactly one run per second from its first
   instant to the pause, each final; runs that ended ``lost`` or ``skipped``
   are listed with their message.
3. **Runs started per second**: ``--table`` jobs are added (none due during
   the bench: 1,440 times of day on January 1st, a tenth paused), then
   untagged every-second jobs, each with its own ``$FIRE_OUT``, in steps of
   ``--rates`` jobs; each step is measured for ``--window`` seconds once its
   jobs are created and 3 s have passed: starts per second (child records
   whose clock falls in the window), lag, CPU per start of the three
   daemons, their spawners and the jobs (from /proc), and the machine's
   busy CPU (from /proc/stat, which includes other users of the CPUs).
   Steps stop after the first that falls behind (fewer than 95% of the
   offered starts, or a median lag over 1 s: a backlog). Then every load job is paused and
   its run list checked as in 2 (one run per second, final), and its records
   for a start twice of one instant.

Compare ratios, not figures: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio
from fire import build_program, floor, quantiles, read_lags, summary  # bench/ is on sys.path

from dcrond.errors import DcronError, NotLeader, Unavailable
from dcrond.rpc import RpcClient
from dcrond.testing._cluster import free_ports

FINAL = {"succeeded", "failed", "timed_out", "killed", "skipped", "lost"}
HEALTHY_TIMEOUT = 90.0
#: the last seconds before a job's pause, where a run may be missing because the pause
#: committed before a late claim (not required; counted apart)
NEAR_PAUSE = 2
SCRIPT = b"\n"  #: the job's script: the clock program ignores it
EVERY_SECOND = "* * * * * *"
_DOWN = (DcronError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


def epoch(iso: str) -> float:
    """``2026-01-02T03:04:05.678Z`` -> UTC epoch seconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def iso(t: float) -> str:
    """UTC epoch seconds -> the instant as run ids spell it."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def proc_cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a process (0, 0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def children_of(pids: Iterable[int]) -> list[int]:
    """Processes whose parent is one of ``pids`` (the runners' spawners)."""
    want = set(pids)
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid in want:
            out.append(int(entry))
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat)."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = parts[3] + parts[4]
    return (sum(parts[:8]) - idle) / tick, sum(parts[:8]) / tick


def load() -> str:
    """The 1-minute load average."""
    return f"{os.getloadavg()[0]:.2f}"


def q(xs: list[float]) -> tuple[float, float, float]:
    """(p50, p99, max), NaNs for no data."""
    return quantiles(xs) if xs else (math.nan, math.nan, math.nan)


# --- the daemons ------------------------------------------------------------------------


@dataclass
class Daemon:
    """One ``dcrond`` process: its config, its process, its RPC client."""

    name: str
    config: Path
    api: int
    log: Path
    proc: trio.Process | None = None
    client: RpcClient | None = None
    spawners: set[int] = field(default_factory=set)


class Cluster:
    """``n`` daemons on 127.0.0.1; d1 founds, the others join it."""

    def __init__(self, root: Path, n: int, *, objects: Path, slots: int) -> None:
        self.root = root
        root.mkdir(exist_ok=True)
        names = [f"d{i + 1}" for i in range(n)]
        ports = free_ports(3 * n)
        gossip = {name: ports[3 * i + 2] for i, name in enumerate(names)}
        self.daemons: dict[str, Daemon] = {}
        for i, name in enumerate(names):
            join = "" if i == 0 else f'"127.0.0.1:{gossip["d1"]}"'
            path = root / f"{name}.toml"
            path.write_text(
                f'[node]\nname = "{name}"\ndata_dir = "{root / name}"\n'
                f'tags = {{ id = "{name}" }}\n'
                f'[api]\nlisten = "127.0.0.1:{ports[3 * i]}"\n'
                f'[raft]\nlisten = "127.0.0.1:{ports[3 * i + 1]}"\nfsync = true\n'
                f'[cluster]\ngossip_listen = "127.0.0.1:{gossip[name]}"\n'
                f"[discovery]\nzeroconf = false\njoin = [{join}]\n"
                f'[storage]\nurl = "{objects.as_uri()}"\n'
                f"[runner]\nslots = {slots}\noutput_cap_bytes = 4096\n"
                "[jobs]\nkeep_runs = 0\nkeep_days = 0\n",
                encoding="utf-8",
            )
            self.daemons[name] = Daemon(name, path, ports[3 * i], root / f"{name}.log")
        self.names = names
        self._nursery: trio.Nursery | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        """Start every daemon (d1 first) and wait until all are voters."""
        self._nursery = nursery
        for name in self.names:
            await self.start_one(name)
        await self.wait_healthy()

    async def start_one(self, name: str) -> None:
        """Start (or restart) one daemon on its data folder and connect to it."""
        d = self.daemons[name]
        with d.log.open("ab") as log:
            d.proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "dcrond", "--config", str(d.config)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        with trio.fail_after(HEALTHY_TIMEOUT):
            while True:
                try:
                    client = await RpcClient.connect("127.0.0.1", d.api)
                    break
                except _DOWN:
                    await trio.sleep(0.1)
        assert self._nursery is not None
        self._nursery.start_soon(self._serve, client)
        d.client = client

    @staticmethod
    async def _serve(client: RpcClient) -> None:
        with contextlib.suppress(*_DOWN):
            await client.run()

    async def kill(self, name: str) -> float:
        """``kill -9`` a daemon; when it died (epoch seconds)."""
        d = self.daemons[name]
        assert d.proc is not None
        self.note_spawners()
        d.proc.send_signal(signal.SIGKILL)
        at = time.time()
        await d.proc.wait()
        d.proc = None
        if d.client is not None:
            await d.client.aclose()
        d.client = None
        return at

    def pids(self) -> dict[str, int]:
        """Live daemons' process ids."""
        return {n: d.proc.pid for n, d in self.daemons.items() if d.proc is not None}

    def note_spawners(self) -> dict[str, list[int]]:
        """Each live daemon's child processes (its runner's spawner), remembered for the end."""
        out = {}
        for name, pid in self.pids().items():
            kids = children_of([pid])
            self.daemons[name].spawners.update(kids)
            out[name] = kids
        return out

    async def call(self, name: str, method: str, params: dict[str, Any]) -> Any:
        """One request to one daemon."""
        client = self.daemons[name].client
        if client is None:
            raise Unavailable(f"{name} is down")
        return await client.call(method, params)

    async def status(self, name: str) -> dict[str, Any] | None:
        """``cluster.status`` of one daemon's own view (None: no answer)."""
        with trio.move_on_after(2.0):
            try:
                st: dict[str, Any] = await self.call(name, "cluster.status", {"stale": True})
                return st
            except _DOWN:
                return None
        return None

    async def term(self) -> int:
        """The highest Raft term any daemon reports now."""
        sts = [await self.status(name) for name in self.names]
        return max(int(st["term"]) for st in sts if st is not None)

    async def leader(self) -> str:
        """The name of the leader every live daemon agrees on (waits for agreement)."""
        return await self.wait_healthy()

    async def wait_healthy(self) -> str:
        """Wait until every daemon answers, all agree on one leader and term, with n voters."""
        n = len(self.names)
        with trio.fail_after(HEALTHY_TIMEOUT):
            while True:
                sts = [await self.status(name) for name in self.names]
                views = {(st["term"], st["leader"]) for st in sts if st is not None}
                if (
                    all(st is not None for st in sts)
                    and len(views) == 1
                    and next(iter(views))[1] is not None
                    and all(st is not None and len(st["voters"]) == n for st in sts)
                ):
                    return str(next(iter(views))[1])
                await trio.sleep(0.1)

    async def write(self, method: str, params: dict[str, Any], patience: float = 60.0) -> Any:
        """A write through any live daemon (the leader first), retried while none leads."""
        deadline = trio.current_time() + patience
        prefer = list(self.names)
        while True:
            for name in prefer:
                try:
                    return await self.call(name, method, params)
                except (NotLeader, Unavailable, OSError, trio.BrokenResourceError) as exc:
                    last: BaseException = exc
            if trio.current_time() > deadline:
                raise last
            await trio.sleep(0.1)

    async def aclose(self) -> None:
        """Stop every daemon (SIGTERM, then SIGKILL) and any spawner it left."""
        with trio.CancelScope(shield=True):
            self.note_spawners()
            for d in self.daemons.values():
                if d.client is not None:
                    await d.client.aclose()
                if d.proc is not None:
                    d.proc.send_signal(signal.SIGTERM)
            for d in self.daemons.values():
                if d.proc is not None:
                    with trio.move_on_after(20):
                        await d.proc.wait()
                    if d.proc.returncode is None:
                        d.proc.send_signal(signal.SIGKILL)
                        await d.proc.wait()
                    d.proc = None
            for d in self.daemons.values():
                for pid in d.spawners:  # a spawner exits once idle and closed; make sure
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


async def parallel(calls: Iterable[Callable[[], Awaitable[Any]]], width: int = 128) -> list[Any]:
    """Await the calls, ``width`` at a time; their results in order."""
    items = list(enumerate(calls))
    out: list[Any] = [None] * len(items)
    it = iter(items)

    async def worker() -> None:
        for i, fn in it:
            out[i] = await fn()

    async with trio.open_nursery() as nursery:
        for _ in range(min(width, len(items))):
            nursery.start_soon(worker)
    return out


def clock_spec(program: Path, out: Path, *, tags: dict[str, str] | None = None) -> dict[str, Any]:
    """An every-second job run by the clock program, recording to ``out``."""
    return {
        "schedule": EVERY_SECOND,
        "script": SCRIPT,
        "interpreter": str(program),
        "env": {"FIRE_OUT": str(out)},
        "tags": tags or {},
    }


async def create(c: Cluster, specs: dict[str, dict[str, Any]], width: int = 128) -> dict[str, Any]:
    """Create jobs through the log in parallel; name -> the created job."""
    names = list(specs)
    made = await parallel(
        [functools.partial(c.write, "job.create", {"name": n, "spec": specs[n]}) for n in names],
        width,
    )
    return dict(zip(names, made, strict=True))


async def pause(c: Cluster, names: list[str]) -> dict[str, float]:
    """Pause jobs; name -> the pause's stamp (epoch seconds), which ends the job's window."""
    # (patient: after a step the cluster could not keep up with, it is busy for a while)
    done = await parallel(
        [functools.partial(c.write, "job.pause", {"name": n}, 300.0) for n in names]
    )
    return {n: epoch(j["updated_at"]) for n, j in zip(names, done, strict=True)}


async def wait_settled(c: Cluster, timeout: float = 120.0) -> float:
    """Wait until no run is scheduled or running; how long it took."""
    t0 = trio.current_time()
    with trio.fail_after(timeout):
        while True:
            left = 0
            for state in ("scheduled", "running"):
                runs = await c.write("run.list", {"state": state, "limit": 10_000})
                left += len(runs)
            if not left:
                return trio.current_time() - t0
            await trio.sleep(0.5)


@dataclass
class Check:
    """What a job's run list says about its window."""

    instants: int = 0  #: seconds due in the windows
    missing: list[str] = field(default_factory=list)  #: "job@instant" with no run
    not_final: list[str] = field(default_factory=list)
    odd: list[str] = field(default_factory=list)  #: runs that did not succeed, with the reason
    states: Counter[str] = field(default_factory=Counter)
    hosts: Counter[str] = field(default_factory=Counter)
    extra: int = 0  #: runs outside the window (after the pause: claimed ahead)
    #: instants in the last 2 s before the pause with no run (the pause was committed before
    #: the claim; a pause stamped after the instant but applied before a late claim)
    near_pause: list[str] = field(default_factory=list)
    runs: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  #: (job, instant)


async def check_runs(c: Cluster, windows: dict[str, tuple[int, float]]) -> Check:
    """Every job's every second in [first, pause) has one run, final (the table's view)."""
    out = Check()
    lists = await parallel(
        [
            functools.partial(c.write, "run.list", {"job": n, "limit": 10_000, "stale": True})
            for n in windows
        ],
        32,
    )
    for (job, (first, stop)), runs in zip(windows.items(), lists, strict=True):
        seen = {}
        for r in runs:
            seen[round(epoch(r["scheduled_at"]))] = r
            out.runs[job, round(epoch(r["scheduled_at"]))] = r
            out.states[r["state"]] += 1
            out.hosts[r["host"] or "-"] += 1
            if r["state"] not in FINAL:
                out.not_final.append(r["id"])
            elif r["state"] != "succeeded":
                out.odd.append(f"{r['id']} {r['state']} on {r['host']}: {r['message']}")
        due = range(first, math.ceil(stop) - NEAR_PAUSE)
        out.instants += len(due)
        out.missing += [f"{job}@{iso(t)}" for t in due if t not in seen]
        near = range(due.stop, math.ceil(stop))
        out.near_pause += [f"{job}@{iso(t)}" for t in near if t not in seen]
        out.extra += sum(1 for t in seen if t not in due and t not in near)
    return out


def spawn_floor(program: Path, folder: Path, seconds: float) -> dict[str, float]:
    """Starts per second of the program from one Python process, one after the other."""
    env = {"FIRE_OUT": str(folder / "spawn.out")}

    async def with_trio() -> int:
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            await trio.run_process([str(program), "0"], env=env)
            n += 1
        return n

    t0 = time.perf_counter()
    n = trio.run(with_trio)
    trio_rate = n / (time.perf_counter() - t0)
    n, t0 = 0, time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        subprocess.Popen([str(program), "0"], env=env).wait()
        n += 1
    return {"trio": trio_rate, "popen": n / (time.perf_counter() - t0)}


# --- phases -------------------------------------------------------------------------------


async def single_host(program: Path, root: Path, objects: Path, seconds: int) -> list[float]:
    """One dcrond alone: one job every second; the lags."""
    c = Cluster(root, 1, objects=objects, slots=64)
    out = root / "single.out"
    try:
        async with trio.open_nursery() as nursery:
            await c.start(nursery)
            await create(c, {"solo": clock_spec(program, out)})
            await trio.sleep(seconds + 1)
            await pause(c, ["solo"])
            nursery.cancel_scope.cancel()
    finally:
        await c.aclose()
    return [lag for _t, lag in read_lags(out)]


async def fire_across(c: Cluster, program: Path, folder: Path, seconds: int) -> dict[str, Any]:
    """Phase 1: one job per host, tagged to it, every second."""
    leader = await c.leader()
    outs = {n: folder / f"lag-{n}.out" for n in c.names}
    await create(c, {f"on-{n}": clock_spec(program, outs[n], tags={"id": n}) for n in c.names})
    await trio.sleep(seconds + 1)
    await pause(c, [f"on-{n}" for n in c.names])
    after = await c.leader()
    per = {n: [lag for _t, lag in read_lags(outs[n])] for n in c.names}
    return {
        "leader": leader,
        "leader_changed": after != leader,
        "per_host": per,
        "all": [x for n in c.names for x in per[n]],
        "on_leader": per[leader],
        "on_followers": [x for n in c.names if n != leader for x in per[n]],
    }


@dataclass
class Kill:
    """One ``kill -9`` of the leader."""

    host: str
    at: float
    next_start: float = math.nan  #: s from the kill to the next child's first instruction
    pause: float = math.nan  #: s, the longest gap between consecutive starts around the kill
    worst_lag: float = math.nan  #: s, the worst lag of the instants due in the 3 s after
    new_leader: str = ""


async def failover(
    c: Cluster, program: Path, folder: Path, *, kills: int, down: float, settle: float
) -> dict[str, Any]:
    """Phase 2: a job every second while the leader is killed ``kills`` times."""
    out = folder / "failover.out"
    made = await create(c, {"fo": clock_spec(program, out)})
    first = math.ceil(epoch(made["fo"]["created_at"]))
    rnd = random.Random(5)
    samples: list[Kill] = []
    for i in range(kills):
        leader = await c.wait_healthy()
        await trio.sleep(settle)
        leader = await c.wait_healthy()
        await trio.sleep(max(0.0, math.ceil(time.time()) + rnd.random() - time.time()))
        k = Kill(leader, await c.kill(leader))
        samples.append(k)
        await trio.sleep(down)
        await c.start_one(leader)
        k.new_leader = await c.wait_healthy()
        print(f"  kill {i + 1:>2}: {leader} at {k.at:.3f}, new leader {k.new_leader}", flush=True)
    await trio.sleep(3)
    stop = (await pause(c, ["fo"]))["fo"]
    settled = await wait_settled(c)
    recs = [(epoch(t), epoch(t) + lag / 1000) for t, lag in read_lags(out)]
    starts = sorted(s for _i, s in recs)
    for k in samples:
        later = [s for s in starts if s > k.at]
        before = [s for s in starts if s <= k.at]
        if later:
            k.next_start = later[0] - k.at
        window = [s for s in starts if k.at - 2 <= s <= k.at + 10]
        gaps = [b - a for a, b in itertools.pairwise(window)]
        k.pause = max(gaps) if gaps and before else math.nan
        lags = [s - i for i, s in recs if k.at <= i < k.at + 3]
        k.worst_lag = max(lags) if lags else math.nan
    check = await check_runs(c, {"fo": (first, stop)})
    doubled = len(recs) - len({i for i, _s in recs})
    return {"kills": samples, "check": check, "doubled_records": doubled, "settled_s": settled}


def table_specs(n: int) -> dict[str, dict[str, Any]]:
    """``n`` jobs never due here (as fire.py's table): 1,440 times of day on January 1st."""
    zones = ("UTC", "Europe/Berlin", "America/New_York")
    return {
        f"t{i:06d}": {
            "schedule": f"{i % 60} {(i // 60) % 24} 1 1 *",
            "timezone": zones[i % 3],
            "command": "true",
            "paused": i % 10 == 0,
        }
        for i in range(n)
    }


@dataclass
class Step:
    """One rate of the load: ``rate`` jobs due every second, measured over a window."""

    rate: int
    window: tuple[float, float] = (0.0, 0.0)
    started_per_s: float = 0.0
    lags: list[float] = field(default_factory=list)
    missing_in_window: int = 0  #: (job, instant) in the window with no start recorded
    cpu_ms: dict[str, float] = field(default_factory=dict)  #: CPU ms per start by kind
    machine_busy: float = 0.0  #: busy fraction of all CPUs during the window
    leader: str = ""
    elections: int = 0  #: terms that began during the window (a leader change each, or a try)
    starts: list[tuple[str, int, float]] = field(default_factory=list)  #: (job, instant, lag)
    #: filled from the run list at the end: lags by host, and how early each claim was made
    lag_by_host: dict[str, list[float]] = field(default_factory=dict)
    claim_ahead_ms: list[float] = field(default_factory=list)

    @property
    def behind(self) -> bool:
        """Starts do not keep up: under 95% of the offered rate, or half of them over 1 s late."""
        p50 = q(self.lags)[0]
        return self.started_per_s < 0.95 * self.rate or not p50 <= 1000


def cpu_snapshot(c: Cluster) -> dict[str, float]:
    """CPU seconds so far: the daemons, their spawners, the jobs (reaped by the spawners)."""
    daemons = spawners = jobs = 0.0
    for _name, kids in c.note_spawners().items():
        for pid in kids:
            own, reaped = proc_cpu(pid)
            spawners += own
            jobs += reaped
    each = {f"daemon {name}": proc_cpu(pid)[0] for name, pid in c.pids().items()}
    daemons = sum(each.values())
    busy, total = machine_busy()
    return {
        "daemons": daemons,
        "spawners": spawners,
        "jobs": jobs,
        **each,
        "busy": busy,
        "total": total,
    }


async def wait_caught_up(c: Cluster, timeout: float = 600.0) -> None:
    """Wait until every host applied what the leader had committed when this was called."""
    leader = await c.leader()
    st = await c.status(leader)
    assert st is not None
    target = int(st["commit_index"])
    with trio.fail_after(timeout):
        while True:
            sts = [await c.status(n) for n in c.names]
            if all(s is not None and int(s["applied_index"]) >= target for s in sts):
                return
            await trio.sleep(0.2)


async def record_profile(out: Path, rate: int, name: str, pid: int, seconds: float) -> None:
    """py-spy ``record`` one daemon for ``seconds`` (collapsed stacks, idle excluded)."""
    spy = Path(sys.executable).parent / "py-spy"
    argv = [str(spy), "record", "--pid", str(pid), "--duration", str(int(seconds))]
    argv += ["--rate", "50", "--format", "raw", "-o", str(out / f"rate{rate}-{name}.txt")]
    await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)


async def throughput(
    c: Cluster,
    program: Path,
    folder: Path,
    *,
    rates: list[int],
    window: float,
    table: int,
    py_spy: Path | None = None,
) -> dict[str, Any]:
    """Phase 3: the big table, then every-second jobs in steps of ``rates``."""
    res: dict[str, Any] = {}
    t0 = time.perf_counter()
    if table:
        await create(c, table_specs(table), width=256)
    res["table_create_s"] = time.perf_counter() - t0
    res["table_load"] = load()
    t0 = time.perf_counter()
    await wait_caught_up(c)
    res["catch_up_s"] = time.perf_counter() - t0
    print(
        f"  {table} table jobs created in {res['table_create_s']:.1f} s; every host applied "
        f"them {res['catch_up_s']:.1f} s later",
        flush=True,
    )
    tp = folder / "tp"
    tp.mkdir()
    jobs: dict[str, tuple[int, float]] = {}  # name -> (first instant, pause)
    steps: list[Step] = []
    for rate in rates:
        names = [f"r{i:05d}" for i in range(len(jobs), rate)]
        new = {n: clock_spec(program, tp / f"{n}.out") for n in names}
        made = await create(c, new, width=128)
        for name, job in made.items():
            jobs[name] = (math.ceil(epoch(job["created_at"])), math.inf)
        step = Step(rate)
        begin = math.ceil(time.time()) + 3
        await trio.sleep(begin - time.time())
        leader = await c.leader()
        term0 = await c.term()
        cpu0 = cpu_snapshot(c)
        async with trio.open_nursery() as nursery:
            if py_spy is not None:
                for name, pid in c.pids().items():
                    nursery.start_soon(record_profile, py_spy, rate, name, pid, window)
            await trio.sleep(window)
        cpu1 = cpu_snapshot(c)
        step.elections = await c.term() - term0
        end = begin + window
        step.window = (begin, end)
        await trio.sleep(2)  # the last instants' records
        recs = {n: read_lags(tp / f"{n}.out") for n in jobs}
        started = 0
        step.leader = leader
        for n, rs in recs.items():
            insts = set()
            for tag, lag in rs:
                inst = epoch(tag)
                if begin <= inst + lag / 1000 < end:
                    started += 1
                if begin <= inst < end:
                    step.lags.append(lag)
                    step.starts.append((n, round(inst), lag))
                    insts.add(round(inst))
            step.missing_in_window += sum(1 for t in range(int(begin), int(end)) if t not in insts)
        step.started_per_s = started / window
        d = {k: cpu1[k] - cpu0[k] for k in cpu0}
        n_starts = max(1, started)
        step.cpu_ms = {
            k.replace(leader, f"{leader} (leader)"): 1000 * v / n_starts
            for k, v in d.items()
            if k not in ("busy", "total")
        }
        step.machine_busy = d["busy"] / d["total"] if d["total"] else math.nan
        ours = (d["daemons"] + d["spawners"] + d["jobs"]) / (d["total"] or 1)
        steps.append(step)
        p50, p99, mx = q(step.lags)
        print(
            f"  rate {rate:>5}/s: started {step.started_per_s:7.1f}/s, lag p50 {p50:7.1f} "
            f"p99 {p99:7.1f} max {mx:7.1f} ms, missing {step.missing_in_window}; CPU/start "
            f"daemons {step.cpu_ms['daemons']:.2f} spawners {step.cpu_ms['spawners']:.2f} "
            f"jobs {step.cpu_ms['jobs']:.2f} ms ("
            + ", ".join(f"{k} {v:.2f}" for k, v in step.cpu_ms.items() if k.startswith("daemon "))
            + f"); machine busy {100 * step.machine_busy:.0f}% "
            f"(ours {100 * ours:.0f}%), load {load()}; terms begun {step.elections}",
            flush=True,
        )
        if step.behind:
            break
    res["steps"] = steps
    res["doubled_records"] = 0
    try:
        stops = await pause(c, sorted(jobs))
        for name, stop in stops.items():
            jobs[name] = (jobs[name][0], stop)
        res["settled_s"] = await wait_settled(c, timeout=300)
        res["check"] = check = await check_runs(c, jobs)
    except (DcronError, trio.TooSlowError) as exc:  # the cluster did not recover in time
        res["check"] = None
        res["check_error"] = f"{type(exc).__name__}: {exc}"
        print(f"  run list not checked: {res['check_error']}", flush=True)
        return res
    for step in steps:
        for job, inst, lag in step.starts:
            run = check.runs.get((job, inst))
            if run is None:
                continue
            where = "leader" if run["host"] == step.leader else "followers"
            step.lag_by_host.setdefault(where, []).append(lag)
            step.claim_ahead_ms.append(1000 * (inst - epoch(run["created_at"])))
    doubled = 0
    for name in jobs:
        tags = [t for t, _lag in read_lags(tp / f"{name}.out")]
        doubled += len(tags) - len(set(tags))
    res["doubled_records"] = doubled
    res["steps"] = steps
    return res


def report_check(label: str, ch: Check, doubled: int) -> None:
    """Print what the run list says about a window."""
    print(
        f"{label}: {ch.instants} instants due, {len(ch.missing)} without a run, "
        f"{len(ch.not_final)} not final, {doubled} started twice (clock records); "
        f"states {dict(ch.states)}; hosts {dict(ch.hosts)}; {ch.extra} runs after the pause; "
        f"{len(ch.near_pause)} of the instants in the {NEAR_PAUSE} s before the pause have no run"
    )
    by_instant = Counter(m.rpartition("@")[2] for m in ch.missing)
    if by_instant:
        print(
            "    without a run, by instant: "
            + ", ".join(f"{t} x{n}" for t, n in sorted(by_instant.items()))
        )
    for line in (ch.missing + ch.not_final)[:10]:
        print(f"    {line}")
    for line in ch.odd[:20]:
        print(f"    {line}")


async def cluster_phases(
    args: argparse.Namespace, program: Path, folder: Path, objects: Path
) -> dict[str, Any]:
    """Phases 1-3 on one three-daemon cluster."""
    c = Cluster(folder / "cluster", 3, objects=objects, slots=args.slots)
    res: dict[str, Any] = {}
    try:
        async with trio.open_nursery() as nursery:
            t0 = time.perf_counter()
            await c.start(nursery)
            print(f"cluster of 3 formed in {time.perf_counter() - t0:.1f} s", flush=True)
            # the last host to join is still catching up on the log (its first start came
            # 0.17-0.57 s late in every run): measure the cluster, not its forming
            await wait_caught_up(c)
            await trio.sleep(1.0)
            res["lag"] = await fire_across(c, program, folder, args.seconds)
            print("fire lag across hosts measured", flush=True)
            if args.kills:
                res["failover"] = await failover(
                    c, program, folder, kills=args.kills, down=args.down, settle=args.settle
                )
            if args.rates:
                res["throughput"] = await throughput(
                    c,
                    program,
                    folder,
                    rates=args.rates,
                    window=args.window,
                    table=args.table,
                    py_spy=args.py_spy,
                )
            nursery.cancel_scope.cancel()
    finally:
        await c.aclose()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=30, help="seconds of the every-second jobs")
    ap.add_argument("--floor", type=int, default=200, help="starts measured for the floor")
    ap.add_argument("--spawn-seconds", type=float, default=3.0, help="spawn floor duration")
    ap.add_argument("--kills", type=int, default=10, help="kill -9 of the leader, times")
    ap.add_argument("--down", type=float, default=2.0, help="s a killed leader stays down")
    ap.add_argument("--settle", type=float, default=2.0, help="s healthy before a kill")
    ap.add_argument("--table", type=int, default=100_000, help="jobs never due, in the table")
    ap.add_argument(
        "--rates",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[100, 150, 200, 250, 300, 400, 500, 700, 1000],
        help="every-second jobs, cumulative steps (empty: skip)",
    )
    ap.add_argument("--window", type=float, default=20.0, help="s measured per rate")
    ap.add_argument("--slots", type=int, default=512, help="[runner] slots of each host")
    ap.add_argument("--dir", type=Path, help="work in this folder (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the folder (daemons' logs)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument(
        "--py-spy",
        type=Path,
        help="record each daemon with py-spy (raw stacks) during each rate's window, into DIR",
    )
    args = ap.parse_args()
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="dcrond-cluster-", dir=args.dir))
    objects = folder / "objects"
    objects.mkdir()
    print(f"bench/cluster.py: {' '.join(sys.argv[1:])}")
    print(f"cpus={os.cpu_count()} load at start {load()}  folder {folder}", flush=True)
    git = ["git", "-C", str(Path(__file__).resolve().parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, check=False)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "../dcrond"], capture_output=True, check=False, text=True
    ).stdout.split("\n")
    changed = sum(1 for x in dirty if x)
    print(f"commit {head.stdout.decode().strip()}, {changed} files changed under dcrond/")
    try:
        program = build_program(folder)
        floor_lags, _calls = floor(program, folder, args.floor)
        spawn = spawn_floor(program, folder, args.spawn_seconds)
        print(
            f"spawn floor: trio.run_process {spawn['trio']:.0f}/s, Popen+wait "
            f"{spawn['popen']:.0f}/s; load {load()}",
            flush=True,
        )
        single = trio.run(single_host, program, folder / "single", objects, args.seconds)
        print(f"single host measured; load {load()}", flush=True)
        res = trio.run(cluster_phases, args, program, folder, objects)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"load at end {load()}")
    print()
    out = report(args, floor_lags, spawn, single, res)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


def report(
    args: argparse.Namespace,
    floor_lags: list[float],
    spawn: dict[str, float],
    single: list[float],
    res: dict[str, Any],
) -> dict[str, Any]:
    """Print every figure and ratio; return them for --json."""
    out: dict[str, Any] = {"spawn_floor": spawn}
    lag = res["lag"]
    print("1. fire lag, ms (the child's clock minus the instant)")
    rows = [
        ("floor: Popen -> first instruction", floor_lags),
        ("one dcrond alone, 1 job/s", single),
        ("3 hosts, all starts", lag["all"]),
        (f"  on the leader's host ({lag['leader']})", lag["on_leader"]),
        ("  on the followers' hosts", lag["on_followers"]),
        *((f"  on {n}", xs) for n, xs in lag["per_host"].items()),
    ]
    for name, xs in rows:
        print(f"  {name:<38} {summary(xs)}")
        out[f"lag {name.strip()}"] = q(xs)
    f50, f99, _ = q(floor_lags)
    s50, s99, _ = q(single)
    a50, a99, _amax = q(lag["all"])
    print(
        f"  3 hosts vs floor: p50 x{a50 / f50:.1f} p99 x{a99 / f99:.1f}; vs one dcrond alone: "
        f"p50 x{a50 / s50:.2f} p99 x{a99 / s99:.2f}"
        + ("  (the leader changed during the phase)" if lag["leader_changed"] else "")
    )
    print(f"  goal p99 <= 10 ms: {'met' if a99 <= 10 else 'NOT met'} (p99 {a99:.2f} ms)")
    if "failover" in res:
        fo = res["failover"]
        kills: list[Kill] = fo["kills"]
        print()
        print(f"2. failover: kill -9 of the leader, {len(kills)} times (down {args.down} s)")
        for i, k in enumerate(kills, 1):
            print(
                f"  kill {i:>2} of {k.host}: next start +{1000 * k.next_start:6.0f} ms, longest "
                f"pause between starts {1000 * k.pause:6.0f} ms, worst lag of the next 3 s "
                f"{1000 * k.worst_lag:6.0f} ms; new leader {k.new_leader}"
            )
        for key, label in (
            ("next_start", "kill -> next start"),
            ("pause", "longest pause"),
            ("worst_lag", "worst lag, next 3 s"),
        ):
            xs = [1000 * getattr(k, key) for k in kills if not math.isnan(getattr(k, key))]
            p50, _p99, mx = q(xs)
            print(f"  {label:<24} median {p50:6.0f} ms, max {mx:6.0f} ms")
            out[f"failover {key}"] = (p50, mx)
        report_check("  run list", fo["check"], fo["doubled_records"])
        ch: Check = fo["check"]
        ok = not ch.missing and not ch.not_final and not fo["doubled_records"]
        print(
            f"  goal no instant missed: {'met' if ok else 'NOT met'}; "
            f"{len(ch.odd)} instants ended other than succeeded (listed above)"
        )
        out["failover_check"] = {
            "missing": ch.missing,
            "not_final": ch.not_final,
            "odd": ch.odd,
            "states": dict(ch.states),
        }
    if "throughput" in res:
        tp = res["throughput"]
        steps: list[Step] = tp["steps"]
        print()
        print(
            f"3. runs started per second, {args.table} more jobs in the table "
            f"(created in {tp['table_create_s']:.1f} s through the log; every host had applied "
            f"them {tp.get('catch_up_s', math.nan):.1f} s later)"
        )
        floor_rate = spawn["trio"]
        for s in steps:
            p50, p99, mx = q(s.lags)
            print(
                f"  {s.rate:>5} jobs/s: started {s.started_per_s:7.1f}/s "
                f"({s.started_per_s / floor_rate:.2f} of the trio spawn floor, "
                f"{s.started_per_s / spawn['popen']:.2f} of Popen's); lag p50 {p50:.1f} "
                f"p99 {p99:.1f} max {mx:.1f} ms; {s.missing_in_window} instants not started in "
                f"the window; CPU ms/start daemons {s.cpu_ms['daemons']:.2f} spawners "
                f"{s.cpu_ms['spawners']:.2f} jobs {s.cpu_ms['jobs']:.2f} ("
                + ", ".join(f"{k} {v:.2f}" for k, v in s.cpu_ms.items() if k.startswith("daemon "))
                + "); machine busy "
                f"{100 * s.machine_busy:.0f}%; Raft terms begun {s.elections}"
                f"{'  BEHIND' if s.behind else ''}"
            )
            ahead = q(s.claim_ahead_ms)
            print(
                f"        lag on the leader's host ({s.leader}) "
                f"{summary(s.lag_by_host.get('leader', []))}; on followers' "
                f"{summary(s.lag_by_host.get('followers', []))}; claims made before the "
                f"instant: median {ahead[0]:.0f} ms, "
                f"least {min(s.claim_ahead_ms, default=math.nan):.0f} ms"
            )
        kept = [s for s in steps if not s.behind]
        best = max((s.started_per_s for s in kept), default=0.0)
        print(
            f"  sustained (highest step not behind): {best:.0f} runs/s = "
            f"{best / floor_rate:.2f} of the spawn floor ({floor_rate:.0f}/s, trio.run_process) "
            f"and {best / spawn['popen']:.2f} of Popen+wait ({spawn['popen']:.0f}/s)"
        )
        print(
            f"  goal >= 50% of the spawn floor: {'met' if best >= 0.5 * floor_rate else 'NOT met'}"
        )
        if tp["check"] is None:
            print(f"  run list of the load jobs not checked: {tp['check_error']}")
        else:
            report_check("  run list of the load jobs", tp["check"], tp["doubled_records"])
        checked = tp["check"]
        out["throughput"] = {
            "table_create_s": tp["table_create_s"],
            "sustained": best,
            "steps": [
                {
                    "rate": s.rate,
                    "started_per_s": s.started_per_s,
                    "lag": q(s.lags),
                    "missing": s.missing_in_window,
                    "cpu_ms": s.cpu_ms,
                    "busy": s.machine_busy,
                    "behind": s.behind,
                }
                for s in steps
            ],
            "missing": None if checked is None else len(checked.missing),
            "not_final": None if checked is None else len(checked.not_final),
            "states": None if checked is None else dict(checked.states),
            "doubled": tp["doubled_records"],
            "check_error": tp.get("check_error"),
        }
    return out


if __name__ == "__main__":
    raise SystemExit(main())
