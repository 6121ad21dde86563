"""Hypothesis strategies for gossip values (valid ones: the codec must accept them)."""

from __future__ import annotations

from hypothesis import strategies as st

from dcrond.gossip import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    MemberState,
    Message,
    Nack,
    NodeMeta,
    Ping,
    StateEntry,
    Suspect,
)

MAX_INT = (1 << 63) - 1

names = st.text(min_size=1, max_size=12)
ints = st.integers(0, MAX_INT)
small_ints = st.integers(0, 6)
hosts = st.sampled_from(["10.0.0.1", "10.0.0.2", "127.0.0.1", "::1", "h.example"])
ports = st.integers(1, 65535)
addresses = st.tuples(hosts, ports)
metas = st.builds(
    NodeMeta,
    api_port=st.integers(0, 65535),
    raft_port=st.integers(0, 65535),
    tags=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=4).map(
        lambda d: tuple(d.items())
    ),
    free_slots=st.integers(0, 1 << 31),
    version=st.text(max_size=10),
    raft_role=st.sampled_from(["", "learner", "voter", "leader"]),
)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Ping, ints, st.text(max_size=12), names),
    st.builds(IndirectPing, ints, names, addresses, st.booleans()),
    st.builds(Ack, ints),
    st.builds(Nack, ints),
    st.builds(Alive, names, ints, addresses, metas),
    st.builds(Suspect, names, ints, names),
    st.builds(Dead, names, ints, names),
)

entries = st.builds(StateEntry, names, addresses, metas, ints, st.sampled_from(list(MemberState)))
