"""Probing: direct pings, indirect probes through k helpers, relays and nacks.

See the "Failure detection" and "Lifeguard" paragraphs of ``_core``'s
docstring.
"""

from __future__ import annotations

from typing import Final

from dcrond.gossip._corebase import MemberRecord, Probe, Relay
from dcrond.gossip._types import Ack, Address, IndirectPing, MemberState, Message, Ping, Suspect
from dcrond.gossip._updates import UpdatesMixin

__all__ = ["ProbingMixin"]

_ALIVE: Final = MemberState.ALIVE
_SUSPECT: Final = MemberState.SUSPECT
_DEAD: Final = MemberState.DEAD
_LEFT: Final = MemberState.LEFT


class ProbingMixin(UpdatesMixin):
    """Runs this member's probes and helps others with theirs (part of ``GossipCore``)."""

    # --- probing --------------------------------------------------------------------

    def _start_probe(self, now: float) -> None:
        period = self._health.scale(self._cfg.probe_interval)
        self._next_probe = now + period
        target = self._next_target()
        if target is None:
            return
        self._seq += 1
        self._stats["probes"] += 1
        p = Probe(target.name, self._seq, now + self._cfg.probe_timeout, now + period)
        self._probe = p
        msgs: list[Message] = [Ping(p.seq, target.name, self._name)]
        if target.state == _SUSPECT and self._cfg.lifeguard:
            msgs.append(Suspect(target.name, target.incarnation, self._name))
        self._send(target.address, msgs)

    def _next_target(self) -> MemberRecord | None:
        order = self._order
        for _ in range(2):
            while self._order_pos < len(order):
                m = self._members.get(order[self._order_pos])
                self._order_pos += 1
                if m is not None and m.state in (_ALIVE, _SUSPECT):
                    return m
            # One pass done: reshuffle the live members for the next one.
            order[:] = [n for n in self._names if self._members[n].state in (_ALIVE, _SUSPECT)]
            self._shuffle(order)
            self._order_pos = 0
        return None

    def _probe_indirect(self, p: Probe) -> None:
        p.indirect_sent = True
        target = self._members.get(p.target)
        if target is None:
            return
        nack = self._cfg.lifeguard
        helpers = self._pick(
            self._cfg.indirect_checks, lambda m: m.state == _ALIVE and m.name != p.target
        )
        for h in helpers:
            self._send(h.address, [IndirectPing(p.seq, target.name, target.address, nack)])
        p.expected_nacks = len(helpers) if nack else 0

    def _probe_failed(self, now: float, p: Probe) -> None:
        self._stats["probes_failed"] += 1
        if self._cfg.lifeguard:
            if p.expected_nacks:
                missed = max(0, p.expected_nacks - p.nacks)
                self._stats["nacks_missed"] += missed
                self._health.apply(missed)
            else:
                self._health.apply(1)
        m = self._members.get(p.target)
        if m is not None and m.state in (_ALIVE, _SUSPECT):
            self._on_suspect(now, Suspect(m.name, m.incarnation, self._name))

    def _on_ping(self, frm: Address, ping: Ping) -> None:
        if ping.target and ping.target != self._name:
            return  # meant for whoever lived at this address before us
        reply: list[Message] = [Ack(ping.seq)]
        sender = self._members.get(ping.source)
        if sender is not None and sender.state in (_DEAD, _LEFT):
            # It thinks it is alive and we think it is dead: tell it, so it refutes.
            reply.append(Suspect(sender.name, sender.incarnation, self._name))
        self._send(frm, reply)

    def _on_ack(self, now: float, seq: int) -> None:
        p = self._probe
        if p is not None and p.seq == seq:
            if not p.acked:
                p.acked = True
                if self._cfg.lifeguard:
                    self._health.apply(-1)
                m = self._members.get(p.target)
                if m is not None:
                    m.last_seen = now
            return
        r = self._relays.pop(seq, None)
        if r is not None:
            self._send(r.requester, [Ack(r.seq)])

    def _on_indirect(self, now: float, frm: Address, req: IndirectPing) -> None:
        if req.target == self._name:
            self._send(frm, [Ack(req.seq)])
            return
        if len(self._relays) >= 1024:
            return  # a flood: let the requester's probe fail rather than grow without bound
        self._seq += 1
        self._relays[self._seq] = Relay(frm, req.seq, req.nack, now + self._cfg.probe_timeout)
        self._send(req.address, [Ping(self._seq, req.target, self._name)])
