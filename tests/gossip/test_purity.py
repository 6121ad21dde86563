"""The gossip core stays pure: no I/O, clock, threads or randomness of its own.

Same check as tests/raft/test_purity.py: follow the import graph from
``dcrond.gossip._core`` through every ``dcrond`` module it reaches and read
each module's source, so an import hidden inside a function is caught too.
"""

from __future__ import annotations

from tests.raft.test_purity import FORBIDDEN, _imports, _source


def core_import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    todo = ["dcrond.gossip._core"]
    while todo:
        mod = todo.pop()
        if mod in graph:
            continue
        path = _source(mod)
        if path is None:
            continue
        graph[mod] = imported = _imports(path)
        for name in imported:
            if name.startswith("dcrond."):
                target = _source(name)
                if target is not None and target.name != "__init__.py":
                    todo.append(name)
    return graph


def test_gossip_core_modules_import_nothing_impure() -> None:
    graph = core_import_graph()
    offenders = {
        mod: sorted(n for n in names if n.split(".")[0] in FORBIDDEN)
        for mod, names in graph.items()
    }
    assert {m: o for m, o in offenders.items() if o} == {}


def test_graph_covers_the_core_and_its_helpers() -> None:
    graph = core_import_graph()
    for mod in (
        "dcrond.gossip._core",
        "dcrond.gossip._corebase",
        "dcrond.gossip._updates",
        "dcrond.gossip._probing",
        "dcrond.gossip._health",
        "dcrond.gossip._broadcast",
        "dcrond.gossip._codec",
        "dcrond.gossip._types",
        "dcrond.errors",
    ):
        assert mod in graph
