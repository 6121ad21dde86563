"""A deterministic stand-in for ``LocalProcessRunner``: simulated processes on a simulated host.

Theory of operation: a ``FakeHost`` holds the simulated processes; they
outlive any one ``FakeProcessRunner`` attached to it, as real processes
outlive a crashed daemon. Each attempt follows a ``Behaviour`` chosen by the
test (exit with a code after N seconds, die by a signal, hang, ignore
SIGTERM, print some bytes) and obeys the real runner's rules: SIGTERM at the
deadline or on ``kill``, SIGKILL after the grace for a process that ignores
SIGTERM, output capped with the same trailer.

The host is a pure core driven with explicit instants (``start``,
``request_stop``, ``next_event``, ``advance``), so the simulator can step it
from its own event queue; ``FakeProcessRunner`` is the trio adapter that
implements the ``ProcessRunner`` seam on trio's clock (use it under
``MockClock(autojump_threshold=0)``), stamping results with an injected
wall clock.
"""

from __future__ import annotations

import math
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import final

import trio

from dcrond.errors import InvalidRequest, NotFound
from dcrond.runner import (
    Outcome,
    Recovered,
    RunHandle,
    RunnerStatistics,
    RunResult,
    RunSpec,
    trailer,
)


@final
@dataclass(frozen=True, slots=True)
class Behaviour:
    """What one simulated attempt does."""

    exit_code: int | None = 0  #: None: runs until stopped (a hang), unless ``signal`` is set
    after: float = 0.0  #: seconds from its start to its own exit
    signal: int | None = None  #: dies by this signal (one dcrond did not send) after ``after``
    output: bytes = b""  #: printed at its start
    ignores_term: bool = False  #: survives SIGTERM; only SIGKILL ends it
    records_status: bool = True  #: False: an exit while no daemon watches leaves no status

    @staticmethod
    def exits(code: int, after: float = 0.0, output: bytes = b"") -> Behaviour:
        """Exits with ``code`` after ``after`` seconds."""
        return Behaviour(exit_code=code, after=after, output=output)

    @staticmethod
    def hangs(*, ignores_term: bool = False, output: bytes = b"") -> Behaviour:
        """Never exits by itself."""
        return Behaviour(exit_code=None, ignores_term=ignores_term, output=output)

    @staticmethod
    def dies(sig: int, after: float = 0.0) -> Behaviour:
        """Is killed by ``sig`` (sent by someone else) after ``after`` seconds."""
        return Behaviour(exit_code=None, signal=sig, after=after)


@final
@dataclass(slots=True)
class FakeProcess:
    """One simulated attempt on the host."""

    spec: RunSpec
    behaviour: Behaviour
    pid: int
    started: float  #: host clock
    started_at: float  #: wall clock
    output: bytes  #: what the spool keeps (capped)
    kill_time: float | None = None  #: when ``kill`` asked for a stop
    result: RunResult | None = None
    reported: bool = False  #: some runner has returned its result

    def natural_end(self) -> float:
        """When it would end by itself."""
        b = self.behaviour
        if b.exit_code is None and b.signal is None:
            return math.inf
        return self.started + b.after

    def stopping(self) -> tuple[float, Outcome] | None:
        """When dcrond starts stopping it, and why (None if it ends first)."""
        deadline = math.inf if self.spec.timeout is None else self.started + self.spec.timeout
        kill = math.inf if self.kill_time is None else self.kill_time
        t = min(deadline, kill)
        if t >= self.natural_end():
            return None
        return t, (Outcome.KILLED if kill <= deadline else Outcome.TIMED_OUT)

    def end_time(self) -> float:
        """When it ends, given what is known now."""
        stop = self.stopping()
        if stop is None:
            return self.natural_end()
        if self.behaviour.ignores_term:
            return min(self.natural_end(), stop[0] + self.spec.kill_grace)
        return stop[0]


@final
class FakeHost:
    """Simulated processes of one host, driven with explicit instants."""

    def __init__(self, *, wall_offset: float = 1_800_000_000.0) -> None:
        self.processes: dict[tuple[str, int], FakeProcess] = {}
        self.wall_offset = wall_offset  #: wall clock = host clock + this
        self._next_pid = 1000

    def start(self, spec: RunSpec, behaviour: Behaviour, now: float) -> FakeProcess:
        """Start an attempt at ``now``."""
        key = (spec.run_id, spec.attempt)
        live = self.processes.get(key)
        if live is not None and live.result is None:
            raise InvalidRequest(f"attempt {spec.attempt} of {spec.run_id} is already running")
        self._next_pid += 1
        kept = behaviour.output[: spec.output_cap]
        p = FakeProcess(spec, behaviour, self._next_pid, now, now + self.wall_offset, kept)
        self.processes[key] = p
        return p

    def request_stop(self, run_id: str, now: float) -> bool:
        """SIGTERM every live attempt of ``run_id`` (SIGKILL follows after the grace)."""
        found = False
        for p in self.processes.values():
            if p.spec.run_id == run_id and p.result is None:
                found = True
                if p.kill_time is None:
                    p.kill_time = now
        return found

    def next_event(self) -> float:
        """The next instant at which some attempt ends (inf if none will)."""
        ends = [p.end_time() for p in self.processes.values() if p.result is None]
        return min(ends, default=math.inf)

    def advance(self, now: float) -> list[RunResult]:
        """End every attempt due by ``now``; their results, in end order."""
        due = sorted(
            (p for p in self.processes.values() if p.result is None and p.end_time() <= now),
            key=lambda p: (p.end_time(), p.pid),
        )
        out: list[RunResult] = []
        for p in due:
            p.result = self._result(p)
            out.append(p.result)
        return out

    def _result(self, p: FakeProcess) -> RunResult:
        b, end, stop = p.behaviour, p.end_time(), p.stopping()
        exit_code: int | None = None
        sig: int | None = None
        if end < p.natural_end():
            assert stop is not None
            sig = signal.SIGKILL if b.ignores_term else signal.SIGTERM
        elif b.signal is not None:
            sig = b.signal
        else:
            exit_code = b.exit_code
        if stop is not None:
            state = stop[1]
        elif exit_code == 0:
            state = Outcome.SUCCEEDED
        else:
            state = Outcome.FAILED
        discarded = len(b.output) - len(p.output)
        return RunResult(
            run_id=p.spec.run_id,
            attempt=p.spec.attempt,
            state=state,
            exit_code=exit_code,
            signal=sig,
            started_at=p.started_at,
            finished_at=end + self.wall_offset,
            output_bytes=len(p.output),
            discarded_bytes=discarded,
            truncated=discarded > 0,
            spool_path=_spool(p),
        )


def _spool(p: FakeProcess) -> Path:
    return Path("/fake/spool") / f"{p.spec.run_id}.{p.spec.attempt}.log"


def _handle(p: FakeProcess, *, adopted: bool = False) -> RunHandle:
    return RunHandle(p.spec.run_id, p.spec.attempt, p.pid, p.started_at, _spool(p), adopted)


@final
class FakeProcessRunner:
    """The ``ProcessRunner`` seam over a ``FakeHost``, on trio's clock.

    ``behaviour`` is one ``Behaviour`` for every attempt or a function of
    the ``RunSpec``. The host's clock is ``trio.current_time()``. A new
    runner on the same host after the old one is dropped plays a daemon
    restart: ``recover`` re-adopts what still runs and reports what ended
    (``lost`` for behaviours that do not record a status).
    """

    def __init__(
        self,
        host: FakeHost | None = None,
        behaviour: Behaviour | Callable[[RunSpec], Behaviour] = Behaviour(),
    ) -> None:
        self.host = host if host is not None else FakeHost()
        self._behaviour = behaviour
        self._mine: set[tuple[str, int]] = set()
        self._changed = trio.Event()
        self._started = 0
        self._adopted = 0
        self._finished: dict[Outcome, int] = dict.fromkeys(Outcome, 0)

    def _pick(self, spec: RunSpec) -> Behaviour:
        b = self._behaviour
        return b if isinstance(b, Behaviour) else b(spec)

    async def _wait(self, p: FakeProcess) -> RunResult:
        while p.result is None:
            changed = self._changed
            with trio.move_on_at(p.end_time()):
                await changed.wait()
            self.host.advance(trio.current_time())
        self._mine.discard((p.spec.run_id, p.spec.attempt))
        p.reported = True
        self._finished[p.result.state] += 1
        self._notify()
        return p.result

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(
        self,
        spec: RunSpec,
        *,
        task_status: trio.TaskStatus[RunHandle] = trio.TASK_STATUS_IGNORED,
    ) -> RunResult:
        """Run one simulated attempt to its end."""
        p = self.host.start(spec, self._pick(spec), trio.current_time())
        self._mine.add((spec.run_id, spec.attempt))
        self._started += 1
        task_status.started(_handle(p))
        return await self._wait(p)

    async def supervise(self, handle: RunHandle) -> RunResult:
        """Watch a re-adopted attempt to its end."""
        key = (handle.run_id, handle.attempt)
        p = self.host.processes.get(key)
        if p is None or key not in self._mine:
            raise InvalidRequest(f"attempt {handle.attempt} of {handle.run_id} is not adopted")
        return replace(await self._wait(p), adopted=True)

    def kill(self, run_id: str) -> bool:
        """SIGTERM the live attempts of ``run_id`` now."""
        found = self.host.request_stop(run_id, trio.current_time())
        self._notify()
        return found

    def follow(self, run_id: str, attempt: int, offset: int = 0) -> AsyncIterator[bytes]:
        """The attempt's output from ``offset``, completed when the attempt ends."""
        p = self.host.processes.get((run_id, attempt))
        if p is None:
            raise NotFound(f"no output for attempt {attempt} of {run_id}")
        return self._follow(p, offset)

    async def _follow(self, p: FakeProcess, offset: int) -> AsyncIterator[bytes]:
        if p.output[offset:]:
            yield p.output[offset:]
        while p.result is None:
            await self._changed.wait()
        if p.result.truncated:
            yield trailer(p.result.output_bytes, p.result.discarded_bytes)

    def recover(self) -> list[Recovered]:
        """Re-adopt what still runs on the host; report what ended unwatched."""
        now = trio.current_time()
        self.host.advance(now)
        found: list[Recovered] = []
        for key, p in sorted(self.host.processes.items()):
            if key in self._mine or p.reported:
                continue
            if p.result is None:
                self._mine.add(key)
                self._adopted += 1
                found.append(Recovered(key[0], key[1], _handle(p, adopted=True), None))
                continue
            res = replace(p.result, adopted=True)
            if not p.behaviour.records_status and p.stopping() is None:
                res = replace(res, state=Outcome.LOST, exit_code=None, signal=None)
            p.reported = True
            self._finished[res.state] += 1
            found.append(Recovered(key[0], key[1], None, res))
        return found

    def statistics(self) -> RunnerStatistics:
        """Counters since this runner was created."""
        f = self._finished
        return RunnerStatistics(
            running=sum(1 for k in self._mine if self.host.processes[k].result is None),
            started=self._started,
            adopted=self._adopted,
            succeeded=f[Outcome.SUCCEEDED],
            failed=f[Outcome.FAILED],
            timed_out=f[Outcome.TIMED_OUT],
            killed=f[Outcome.KILLED],
            lost=f[Outcome.LOST],
        )
