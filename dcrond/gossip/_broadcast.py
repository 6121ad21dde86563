"""The queue of state updates waiting to be piggybacked, each sent a bounded number of times.

Theory of operation
-------------------
Every Alive, Suspect and Dead a core learns (or makes) is queued here and
rides along in the spare bytes of every packet the core sends: pings, acks,
indirect probes and the periodic gossip packets. An update is sent at most
``limit = retransmit_mult * ceil(log10(n + 1))`` times; with every member
forwarding what it learnt that many times, an update reaches all ``n``
members with high probability in O(log n) gossip rounds (the epidemic
argument of the SWIM paper), and traffic stays bounded.

Updates are keyed by the member they are about: a newer update about a member
replaces a queued older one (an Alive after a Suspect makes the Suspect
pointless). When choosing what to put in a packet, the updates sent the
fewest times go first, newest first among equals, so fresh news spreads
fastest; each goes in only if its encoded size still fits the packet.
"""

from __future__ import annotations

from typing import final

from dcrond.gossip._types import Update

__all__ = ["BroadcastQueue"]


@final
class _Item:
    __slots__ = ("msg", "order", "size", "transmits")

    def __init__(self, msg: Update, size: int, order: int) -> None:
        self.msg = msg
        self.size = size
        self.order = order
        self.transmits = 0


@final
class BroadcastQueue:
    """Updates to piggyback, at most one per member, each sent up to ``limit`` times."""

    __slots__ = ("_items", "_order", "sent")

    def __init__(self) -> None:
        self._items: dict[str, _Item] = {}
        self._order = 0
        self.sent = 0  #: updates put into packets so far

    def __len__(self) -> int:
        return len(self._items)

    def put(self, msg: Update, size: int) -> None:
        """Queue ``msg`` (``size`` encoded bytes), replacing any queued update about its member."""
        self._order += 1
        self._items.pop(msg.name, None)
        self._items[msg.name] = _Item(msg, size, self._order)

    def queued(self, name: str) -> Update | None:
        """The update about ``name`` still waiting to be sent, if any."""
        item = self._items.get(name)
        return None if item is None else item.msg

    def take(self, budget: int, limit: int) -> tuple[list[Update], int]:
        """Updates whose sizes fit ``budget`` bytes, and the bytes they use.

        Each chosen update counts one transmission; one that reached
        ``limit`` leaves the queue.
        """
        if not self._items or budget <= 0:
            return [], 0
        items = sorted(self._items.values(), key=lambda it: (it.transmits, -it.order))
        chosen: list[Update] = []
        used = 0
        for it in items:
            if used + it.size > budget:
                continue
            used += it.size
            chosen.append(it.msg)
            it.transmits += 1
            if it.transmits >= limit:
                del self._items[it.msg.name]
        self.sent += len(chosen)
        return chosen, used

    def clear(self) -> None:
        """Drop everything queued."""
        self._items.clear()
