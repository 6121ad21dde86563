"""Real object stores for the storage tests: a local folder, moto's S3 server, and Swift.

The servers are session-scoped (Swift takes a few seconds to start); each
test gets its own prefix inside the one bucket, so tests never see each
other's objects. The ``store`` fixture runs a test once per backend. Swift is
skipped, with the reason, only when Debian's Swift packages are missing.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dcrond.store._blobback import LocalBackend
from dcrond.store._blobs import Blobs
from dcrond.store._blobs3 import S3Backend
from dcrond.testing._s3server import MotoServer
from dcrond.testing._swiftserver import SwiftServer, swift_missing

BUCKET = "dcrond-tests"
BACKENDS = ["file", "s3", "swift"]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's S3 server with credential checks on, and the bucket BUCKET."""
    with MotoServer(auth=True) as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(scope="session")
def swift_server() -> Iterator[SwiftServer]:
    """A one-replica Swift with tempauth and s3api, and the container BUCKET."""
    reason = swift_missing()
    if reason is not None:
        pytest.skip(reason)
    with SwiftServer() as server:
        server.create_container(BUCKET)
        yield server


@dataclass
class Store:
    """One object store as a test sees it: its URL and the options that reach it."""

    kind: str
    url: str
    options: dict[str, Any]
    made: list[Blobs] = field(default_factory=list)

    def blobs(self, cache_dir: Path | None = None, **overrides: Any) -> Blobs:
        """A new ``Blobs`` on this store (closed when the test ends)."""
        b = Blobs(self.url, cache_dir=cache_dir, **{**self.options, **overrides})
        self.made.append(b)
        return b

    def keys(self) -> list[str]:
        """Every object under the store's root, listed past ``Blobs`` (blocking)."""
        backend = self.blobs().backend
        if isinstance(backend, LocalBackend):
            if not backend.root.exists():
                return []
            found = backend.root.rglob("*")
            return sorted(str(p.relative_to(backend.root)) for p in found if p.is_file())
        assert isinstance(backend, S3Backend)
        root = backend.root + "/"
        return sorted(p.removeprefix(root) for p in backend.fs.find(root))

    def close(self) -> None:
        for b in self.made:
            b.backend.close()


def _prefix(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]
    return f"{name}-{secrets.token_hex(4)}"


def make_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A fresh, empty ``Store`` of ``kind`` for this test."""
    if kind == "file":
        return Store("file", f"file://{tmp_path / 'objects'}", {})
    if kind == "s3":
        moto: MotoServer = request.getfixturevalue("moto_server")
        return Store("s3", f"s3://{BUCKET}/{_prefix(request)}", moto.options())
    swift: SwiftServer = request.getfixturevalue("swift_server")
    return Store("swift", f"swift://{BUCKET}/{_prefix(request)}", swift.options())


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each backend in turn, with a prefix of its own."""
    s = make_store(request.param, request, tmp_path)
    yield s
    s.close()
