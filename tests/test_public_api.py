"""Every dcrond package exposes exactly what its ``__all__`` promises.

Generic on purpose: it walks every package under ``dcrond`` (including the
ones added later), so a new package is checked without editing this file.
"""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import dcrond


def _packages() -> list[str]:
    names = ["dcrond"]
    for info in pkgutil.walk_packages(dcrond.__path__, "dcrond."):
        if info.ispkg:
            names.append(info.name)
    return sorted(names)


PACKAGES = _packages()


def test_every_subpackage_is_found() -> None:
    for pkg in ("dcrond.raft", "dcrond.gossip", "dcrond.runner", "dcrond.store"):
        assert pkg in PACKAGES


@pytest.mark.parametrize("name", PACKAGES)
def test_package_declares_all_and_every_name_exists(name: str) -> None:
    pkg = importlib.import_module(name)
    exported = getattr(pkg, "__all__", None)
    assert isinstance(exported, list | tuple), f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(pkg, n)]
    assert missing == [], f"{name}.__all__ names things it does not define"


@pytest.mark.parametrize("name", PACKAGES)
def test_package_exports_nothing_private(name: str) -> None:
    pkg = importlib.import_module(name)
    exported: list[str] = list(getattr(pkg, "__all__", []))
    private = [n for n in exported if n.startswith("_") and n != "__version__"]
    assert private == []
    for n in exported:
        obj = getattr(pkg, n)
        if isinstance(obj, types.ModuleType):
            pytest.fail(f"{name}.{n} exports a module")


@pytest.mark.parametrize("name", PACKAGES)
def test_public_objects_do_not_live_in_a_public_module_by_accident(name: str) -> None:
    """Public classes and functions are defined in private modules or the package itself."""
    pkg = importlib.import_module(name)
    for n in getattr(pkg, "__all__", []):
        obj = getattr(pkg, n)
        module = getattr(obj, "__module__", None)
        if not isinstance(module, str) or not module.startswith("dcrond"):
            continue
        parts = module.split(".")
        assert all(p.startswith("_") for p in parts[len(name.split(".")) :]) or module == name, (
            f"{name}.{n} comes from {module}"
        )
