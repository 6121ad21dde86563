"""Fire lag: from a run's instant to the first instruction of its process, as the child saw it.

    .venv/bin/python bench/fire.py [--seconds 20] [--burst 1000] [--table 100000] [--dir DIR]

Builds a tiny static C program (``gcc -static``; Debian's ``gcc`` and
``libc6-dev``, installed by ``make bench``) whose first act is to read
CLOCK_REALTIME; it then appends ``<instant> <clock>`` to ``$FIRE_OUT``. Every
figure below is "the child's clock minus the instant it was due", measured
in one run, one after the other (never two at once), in this process:

1. **floor**: this process spins to an instant and calls ``subprocess.Popen``
   on the program (the cost of a start from Python, nothing else); also the
   time of one ``Popen(["/bin/true"])`` call; and **the runner alone**: the
   same spin, then ``LocalProcessRunner.run`` (its spawner and bookkeeping,
   without the engine), one at a time and ``--burst`` at one instant (one
   task each, as the engine starts them);
2. **APScheduler 3.x** (``BackgroundScheduler``, cron trigger every second,
   its default thread pool): the lag of its callbacks, and of a callback that
   starts the program;
3. **dcrond**: a one-voter Raft log (fsync on), the real job table,
   ``LocalProcessRunner`` and ``file://`` storage in a temp dir, and the
   ``Engine``; a job every second for ``--seconds`` (a script job whose
   interpreter is the program, as docs/runs.md measures);
4. **burst**: ``--burst`` jobs due in the same second, for dcrond and for
   APScheduler (callbacks, and callbacks that start the program): p50, p99,
   and max (when the last one started); for the runner alone and dcrond
   also the CPU per start of the daemon (this process), of the runner's
   spawner, and of the jobs (which the spawner reaps);
5. **table**: ``--table`` more jobs in the table (1,440 different
   schedules in 3 zones, none due during the bench, a tenth paused), the
   engine restarted: how long the scheduler takes to load them, whether the
   every-second job skipped or doubled an instant, and its lag while and
   after the load runs.

Compare ratios, not figures: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from dcrond.config import Config, JobsConfig, NodeConfig, RunnerConfig
from dcrond.engine import Engine
from dcrond.engine._table import iso_ms
from dcrond.replica import Replica
from dcrond.runner import LocalProcessRunner, RunSpec
from dcrond.store import CreateJob, JobSpec, PauseJob, ResumeJob, format_instant, unwrap
from dcrond.store._blobs import Blobs
from dcrond.testing._replica import local_replica

PROGRAM = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);           /* the first thing the job does */
    const char *tag = getenv("DCROND_SCHEDULED_AT");
    if (!tag) tag = argc > 1 ? argv[1] : "-";
    char line[256];
    int n = snprintf(line, sizeof line, "%s %lld.%09ld\n", tag, (long long)ts.tv_sec, ts.tv_nsec);
    const char *out = getenv("FIRE_OUT");
    int fd = out ? open(out, O_WRONLY | O_APPEND | O_CREAT, 0644) : 1;
    return write(fd, line, n) == n ? 0 : 1;
}
"""

Lags = list[float]


def build_program(folder: Path) -> Path:
    """Compile the clock program; exit with a hint if there is no compiler."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        sys.exit("bench/fire.py needs gcc and libc6-dev (make bench installs them)")
    src, exe = folder / "clock.c", folder / "clock"
    src.write_text(PROGRAM)
    subprocess.run([cc, "-O2", "-static", "-o", str(exe), str(src)], check=True)
    return exe


def read_lags(path: Path) -> list[tuple[str, float]]:
    """``FIRE_OUT`` lines -> [(instant tag, lag in ms)], one per start."""
    out: list[tuple[str, float]] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        tag, _, clock = line.partition(" ")
        due = iso_ms(tag) / 1000 if tag.endswith("Z") else float(tag)
        out.append((tag, (float(clock) - due) * 1000))
    return out


def lags_of(path: Path) -> Lags:
    """The lags in a ``FIRE_OUT`` file."""
    return [lag for _tag, lag in read_lags(path)]


def count_lines(path: Path) -> int:
    """Lines in a file (0 if there is none)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def summary(lags: Lags) -> str:
    """``p50 / p99 / max`` in ms."""
    if not lags:
        return "(none)"
    s = sorted(lags)
    p99 = s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)]
    return f"p50 {statistics.median(s):7.2f}  p99 {p99:7.2f}  max {s[-1]:7.2f}  (n={len(s)})"


def quantiles(lags: Lags) -> tuple[float, float, float]:
    """(p50, p99, max)."""
    s = sorted(lags)
    return statistics.median(s), s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)], s[-1]


def spin_until(instant: float) -> None:
    """Busy-wait to ``instant`` (the floor must not pay for a timer's wake-up)."""
    while time.time() < instant:
        pass


def cpu_self() -> float:
    """CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_of(pid: int | None) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a process, from /proc (0, 0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


class CpuMeter:
    """CPU per start of the daemon, the spawner and the jobs, over one burst."""

    def __init__(self, spawner: int | None) -> None:
        self.spawner = spawner
        self.start = (cpu_self(), *cpu_of(spawner))

    def per_start(self, n: int) -> tuple[float, float, float]:
        """(daemon, spawner, jobs) ms per start since creation."""
        now = (cpu_self(), *cpu_of(self.spawner))
        d, s, j = (b - a for a, b in zip(self.start, now, strict=True))
        return d / n * 1000, s / n * 1000, j / n * 1000


# --- 1. the floor ---------------------------------------------------------------------


def floor(program: Path, folder: Path, n: int) -> tuple[Lags, Lags]:
    """Popen at an instant -> the child's first instruction; and a Popen of /bin/true."""
    out = folder / "floor.out"
    env = {"FIRE_OUT": str(out)}
    procs = []
    for i in range(n):
        instant = time.time() + 0.02 + (i % 7) * 0.0011
        spin_until(instant)
        procs.append(subprocess.Popen([str(program), repr(instant)], env=env))
        time.sleep(0.01)
    for p in procs:
        p.wait()
    calls: Lags = []
    for _ in range(n):
        t0 = time.perf_counter()
        p = subprocess.Popen(["/bin/true"])
        calls.append((time.perf_counter() - t0) * 1000)
        p.wait()
    return lags_of(out), calls


# --- 2. APScheduler ---------------------------------------------------------------------


def apscheduler_lags(program: Path, folder: Path, *, seconds: int, burst: int) -> dict[str, Lags]:
    """APScheduler 3.x: callback lag and callback+Popen lag, one job and a burst."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    out: dict[str, Lags] = {}
    lock = threading.Lock()

    def run(name: str, jobs: int, spawn: bool, trigger_for: Callable[[], Any], wait: float) -> None:
        lags: Lags = []
        fire_out = folder / f"aps-{name}.out"
        env = {"FIRE_OUT": str(fire_out)}
        children: list[subprocess.Popen[bytes]] = []

        def callback() -> None:
            now = time.time()
            due = math.floor(now)
            if spawn:
                p = subprocess.Popen([str(program), repr(float(due))], env=env)
                with lock:
                    children.append(p)
            else:
                with lock:
                    lags.append((now - due) * 1000)

        sched = BackgroundScheduler(timezone=UTC)
        for _ in range(jobs):
            sched.add_job(callback, trigger_for(), misfire_grace_time=30, max_instances=10)
        sched.start()
        time.sleep(wait)
        sched.shutdown(wait=True)
        for p in children:
            p.wait()
        out[name] = lags_of(fire_out) if spawn else lags

    every_second = lambda: CronTrigger(second="*", timezone=UTC)  # noqa: E731
    run("one", 1, False, every_second, seconds + 0.5)
    run("one+spawn", 1, True, every_second, seconds + 0.5)
    for spawn in (False, True):
        at = datetime.fromtimestamp(math.ceil(time.time()) + 2, UTC)
        same_second = lambda at=at: CronTrigger(  # noqa: E731
            second=at.second, minute=at.minute, hour=at.hour, timezone=UTC
        )
        run("burst+spawn" if spawn else "burst", burst, spawn, same_second, 5.0)
    return out


# --- 3-5. dcrond ---------------------------------------------------------------------


async def create_jobs(replica: Replica, specs: list[JobSpec], parallel: int = 256) -> None:
    """Create jobs through the log, ``parallel`` proposals in flight."""
    it = iter(specs)

    async def worker() -> None:
        for spec in it:
            unwrap(await replica.propose(CreateJob(**replica.stamp("bench"), job=spec)))  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        for _ in range(parallel):
            nursery.start_soon(worker)


def clock_job(name: str, schedule: str, program: Path, fire_out: Path) -> JobSpec:
    """A job run by the clock program (as the interpreter of an empty script)."""
    return JobSpec(
        name=name,
        schedule=schedule,
        script={"sha256": EMPTY_SHA, "size": 0},  # type: ignore[arg-type]
        interpreter=str(program),
        env={"FIRE_OUT": str(fire_out)},
    )


EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


async def wait_lines(path: Path, n: int, timeout: float) -> None:
    """Wait until ``path`` has ``n`` lines (or ``timeout`` passes)."""
    deadline = trio.current_time() + timeout
    while trio.current_time() < deadline:
        if count_lines(path) >= n:
            return
        await trio.sleep(0.1)


async def runner_alone(program: Path, folder: Path, *, n: int, burst: int) -> dict[str, Any]:
    """The runner without the engine: spin to an instant, ``LocalProcessRunner.run``.

    ``n`` single starts 50 ms apart, then ``burst`` started back to back at one
    instant: what the engine's figures are compared with to see its own share.
    """
    runner = LocalProcessRunner(folder / "runner-work", spares=burst)  # as dcrond's below
    script = folder / "empty-script"
    script.write_bytes(b"")
    out: dict[str, Any] = {}
    try:
        for name, count, apart in (("one", n, 0.05), ("burst", burst, 0.0)):
            fire_out = folder / f"runner-{name}.out"
            instant = math.ceil(time.time()) + 1.0
            meter = CpuMeter(runner.spawner_pid)
            async with trio.open_nursery() as nursery:
                for i in range(count):
                    at = instant + i * apart
                    tag = format_instant(round(at * 1000))
                    if i == 0 or apart:
                        await trio.sleep_until(trio.current_time() + (at - time.time()) - 0.002)
                        spin_until(at)
                    spec = RunSpec(
                        run_id=f"{name}{i}@{tag}",
                        script=script,
                        interpreter=str(program),
                        env={"FIRE_OUT": str(fire_out), "DCROND_SCHEDULED_AT": tag},
                    )
                    if apart:
                        await nursery.start(runner.run, spec)
                    else:  # the burst: every start requested at the instant
                        nursery.start_soon(runner.run, spec)
            out[name] = lags_of(fire_out)
            out[f"{name}_cpu"] = meter.per_start(count)
    finally:
        runner.close()
    return out


async def dcrond_lags(
    program: Path, folder: Path, *, seconds: int, burst: int, table: int
) -> dict[str, Any]:
    """Phases 3-5 on one node; returns the lags and the load time."""
    data = folder / "node"
    config = Config(
        node=NodeConfig(name="bench", data_dir=str(data)),
        runner=RunnerConfig(slots=burst + 64, output_cap_bytes=4096),
        jobs=JobsConfig(keep_runs=0, keep_days=0),
    )
    results: dict[str, Any] = {}
    async with local_replica(data / "raft", fsync=True) as replica:
        blobs = Blobs((data / "objects").as_uri(), cache_dir=data / "cache")
        assert await blobs.put_script(b"") == EMPTY_SHA

        runners: list[LocalProcessRunner] = []

        async def start_engine(nursery: trio.Nursery) -> Engine:
            runners.append(LocalProcessRunner(data / "work", spares=config.runner.slots))
            engine = Engine(replica, runners[-1], blobs, config, host="bench")
            await nursery.start(engine.run)
            return engine

        async def pause(name: str, paused: bool) -> None:
            cls = PauseJob if paused else ResumeJob
            unwrap(await replica.propose(cls(**replica.stamp("bench"), name=name)))  # type: ignore[arg-type]

        async with trio.open_nursery() as nursery:
            engine = await start_engine(nursery)
            # 3. one job every second
            tick_out = folder / "tick.out"
            await create_jobs(replica, [clock_job("tick", "* * * * * *", program, tick_out)])
            await trio.sleep(seconds + 0.5)
            await pause("tick", True)
            await trio.sleep(0.5)
            results["one"] = lags_of(tick_out)
            results["one_engine_p50"] = engine.statistics().fire_lag_p50_ms
            # 4. a burst: ``burst`` jobs due in the same second
            burst_out = folder / "burst.out"
            at = datetime.fromtimestamp(math.ceil(time.time()) + 8 + burst // 250, UTC)
            expr = f"{at.second} {at.minute} {at.hour} {at.day} {at.month} *"
            t0 = time.perf_counter()
            await create_jobs(
                replica, [clock_job(f"b{i:05d}", expr, program, burst_out) for i in range(burst)]
            )
            created = time.perf_counter() - t0
            if time.time() > at.timestamp() - 1:
                print(f"warning: creating {burst} jobs took {created:.1f} s; the burst is late")
            await trio.sleep_until(trio.current_time() + at.timestamp() - time.time() - 0.05)
            meter = CpuMeter(runners[-1].spawner_pid)
            await wait_lines(burst_out, burst, 30)
            results["burst_cpu"] = meter.per_start(burst)
            results["burst"] = lags_of(burst_out)
            # 5. a big table, the engine restarted while a job fires every second
            if table:
                t0 = time.perf_counter()
                zones = ("UTC", "Europe/Berlin", "America/New_York")
                await create_jobs(
                    replica,
                    [
                        JobSpec(
                            name=f"t{i:06d}",
                            # 1,440 different times of day, on January 1st: never due here
                            schedule=f"{i % 60} {(i // 60) % 24} 1 1 *",
                            timezone=zones[i % 3],
                            command="true",
                            paused=i % 10 == 0,
                        )
                        for i in range(table)
                    ],
                )
                results["table_create_s"] = time.perf_counter() - t0
                await engine.shutdown()
                runners[-1].close()
                tick_out.rename(folder / "tick.before")
                await pause("tick", False)
                resumed = time.time()
                engine = await start_engine(nursery)
                with trio.fail_after(120):
                    while engine.statistics().load_seconds is None:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                results["load_s"] = engine.statistics().load_seconds
                results["heap_jobs"] = engine.statistics().jobs
                await trio.sleep(seconds / 2 + 0.5)
                await pause("tick", True)
                await trio.sleep(0.5)
                lags = read_lags(tick_out)
                results["table"] = [lag for _tag, lag in lags]
                instants = sorted({iso_ms(t) // 1000 for t, _lag in lags})
                # every instant from the one after the resume on ran, once
                results["skipped"] = (instants[-1] - math.floor(resumed)) - len(instants)
                results["doubled"] = len(lags) - len(instants)
            await engine.shutdown()
            runners[-1].close()
            nursery.cancel_scope.cancel()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=20, help="seconds of the every-second job")
    ap.add_argument("--burst", type=int, default=1000, help="jobs due in the same second")
    ap.add_argument("--table", type=int, default=100_000, help="jobs in the big table (0: skip)")
    ap.add_argument("--floor", type=int, default=300, help="starts measured for the floor")
    ap.add_argument("--dir", type=Path, help="work in this folder (default: a temp dir)")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="dcrond-fire-", dir=args.dir))
    try:
        program = build_program(folder)
        print(f"bench/fire.py: seconds={args.seconds} burst={args.burst} table={args.table}")
        print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
        floor_lags, true_calls = floor(program, folder, args.floor)
        aps = apscheduler_lags(program, folder, seconds=args.seconds, burst=args.burst)
        alone = trio.run(lambda: runner_alone(program, folder, n=args.floor, burst=args.burst))
        ours = trio.run(
            lambda: dcrond_lags(
                program, folder, seconds=args.seconds, burst=args.burst, table=args.table
            )
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print()
    print("fire lag, ms (the child's clock minus the instant)")
    rows = [
        ("floor: Popen -> first instruction", floor_lags),
        ("floor: Popen(/bin/true) call", true_calls),
        ("runner alone: spin + LocalProcessRunner.run", alone["one"]),
        ("APScheduler 1 job/s: callback", aps["one"]),
        ("APScheduler 1 job/s: callback + Popen", aps["one+spawn"]),
        ("dcrond 1 job/s", ours["one"]),
        (f"APScheduler {args.burst} in 1 s: callback", aps["burst"]),
        (f"APScheduler {args.burst} in 1 s: + Popen", aps["burst+spawn"]),
        (f"runner alone: {args.burst} one after another", alone["burst"]),
        (f"dcrond {args.burst} in 1 s", ours["burst"]),
    ]
    if args.table:
        rows.append((f"dcrond 1 job/s, {args.table} in table", ours["table"]))
    for name, lags in rows:
        print(f"  {name:<42} {summary(lags)}")
    print()
    f50, f99, _ = quantiles(floor_lags)
    o50, o99, _ = quantiles(ours["one"])
    a50, a99, _ = quantiles(aps["one+spawn"])
    print(f"dcrond 1 job/s vs floor:             p50 x{o50 / f50:.1f}  p99 x{o99 / f99:.1f}")
    r50, r99, _ = quantiles(alone["one"])
    print(f"dcrond 1 job/s vs APScheduler+Popen: p50 x{o50 / a50:.2f}  p99 x{o99 / a99:.2f}")
    print(f"dcrond 1 job/s vs the runner alone:  p50 x{o50 / r50:.2f}  p99 x{o99 / r99:.2f}")
    b = ours["burst"]
    a = aps["burst+spawn"]
    print(
        f"burst: {len(b)}/{args.burst} started, the last {max(b):.0f} ms after the instant "
        f"(APScheduler+Popen: {len(a)} started, the last {max(a):.0f} ms after; the runner "
        f"alone, back to back: the last {max(alone['burst']):.0f} ms after)"
    )
    for name, (d, sp, j) in (
        ("runner alone", alone["burst_cpu"]),
        ("dcrond", ours["burst_cpu"]),
    ):
        print(
            f"CPU per start in the burst, {name}: daemon {d:.2f} ms, spawner {sp:.2f} ms, "
            f"jobs {j:.2f} ms (total {d + sp + j:.2f} ms; {os.cpu_count()} CPUs)"
        )
    if args.table:
        t50, t99, _ = quantiles(ours["table"])
        print(
            f"table: created {args.table} jobs in {ours['table_create_s']:.1f} s; the scheduler "
            f"loaded {ours['heap_jobs']} into its heap in {ours['load_s']:.2f} s after the "
            f"restart; every-second job: {ours['skipped']} instants skipped, "
            f"{ours['doubled']} doubled, p50 x{t50 / o50:.2f} and p99 x{t99 / o99:.2f} of the "
            "small table's"
        )


if __name__ == "__main__":
    main()
