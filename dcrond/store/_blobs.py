"""Scripts and logs in object storage through fsspec.

Theory of operation
-------------------
Two kinds of object, under one root URL (``file:///var/lib/dcrond/blobs`` by
default; ``s3://bucket/prefix`` through s3fs; others fsspec knows):

* ``scripts/<aa>/<sha256>`` — a script's bytes, named by their hash, so a job
  version that records the hash pins exactly what it runs. Writing the same
  script twice writes one object. A fetch checks the hash, and hosts keep a
  local cache by hash (a cache hit never touches storage).
* ``logs/<job>/<run id>/<attempt>.log`` — one attempt's output, uploaded when
  it ends. The key is recorded on the run.

fsspec is synchronous (s3fs runs its own event loop in a thread), so every
call goes through ``trio.to_thread.run_sync``: the trio loop never blocks on
storage. ``Blobs`` is the seam; ``MemoryBlobs`` in ``dcrond.testing`` is its
fake.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Protocol, final

import fsspec
import trio

from dcrond.errors import InvalidRequest, StorageError

_SHA = re.compile(r"^[0-9a-f]{64}$")
_SAFE = re.compile(r"[^A-Za-z0-9._@:+-]")


def script_key(sha: str) -> str:
    """Where a script with this sha256 lives."""
    if not _SHA.match(sha):
        raise InvalidRequest(f"not a sha256: {sha!r}")
    return f"scripts/{sha[:2]}/{sha}"


def log_key(job: str, run_id: str, attempt: int) -> str:
    """Where one attempt's log lives (names made safe for every backend)."""
    return f"logs/{_SAFE.sub('_', job)}/{_SAFE.sub('_', run_id)}/{int(attempt)}.log"


class BlobStore(Protocol):
    """What the runner and the API need of object storage."""

    async def put_script(self, data: bytes) -> str: ...

    async def get_script(self, sha: str) -> bytes: ...

    async def put_log(self, key: str, source: Path) -> int: ...

    async def read(self, key: str, offset: int = 0, size: int = -1) -> bytes: ...

    async def delete(self, keys: list[str]) -> None: ...


@final
class Blobs:
    """Object storage at ``url`` through fsspec, with a local script cache."""

    def __init__(self, url: str, *, cache_dir: Path | None = None, **options: Any) -> None:
        try:
            fs, root = fsspec.core.url_to_fs(url, **options)
        except (ValueError, ImportError) as exc:
            raise InvalidRequest(f"storage url {url!r}: {exc}") from None
        self.url = url
        self.fs = fs
        self.root = root.rstrip("/")
        self.cache_dir = cache_dir
        self.uploads = 0
        self.downloads = 0
        self.cache_hits = 0

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await trio.to_thread.run_sync(fn, *args)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"object storage {self.url}: {exc}") from exc

    async def check(self) -> None:
        """Make sure the root exists and is writable; StorageError says why not."""

        def probe() -> None:
            self.fs.makedirs(self.root, exist_ok=True)
            probe_key = self._path(".dcrond-probe")
            self.fs.pipe_file(probe_key, b"ok")
            self.fs.rm_file(probe_key)

        await self._run(probe)

    async def put_script(self, data: bytes) -> str:
        """Store a script by its sha256 (once) and return the hash."""
        sha = hashlib.sha256(data).hexdigest()
        path = self._path(script_key(sha))

        def put() -> None:
            if self.fs.exists(path):
                return
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(path, data)

        await self._run(put)
        self.uploads += 1
        self._cache_put(sha, data)
        return sha

    async def get_script(self, sha: str) -> bytes:
        """A script's bytes, from the local cache or storage; checks the hash."""
        cached = self._cache_get(sha)
        if cached is not None:
            self.cache_hits += 1
            return cached
        try:
            data: bytes = await self._run(self.fs.cat_file, self._path(script_key(sha)))
        except FileNotFoundError:
            raise StorageError(f"script {sha} is missing from {self.url}") from None
        self.downloads += 1
        if hashlib.sha256(data).hexdigest() != sha:
            raise StorageError(f"script {sha} in {self.url} does not match its hash")
        self._cache_put(sha, data)
        return data

    def cached_script_path(self, sha: str) -> Path | None:
        """The local file of a cached script (for running it without a copy)."""
        if self.cache_dir is None:
            return None
        path = self.cache_dir / script_key(sha)
        return path if path.exists() else None

    def _cache_get(self, sha: str) -> bytes | None:
        path = self.cached_script_path(sha)
        if path is None:
            return None
        data = path.read_bytes()
        return data if hashlib.sha256(data).hexdigest() == sha else None

    def _cache_put(self, sha: str, data: bytes) -> None:
        if self.cache_dir is None:
            return
        path = self.cache_dir / script_key(sha)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(path)

    async def put_log(self, key: str, source: Path) -> int:
        """Upload a local log file to ``key``; returns its size."""
        path = self._path(key)

        def put() -> int:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(source), path)
            return source.stat().st_size

        size: int = await self._run(put)
        self.uploads += 1
        return size

    async def read(self, key: str, offset: int = 0, size: int = -1) -> bytes:
        """Bytes of an object from ``offset`` (all of it with size -1)."""
        end = None if size < 0 else offset + size
        try:
            data: bytes = await self._run(self.fs.cat_file, self._path(key), offset, end)
        except FileNotFoundError:
            raise StorageError(f"{key} is not in {self.url}") from None
        return data

    async def delete(self, keys: list[str]) -> None:
        """Remove objects (missing ones are fine)."""

        def rm() -> None:
            for key in keys:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(self._path(key))

        await self._run(rm)
