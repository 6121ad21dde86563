"""Alive, Suspect and Dead: SWIM's precedence rules, suspicion timers and refutation.

See the "Precedence" paragraph of ``_core``'s docstring for the rules, and
``_health`` for the suspicion timeout.
"""

from __future__ import annotations

from typing import Final

from dcrond.gossip._corebase import CoreBase
from dcrond.gossip._health import Suspicion, suspicion_bounds
from dcrond.gossip._types import Alive, Dead, EventKind, MemberState, Suspect

__all__ = ["UpdatesMixin"]

_ALIVE: Final = MemberState.ALIVE
_SUSPECT: Final = MemberState.SUSPECT
_DEAD: Final = MemberState.DEAD
_LEFT: Final = MemberState.LEFT


class UpdatesMixin(CoreBase):
    """Applies state updates about members and ourselves (part of ``GossipCore``)."""

    # --- state updates ------------------------------------------------------------

    def _on_alive(self, now: float, a: Alive) -> None:
        if a.name == self._name:
            if self._leaving or a.incarnation < self._incarnation:
                return
            if (
                a.incarnation == self._incarnation
                and a.address == self._address
                and a.meta == self._meta
            ):
                return
            self._refute(a.incarnation)  # someone else, or an earlier life of ours
            return
        m = self._members.get(a.name)
        if m is None:
            m = self._add(a.name, a.address, a.meta, a.incarnation)
            m.last_seen = now
            self._event(EventKind.JOIN, m)
            self._queue(a)
            return
        if a.incarnation <= m.incarnation:
            return
        if a.address != m.address and m.state in (_ALIVE, _SUSPECT):
            return  # a second member claims a live member's name: keep the one we know
        old = m.state
        changed = a.meta != m.meta or a.address != m.address
        m.incarnation = a.incarnation
        m.meta = a.meta
        m.address = a.address
        m.last_seen = now
        self._suspicions.pop(a.name, None)
        if old != _ALIVE:
            self._set_state(m, _ALIVE)
            m.since = now
            self._event(EventKind.ALIVE if old == _SUSPECT else EventKind.JOIN, m)
            if old in (_DEAD, _LEFT):
                self._insert_into_order(m.name)
        elif changed:
            self._event(EventKind.UPDATE, m)
        self._queue(a)

    def _on_suspect(self, now: float, s: Suspect) -> None:
        if s.name == self._name:
            self._accused(s.incarnation)
            return
        m = self._members.get(s.name)
        if m is None or s.incarnation < m.incarnation:
            return
        running = self._suspicions.get(s.name)
        if running is not None:
            if running.confirm(s.frm):
                self._queue(s)  # a new confirmation: pass it on so others can count it too
            return
        if m.state != _ALIVE:
            return
        m.incarnation = s.incarnation
        self._set_state(m, _SUSPECT)
        m.since = now
        if s.frm == self._name:
            self._stats["suspicions"] += 1
        self._event(EventKind.SUSPECT, m)
        self._queue(s)
        cfg = self._cfg
        n = self.estimated_size()
        lo, hi = suspicion_bounds(cfg.suspicion_mult, cfg.suspicion_max_mult, n, cfg.probe_interval)
        k = cfg.suspicion_mult - 2 if cfg.lifeguard else 0
        if n - 2 < k:
            k = 0  # not enough other members to confirm it
        self._suspicions[s.name] = Suspicion(s.incarnation, s.frm, start=now, k=k, lo=lo, hi=hi)

    def _on_dead(self, now: float, d: Dead) -> None:
        if d.name == self._name:
            if not self._leaving:
                self._accused(d.incarnation)
            return
        m = self._members.get(d.name)
        if m is None or d.incarnation < m.incarnation:
            return
        if m.state == _LEFT or (m.state == _DEAD and not d.is_leave):
            return
        self._suspicions.pop(d.name, None)
        m.incarnation = d.incarnation
        new = _LEFT if d.is_leave else _DEAD
        self._set_state(m, new)
        m.since = now
        self._event(EventKind.LEFT if new == _LEFT else EventKind.DEAD, m)
        self._queue(d)

    def _accused(self, incarnation: int) -> None:
        if self._leaving:
            return
        if incarnation < self._incarnation:
            # Old news about us; make sure our current incarnation is going around.
            if self._bcast.queued(self._name) is None:
                self._queue(self._alive_self())
            return
        self._refute(incarnation)

    def _refute(self, incarnation: int) -> None:
        self._incarnation = max(self._incarnation, incarnation) + 1
        self._stats["refutations"] += 1
        if self._cfg.lifeguard:
            self._health.apply(1)
        self._queue(self._alive_self())
