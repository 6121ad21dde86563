"""GossipCore under arbitrary input: it never raises and keeps its promises.

Hypothesis drives one core with any interleaving of ticks, packets (valid
messages about a small pool of names, including itself, with small sequence
numbers and incarnations so that they collide with its own), push-pull
merges, metadata changes and a leave. After every step:

- every event obeys the transition table of ``GossipChecker`` (incarnations
  never go back, coming back needs a new incarnation);
- its own incarnation never goes back;
- every packet encodes within ``packet_bytes`` and decodes to itself;
- after ``tick(now)``, ``next_deadline()`` is later than ``now`` (the
  driver never spins);
- the counts in ``statistics()`` match ``members()``.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dcrond.gossip import (
    Ack,
    Alive,
    Dead,
    GossipConfig,
    GossipCore,
    IndirectPing,
    MemberState,
    Message,
    Nack,
    NodeMeta,
    Ping,
    StateEntry,
    Suspect,
)
from dcrond.gossip._codec import decode_packet, encode_packet
from dcrond.testing._gossipcheck import GossipChecker

POOL = ["a", "b", "c", "d", "e", "f"]
names = st.sampled_from(POOL)
incs = st.integers(0, 6)
seqs = st.integers(0, 12)
metas = st.builds(NodeMeta, free_slots=st.integers(0, 3))


def addr(name: str) -> tuple[str, int]:
    return (f"10.0.0.{ord(name)}", 7946)


addrs = names.map(addr)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Ping, seqs, st.sampled_from(["a", "b", ""]), names),
    st.builds(IndirectPing, seqs, names, addrs, st.booleans()),
    st.builds(Ack, seqs),
    st.builds(Nack, seqs),
    st.builds(Alive, names, incs, names.map(addr), metas),
    st.builds(Suspect, names, incs, names),
    st.builds(Dead, names, incs, names),
)
entries = st.builds(StateEntry, names, addrs, metas, incs, st.sampled_from(list(MemberState)))

steps = st.one_of(
    st.tuples(st.just("tick"), st.floats(0.0, 3.0)),
    st.tuples(st.just("recv"), st.lists(messages, min_size=1, max_size=4)),
    st.tuples(st.just("merge"), st.lists(entries, max_size=6)),
    st.tuples(st.just("meta"), metas),
    st.tuples(st.just("leave"), st.none()),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(steps, max_size=60),
    st.booleans(),
    st.integers(0, 2**32),
    st.lists(names, max_size=4, unique=True),
)
def test_any_input_keeps_the_cores_promises(
    script: list[tuple[str, object]], lifeguard: bool, seed: int, known: list[str]
) -> None:
    cfg = GossipConfig(lifeguard=lifeguard, reap_after=20.0, reconnect_interval=5.0)
    start = [StateEntry(n, addr(n), NodeMeta(), 0, MemberState.ALIVE) for n in known if n != "a"]
    core = GossipCore("a", addr("a"), NodeMeta(), cfg, random.Random(seed), now=0.0, known=start)
    checker = GossipChecker()
    checker.started("a", 1, start)
    for n in POOL:
        checker.leaving(n)  # any "Dead from itself" here is a genuine leave announcement
    now = 0.0
    own = 0
    for kind, arg in script:
        if kind == "tick":
            now = max(now, core.next_deadline()) if arg == 0.0 else now + float(arg)  # type: ignore[arg-type]
            core.tick(now)
            assert core.next_deadline() > now
        elif kind == "recv":
            core.receive(now, addr("b"), arg)  # type: ignore[arg-type]
        elif kind == "merge":
            core.merge_state(now, arg, join=True)  # type: ignore[arg-type]
        elif kind == "meta":
            core.update_meta(now, arg)  # type: ignore[arg-type]
        else:
            core.leave(now)
        rd = core.ready()
        core.advance(rd)
        for ev in rd.events:
            checker.event("a", 1, ev, int(now * 1e6))
        for p in rd.packets:
            assert decode_packet(encode_packet(p.messages, cfg.packet_bytes)) == p.messages
        assert core.incarnation >= own
        own = core.incarnation
        st_ = core.statistics()
        views = [m.state for m in core.members()[1:]]
        assert (st_.alive, st_.suspect, st_.dead, st_.left) == (
            1 + views.count(MemberState.ALIVE),
            views.count(MemberState.SUSPECT),
            views.count(MemberState.DEAD),
            views.count(MemberState.LEFT),
        )
