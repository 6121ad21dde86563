"""The Raft core stays pure: no I/O, clock, threads or randomness of its own.

The check follows the import graph from ``dcrond.raft._core`` through every
``dcrond`` module it imports (package ``__init__`` files aside: they
re-export the drivers too) and reads each module's source, so an import
hidden inside a function is caught as well.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

FORBIDDEN = {"trio", "socket", "time", "random", "apsw", "asyncio", "threading", "os"}


def _imports(path: Path) -> set[str]:
    """Every module name the file imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # ``from dcrond.raft import _x`` imports the submodule
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _source(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ModuleNotFoundError, ValueError):
        return None  # ``pkg.module.Name``: a name, not a module
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def core_import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports, for the core and every dcrond module it reaches."""
    graph: dict[str, set[str]] = {}
    todo = ["dcrond.raft._core"]
    while todo:
        mod = todo.pop()
        if mod in graph:
            continue
        path = _source(mod)
        if path is None:
            continue
        imported = _imports(path)
        graph[mod] = imported
        for name in imported:
            if name.startswith("dcrond."):
                target = _source(name)
                if target is not None and target.name != "__init__.py":
                    todo.append(name)
    return graph


def test_core_modules_import_nothing_impure() -> None:
    graph = core_import_graph()
    offenders = {
        mod: sorted(n for n in names if n.split(".")[0] in FORBIDDEN)
        for mod, names in graph.items()
    }
    assert {m: o for m, o in offenders.items() if o} == {}


def test_graph_covers_the_core_and_its_helpers() -> None:
    graph = core_import_graph()
    for mod in (
        "dcrond.raft._core",
        "dcrond.raft._corebase",
        "dcrond.raft._leader",
        "dcrond.raft._follower",
        "dcrond.raft._raftlog",
        "dcrond.raft._progress",
        "dcrond.raft._confchange",
        "dcrond.raft._readonly",
        "dcrond.raft._types",
        "dcrond.errors",
    ):
        assert mod in graph


def test_the_check_would_catch_an_impure_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import time\n    from os import path\n")
    assert {"time", "os"} <= _imports(bad)
