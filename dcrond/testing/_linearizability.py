"""A linearizability checker for key-value histories (Wing & Gong search, Lowe's caching).

Theory of operation: a history is a list of operations, each with the instant
it was invoked and the instant its response arrived. It is linearizable when
every operation can be given one instant between those two (its linearization
point) so that, taken in that order, the operations are a legal run of a
sequential key-value store.

The search (Wing & Gong 1993, as improved by Lowe, "Testing for
linearizability", 2017) walks a time-ordered list of call and return events.
At a call it tries to linearize that operation next: if the sequential model
accepts it, the operation's call and return are lifted out of the list and the
walk restarts at the head. Reaching a return means its operation was not
linearized before its response: backtrack to the last choice and try the next
call. A cache of (set of linearized operations, model state) pairs prunes
configurations already explored, which turns the exponential search into a
practical one.

Operations on different keys never interact, so the history is checked one key
at a time (P-compositionality): smaller searches, and a failure names a key.

An operation whose outcome is unknown (the client timed out) may have taken
effect at any instant after its call, or never: its return is placed after
every known event, and the search succeeds once only such operations remain.
A read with unknown outcome constrains nothing and is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import final

from dcrond.testing._kv import STALE, Op, Result

_INF = float("inf")


@final
@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation on one key.

    ``complete`` is None when the outcome is unknown (then ``result`` is
    ignored). For PUT ``arg`` is the value; for CAS ``arg`` is the expected
    value and ``arg2`` the new one; a GET's ``result`` is the value read
    (None for a missing key) and a CAS's is True or False.
    """

    client: str
    op: Op
    key: str
    invoke: float
    complete: float | None
    arg: str | None = None
    arg2: str | None = None
    result: Result = None

    def describe(self) -> str:
        """A short human form, e.g. ``c1 cas(k2, None->v7)=True [10.0ms, 12.5ms]``."""
        if self.op == Op.PUT:
            what = f"put({self.key}, {self.arg})"
        elif self.op == Op.GET:
            what = f"get({self.key})"
        else:
            what = f"cas({self.key}, {self.arg}->{self.arg2})"
        if self.complete is None:
            return f"{self.client} {what}=? [{self.invoke / 1000:.3f}ms, unknown]"
        return (
            f"{self.client} {what}={self.result!r} "
            f"[{self.invoke / 1000:.3f}ms, {self.complete / 1000:.3f}ms]"
        )


@final
@dataclass(frozen=True, slots=True)
class LinearizabilityResult:
    """The verdict; when not ``ok``, ``key`` and ``explanation`` say where it broke."""

    ok: bool
    key: str | None = None
    explanation: str = ""
    ops_checked: int = 0
    search_steps: int = 0
    per_key_ops: dict[str, int] = field(default_factory=dict)


class SearchTooLarge(AssertionError):
    """The search exceeded its step budget: the history is too concurrent to decide."""


def _step(state: str | None, op: Operation) -> tuple[bool, str | None]:
    """Apply ``op`` to the register's ``state``: (is its recorded result legal, new state)."""
    known = op.complete is not None
    if op.op == Op.PUT:
        return True, op.arg
    if op.op == Op.GET:
        return (not known or op.result == state), state
    if state == op.arg:
        return (not known or op.result is True), op.arg2
    return (not known or op.result is False), state


def check_key(
    ops: Sequence[Operation], initial: str | None = None, *, max_steps: int = 5_000_000
) -> tuple[bool, str, int]:
    """Check the operations on one key: (linearizable, explanation, search steps)."""
    n = len(ops)
    if n == 0:
        return True, "", 0
    # events: (time, kind, op id); kind 0 = call sorts before 1 = return at equal times,
    # which treats touching operations as concurrent (the lenient, safe reading).
    events: list[tuple[float, int, int]] = []
    for i, o in enumerate(ops):
        events.append((o.invoke, 0, i))
        events.append((_INF if o.complete is None else o.complete, 1, i))
    events.sort()
    m = len(events)
    # doubly linked list over event slots 0..m-1, with a head sentinel at m
    nxt = [*range(1, m + 1), 0]
    prv = [m, *range(m - 1), m - 1]
    nxt[m - 1] = -1
    nxt[m] = 0
    is_call = [e[1] == 0 for e in events]
    op_of = [e[2] for e in events]
    ret_slot = [0] * n
    for s, e in enumerate(events):
        if e[1] == 1:
            ret_slot[e[2]] = s
    unknown = [o.complete is None for o in ops]
    head = m

    def lift(s: int) -> None:
        for x in (s, ret_slot[op_of[s]]):
            p, q = prv[x], nxt[x]
            nxt[p] = q
            if q != -1:
                prv[q] = p

    def unlift(s: int) -> None:
        for x in (ret_slot[op_of[s]], s):
            p, q = prv[x], nxt[x]
            nxt[p] = x
            if q != -1:
                prv[q] = x

    cache: set[tuple[int, str | None]] = set()
    stack: list[tuple[int, str | None]] = []
    state = initial
    linearized = 0
    best: list[int] = []
    steps = 0
    s = nxt[head]
    while s != -1:
        steps += 1
        if steps > max_steps:
            raise SearchTooLarge(f"linearizability search exceeded {max_steps} steps")
        if is_call[s]:
            i = op_of[s]
            legal, new_state = _step(state, ops[i])
            if legal:
                new_lin = linearized | (1 << i)
                key = (new_lin, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((s, state))
                    state = new_state
                    linearized = new_lin
                    lift(s)
                    s = nxt[head]
                    continue
            s = nxt[s]
        else:
            if unknown[op_of[s]]:
                return True, "", steps  # only operations that may never have happened remain
            if len(stack) > len(best):
                best = [op_of[x] for x, _ in stack]  # the deepest dead end so far
            if not stack:
                return False, _explain(ops, best), steps
            s, state = stack.pop()
            linearized &= ~(1 << op_of[s])
            unlift(s)
            s = nxt[s]
    return True, "", steps


def _explain(ops: Sequence[Operation], best: list[int]) -> str:
    """Describe the longest linearization found and the operations it could not extend with."""
    placed = set(best)
    stuck = sorted((i for i in range(len(ops)) if i not in placed), key=lambda i: ops[i].invoke)
    lines = [
        f"at most {len(best)} of {len(ops)} operations linearize; the last ones placed:",
        *("    " + ops[i].describe() for i in best[-6:]),
        "  and none of the next ones fits after them:",
        *("    " + ops[i].describe() for i in stuck[:8]),
    ]
    return "\n".join(lines)


def check_history(ops: Iterable[Operation], *, max_steps: int = 5_000_000) -> LinearizabilityResult:
    """Check a whole key-value history, one key at a time.

    Reads with unknown outcome and operations answered ``STALE`` (they did
    nothing, by the session rules) are dropped first. Raises SearchTooLarge
    when a key's history is too concurrent to decide within ``max_steps``.
    """
    by_key: dict[str, list[Operation]] = {}
    for o in ops:
        if o.complete is None and o.op == Op.GET:
            continue
        if o.complete is not None and o.result == STALE:
            continue
        by_key.setdefault(o.key, []).append(o)
    total_steps = 0
    counts = {k: len(v) for k, v in sorted(by_key.items())}
    for key in sorted(by_key):
        ok, why, steps = check_key(by_key[key], max_steps=max_steps)
        total_steps += steps
        if not ok:
            return LinearizabilityResult(
                False,
                key,
                f"key {key!r}: {why}",
                sum(counts.values()),
                total_steps,
                counts,
            )
    return LinearizabilityResult(True, None, "", sum(counts.values()), total_steps, counts)
