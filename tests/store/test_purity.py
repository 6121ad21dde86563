"""Applying a command reads no clock and no randomness: times travel inside commands.

The check follows the import graph from ``dcrond.store._store`` through every
``dcrond`` module it reaches (the raft value types, the schedule parser) and
reads each module's source, so an import hidden in a function is caught too.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

FORBIDDEN_MODULES = {"time", "random", "secrets", "uuid", "trio", "socket"}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "urandom", "getrandbits", "time_ns"}


def _tree(module: str) -> tuple[Path, ast.Module] | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ModuleNotFoundError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin)
    return path, ast.parse(path.read_text(), str(path))


def _reached() -> dict[str, ast.Module]:
    seen: dict[str, ast.Module] = {}
    todo = ["dcrond.store._store"]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        found = _tree(mod)
        if found is None:
            continue
        seen[mod] = found[1]
        for node in ast.walk(found[1]):
            if isinstance(node, ast.Import):
                todo.extend(a.name for a in node.names if a.name.startswith("dcrond"))
            elif (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("dcrond")
            ):
                todo.append(node.module)
                todo.extend(f"{node.module}.{a.name}" for a in node.names)
    return seen


def test_the_apply_path_reads_no_clock_and_no_randomness() -> None:
    reached = _reached()
    assert "dcrond.store._runs" in reached and "dcrond.schedule" in reached
    for module, tree in reached.items():
        if module.endswith("__init__"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bad = {a.name.split(".")[0] for a in node.names} & FORBIDDEN_MODULES
                assert not bad, f"{module} imports {bad}"
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert node.module.split(".")[0] not in FORBIDDEN_MODULES, module
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in FORBIDDEN_CALLS, f"{module} calls .{node.func.attr}()"
