"""Simulated key-value clients: they retry, time out, and record a history.

Theory of operation: each client runs one operation at a time. It sends the
operation to the node it believes leads (or any node), and retries — on a
"not the leader" answer, on a refusal, on a timeout — always with the *same*
session id and sequence number, so the state machine applies a write once no
matter how many copies reach the log. An operation gets a final answer, or,
after ``give_up_us`` of retrying, the client records its outcome as unknown
(it may still take effect later) and moves on.

Reads go two ways: through the log (a GET command) or through ReadIndex
(each attempt with a fresh request id — reusing ids gave etcd stale reads).

The history (invocation and completion instants, results) feeds the
linearizability checker at the end of the run.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import final

from dcrond.raft._types import NodeId
from dcrond.testing._kv import Command, Op, Result
from dcrond.testing._linearizability import Operation


class Status(enum.IntEnum):
    """How a node answered one attempt."""

    OK = 0
    NOT_LEADER = 1  #: not proposed: try the hinted leader
    RETRY = 2  #: refused or overtaken (read refused, entry replaced): try again


@final
@dataclass(frozen=True, slots=True)
class Request:
    """One attempt of a client operation, on its way to a node."""

    client: int
    attempt: int
    command: Command
    read_index: bool  #: serve this GET with ReadIndex instead of through the log


@final
@dataclass(frozen=True, slots=True)
class Response:
    """A node's answer to one attempt."""

    attempt: int
    status: Status
    result: Result = None
    leader: NodeId | None = None


@final
class SimClient:
    """One client session issuing put/get/cas operations against the cluster."""

    __slots__ = (
        "_known",
        "_rng",
        "attempt",
        "attempts",
        "give_up_us",
        "hint",
        "history",
        "index",
        "invoked_at",
        "keys",
        "name",
        "pending",
        "read_index",
        "seq",
        "timeout_us",
    )

    def __init__(self, index: int, rng: random.Random, keys: int, give_up_us: int) -> None:
        self.index = index
        self.name = f"c{index}"
        self._rng = rng
        self.keys = [f"k{i}" for i in range(keys)]
        self.give_up_us = give_up_us
        #: how long one attempt waits for an answer (clients differ: some are patient)
        self.timeout_us = rng.choice((200_000, 500_000, 1_500_000))
        self.seq = 0
        self.attempt = 0
        self.attempts = 0
        self.pending: Command | None = None
        self.read_index = False
        self.invoked_at = 0
        self.hint: NodeId | None = None
        self.history: list[Operation] = []
        #: the last value this client saw per key (to make CAS succeed now and then)
        self._known: dict[str, str | None] = {}

    @property
    def busy(self) -> bool:
        """True while an operation awaits its final answer."""
        return self.pending is not None

    def invoke(self, now: int) -> Request:
        """Start the next operation and return its first attempt."""
        rng = self._rng
        self.seq += 1
        key = rng.choice(self.keys)
        roll = rng.random()
        value = f"{self.name}.{self.seq}"
        if roll < 0.4:
            cmd = Command(Op.PUT, self.name, self.seq, key, value)
        elif roll < 0.8:
            cmd = Command(Op.GET, self.name, self.seq, key)
        else:
            expected = self._known.get(key) if rng.random() < 0.8 else f"c0.{rng.randrange(9)}"
            cmd = Command(Op.CAS, self.name, self.seq, key, expected, value)
        self.pending = cmd
        self.read_index = cmd.op == Op.GET and rng.random() < 0.5
        self.invoked_at = now
        return self._attempt()

    def _attempt(self) -> Request:
        assert self.pending is not None
        self.attempt += 1
        self.attempts += 1
        return Request(self.index, self.attempt, self.pending, self.read_index)

    def target(self, nodes: list[NodeId]) -> NodeId:
        """Where to send the next attempt: the hinted leader, else any node."""
        if self.hint is not None and self.hint in nodes and self._rng.random() < 0.9:
            return self.hint
        return self._rng.choice(nodes)

    def on_response(self, now: int, resp: Response) -> Request | None:
        """Handle a node's answer; returns the next attempt to send, if any."""
        if self.pending is None or resp.attempt != self.attempt:
            return None  # an answer to an attempt we stopped waiting for
        if resp.status == Status.OK:
            self._complete(now, resp.result)
            return None
        if resp.status == Status.NOT_LEADER:
            self.hint = resp.leader
        else:
            self.hint = None
        return self.retry(now)

    def on_timeout(self, now: int, attempt: int) -> Request | None:
        """An attempt went unanswered; returns the next attempt, if any."""
        if self.pending is None or attempt != self.attempt:
            return None
        self.hint = None
        return self.retry(now)

    def retry(self, now: int) -> Request | None:
        """Try again with the same session and sequence number, or give up."""
        if now - self.invoked_at >= self.give_up_us:
            self.give_up()
            return None
        return self._attempt()

    def give_up(self) -> None:
        """Stop waiting: the operation's outcome is unknown."""
        cmd = self.pending
        if cmd is None:
            return
        self.history.append(
            Operation(self.name, cmd.op, cmd.key, self.invoked_at, None, cmd.arg, cmd.arg2)
        )
        self.pending = None
        self._known.pop(cmd.key, None)

    def _complete(self, now: int, result: Result) -> None:
        cmd = self.pending
        assert cmd is not None
        self.history.append(
            Operation(self.name, cmd.op, cmd.key, self.invoked_at, now, cmd.arg, cmd.arg2, result)
        )
        self.pending = None
        if cmd.op == Op.PUT or (cmd.op == Op.CAS and result is True):
            self._known[cmd.key] = cmd.arg if cmd.op == Op.PUT else cmd.arg2
        elif cmd.op == Op.GET and isinstance(result, str | None):
            self._known[cmd.key] = result
