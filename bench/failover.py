"""Failover: from ``kill -9`` of the Raft leader to a new leader accepting writes, against etcd 3.4.

    .venv/bin/python bench/failover.py [--kills 20] [--runs 1] [--skip-etcd]
                                       [--tick-ms MS] [--election-ticks N]
    .venv/bin/python bench/failover.py --idle-minutes 10 [--daemon]
                                       [--tick-ms MS] [--election-ticks N]

**Kills.** Three ``dcrond.testing._kvserver`` processes on 127.0.0.1 (our
Raft with PreVote and CheckQuorum, fsync on) run with ``--tick-ms`` and
``--election-ticks`` (by default the daemon's ``[raft]`` defaults from
``dcrond.config.RaftConfig``). Then, ``--kills`` times: wait until the
cluster is healthy (all three agree on one leader and term, and every node
has applied the leader's commit index), let it settle ``--settle`` seconds,
start a client that sends a put to every live node every ``--interval-ms``
(each put is its own request, given up after 2 s), ``kill -9`` the leader,
and record the time until the first put *sent after the kill* is
acknowledged. A follower answers NotLeader at once, so the first
acknowledgement comes from the new leader once it has committed the put
(after its own no-op entry). Beside the writes, each survivor's status is
polled every 10 ms to split the time: the first survivor seen in a higher
term (the failure is detected and a pre-vote round won), and the first
survivor seen leading. The killed node is restarted on its data folder
before the next round. Then three etcd members (Debian's ``etcd``, its
default 100 ms heartbeat and 1 s election timeout unless ``--etcd-*`` say
otherwise) go through the same rounds, driven by the same client through
etcd's HTTP/JSON gateway (a follower forwards a put to its leader, so puts
sent to a follower before it notices the death wait for the 2 s limit).

p50 and p99 interpolate between samples (``statistics.quantiles``, inclusive:
with 20 kills p99 lies between the two slowest); max is the slowest. Each
run's figures are printed, then their median over ``--runs``, then all kills
pooled -- with 20 kills a p99 is nearly the max, so one split vote or one
stalled fsync decides it; the pooled figure, the count of failovers over
1 s and of failovers that needed more than one election round say how
often that happens.

**Idle.** ``--idle-minutes N`` runs three of our processes with no client
load for N minutes, polls every node's status once a second and counts
elections (how far the term moved: 0 expected, since nothing failed) and
leader changes, and reports each process's CPU use (the cost of heartbeats).
With ``--daemon`` the three are real ``dcrond`` daemons (gossip, membership,
engine and RPC on the same event loop as Raft) joined on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, final

import trio
from _etcd import EtcdCluster, EtcdMember, Http  # bench/ is on sys.path when a bench script runs

from dcrond.config import RaftConfig
from dcrond.errors import DcronError, Unavailable
from dcrond.rpc import RpcClient
from dcrond.testing._cluster import KVCluster, KVProcess, free_ports

PUT_TIMEOUT = 2.0
PROBE_EVERY = 0.01
FAILOVER_TIMEOUT = 30.0
HEALTHY_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Probe:
    """One node's view: term, the leader it follows (None: none), whether it leads, its indexes."""

    term: int
    leader: str | None
    leading: bool
    commit: int
    applied: int


class Target(Protocol):
    """A three-member Raft cluster the benchmark can kill, restart, write to and probe."""

    label: str
    names: list[str]

    async def start(self, nursery: trio.Nursery) -> None: ...

    def alive(self, name: str) -> bool: ...

    async def put(self, name: str, session: str, seq: int) -> None: ...

    async def probe(self, name: str) -> Probe: ...

    def kill(self, name: str) -> None: ...

    async def restart(self, name: str) -> None: ...

    async def aclose(self) -> None: ...


@final
class Ours:
    """dcrond's Raft: three ``_kvserver`` processes through ``KVCluster``."""

    label = "dcrond"

    def __init__(self, root: Path, tick_ms: int, election_ticks: int) -> None:
        extra = ["--tick", str(tick_ms / 1000), "--election-ticks", str(election_ticks)]
        self.cluster = KVCluster(root, 3, extra=extra)
        self.names = [n.node_id for n in self.cluster.nodes]

    def _node(self, name: str) -> KVProcess:
        return next(n for n in self.cluster.nodes if n.node_id == name)

    async def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        await self.cluster.start(nursery)

    def alive(self, name: str) -> bool:
        return self._node(name).client is not None

    def pids(self) -> list[int]:
        """The live processes' ids."""
        return [n.proc.pid for n in self.cluster.nodes if n.proc is not None]

    async def put(self, name: str, session: str, seq: int) -> None:
        params = {"session": session, "seq": seq, "key": "failover", "value": str(seq)}
        await self.cluster.call(self._node(name), "kv.put", params)

    async def probe(self, name: str) -> Probe:
        st = await self.cluster.call(self._node(name), "status", {})
        leading = st["role"] == "leader"
        return Probe(int(st["term"]), st["leader"], leading, int(st["commit"]), int(st["applied"]))

    def kill(self, name: str) -> None:
        self.cluster.kill(self._node(name))

    async def restart(self, name: str) -> None:
        await self.cluster.start_node(self._node(name))

    async def aclose(self) -> None:
        await self.cluster.aclose()


@final
class Etcd:
    """etcd 3.4 through its HTTP/JSON gateway, with a pool of connections per member."""

    label = "etcd"

    def __init__(self, root: Path, extra: list[str]) -> None:
        self.cluster = EtcdCluster(root, 3, extra=extra)
        self.names = [m.name for m in self.cluster.members]
        self._idle: dict[str, list[Http]] = {n: [] for n in self.names}
        self._ids: dict[str, str] = {}

    def _member(self, name: str) -> EtcdMember:
        return self.cluster.member(name)

    async def start(self, nursery: trio.Nursery) -> None:
        await self.cluster.start()
        self._ids = {m.member_id: m.name for m in self.cluster.members}

    def alive(self, name: str) -> bool:
        return self._member(name).proc is not None

    async def _post(self, name: str, path: str, body: dict[str, object]) -> dict[str, Any]:
        pool = self._idle[name]
        http = pool.pop() if pool else await Http.connect(self._member(name).client_port)
        ok = False
        try:
            out = await http.post(path, body)
            ok = True
            return out
        finally:
            if ok and self.alive(name):
                pool.append(http)
            else:
                with trio.CancelScope(shield=True):
                    await http.aclose()

    async def put(self, name: str, session: str, seq: int) -> None:
        key = base64.b64encode(b"failover").decode()
        value = base64.b64encode(f"{session}:{seq}".encode()).decode()
        await self._post(name, "/v3/kv/put", {"key": key, "value": value})

    async def probe(self, name: str) -> Probe:
        st = await self._post(name, "/v3/maintenance/status", {})
        leader = self._ids.get(str(st.get("leader", "")))
        me = self._ids.get(str(st["header"]["member_id"]))
        commit = int(st["raftIndex"])
        applied = int(st.get("raftAppliedIndex", commit))
        return Probe(
            int(st["raftTerm"]), leader, leader is not None and leader == me, commit, applied
        )

    def kill(self, name: str) -> None:
        self.cluster.kill(self._member(name))
        pool, self._idle[name] = self._idle[name], []
        for http in pool:
            http.stream.socket.close()

    async def restart(self, name: str) -> None:
        await self.cluster.start_member(self._member(name))

    async def aclose(self) -> None:
        for name in self.names:
            for http in self._idle[name]:
                http.stream.socket.close()
        await self.cluster.aclose()


@final
class Daemons:
    """Three real ``dcrond`` daemons on 127.0.0.1 (gossip, membership, engine and all).

    d1 founds the cluster, d2 and d3 join it through ``[discovery] join``; the
    leader makes all three voters. Used by ``--idle-minutes`` with ``--daemon``,
    to count elections with everything a daemon's event loop does beside Raft.
    """

    label = "dcrond daemons"

    def __init__(self, root: Path, tick_ms: int, election_ticks: int) -> None:
        self.names = ["d1", "d2", "d3"]
        ports = free_ports(9)
        self.api = {n: ports[3 * i] for i, n in enumerate(self.names)}
        gossip = {n: ports[3 * i + 2] for i, n in enumerate(self.names)}
        self.configs: dict[str, Path] = {}
        for i, n in enumerate(self.names):
            join = "" if n == "d1" else f'"127.0.0.1:{gossip["d1"]}"'
            path = root / f"{n}.toml"
            path.write_text(
                f'[node]\nname = "{n}"\ndata_dir = "{root / n}"\n'
                f'[api]\nlisten = "127.0.0.1:{self.api[n]}"\n'
                f'[raft]\nlisten = "127.0.0.1:{ports[3 * i + 1]}"\n'
                f"tick_ms = {tick_ms}\nelection_ticks = {election_ticks}\n"
                f'[cluster]\ngossip_listen = "127.0.0.1:{gossip[n]}"\n'
                f"[discovery]\nzeroconf = false\njoin = [{join}]\n",
                encoding="utf-8",
            )
            self.configs[n] = path
        self.root = root
        self.procs: dict[str, trio.Process] = {}
        self.clients: dict[str, RpcClient] = {}

    async def start(self, nursery: trio.Nursery) -> None:
        with trio.fail_after(HEALTHY_TIMEOUT):
            for n in self.names:  # d1 answers before the others look for it
                with (self.root / f"{n}.log").open("wb") as log:
                    self.procs[n] = await trio.lowlevel.open_process(
                        [sys.executable, "-m", "dcrond", "--config", str(self.configs[n])],
                        stdout=log,
                        stderr=log,
                    )
                while n not in self.clients:
                    try:
                        self.clients[n] = await RpcClient.connect("127.0.0.1", self.api[n])
                    except DcronError:
                        await trio.sleep(0.2)
                nursery.start_soon(self.clients[n].run)
            while True:  # until the leader has made all three voters
                sts = [await self._status(n) for n in self.names]
                if any(st is not None and len(st["voters"]) == 3 for st in sts):
                    return
                await trio.sleep(0.2)

    async def _status(self, name: str) -> dict[str, Any] | None:
        try:
            st: dict[str, Any] = await self.clients[name].call("cluster.status", {"stale": True})
        except DcronError:
            return None
        return st

    def pids(self) -> list[int]:
        """The processes' ids."""
        return [p.pid for p in self.procs.values()]

    def alive(self, name: str) -> bool:
        return name in self.clients

    async def probe(self, name: str) -> Probe:
        st = await self._status(name)
        if st is None:
            raise Unavailable(f"{name} does not answer")
        leading = st["role"] == "leader"
        commit, applied = int(st["commit_index"]), int(st["applied_index"])
        return Probe(int(st["term"]), st["leader"], leading, commit, applied)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for client in self.clients.values():
                await client.aclose()
            for proc in self.procs.values():
                if proc.returncode is None:
                    proc.send_signal(signal.SIGKILL)
                await proc.wait()


_DOWN = (DcronError, OSError, RuntimeError, KeyError, trio.BrokenResourceError)
"""What a request to a dead, restarting or electing member may raise."""


async def _try_probe(target: Target | Daemons, name: str) -> Probe | None:
    if not target.alive(name):
        return None
    with trio.move_on_after(1.0):
        try:
            return await target.probe(name)
        except _DOWN:
            return None
    return None


async def wait_healthy(target: Target | Daemons) -> Probe:
    """Wait until every member agrees on one leader and term, and has caught up with it."""
    with trio.fail_after(HEALTHY_TIMEOUT):
        while True:
            await trio.sleep(0.05)
            probes = [await _try_probe(target, n) for n in target.names]
            if any(p is None for p in probes):
                continue
            views = {(p.term, p.leader) for p in probes if p is not None}
            if len(views) != 1 or next(iter(views))[1] is None:
                continue
            leading = [p for p in probes if p is not None and p.leading]
            if len(leading) != 1:
                continue
            if any(p is not None and p.applied < leading[0].commit for p in probes):
                continue
            return leading[0]


@dataclass(slots=True)
class Sample:
    """One kill: seconds from the kill to each milestone (None: not seen)."""

    write: float | None = None  #: first put sent after the kill acknowledged
    new_term: float | None = None  #: a survivor seen in a higher term
    elected: float | None = None  #: a survivor seen leading
    terms: int = 0  #: how far the term moved (1: one election round)


async def failover_once(target: Target, before: Probe, index: int, interval: float) -> Sample:
    """Kill the leader ``before`` names while writing to every node; time the failover."""
    old = before.leader
    assert old is not None
    sample = Sample()
    done = trio.Event()
    killed_at: float | None = None

    async def attempt(name: str, session: str, seq: int) -> None:
        sent = trio.current_time()
        with trio.move_on_after(PUT_TIMEOUT):
            try:
                await target.put(name, session, seq)
            except _DOWN:
                return
            if killed_at is not None and sent >= killed_at and sample.write is None:
                sample.write = trio.current_time() - killed_at
                done.set()

    async def writer(name: str) -> None:
        session = f"{target.label}-{index}-{name}"
        seq = 0
        async with trio.open_nursery() as puts:
            at = trio.current_time()
            while True:
                if target.alive(name):
                    seq += 1
                    puts.start_soon(attempt, name, session, seq)
                at += interval
                await trio.sleep_until(at)

    async def prober(name: str) -> None:
        at = trio.current_time()
        while True:
            p = await _try_probe(target, name)
            if p is not None and killed_at is not None:
                now = trio.current_time() - killed_at
                if p.term > before.term and sample.new_term is None:
                    sample.new_term = now
                if p.leading and p.term > before.term and sample.elected is None:
                    sample.elected = now
                    sample.terms = p.term - before.term
            at += PROBE_EVERY
            await trio.sleep_until(max(at, trio.current_time()))

    async with trio.open_nursery() as nursery:
        for name in target.names:
            nursery.start_soon(writer, name)
            if name != old:
                nursery.start_soon(prober, name)
        await trio.sleep(0.3)  # writes are flowing through the old leader
        killed_at = trio.current_time()
        target.kill(old)
        with trio.move_on_after(FAILOVER_TIMEOUT):
            await done.wait()
            await trio.sleep(0.05)  # let the probers see the leader too
        nursery.cancel_scope.cancel()
    return sample


async def run_kills(target: Target, kills: int, settle: float, interval: float) -> list[Sample]:
    """Start ``target``, then ``kills`` rounds of kill, measure, restart, heal."""
    samples = []
    try:
        async with trio.open_nursery() as nursery:
            await target.start(nursery)
            for i in range(kills):
                before = await wait_healthy(target)
                await trio.sleep(settle)
                before = await wait_healthy(target)
                sample = await failover_once(target, before, i, interval)
                samples.append(sample)
                print(f"  {target.label} kill {i + 1:>2}: {_fmt(sample)}", flush=True)
                assert before.leader is not None
                await target.restart(before.leader)
            await wait_healthy(target)
            nursery.cancel_scope.cancel()
    finally:
        await target.aclose()
    return samples


def _fmt(s: Sample) -> str:
    def ms(x: float | None) -> str:
        return "   --  " if x is None else f"{1000 * x:6.0f}ms"

    return (
        f"write {ms(s.write)}  new term {ms(s.new_term)}  leader {ms(s.elected)}  terms +{s.terms}"
    )


def summary(values: Sequence[float | None]) -> dict[str, float]:
    """p50, p99 and max in milliseconds (a failover never seen counts as infinite)."""
    xs = sorted(float("inf") if v is None else 1000 * v for v in values)
    if len(xs) == 1:
        return {"p50": xs[0], "p99": xs[0], "max": xs[0]}
    q = statistics.quantiles(xs, n=100, method="inclusive")
    return {"p50": q[49], "p99": q[98], "max": xs[-1]}


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_idle(
    root: Path, minutes: float, tick_ms: int, election_ticks: int, *, daemons: bool
) -> dict[str, Any]:
    """Three of our processes, no load, for ``minutes``: elections, leader changes, CPU."""
    target = (
        Daemons(root, tick_ms, election_ticks) if daemons else Ours(root, tick_ms, election_ticks)
    )
    changes: list[tuple[float, str, Probe]] = []
    try:
        async with trio.open_nursery() as nursery:
            await target.start(nursery)
            first = await wait_healthy(target)
            pids = target.pids()
            cpu0 = [_cpu_seconds(p) for p in pids]
            t0 = trio.current_time()
            seen = {n: first for n in target.names}
            end = t0 + 60 * minutes
            while trio.current_time() < end:
                await trio.sleep(1.0)
                for name in target.names:
                    p = await _try_probe(target, name)
                    if p is not None and (p.term, p.leader) != (seen[name].term, seen[name].leader):
                        at = trio.current_time() - t0
                        changes.append((at, name, p))
                        print(f"  {at:7.1f}s {name}: term {p.term}, leader {p.leader}", flush=True)
                        seen[name] = p
            elapsed = trio.current_time() - t0
            cpu = [100 * (_cpu_seconds(p) - c) / elapsed for p, c in zip(pids, cpu0, strict=True)]
            last = [await _try_probe(target, n) for n in target.names]
            nursery.cancel_scope.cancel()
    finally:
        await target.aclose()
    terms = [p.term for p in last if p is not None]
    leaders = {p.leader for p in last if p is not None}
    return {
        "minutes": elapsed / 60,
        "elections": max(terms) - first.term,
        "leader_changes": len(
            {(p.term, p.leader) for _, _, p in changes if p.leader not in (None, first.leader)}
        ),
        "same_leader_at_end": leaders == {first.leader},
        "cpu_percent": cpu,
        "changes": [(at, name, asdict(p)) for at, name, p in changes],
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    if args.idle_minutes:
        with tempfile.TemporaryDirectory() as tmp:
            res = await run_idle(
                Path(tmp), args.idle_minutes, args.tick_ms, args.election_ticks, daemons=args.daemon
            )
        cpu = ", ".join(f"{c:.1f}%" for c in res["cpu_percent"])
        what = "dcrond daemons" if args.daemon else "_kvserver processes"
        print(
            f"idle {what} {res['minutes']:.1f} min, tick {args.tick_ms} ms x {args.election_ticks}:"
            f" {res['elections']} elections (0 expected), {res['leader_changes']} leader"
            f" changes; CPU per process {cpu}"
        )
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
        return res
    runs: dict[str, list[list[Sample]]] = {"dcrond": [], "etcd": []}
    etcd_extra = []
    if args.etcd_heartbeat_ms:
        etcd_extra += ["--heartbeat-interval", str(args.etcd_heartbeat_ms)]
    if args.etcd_election_ms:
        etcd_extra += ["--election-timeout", str(args.etcd_election_ms)]
    interval = args.interval_ms / 1000
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            target = Ours(Path(tmp), args.tick_ms, args.election_ticks)
            runs["dcrond"].append(await run_kills(target, args.kills, args.settle, interval))
        if not args.skip_etcd:
            with tempfile.TemporaryDirectory() as tmp:
                target_etcd = Etcd(Path(tmp), etcd_extra)
                runs["etcd"].append(await run_kills(target_etcd, args.kills, args.settle, interval))
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print(
        f"kill -9 of the leader -> first write acknowledged, {args.kills} kills x {args.runs} runs"
    )
    timing = f"tick {args.tick_ms} ms, election {args.election_ticks} ticks"
    labels = {
        "dcrond": f"dcrond ({timing})",
        "etcd": "etcd 3.4 (" + (" ".join(etcd_extra) or "defaults") + ")",
    }
    out: dict[str, Any] = {}
    for system, label in labels.items():
        if runs[system]:
            out[system] = report(label, runs[system])
    a = out["dcrond"]["median_of_runs"]
    if "etcd" in out:
        b = out["etcd"]["median_of_runs"]
        print(
            f"ratio dcrond/etcd (medians of runs): p50 {a['p50'] / b['p50']:.2f},"
            f" p99 {a['p99'] / b['p99']:.2f}, max {a['max'] / b['max']:.2f}"
        )
    print(f"goal p99 <= 1000 ms (median of runs): {'met' if a['p99'] <= 1000 else 'NOT met'}")
    return out


def report(label: str, runs: list[list[Sample]]) -> dict[str, Any]:
    """Print one system's figures: each run, the median over runs, all kills pooled."""
    per_run = [summary([s.write for s in samples]) for samples in runs]
    pooled = [s for samples in runs for s in samples]
    every = summary([s.write for s in pooled])
    med = _median(per_run)

    def part(f: Callable[[Sample], float | None]) -> float:
        xs = [v for v in map(f, pooled) if v is not None]
        return 1000 * statistics.median(xs) if xs else float("nan")

    split = {
        "detect_ms": part(lambda s: s.new_term),
        "elect_ms": part(lambda s: None if s.elected is None or s.new_term is None
                         else s.elected - s.new_term),
        "commit_ms": part(lambda s: None if s.write is None or s.elected is None
                          else s.write - s.elected),
    }  # fmt: skip
    over = sum(1 for s in pooled if s.write is None or s.write > 1.0)
    rounds = sum(1 for s in pooled if s.terms > 1)
    print(f"{label}")
    print(f"  {'':26} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for i, r in enumerate(per_run, 1):
        print(f"  {'run ' + str(i):26} {r['p50']:8.0f} {r['p99']:8.0f} {r['max']:8.0f}")
    print(f"  {'median of runs':26} {med['p50']:8.0f} {med['p99']:8.0f} {med['max']:8.0f}")
    print(
        f"  {f'all {len(pooled)} kills pooled':26} {every['p50']:8.0f} {every['p99']:8.0f}"
        f" {every['max']:8.0f}   over 1 s: {over}, more than one election round: {rounds}"
    )
    print(
        f"  medians (10 ms status polls): higher term seen {split['detect_ms']:.0f} ms,"
        f" then leader seen +{split['elect_ms']:.0f} ms, then write +{split['commit_ms']:.0f} ms"
    )
    return {
        "median_of_runs": med,
        "pooled": every,
        "over_1s": over,
        "extra_rounds": rounds,
        "split": split,
        "runs": [[asdict(s) for s in samples] for samples in runs],
    }


def main() -> int:
    defaults = RaftConfig()
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--tick-ms", type=int, default=defaults.tick_ms)
    ap.add_argument("--election-ticks", type=int, default=defaults.election_ticks)
    ap.add_argument("--interval-ms", type=float, default=5.0, help="put to every node this often")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds healthy before a kill")
    ap.add_argument("--skip-etcd", action="store_true")
    ap.add_argument("--etcd-heartbeat-ms", type=int, default=0, help="0: etcd's default")
    ap.add_argument("--etcd-election-ms", type=int, default=0, help="0: etcd's default")
    ap.add_argument("--idle-minutes", type=float, default=0.0)
    ap.add_argument("--daemon", action="store_true", help="idle: real dcrond daemons")
    ap.add_argument("--json", type=Path, help="also write the figures and every sample here")
    args = ap.parse_args()
    if not args.skip_etcd and not args.idle_minutes and shutil.which("etcd") is None:
        print(
            "bench/failover.py: etcd is not installed (make bench installs etcd-server)",
            file=sys.stderr,
        )
        return 2
    try:
        out = trio.run(main_async, args)
    except DcronError as exc:
        print(f"bench/failover.py: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
