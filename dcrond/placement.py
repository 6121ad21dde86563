"""Placement: which hosts a run of a job is offered to, in which order, and why none.

Theory of operation
-------------------
The leader places every attempt. It hands :func:`place` three things:

* the job's :class:`Requirements` -- its ``tags`` (a host must carry every
  ``key=value``) and ``on``: ``"any"`` (one run on one host, the default),
  ``"all"`` (one run per matching host) or an int *N* (one run on each of
  *N* distinct hosts);
* a view of the hosts (:class:`HostView`, built from gossip and the Raft
  configuration by :func:`hosts_from_cluster`), plus the hosts to leave out
  for this run (``exclude``: they already refused it, or an earlier attempt
  failed there), each with a short phrase saying why;
* a round-robin ``cursor``: any integer the caller advances by one per
  placement (it need not be persisted; a new leader may start from 0).

A host is **eligible** when it carries every required tag, its gossip state
is ``alive``, it is a voter or learner of the Raft configuration (a host that
only gossips has no copy of the log yet, so it could not see an assignment),
its log is at most ``MAX_BEHIND`` entries behind the leader's (a host that
just joined, or is being sent a snapshot, would learn of its assignment
late), and it is not excluded. Eligible hosts are ordered:

1. most free run slots first (``free_slots`` from gossip);
2. hosts with 0 free slots are kept, but last: the figure is up to a gossip
   round old, so such a host may have freed a slot by the time it is asked;
   asked and full, it refuses and the caller moves to the next host;
3. ties (equal free slots) take turns: the equal hosts, in name order, are
   rotated by ``cursor``, so over ``k`` consecutive cursors a group of ``k``
   equal hosts puts each one first exactly once.

:class:`Placement` splits that order into ``chosen`` -- the first host
(``any``), the first ``min(N, eligible)`` hosts (*N*) or every eligible host
(``all``) -- and ``spares``, the rest, to ask in order when a chosen host
refuses (always empty for ``all``: each matching host has its own run, so
there is nobody to fall back to). ``reason`` is empty when enough hosts are
eligible; otherwise it says which constraint nobody met and what each other
host lacks, e.g. ``no alive host carries role=db (a has role=web; b is
dead)``, for the caller to record on a run it skips.

Everything here is a pure function of its arguments: no I/O, no clock, no
randomness, and no dependence on the order the hosts are given in -- the
same input always gives the same output, on every leader.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, TypeAlias, final

from dcrond.errors import InvalidRequest

if TYPE_CHECKING:
    from dcrond.gossip._types import Member

__all__ = [
    "MAX_BEHIND",
    "REASON_HOSTS",
    "HostState",
    "HostView",
    "Placement",
    "Requirements",
    "explain",
    "hosts_from_cluster",
    "order",
    "place",
]

#: a host's gossip state; ``unknown``: in the Raft configuration, but not (yet) in gossip
HostState: TypeAlias = Literal["alive", "suspect", "dead", "left", "unknown"]
On: TypeAlias = Literal["any", "all"] | int

#: hosts named one by one in a reason; the rest are counted
REASON_HOSTS: Final = 8


def _pairs(tags: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    items = tags.items() if isinstance(tags, Mapping) else tags
    return tuple(sorted(dict(items).items()))


@final
@dataclass(frozen=True, slots=True)
class Requirements:
    """What a job asks of its hosts: every tag in ``tags``, on ``on`` hosts.

    ``tags`` may be given as a dict or ``(key, value)`` pairs; it is kept as
    sorted pairs. ``on`` is ``"any"``, ``"all"`` or an int >= 1; anything
    else is the caller's fault (``InvalidRequest``).
    """

    tags: tuple[tuple[str, str], ...] = ()
    on: On = "any"

    def __init__(
        self,
        tags: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        on: On = "any",
    ) -> None:
        if isinstance(on, bool) or not (on in ("any", "all") or (isinstance(on, int) and on >= 1)):
            raise InvalidRequest(f"on: {on!r} is not allowed; use 'any', 'all' or an integer >= 1")
        object.__setattr__(self, "tags", _pairs(tags))
        object.__setattr__(self, "on", on)

    def describe(self) -> str:
        """The tags as ``k=v, k2=v2`` (empty when the job asks for none)."""
        return ", ".join(f"{k}={v}" for k, v in self.tags)


@final
@dataclass(frozen=True, slots=True)
class HostView:
    """One host as the leader sees it when placing a run.

    ``in_raft``: a voter or learner of the Raft configuration (not only a
    gossip member). ``free_slots``: run slots it last announced free.
    ``behind``: entries of the log the leader knows it lacks (0: none, or
    not known).
    """

    name: str
    tags: tuple[tuple[str, str], ...] = ()
    state: HostState = "alive"
    in_raft: bool = True
    free_slots: int = 0
    behind: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", _pairs(self.tags))

    def tag_map(self) -> dict[str, str]:
        """The tags as a dict."""
        return dict(self.tags)


@final
@dataclass(frozen=True, slots=True)
class Placement:
    """Where to offer a run: ``chosen`` first, then ``spares`` one by one on refusal.

    ``reason`` is empty when the requirement is met (at least one host for
    ``any`` and ``all``, *N* hosts for an int), else why it is not.
    """

    chosen: tuple[str, ...]
    spares: tuple[str, ...] = ()
    reason: str = ""
    wanted: int = field(default=1)  #: hosts the requirement asks for (``all``: every eligible)

    @property
    def candidates(self) -> tuple[str, ...]:
        """Every eligible host, in the order to ask them."""
        return self.chosen + self.spares

    @property
    def met(self) -> bool:
        """Whether enough hosts are eligible (``reason`` is empty)."""
        return not self.reason


def _mismatch(req: Requirements, host: HostView) -> list[str]:
    """What ``host`` lacks of ``req.tags``: ``role=web`` (another value) or ``no zone``."""
    have = host.tag_map()
    out = []
    for k, v in req.tags:
        if k not in have:
            out.append(f"no {k}")
        elif have[k] != v:
            out.append(f"{k}={have[k]}")
    return out


def _why_not(req: Requirements, host: HostView, exclude: Mapping[str, str]) -> str:
    """Why ``host`` is not eligible ("" if it is): tags first, then state, log, exclusion.

    A host gossip does not show has no known tags, so that is said instead.
    """
    if host.state == "unknown":
        return "is not in gossip"
    missing = _mismatch(req, host)
    if missing:
        return "has " + " and ".join(missing)
    if host.state != "alive":
        return {
            "suspect": "is suspect",
            "dead": "is dead",
            "left": "has left",
        }[host.state]
    if not host.in_raft:
        return "is not in the Raft configuration yet"
    if host.behind > MAX_BEHIND:
        return f"is still catching up on the log ({host.behind} entries behind)"
    if host.name in exclude:
        return exclude[host.name] or "is excluded"
    return ""


def _unique(hosts: Iterable[HostView]) -> list[HostView]:
    by_name: dict[str, HostView] = {}
    for h in hosts:
        if h.name in by_name:
            raise ValueError(f"host {h.name!r} appears twice in the host view (a caller bug)")
        by_name[h.name] = h
    return [by_name[n] for n in sorted(by_name)]


def order(hosts: Iterable[HostView], cursor: int) -> tuple[str, ...]:
    """``hosts`` by free slots (most first, 0 last), equal ones rotated by ``cursor``.

    No filtering: :func:`place` orders only the eligible hosts with this.
    """
    groups: dict[int, list[str]] = {}
    for h in _unique(hosts):
        groups.setdefault(max(0, h.free_slots), []).append(h.name)
    out: list[str] = []
    for slots in sorted(groups, reverse=True):
        names = groups[slots]  # in name order (``_unique`` sorts)
        start = cursor % len(names)
        out.extend(names[start:] + names[:start])
    return tuple(out)


def explain(
    req: Requirements,
    hosts: Iterable[HostView],
    exclude: Mapping[str, str] | Collection[str] = (),
    *,
    eligible: int = 0,
) -> str:
    """Why fewer hosts than ``req`` wants are eligible, naming each other host's lack.

    ``eligible``: how many are (0 for "nothing matched"). The wording:
    ``no alive host carries role=db (a has role=web; b is dead)``, or
    ``only 2 alive hosts carry role=db; 3 wanted (c has no role)``.
    """
    excl = _exclusions(exclude)
    listed = _unique(hosts)
    what = f"alive host carries {req.describe()}" if req.tags else "alive host is available"
    if eligible == 0:
        head = f"no {what}"
    else:
        wanted = req.on if isinstance(req.on, int) else 1
        if eligible > 1:
            what = what.replace("host carries", "hosts carry").replace("host is", "hosts are")
        head = f"only {eligible} {what}; {wanted} wanted"
    others = [(h.name, why) for h in listed if (why := _why_not(req, h, excl))]
    if not listed:
        return f"{head} (no hosts known)"
    if not others:
        return head
    shown = "; ".join(f"{name} {why}" for name, why in others[:REASON_HOSTS])
    if len(others) > REASON_HOSTS:
        shown += f"; {len(others) - REASON_HOSTS} more"
    return f"{head} ({shown})"


def _exclusions(exclude: Mapping[str, str] | Collection[str]) -> Mapping[str, str]:
    if isinstance(exclude, Mapping):
        return exclude
    return dict.fromkeys(exclude, "")


def place(
    req: Requirements,
    hosts: Iterable[HostView],
    *,
    cursor: int = 0,
    exclude: Mapping[str, str] | Collection[str] = (),
) -> Placement:
    """The hosts to offer one run of a job to, in order (see the module doc).

    ``exclude`` maps a host to a phrase that completes "<host> ..." in a
    reason (``{"b": "refused (no free slot)"}``); a plain collection of names
    works too. A host named twice in ``hosts`` is a caller bug (ValueError).
    """
    listed = _unique(hosts)
    excl = _exclusions(exclude)
    eligible = [h for h in listed if not _why_not(req, h, excl)]
    ordered = order(eligible, cursor)
    chosen: tuple[str, ...]
    spares: tuple[str, ...]
    if req.on == "all":
        chosen, spares, wanted = ordered, (), max(1, len(ordered))
    else:
        wanted = 1 if req.on == "any" else int(req.on)
        chosen, spares = ordered[:wanted], ordered[wanted:]
    reason = "" if len(chosen) >= wanted else explain(req, listed, excl, eligible=len(chosen))
    return Placement(chosen=chosen, spares=spares, reason=reason, wanted=wanted)


def hosts_from_cluster(
    members: Iterable[Member],
    *,
    cluster_id: str,
    voters: Collection[str],
    learners: Collection[str] = (),
    behind: Mapping[str, int] | None = None,
) -> tuple[HostView, ...]:
    """The host view from gossip members and the Raft configuration, hosts of this cluster only.

    ``behind``: how many entries each follower's log lacks (the leader's Raft progress).

    A member counts when its gossip record carries ``cluster_id`` (hosts of
    another cluster on the same network, and hosts that have not settled
    their cluster yet, are left out). A voter or learner gossip does not
    show (or shows under another id) is listed as ``unknown`` with no tags,
    so a reason can name it.
    """
    conf = set(voters) | set(learners)
    views: dict[str, HostView] = {}
    for m in members:
        if not cluster_id or m.meta.cluster_id != cluster_id:
            continue
        views[m.name] = HostView(
            name=m.name,
            tags=m.meta.tags,
            state=_STATES[m.state.name],
            in_raft=m.name in conf,
            free_slots=m.meta.free_slots,
            behind=0 if behind is None else behind.get(m.name, 0),
        )
    for name in conf - views.keys():
        views[name] = HostView(name=name, state="unknown", in_raft=True)
    return tuple(views[n] for n in sorted(views))


#: a host whose log lacks more entries than this is not offered runs (see the module doc):
#: far above what a busy follower has in flight, far below a fresh host's catch-up
MAX_BEHIND: Final = 1000

_STATES: Final[dict[str, HostState]] = {
    "ALIVE": "alive",
    "SUSPECT": "suspect",
    "DEAD": "dead",
    "LEFT": "left",
}
