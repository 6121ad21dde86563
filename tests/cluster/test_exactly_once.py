"""Exactly one run per job per second on five real hosts while hosts die (issue 5, item 8).

Needs root: one ``dcrond`` per network namespace (``NetnsLab``), mutual TLS
from ``dcronctl ca``, zeroconf discovery, short leases (``[cluster]
heartbeat_s = 0.5``, ``lease_s = 3``, ``[runner] kill_grace_s = 2``: the
leader calls a silent host's attempts lost after 3 + 2 + 2 x 0.5 = 6 s).

Scenario
--------
50 jobs ``@every 1s`` running ``true`` (default concurrency ``allow``,
retries 0, catch-up ``latest``) are created through the leader. Counted from
T0, the moment the last create returned:

====  ===================================================================
 15   ``kill -9`` of the leader; restarted at 19 (down 4 s, less than the
      6 s after which its attempts are declared lost)
 40   ``kill -9`` of a learner (a worker that is never leader); restarted
      at 55 (down 15 s: its unfinished attempts are declared lost)
 75   ``kill -9`` of the leader of that moment; restarted at 85 (down 10 s)
 120  every job is paused (``job pause``), then the cluster settles
====  ===================================================================

Then ``dcronctl run list -o json`` (``--limit 10000``) is read from every
host, each from its own copy of the table (``--stale``).

The window
----------
Job j's window runs from its first instant F_j to its pause P_j:

* F_j = the creation time ``created_at`` rounded *up* to a whole second.
  The leader counts a new job's instants from its creation
  (``dcrond.engine._leader``: ``since = ceil(updated_at)``), so F_j is the
  first instant the job owes a run for, and nothing earlier may run.
* P_j = the ``updated_at`` of the pause, the instant the leader stamped the
  pause command with. A claim for an instant before P_j was proposed
  before the pause in the same leader's log, so that run must exist; a
  claim for a later instant either was committed before the pause (the
  leader claims up to ``LOOKAHEAD`` = 1 s ahead; the host then skips it as
  paused, or starts it if the pause reaches it after the instant) or is
  refused by the store as made for an older job version.

The checks
----------
1. For every job, every whole second T with F_j <= T < P_j has its run
   ``job@T``, with reason ``schedule``; no run is for an instant before F_j,
   for a fraction of a second, or more than 2 s after P_j (the lookahead
   plus a second). Catch-up is not expected anywhere: an instant counts as
   missed only when it is older than ``now - grace`` (5 s) when a new leader
   loads the table (``dcrond.scheduler``), and the new leader is elected
   within a couple of seconds here, so every instant of the leaderless gap
   is simply due and claimed as scheduled (``latest`` would otherwise keep
   only the newest missed one). A run with reason ``catch-up`` or a missing
   second means the cluster went without a scheduling leader for over 5 s,
   and fails the test. Run ids are unique in the store, so "one run" is
   "its id is there"; each run also has exactly one attempt (retries 0).
2. Every run is in a final state once the cluster settled; none is
   ``scheduled`` or ``running``. ``true`` cannot fail, time out or be
   killed here, so the states allowed are ``succeeded``, ``lost`` and
   ``skipped``.
3. A ``lost`` run was placed on a host killed around its instant: its
   instant lies between 2 s before that host's ``kill -9`` and 2 s after
   its restart (claims made up to 1 s ahead; a new leader counts every host
   as heard for one lease). A ``skipped`` run is either an instant at or
   after P_j - 2 s skipped because the job was paused, or lies in such a
   fault interval of any host (placement found no host).
4. Every host's table holds the same runs, with the same states, hosts and
   attempt counts.

A failure prints counts per state, per host and per reason, the runs that
broke a rule, the fault timeline, and where the daemons' logs are.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dcrond.testing._netns import NetnsLab
from tests.cluster._harness import API, GOSSIP, ROOT, DaemonLab

SECRET = "exactly-once-test-secret"
JOBS = 50
HEARTBEAT_S, LEASE_S, KILL_GRACE_S = 0.5, 3.0, 2.0
#: when each fault happens and ends, in seconds after the last job was created
LEADER_KILL_1, LEADER_BACK_1 = 15.0, 19.0
WORKER_KILL, WORKER_BACK = 40.0, 55.0
LEADER_KILL_2, LEADER_BACK_2 = 75.0, 85.0
STOP_AT = 120.0
#: how long before a kill the test asks who leads (a dcronctl call takes ~0.5 s)
LOOK_S = 3.0
#: how far around a host's death its runs may end lost (see the module doc, check 3)
FAULT_MARGIN_S = 2.0
#: the most a paused job's run may lie after the pause (LOOKAHEAD 1 s, plus a second)
AFTER_PAUSE_S = 2.0
FINAL = {"succeeded", "failed", "timed_out", "killed", "skipped", "lost"}
EXPECTED = {"succeeded", "lost", "skipped"}


@dataclass
class Fault:
    """One ``kill -9`` of a host and its restart (epoch seconds)."""

    what: str
    host: str
    killed_at: float
    back_at: float = math.inf
    new_leader: str = ""
    new_leader_after_s: float = math.nan

    def covers(self, instant: float) -> bool:
        return self.killed_at - FAULT_MARGIN_S <= instant <= self.back_at + FAULT_MARGIN_S


class Cluster(DaemonLab):
    """The five daemons, their files, and dcronctl inside the namespaces."""

    def sections(self, name: str) -> str:
        host = self.hosts[name]
        return f"""
[cluster]
name = "once"
secret = "{SECRET}"
gossip_listen = "{host.address}:{GOSSIP}"
heartbeat_s = {HEARTBEAT_S}
lease_s = {LEASE_S}

[runner]
kill_grace_s = {KILL_GRACE_S}

[jobs]
keep_runs = 0
keep_days = 0
"""

    def kill(self, name: str) -> float:
        """``kill -9`` the daemon of ``name``; when it died (epoch seconds)."""
        self.procs[name].kill()
        self.procs[name].wait(timeout=10)
        return time.time()

    def _argv(self, name: str, *args: str, stale: bool = False) -> list[str]:
        endpoint = f"{self.hosts[name].address}:{API}"
        return [
            "--endpoint",
            endpoint,
            *(["--stale"] if stale else []),
            *self.tls_args,
            "-o",
            "json",
            *args,
        ]

    def ctl(self, name: str, *args: str, stale: bool = False, timeout: float = 30) -> Any:
        """``dcronctl -o json ARGS`` in ``name``'s namespace against its API; None on failure."""
        argv = [sys.executable, "-m", "dcrond.ctl", *self._argv(name, *args, stale=stale)]
        proc = subprocess.run(
            self.lab.argv(self.hosts[name], argv),
            cwd=ROOT,
            timeout=timeout,
            check=False,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout) if proc.stdout.strip() else {}

    def batch(self, name: str, commands: list[list[str]]) -> list[dict[str, Any]]:
        """Many dcronctl commands in one process in ``name``'s namespace (``_ctl_batch``)."""
        path = self.tmp / f"batch-{time.monotonic_ns()}.json"
        path.write_text(json.dumps([self._argv(name, *c) for c in commands]), encoding="utf-8")
        argv = [sys.executable, "-m", "tests.cluster._ctl_batch", str(path)]
        proc = subprocess.run(
            self.lab.argv(self.hosts[name], argv),
            cwd=ROOT,
            timeout=300,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=True,
        )
        results: list[dict[str, Any]] = json.loads(proc.stdout)
        return results

    def status(self, name: str) -> dict[str, Any] | None:
        st = self.ctl(name, "cluster", "status")
        return st if isinstance(st, dict) and st.get("leader") else None


def until(what: str, seconds: float, check: Callable[[], Any], pause: float = 0.3) -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError naming ``what``."""
    end = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"not true after {seconds} s: {what}")
        time.sleep(pause)


def epoch(iso: str) -> float:
    """``2026-01-02T03:04:05.678Z`` -> UTC epoch seconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def instant_of(run_id: str) -> float:
    return epoch(run_id.rpartition("@")[2])


@dataclass
class Report:
    """What the test saw, printed with every failure."""

    tmp: Path
    faults: list[Fault] = field(default_factory=list)
    t0: float = 0.0
    lines: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        line = f"[{time.time() - self.t0:7.1f}s] {text}" if self.t0 else text
        self.lines.append(line)
        print(line, flush=True)

    def odd_runs(self, runs: list[dict[str, Any]]) -> str:
        """Runs that did not succeed, counted by state, host and second after T0."""
        odd = Counter(
            (r["state"], r["host"], round(instant_of(r["id"]) - self.t0))
            for r in runs
            if r["state"] != "succeeded"
        )
        return ", ".join(f"{s} {h} @{t}s x{n}" for (s, h, t), n in sorted(odd.items(), key=str))

    def summary(self, runs: list[dict[str, Any]]) -> str:
        states = Counter(r["state"] for r in runs)
        hosts = Counter(r["host"] for r in runs)
        both = Counter((r["host"], r["state"]) for r in runs)
        reasons = Counter(r["reason"] for r in runs)
        out = [
            f"{len(runs)} runs; states {dict(sorted(states.items()))}",
            f"per host {dict(sorted(hosts.items(), key=str))}",
            f"per host and state {dict(sorted(both.items(), key=str))}",
            f"reasons {dict(reasons)}",
            "lost/skipped by host at s after T0: " + self.odd_runs(runs),
            "faults (s after T0): "
            + "; ".join(
                f"{f.what} {f.host} killed {f.killed_at - self.t0:.1f} back "
                f"{f.back_at - self.t0:.1f}, new leader {f.new_leader or '-'} "
                f"after {f.new_leader_after_s:.1f} s"
                for f in self.faults
            ),
            f"daemon logs: {self.tmp}/h*.log",
            *self.lines,
        ]
        return "\n".join(out)


@pytest.fixture
def cluster(make_lab: Callable[[int], NetnsLab], tmp_path: Path) -> Iterator[Cluster]:
    lab = make_lab(5)
    c = Cluster(lab, tmp_path)
    for name in c.hosts:
        c.start(name)
    yield c
    lab.close()  # stop the daemons before tmp_path goes


def formed(c: Cluster) -> tuple[str, list[str], list[str]] | None:
    """(leader, voters, learners) once the five hosts are 3 voters + 2 learners."""
    st = c.status("h1")
    if st and len(st["voters"]) == 3 and len(st["learners"]) == 2:
        return str(st["leader"]), sorted(st["voters"]), sorted(st["learners"])
    return None


def leader_seen_by(c: Cluster, names: list[str], not_this: str) -> str | None:
    for name in names:
        st = c.status(name)
        if st and st["leader"] != not_this:
            return str(st["leader"])
    return None


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


@pytest.mark.root
@pytest.mark.slow
def test_every_job_runs_exactly_once_per_second_while_leaders_and_workers_die(
    cluster: Cluster, tmp_path: Path
) -> None:
    c = cluster
    report = Report(tmp_path)
    runs: list[dict[str, Any]] = []
    try:
        _scenario(c, report, runs)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{report.summary(runs)}") from None


def _scenario(c: Cluster, report: Report, runs: list[dict[str, Any]]) -> None:
    began = time.monotonic()
    leader, voters, learners = until("3 voters + 2 learners", 90, lambda: formed(c))
    report.note(
        f"formed in {time.monotonic() - began:.1f} s: leader {leader}, "
        f"voters {voters}, learners {learners}"
    )
    names = sorted(c.hosts)

    # 50 jobs, created through the leader in one process
    create = [
        ["job", "create", f"j{i:02d}", "--schedule", "@every 1s", "--command", "true"]
        for i in range(JOBS)
    ]
    created = c.batch(leader, create)
    failed = [r for r in created if r["rc"] != 0]
    assert not failed, f"job create failed: {failed[:3]}"
    jobs = {j["name"]: j for j in (json.loads(r["stdout"]) for r in created)}
    first = {name: math.ceil(epoch(j["created_at"])) for name, j in jobs.items()}
    report.t0 = t0 = time.time()
    report.note(f"{JOBS} jobs created in {created[-1]['end'] - created[0]['start']:.1f} s")

    def kill_leader(what: str, at: float, back: float) -> None:
        sleep_until(t0 + at - LOOK_S)  # asking takes a moment: ask first, kill on time
        st = until("a leader to kill", 20, lambda: leader_seen_by(c, names, ""))
        sleep_until(t0 + at)
        fault = Fault(what, st, c.kill(st))
        report.faults.append(fault)
        others = [n for n in names if n != st]
        fault.new_leader = until(
            f"a new leader after {st} died", 20, lambda: leader_seen_by(c, others, st), pause=0.1
        )
        fault.new_leader_after_s = time.time() - fault.killed_at
        report.note(
            f"kill -9 leader {st}; new leader {fault.new_leader} "
            f"after {fault.new_leader_after_s:.1f} s"
        )
        sleep_until(t0 + back)
        c.start(st)
        fault.back_at = time.time()
        report.note(f"{st} restarted")

    kill_leader("leader", LEADER_KILL_1, LEADER_BACK_1)

    sleep_until(t0 + WORKER_KILL - LOOK_S)
    st = until("the leader", 20, lambda: c.status(names[0]) or c.status(names[1]))
    now_leader = str(st["leader"])
    # a learner never leads: a pure worker; one not killed yet, if there is one
    killed = {f.host for f in report.faults}
    worker = sorted(st["learners"], key=lambda n: (n in killed, n))[0]
    sleep_until(t0 + WORKER_KILL)
    fault = Fault("worker", worker, c.kill(worker))
    report.faults.append(fault)
    report.note(f"kill -9 worker {worker} (leader is {now_leader})")
    sleep_until(t0 + WORKER_BACK)
    c.start(worker)
    fault.back_at = time.time()
    report.note(f"{worker} restarted")

    kill_leader("leader", LEADER_KILL_2, LEADER_BACK_2)

    # stop: pause every job; each pause's stamp ends that job's window
    sleep_until(t0 + STOP_AT)
    now_leader = until("the leader", 20, lambda: leader_seen_by(c, names, ""))
    paused = c.batch(now_leader, [["job", "pause", name] for name in sorted(jobs)])
    failed = [r for r in paused if r["rc"] != 0]
    assert not failed, f"job pause failed: {failed[:3]}"
    stop = {j["name"]: epoch(j["updated_at"]) for j in (json.loads(r["stdout"]) for r in paused)}
    assert all(json.loads(r["stdout"])["paused"] for r in paused)
    report.note(f"paused in {paused[-1]['end'] - paused[0]['start']:.1f} s")

    # settle: nothing scheduled or running any more
    settle_began = time.time()

    def settled() -> bool:
        for state in ("scheduled", "running"):
            left = c.ctl(now_leader, "run", "list", "--state", state, "--limit", "10000")
            if left is None or left:
                return False
        return True

    until("no run scheduled or running (settle)", 60, settled, pause=1.0)
    report.note(f"settled {time.time() - settle_began:.1f} s after the pause")

    # 4. every host's own table, the same everywhere
    tables: dict[str, dict[str, tuple[Any, ...]]] = {}

    def same_tables() -> bool:
        tables.clear()
        for name in names:
            got = c.ctl(name, "run", "list", "--limit", "10000", stale=True, timeout=120)
            if got is None:
                report.note(f"{name} did not answer run list --stale")
                return False
            if name == now_leader:
                runs[:] = got
            tables[name] = {
                r["id"]: (r["state"], r["host"], r["attempt"], r["job_version"]) for r in got
            }
        return len({json.dumps(sorted(t.items())) for t in tables.values()}) == 1

    try:
        until("every host's run table the same", 60, same_tables, pause=2.0)
    except AssertionError:
        base = tables.get(now_leader, {})
        for name, table in sorted(tables.items()):
            diff = sorted(set(table.items()) ^ set(base.items()))
            report.note(
                f"{name}: {len(table)} runs, {len(diff)} differ from {now_leader}: {diff[:6]}"
            )
        raise
    report.note(f"{len(runs)} runs, the same on all {len(names)} hosts")

    problems = check_runs(runs, first, stop, report.faults)
    report.note(report.summary(runs).split("\n", 1)[0])
    report.note("lost/skipped by host at s after T0: " + report.odd_runs(runs))
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])


def check_runs(
    runs: list[dict[str, Any]],
    first: dict[str, int],
    stop: dict[str, float],
    faults: list[Fault],
) -> list[str]:
    """Checks 1-3 of the module docstring; one line per broken rule."""
    problems: list[str] = []
    seen: dict[str, set[int]] = {job: set() for job in first}
    for run in runs:
        job, at = run["job"], instant_of(run["id"])
        what = f"{run['id']} state={run['state']} host={run['host']} reason={run['reason']}"
        if job not in first:
            problems.append(f"run of an unknown job: {what}")
            continue
        if at != int(at):
            problems.append(f"a run for a fraction of a second: {what}")
            continue
        seen[job].add(int(at))
        if at < first[job]:
            problems.append(f"a run before the job's first instant {first[job]}: {what}")
        if at > stop[job] + AFTER_PAUSE_S:
            problems.append(f"a run {at - stop[job]:.1f} s after the job was paused: {what}")
        if run["reason"] != "schedule":
            problems.append(f"reason is not 'schedule' (see the module doc, check 1): {what}")
        if run["attempt"] != 1:
            problems.append(f"{run['attempt']} attempts (retries is 0): {what}")
        if run["state"] not in FINAL:
            problems.append(f"not final after the settle period: {what}")
        elif run["state"] not in EXPECTED:
            problems.append(f"`true` cannot end {run['state']}: {what} message={run['message']!r}")
        if run["state"] == "lost" and not any(
            f.host == run["host"] and f.covers(at) for f in faults
        ):
            problems.append(f"lost away from any death of its host: {what}")
        if run["state"] == "skipped":
            by_pause = "paused" in (run["message"] or "") and at >= stop[job] - AFTER_PAUSE_S
            if not by_pause and not any(f.covers(at) for f in faults):
                problems.append(f"skipped away from the faults: {what} message={run['message']!r}")
    for job in sorted(first):
        due = range(first[job], math.ceil(stop[job]))
        missing = [t for t in due if t not in seen[job]]
        if missing:
            problems.append(
                f"{job}: {len(missing)} of {len(due)} seconds have no run, e.g. "
                + ", ".join(datetime.fromtimestamp(t, UTC).isoformat() for t in missing[:5])
            )
    return problems


def _run(
    job: str, at: int, state: str = "succeeded", host: str = "h1", **over: Any
) -> dict[str, Any]:
    iso = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    run = {"id": f"{job}@{iso}", "job": job, "state": state, "host": host,
           "reason": "schedule", "attempt": 1, "message": None}  # fmt: skip
    run.update(over)
    return run


def test_the_checks_flag_missing_stray_stuck_and_unexplained_runs() -> None:
    """check_runs, on made-up tables: quiet on a good one, one line per broken rule otherwise."""
    start, stop = 1_800_000_000, 1_800_000_010.4  # instants 0..10 are due, 11 is not
    death = [Fault("worker", "h2", start + 4.5, start + 6.0)]
    good = [_run("a", t) for t in range(start, start + 11)]
    good[5] = _run("a", start + 5, "lost", "h2")  # the host died around it
    good.append(_run("a", start + 11, "skipped", message="job 'a' is paused"))
    assert check_runs(good, {"a": start}, {"a": stop}, death) == []

    bad = [r for r in good if r["id"] != good[3]["id"]]  # a missing second
    bad[0] = _run("a", start, "running")  # stuck
    bad[1] = _run("a", start + 1, "lost", "h3")  # lost far from any death of h3
    bad[2] = _run("a", start + 2, reason="catch-up", attempt=2)
    bad += [_run("a", start - 1), _run("a", start + 14, "skipped"), _run("b", start)]
    problems = check_runs(bad, {"a": start}, {"a": stop}, death)
    expected = ["not final", "lost away", "reason is not", "2 attempts", "before the job's first"]
    expected += ["after the job was paused", "unknown job", "1 of 11 seconds have no run"]
    for text in expected:
        assert sum(text in p for p in problems) == 1, (text, problems)
    assert len(problems) == len(expected) + 1, problems  # + the skip 3.6 s after the pause
