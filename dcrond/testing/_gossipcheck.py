"""What must hold of every gossip member's view, checked event by event.

The simulator hands every ``MemberEvent`` of every member to
:meth:`GossipChecker.event`; the checker remembers, per observer (and per
life of that observer, since a restart starts a new view) and per subject,
the last incarnation and state it reported, and raises ``GossipViolation``
when an event breaks one of SWIM's rules:

- **Incarnations never go back**: an observer's incarnation for a subject,
  and a member's own incarnation within one life, never decrease.
- **Only a refutation brings a member back**: a suspect member becomes alive
  again, and a dead or left member rejoins, only at a *higher* incarnation
  than the one it was suspected or declared dead at. (This is "a live member
  is never declared dead without refuting": being alive again after being
  declared dead takes a new incarnation, which only the member makes.)
- **Transitions follow the table**: JOIN from unknown, dead or left; ALIVE
  from suspect; UPDATE from alive; SUSPECT from alive; DEAD from alive or
  suspect; LEFT from alive, suspect or dead -- and only for a member that
  really called ``leave``.

Convergence after faults and "never dead for good while alive and
connected" are whole-cluster properties; the simulator checks them at the
end (``GossipSim.disagreement``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, final

from dcrond.gossip._types import EventKind, MemberEvent, MemberState, StateEntry

__all__ = ["GossipChecker", "GossipViolation"]

_A, _S, _D, _L = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT

#: kind -> (the state it reports, states it may come from, needs a higher incarnation)
_RULES: Final[dict[EventKind, tuple[MemberState, tuple[MemberState | None, ...], bool]]] = {
    EventKind.JOIN: (_A, (None, _D, _L), True),
    EventKind.ALIVE: (_A, (_S,), True),
    EventKind.UPDATE: (_A, (_A,), True),
    EventKind.SUSPECT: (_S, (_A,), False),
    EventKind.DEAD: (_D, (_A, _S), False),
    EventKind.LEFT: (_L, (_A, _S, _D), False),
}


class GossipViolation(AssertionError):
    """A member's view broke one of the rules in the module docstring."""


@final
class GossipChecker:
    """Incremental checks of every view (see the module docstring)."""

    __slots__ = ("_left", "_own", "_views", "events")

    def __init__(self) -> None:
        self._views: dict[tuple[str, int, str], tuple[int, MemberState]] = {}
        self._own: dict[tuple[str, int], int] = {}
        self._left: set[str] = set()
        self.events = 0

    def started(self, name: str, life: int, known: Iterable[StateEntry] = ()) -> None:
        """A member started a new life (knowing ``known`` already)."""
        self._own[name, life] = 0
        for e in known:
            self._views[name, life, e.name] = (e.incarnation, e.state)

    def leaving(self, name: str) -> None:
        """``name`` called ``leave``: others may now report it LEFT."""
        self._left.add(name)

    def own_incarnation(self, name: str, life: int, incarnation: int) -> None:
        """A member's own incarnation after an input."""
        last = self._own.get((name, life), 0)
        if incarnation < last:
            raise GossipViolation(
                f"{name}'s own incarnation went back from {last} to {incarnation}"
            )
        self._own[name, life] = incarnation

    def event(self, observer: str, life: int, ev: MemberEvent, t_us: int) -> None:
        """Check one event reported by ``observer`` (in its ``life``) at ``t_us``."""
        self.events += 1
        m = ev.member
        key = (observer, life, m.name)
        prev = self._views.get(key)
        state, sources, higher = _RULES[ev.kind]
        where = (
            f"at t={t_us / 1e6:.3f}s {observer} reported {ev.kind.name} {m.name}@{m.incarnation}"
        )
        if m.state != state:
            raise GossipViolation(f"{where} with state {m.state.name}")
        prev_state = None if prev is None else prev[1]
        if prev_state not in sources:
            raise GossipViolation(f"{where} after {prev_state and prev_state.name}")
        if prev is not None:
            if m.incarnation < prev[0]:
                raise GossipViolation(f"{where}: incarnation went back from {prev[0]}")
            if higher and m.incarnation <= prev[0]:
                raise GossipViolation(f"{where}: back from {prev_state} without a new incarnation")
        if ev.kind == EventKind.LEFT and m.name not in self._left:
            raise GossipViolation(f"{where}, but {m.name} never left")
        self._views[key] = (m.incarnation, m.state)
