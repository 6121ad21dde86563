"""Readable Raft scenarios: a small line-based language and its interpreter.

Theory of operation
-------------------
A transcript file is a list of blocks separated by blank lines. Each block is
a command, a ``----`` line and the output that command is expected to print;
lines starting with ``#`` are comments for the reader. ``run_transcript``
executes the commands against an in-memory cluster of ``RaftCore`` nodes and
returns the same text with every output replaced by what actually happened,
so a test compares the two and ``REWRITE=1`` writes the new text back for a
person to review as a diff.

The cluster is driven by hand: nothing happens unless a command says so.
Messages a node sends wait in the receiver's inbox until ``deliver-msgs`` or
``stabilize`` hands them over; a partition drops them at delivery. Each node
has an in-memory disk (what a handled Ready persisted) and a state machine
(the list of NORMAL entries applied), so ``restart`` rebuilds a node exactly
as a driver would after a crash, and ``compact`` makes real snapshots.

Commands (node ids are numbers; lists are written ``(1,2,3)``)::

    add-nodes N [voters=(..)] [learners=(..)] [election=E] [heartbeat=H]
              [inflight=K] [max-bytes=B] [chunk=C] [prevote=true|false]
              [checkquorum=true|false]        new nodes, all with this bootstrap membership
                                              (their bootstrap entries are persisted quietly)
    campaign ID                               start an election on ID
    tick ID [N]                               N ticks (default 1)
    tick-heartbeat ID                         heartbeat_ticks ticks
    tick-election ID                          a leader: election_ticks ticks;
                                              others: tick until they campaign (or 2E ticks)
    propose ID DATA                           propose a NORMAL entry
    propose-conf-change ID TYPE NODE          TYPE: add-voter, remove-node, add-learner,
                                              promote-learner
    transfer-leader FROM TO
    read-index ID REQUEST-ID
    compact ID INDEX                          snapshot ID's state machine at INDEX, drop the log
    process-ready ID...                       handle each node's Ready once
    deliver-msgs [drop] ID...                 deliver (or drop) every message waiting for ID
    stabilize [ID...]                         handle Readies and deliver messages until quiet
    partition A B | C ...                     cut every link between the groups
    cut A B                                   cut the link between A and B (both ways)
    heal                                      restore every link
    restart ID                                crash ID (losing nothing handled) and restart it
    status ID | raft-log ID | raft-state | applied ID
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, final

from dcrond.errors import DcronError
from dcrond.raft._confchange import decode_conf_change
from dcrond.raft._core import RaftCore
from dcrond.raft._types import (
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    Message,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    Ready,
    Role,
    Snapshot,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

__all__ = ["TranscriptError", "run_transcript"]

_CC_TYPES = {
    "add-voter": ConfChangeType.ADD_VOTER,
    "remove-node": ConfChangeType.REMOVE_NODE,
    "add-learner": ConfChangeType.ADD_LEARNER,
    "promote-learner": ConfChangeType.PROMOTE_LEARNER,
}


class TranscriptError(Exception):
    """A transcript is malformed (an unknown command, a missing argument)."""


# --- formatting -----------------------------------------------------------------


def _key(node: NodeId) -> tuple[int, str]:
    return (len(node), node)


def _ids(nodes: frozenset[NodeId] | Sequence[NodeId]) -> str:
    return "(" + ",".join(sorted(nodes, key=_key)) + ")"


def _data(data: bytes) -> str:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return repr(data)
    return text if text.isprintable() and " " not in text and text else repr(data)


def fmt_entry(e: Entry) -> str:
    """``term/index data`` (NOOP and CONFIG entries spelled out)."""
    if e.kind == EntryKind.NOOP:
        body = "noop"
    elif e.kind == EntryKind.CONFIG:
        cc = decode_conf_change(e.data)
        name = next(k for k, v in _CC_TYPES.items() if v is cc.type)
        body = f"conf({name} {cc.node})"
    else:
        body = _data(e.data)
    return f"{e.term}/{e.index} {body}"


def fmt_conf(conf: ConfState) -> str:
    """``voters=(..) learners=(..)``."""
    return f"voters={_ids(conf.voters)} learners={_ids(conf.learners)}"


def fmt_msg(m: Message) -> str:
    """One line per message, the fields a reader needs."""
    head = f"{m.frm}->{m.to}"
    if isinstance(m, AppendEntries):
        s = f"{head} App term={m.term} prev={m.prev_term}/{m.prev_index} commit={m.commit}"
        if m.entries:
            s += " [" + ", ".join(fmt_entry(e) for e in m.entries) + "]"
        if m.read_ctx:
            s += f" ctx={m.read_ctx}"
        return s
    if isinstance(m, AppendResponse):
        s = f"{head} AppResp term={m.term}"
        s += (
            f" index={m.index}"
            if m.success
            else f" reject={m.index} hint={m.hint_term}/{m.hint_index}"
        )
        if m.read_ctx:
            s += f" ctx={m.read_ctx}"
        return s
    if isinstance(m, VoteRequest):
        kind = "PreVote" if m.prevote else "Vote"
        s = f"{head} {kind} term={m.term} last={m.last_term}/{m.last_index}"
        return s + (" transfer" if m.transfer else "")
    if isinstance(m, VoteResponse):
        kind = "PreVoteResp" if m.prevote else "VoteResp"
        return f"{head} {kind} term={m.term} {'granted' if m.granted else 'rejected'}"
    if isinstance(m, InstallSnapshot):
        s = f"{head} Snap term={m.term} snap={m.meta.term}/{m.meta.index}"
        s += f" offset={m.offset} len={len(m.chunk)}"
        return s + (" done" if m.done else "")
    if isinstance(m, SnapshotResponse):
        s = f"{head} SnapResp term={m.term} index={m.index} offset={m.offset}"
        return s + (" done" if m.done else "") + ("" if m.success else " restart")
    if isinstance(m, TimeoutNow):
        return f"{head} TimeoutNow term={m.term}"
    if isinstance(m, ReadIndexRequest):
        return f"{head} ReadIndex term={m.term} id={_data(m.request_id)}"
    assert isinstance(m, ReadIndexResponse)
    return f"{head} ReadIndexResp term={m.term} id={_data(m.request_id)} index={m.index}"


def _state(core: RaftCore) -> str:
    return f"{core.role.name} term={core.term} leader={core.leader or '-'}"


# --- the cluster ----------------------------------------------------------------


@final
@dataclass
class _Disk:
    """What a node's handled Readies persisted, and its state machine."""

    bootstrap: ConfState
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    sm: list[tuple[int, str]] = field(default_factory=list)  # applied NORMAL entries
    applied: int = 0

    def persist(self, ready: Ready) -> None:
        snap = ready.snapshot
        if snap is not None:
            idx = snap.meta.index
            keep = [e for e in self.entries if e.index > idx]
            at = [e for e in self.entries if e.index == idx]
            self.entries = keep if at and at[0].term == snap.meta.term else []
            self.snapshot = snap
        if ready.entries:
            first = ready.entries[0].index
            self.entries = [e for e in self.entries if e.index < first]
            self.entries.extend(ready.entries)
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state

    def apply(self, ready: Ready) -> None:
        if ready.snapshot is not None:
            self.sm = _decode_sm(ready.snapshot.data)
            self.applied = ready.snapshot.meta.index
        for e in ready.committed:
            if e.kind == EntryKind.NORMAL:
                self.sm.append((e.index, _data(e.data)))
            self.applied = e.index


def _encode_sm(items: list[tuple[int, str]]) -> bytes:
    return ";".join(f"{i}:{d}" for i, d in items).encode()


def _decode_sm(data: bytes) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for part in data.decode().split(";") if data else []:
        i, _, d = part.partition(":")
        out.append((int(i), d))
    return out


@final
class _Cluster:
    """Nodes, their disks, inboxes and the links between them."""

    def __init__(self) -> None:
        self.cores: dict[NodeId, RaftCore] = {}
        self.disks: dict[NodeId, _Disk] = {}
        self.configs: dict[NodeId, Config] = {}
        self.inbox: dict[NodeId, list[Message]] = {}
        self.cut: set[frozenset[NodeId]] = set()
        self.out: list[str] = []
        self.boots: dict[NodeId, int] = {}

    def ids(self, only: Sequence[NodeId] = ()) -> list[NodeId]:
        ids = list(only) if only else list(self.cores)
        for i in ids:
            if i not in self.cores:
                raise TranscriptError(f"no node {i}")
        return sorted(ids, key=_key)

    def make_core(self, node: NodeId) -> RaftCore:
        d = self.disks[node]
        return RaftCore(
            node,
            self.configs[node],
            random.Random(f"transcript-{node}-{self.boots.get(node, 0)}"),
            hard_state=d.hard_state,
            snapshot=d.snapshot,
            entries=d.entries,
            conf=d.bootstrap,
            applied=d.applied,
        )

    def watch(self, node: NodeId, action: Callable[[], None], indent: str = "  ") -> None:
        """Run ``action``; print the node's new role/term/leader if they changed."""
        core = self.cores[node]
        before = _state(core)
        action()
        after = _state(core)
        if after != before:
            self.out.append(f"{indent}~ {node} is {after}")

    def handle_ready(self, node: NodeId) -> bool:
        core = self.cores[node]
        if not core.has_ready():
            return False
        rd = core.ready()
        out = self.out
        out.append(f"> {node} handling Ready")
        if rd.hard_state is not None:
            hs = rd.hard_state
            out.append(f"  hard-state term={hs.term} vote={hs.vote or '-'} commit={hs.commit}")
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            out.append(f"  snapshot {meta.term}/{meta.index} {fmt_conf(meta.conf)}")
        if rd.entries:
            out.append("  entries: " + ", ".join(fmt_entry(e) for e in rd.entries))
        if rd.committed:
            out.append("  committed: " + ", ".join(fmt_entry(e) for e in rd.committed))
        for rs in rd.read_states:
            state = "refused" if rs.index == 0 else f"index={rs.index}"
            out.append(f"  read-state id={_data(rs.request_id)} {state}")
        disk = self.disks[node]
        disk.persist(rd)
        for m in rd.messages:
            if frozenset((m.frm, m.to)) in self.cut:
                out.append(f"  {fmt_msg(m)} (dropped)")
                continue
            out.append("  " + fmt_msg(m))
            if m.to in self.inbox:
                self.inbox[m.to].append(m)
        disk.apply(rd)
        core.advance(rd)
        return True

    def deliver(self, node: NodeId, drop: bool = False) -> bool:
        msgs = self.inbox[node]
        if not msgs:
            return False
        self.inbox[node] = []
        self.out.append(f"> {node} {'dropping' if drop else 'receiving'} messages")
        for m in msgs:
            if drop or frozenset((m.frm, m.to)) in self.cut:
                self.out.append(f"  {fmt_msg(m)} (dropped)")
                continue
            self.out.append(f"  {fmt_msg(m)}")
            core = self.cores[node]
            before = _state(core)
            core.step(m)
            if _state(core) != before:
                self.out.append(f"    ~ {node} is {_state(core)}")
        return True

    def stabilize(self, only: Sequence[NodeId]) -> None:
        ids = self.ids(only)
        for _ in range(500):
            busy = False
            for i in ids:
                busy |= self.handle_ready(i)
            for i in ids:
                busy |= self.deliver(i)
            if not busy:
                return
        self.out.append("stabilize: still busy after 500 rounds")


# --- commands -------------------------------------------------------------------


def _parse_ids(text: str) -> list[NodeId]:
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    return [t for t in re.split(r"[,\s]+", text) if t]


def _kwargs(args: list[str]) -> tuple[list[str], dict[str, str]]:
    pos: list[str] = []
    kw: dict[str, str] = {}
    for a in args:
        if "=" in a:
            k, _, v = a.partition("=")
            kw[k] = v
        else:
            pos.append(a)
    return pos, kw


def _flag(v: str) -> bool:
    if v not in ("true", "false"):
        raise TranscriptError(f"expected true or false, got {v!r}")
    return v == "true"


def _try(c: _Cluster, fn: Callable[[], object]) -> object:
    try:
        return fn()
    except DcronError as e:
        hint = getattr(e, "leader", None)
        extra = f" (leader={hint})" if hint else ""
        c.out.append(f"error: {type(e).__name__}: {e}{extra}")
        return None


def _cmd_add_nodes(c: _Cluster, args: list[str]) -> None:
    pos, kw = _kwargs(args)
    if len(pos) != 1:
        raise TranscriptError("add-nodes N [key=value ...]")
    conf = ConfState(
        frozenset(_parse_ids(kw.pop("voters", ""))), frozenset(_parse_ids(kw.pop("learners", "")))
    )
    cfg = Config(election_ticks=10, heartbeat_ticks=1)
    names = {
        "election": "election_ticks",
        "heartbeat": "heartbeat_ticks",
        "inflight": "max_inflight",
        "max-bytes": "max_entries_bytes",
        "chunk": "snapshot_chunk_bytes",
    }
    for k, v in kw.items():
        if k in names:
            ints: dict[str, Any] = {names[k]: int(v)}
            cfg = replace(cfg, **ints)
        elif k == "prevote":
            cfg = replace(cfg, prevote=_flag(v))
        elif k == "checkquorum":
            cfg = replace(cfg, check_quorum=_flag(v))
        else:
            raise TranscriptError(f"add-nodes: unknown option {k}")
    start = len(c.cores) + 1
    for n in range(start, start + int(pos[0])):
        node = str(n)
        c.disks[node] = _Disk(conf)
        c.configs[node] = cfg
        c.inbox[node] = []
        core = c.cores[node] = c.make_core(node)
        # A founding member's first Ready only persists the bootstrap entries.
        if core.has_ready():
            rd = core.ready()
            c.disks[node].persist(rd)
            c.disks[node].apply(rd)
            core.advance(rd)
        c.out.append(
            f"{node}: {_state(core)} {fmt_conf(conf)} last={core.last_index}"
            f" commit={core.commit_index}"
        )


def _cmd_tick(c: _Cluster, args: list[str]) -> None:
    node = c.ids(args[:1])[0]
    n = int(args[1]) if len(args) > 1 else 1
    core = c.cores[node]
    for _ in range(n):
        c.watch(node, core.tick, "")


def _cmd_tick_election(c: _Cluster, args: list[str]) -> None:
    node = c.ids(args[:1])[0]
    core = c.cores[node]
    cfg = c.configs[node]
    if core.role is Role.LEADER:
        for _ in range(cfg.election_ticks):
            c.watch(node, core.tick, "")
        return
    start = _state(core)
    for _ in range(2 * cfg.election_ticks):
        c.watch(node, core.tick, "")
        if _state(core) != start:
            return


def _cmd_propose(c: _Cluster, args: list[str]) -> None:
    node = c.ids(args[:1])[0]
    data = " ".join(args[1:]).encode()
    index = _try(c, lambda: c.cores[node].propose(data))
    if index is not None:
        c.out.append(f"index {index}")


def _cmd_propose_cc(c: _Cluster, args: list[str]) -> None:
    if len(args) != 3 or args[1] not in _CC_TYPES:
        raise TranscriptError("propose-conf-change ID TYPE NODE")
    node = c.ids(args[:1])[0]
    cc = ConfChange(_CC_TYPES[args[1]], args[2])
    index = _try(c, lambda: c.cores[node].propose_conf_change(cc))
    if index is not None:
        c.out.append(f"index {index}")


def _cmd_compact(c: _Cluster, args: list[str]) -> None:
    node = c.ids(args[:1])[0]
    index = int(args[1])
    core, disk = c.cores[node], c.disks[node]

    def compact() -> None:
        meta = core.snapshot_meta(index)
        snap = Snapshot(meta, _encode_sm([x for x in disk.sm if x[0] <= index]))
        core.compact(snap)
        disk.snapshot = snap
        disk.entries = [e for e in disk.entries if e.index > index]

    _try(c, compact)


def _cmd_restart(c: _Cluster, args: list[str]) -> None:
    node = c.ids(args[:1])[0]
    c.boots[node] = c.boots.get(node, 0) + 1
    c.cores[node] = c.make_core(node)
    c.out.append(f"{node}: {_state(c.cores[node])} {fmt_conf(c.cores[node].conf)}")


def _cmd_status(c: _Cluster, args: list[str]) -> None:
    st = c.cores[c.ids(args[:1])[0]].status()
    c.out.append(
        f"{st.id}: {st.role.name} term={st.term} vote={st.vote or '-'} leader={st.leader or '-'}"
        f" commit={st.commit} applied={st.applied} last={st.last_index}"
        f" snap={st.snapshot_index} {fmt_conf(st.conf)}"
        + (f" transferee={st.transferee}" if st.transferee else "")
    )
    for p in st.progress:
        c.out.append(
            f"  {p.node}: match={p.match} next={p.next} {p.state.value} inflight={p.inflight}"
            + (" active" if p.recent_active else "")
        )


def _cmd_raft_log(c: _Cluster, args: list[str]) -> None:
    node = c.ids(args[:1])[0]
    disk = c.disks[node]
    if disk.snapshot is not None:
        m = disk.snapshot.meta
        c.out.append(f"snapshot {m.term}/{m.index} {fmt_conf(m.conf)}")
    if not disk.entries and disk.snapshot is None:
        c.out.append("(empty)")
    for e in disk.entries:
        c.out.append(fmt_entry(e))


def _cmd_raft_state(c: _Cluster, args: list[str]) -> None:
    for node in c.ids(args):
        core = c.cores[node]
        c.out.append(f"{node}: {_state(core)} commit={core.commit_index} last={core.last_index}")


def _cmd_applied(c: _Cluster, args: list[str]) -> None:
    disk = c.disks[c.ids(args[:1])[0]]
    c.out.append(f"applied={disk.applied} [" + " ".join(d for _, d in disk.sm) + "]")


def _cmd_partition(c: _Cluster, args: list[str]) -> None:
    groups = [_parse_ids(g) for g in " ".join(args).split("|")]
    c.cut.clear()
    for gi, g in enumerate(groups):
        for other in groups[gi + 1 :]:
            for a in g:
                for b in other:
                    c.cut.add(frozenset((a, b)))


def _run_command(c: _Cluster, line: str) -> None:
    cmd, *args = line.split()
    if cmd == "add-nodes":
        _cmd_add_nodes(c, args)
    elif cmd == "campaign":
        node = c.ids(args)[0]
        c.watch(node, c.cores[node].campaign, "")
    elif cmd == "tick":
        _cmd_tick(c, args)
    elif cmd == "tick-heartbeat":
        node = c.ids(args)[0]
        for _ in range(c.configs[node].heartbeat_ticks):
            c.watch(node, c.cores[node].tick, "")
    elif cmd == "tick-election":
        _cmd_tick_election(c, args)
    elif cmd == "propose":
        _cmd_propose(c, args)
    elif cmd == "propose-conf-change":
        _cmd_propose_cc(c, args)
    elif cmd == "transfer-leader":
        frm, to = args
        core = c.cores[c.ids([frm])[0]]

        def transfer() -> None:
            _try(c, lambda: core.transfer_leadership(to))

        c.watch(frm, transfer, "")
    elif cmd == "read-index":
        node = c.ids(args[:1])[0]
        c.cores[node].read_index(args[1].encode())
    elif cmd == "compact":
        _cmd_compact(c, args)
    elif cmd == "process-ready":
        for node in c.ids(args):
            c.handle_ready(node)
    elif cmd == "deliver-msgs":
        drop = bool(args) and args[0] == "drop"
        for node in c.ids(args[1:] if drop else args):
            c.deliver(node, drop)
    elif cmd == "stabilize":
        c.stabilize(args)
    elif cmd == "partition":
        _cmd_partition(c, args)
    elif cmd == "cut":
        a, b = c.ids(args)
        c.cut.add(frozenset((a, b)))
    elif cmd == "heal":
        c.cut.clear()
    elif cmd == "restart":
        _cmd_restart(c, args)
    elif cmd == "status":
        _cmd_status(c, args)
    elif cmd == "raft-log":
        _cmd_raft_log(c, args)
    elif cmd == "raft-state":
        _cmd_raft_state(c, args)
    elif cmd == "applied":
        _cmd_applied(c, args)
    else:
        raise TranscriptError(f"unknown command {cmd!r}")


def run_transcript(text: str) -> str:
    """Run every command in ``text``; return the text with the actual outputs in place."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    result: list[str] = []
    cluster = _Cluster()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            result.append(line)
            i += 1
            continue
        i += 1
        if i < len(lines) and lines[i] == "----":
            i += 1
            while i < len(lines) and lines[i].strip():
                i += 1
        cluster.out = []
        try:
            _run_command(cluster, line)
        except (TranscriptError, ValueError, IndexError) as e:
            raise TranscriptError(f"line {len(result) + 1}: {line!r}: {e}") from e
        result.append(line)
        result.append("----")
        result.extend(cluster.out or ["ok"])
    return "\n".join(result) + "\n"
