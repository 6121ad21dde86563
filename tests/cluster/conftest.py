"""Fixtures for the real-host tests: labs of network namespaces.

Every test here needs root (network namespaces); without it the test is
skipped with the reason. CI runs the suite as root.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from dcrond.testing._netns import NetnsLab, netns_unavailable, remove_leftovers


@pytest.fixture
def make_lab() -> Iterator[Callable[[int], NetnsLab]]:
    """``make_lab(n)``: a lab of n hosts, removed after the test whatever happens."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    remove_leftovers()
    labs: list[NetnsLab] = []

    def make(count: int) -> NetnsLab:
        lab = NetnsLab(count)
        labs.append(lab)
        return lab.__enter__()

    yield make
    for lab in labs:
        lab.close()
