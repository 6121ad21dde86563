"""Scripts and logs in object storage: a local folder, S3, or OpenStack Swift.

Theory of operation
-------------------
Two kinds of object, under one root URL (``file:///var/lib/dcrond/objects``
by default; ``s3://bucket/prefix`` through s3fs; ``swift://container/prefix``
through Swift's S3 API):

* ``scripts/<aa>/<sha256>`` — a script's bytes, named by their hash, so a job
  version that records the hash pins exactly what it runs. Writing the same
  script twice writes one object. A fetch checks the hash, and hosts keep a
  local cache by hash (a cache hit never touches storage).
* ``logs/<job>/<run id>/<attempt>.log`` — one attempt's output, uploaded from
  its spool file when it ends. The key is recorded on the run.

A key holds nothing or one complete upload, never a partial one (see
``_blobback``); uploads stream from the spool file in parts, so a 100 MiB log
does not sit in memory. Storage calls block (s3fs runs its own event loop in
a thread), so each goes through ``trio.to_thread.run_sync``: the trio loop
never waits on storage.

Failures come out as ``StorageUnavailable`` (transient: the caller retries
with backoff; nothing was written under the key), ``StorageRefused`` (wrong
credentials, missing bucket: an operator must act), ``BlobNotFound``, or a
plain ``StorageError``; every message names the storage URL. ``check()``
writes, reads back and deletes a probe object, which is what the daemon
calls at start-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, final, runtime_checkable
from urllib.parse import unquote, urlsplit

import trio

from dcrond.errors import BlobNotFound, InvalidRequest, NotFound, StorageError
from dcrond.store._blobback import Backend, BlobOptions, open_backend

T = TypeVar("T")

_SHA = re.compile(r"^[0-9a-f]{64}$")
_SAFE = re.compile(r"[^A-Za-z0-9._@:+-]")


def script_key(sha: str) -> str:
    """Where a script with this sha256 lives."""
    if not _SHA.match(sha):
        raise InvalidRequest(f"not a sha256: {sha!r}")
    return f"scripts/{sha[:2]}/{sha}"


def log_key(job: str, run_id: str, attempt: int) -> str:
    """Where one attempt's log lives (names made safe for every backend)."""
    job_part, run_part = (_SAFE.sub("_", job), _SAFE.sub("_", run_id))
    # "." and ".." are safe characters but must not become path segments
    job_part, run_part = (p if p.strip(".") else p.replace(".", "_") for p in (job_part, run_part))
    return f"logs/{job_part}/{run_part}/{int(attempt)}.log"


def log_part_key(key: str, start: int) -> str:
    """Where the piece of a running attempt's log that starts at byte ``start`` lives."""
    return f"{key}{PARTS_SUFFIX}{int(start):0{PART_DIGITS}d}"


#: a log's pieces live under ``<log key>.parts/`` (beside the final object, never under it)
PARTS_SUFFIX = ".parts/"
PART_DIGITS = 16


class BlobStore(Protocol):
    """What the runner and the API need of object storage."""

    async def put_script(self, data: bytes) -> str: ...

    async def get_script(self, sha: str) -> bytes: ...

    async def put_log(self, key: str, source: Path) -> int: ...

    async def read(self, key: str, offset: int = 0, size: int = -1) -> bytes: ...

    async def delete(self, keys: list[str]) -> None: ...


@runtime_checkable
class LogPartStore(Protocol):
    """Storage that also keeps the pieces of a log while its attempt runs (``Blobs`` does)."""

    async def put_log_part(self, key: str, start: int, data: bytes) -> None: ...

    async def log_parts(self, key: str) -> list[tuple[int, int]]: ...

    async def delete_log_parts(self, key: str) -> int: ...

    async def read_log(self, key: str, offset: int, size: int) -> tuple[bytes, bool]: ...


@final
@dataclass(frozen=True, slots=True)
class BlobStatistics:
    """Counters of one ``Blobs`` since it was made (for /metrics and cluster status)."""

    uploads: int
    uploaded_bytes: int
    downloads: int
    downloaded_bytes: int
    cache_hits: int
    failures: int


@final
class Blobs:
    """Object storage at ``url``, with a local script cache in ``cache_dir``.

    ``options`` are the fields of ``BlobOptions`` (``endpoint_url``,
    ``region``, ``profile``, ``key``, ``secret``, ``part_size`` ...). A bad
    URL or option raises ``InvalidRequest`` here; nothing is contacted until
    the first call (``check()`` at start-up).
    """

    def __init__(self, url: str, *, cache_dir: Path | None = None, **options: Any) -> None:
        self.url = url
        self.options = BlobOptions.from_kwargs(options)
        self.backend: Backend = open_backend(url, self.options)
        self.cache_dir = cache_dir
        self.uploads = 0
        self.uploaded_bytes = 0
        self.downloads = 0
        self.downloaded_bytes = 0
        self.cache_hits = 0
        self.failures = 0

    def statistics(self) -> BlobStatistics:
        """What this instance has done so far."""
        return BlobStatistics(
            uploads=self.uploads,
            uploaded_bytes=self.uploaded_bytes,
            downloads=self.downloads,
            downloaded_bytes=self.downloaded_bytes,
            cache_hits=self.cache_hits,
            failures=self.failures,
        )

    async def _call(self, key: str | None, fn: Any, *args: Any) -> Any:
        try:
            return await trio.to_thread.run_sync(fn, *args)
        except Exception as exc:
            self.failures += 1
            raise self.backend.translate(exc, key) from exc

    async def check(self) -> None:
        """Write, read back and delete a probe object; a StorageError says why not.

        ``StorageRefused`` for wrong credentials, a missing bucket or an
        unwritable folder; ``StorageUnavailable`` when the endpoint cannot be
        reached. The message names the URL and the cause.
        """
        await self._call(None, self.backend.probe)

    async def aclose(self) -> None:
        """Release connections (the instance is unusable afterwards)."""
        await trio.to_thread.run_sync(self.backend.close)

    async def put_script(self, data: bytes) -> str:
        """Store a script by its sha256 (once) and return the hash."""
        sha = hashlib.sha256(data).hexdigest()
        key = script_key(sha)

        def put() -> bool:
            if self.backend.exists(key):
                return False
            self.backend.put_bytes(key, data)
            return True

        if await self._call(key, put):
            self.uploads += 1
            self.uploaded_bytes += len(data)
        self._cache_put(sha, data)
        return sha

    async def get_script(self, sha: str) -> bytes:
        """A script's bytes, from the local cache or storage; checks the hash."""
        key = script_key(sha)
        cached = self._cache_get(sha)
        if cached is not None:
            self.cache_hits += 1
            return cached
        try:
            data: bytes = await self._call(key, self.backend.read, key, 0, None)
        except BlobNotFound:
            raise BlobNotFound(f"script {sha} is missing from {self.url}") from None
        self.downloads += 1
        self.downloaded_bytes += len(data)
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
        if path.exists() and self._cache_get(sha) is not None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{sha}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    async def put_log(self, key: str, source: Path) -> int:
        """Upload a local log file to ``key`` (replacing it whole); returns its size.

        Streams ``source`` in parts. On any error nothing new is visible under
        ``key``; ``StorageUnavailable`` means the same call may be retried.
        """
        size: int = await self._call(key, self._put_file, key, source)
        self.uploads += 1
        self.uploaded_bytes += size
        return size

    def _put_file(self, key: str, source: Path) -> int:
        size = source.stat().st_size
        self.backend.put_file(key, source)
        return size

    async def size(self, key: str) -> int:
        """The size of the object under ``key``; BlobNotFound if there is none."""
        size: int = await self._call(key, self.backend.size, key)
        return size

    async def read(self, key: str, offset: int = 0, size: int = -1) -> bytes:
        """Bytes of an object from ``offset`` (all of it with size -1).

        Reading past the end gives fewer bytes (or none); page through a large
        log with ``size`` rather than reading it whole.
        """
        if offset < 0:
            raise InvalidRequest(f"offset must be >= 0, got {offset}")
        end = None if size < 0 else offset + size
        data: bytes = await self._call(key, self.backend.read, key, offset, end)
        self.downloaded_bytes += len(data)
        return data

    async def fetch_log(self, key: str, dest: Path) -> int:
        """Download the object under ``key`` to the local file ``dest``, streaming.

        ``dest`` appears whole or not at all (written beside it, then renamed).
        """

        def fetch() -> int:
            tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
            try:
                self.backend.get_file(key, tmp)
                tmp.replace(dest)
            finally:
                tmp.unlink(missing_ok=True)
            return dest.stat().st_size

        size: int = await self._call(key, fetch)
        self.downloads += 1
        self.downloaded_bytes += size
        return size

    async def delete(self, keys: list[str]) -> None:
        """Remove objects (missing ones are fine)."""

        def rm() -> None:
            for key in keys:
                with contextlib.suppress(FileNotFoundError):
                    self.backend.delete(key)

        await self._call(None, rm)

    # --- script URLs --------------------------------------------------------------

    def key_of_url(self, url: str) -> str:
        """The key of ``url`` under this storage's root URL.

        InvalidRequest when ``url`` lies elsewhere (another scheme, bucket or
        folder, outside the prefix) or names no object (empty, ``.``/``..``
        segments): dcrond reads scripts only from its own configured storage,
        with its own credentials.
        """
        root, given = urlsplit(self.url), urlsplit(url)
        where = f"{url!r} is not in this cluster's object storage ({self.url})"
        if given.query or given.fragment:
            raise InvalidRequest(f"script url {url!r}: a query or fragment is not allowed")
        if (given.scheme.lower(), given.netloc) != (root.scheme.lower(), root.netloc):
            raise InvalidRequest(f"script url {where}; give a URL under it")
        base = [seg for seg in unquote(root.path).split("/") if seg]
        path = unquote(given.path).split("/")
        if path and path[0] == "":
            path = path[1:]
        if path[: len(base)] != base:
            raise InvalidRequest(f"script url {where}; give a URL under it")
        rest = path[len(base) :]
        if not rest or any(seg in ("", ".", "..") for seg in rest) or "\0" in url:
            raise InvalidRequest(
                f"script url {url!r}: name one object under {self.url} "
                "(no empty, '.' or '..' path segments)"
            )
        return "/".join(rest)

    async def read_script_url(self, url: str, limit: int) -> tuple[str, bytes]:
        """Read the object at ``url`` (under this storage) as a script: (its URL, its bytes).

        The URL comes back in one canonical form (root URL + key). InvalidRequest
        for a URL outside this storage or an object over ``limit`` bytes (its
        size is asked first, so nothing large is downloaded); NotFound when no
        object is there; other storage errors as they come.
        """
        key = self.key_of_url(url)
        canonical = f"{self.url.rstrip('/')}/{key}"
        try:
            size = await self.size(key)
            if size > limit:
                raise InvalidRequest(
                    f"script url {canonical}: the object is {size} bytes; the limit is "
                    f"{limit} ([jobs] max_script_bytes)"
                )
            data: bytes = await self._call(key, self.backend.read, key, 0, size)
        except BlobNotFound:
            raise NotFound(f"script url {canonical}: no object there") from None
        if len(data) > limit:  # it grew between the two calls
            raise InvalidRequest(
                f"script url {canonical}: the object is over the limit of {limit} bytes "
                "([jobs] max_script_bytes)"
            )
        self.downloads += 1
        self.downloaded_bytes += len(data)
        return canonical, data

    # --- pieces of running attempts' logs ---------------------------------------------

    async def put_log_part(self, key: str, start: int, data: bytes) -> None:
        """Store the piece of the log ``key`` that starts at byte ``start`` (replacing it)."""
        part = log_part_key(key, start)
        await self._call(part, self.backend.put_bytes, part, data)
        self.uploads += 1
        self.uploaded_bytes += len(data)

    async def log_parts(self, key: str) -> list[tuple[int, int]]:
        """The stored pieces of the log ``key``: (start, size), by start; [] for none."""
        prefix = f"{key}{PARTS_SUFFIX}"
        found: list[tuple[str, int]] = await self._call(None, self.backend.list, prefix)
        parts = []
        for name, size in found:
            tail = name.removeprefix(prefix)
            if len(tail) == PART_DIGITS and tail.isdigit():
                parts.append((int(tail), size))
        return sorted(parts)

    async def delete_log_parts(self, key: str) -> int:
        """Remove the pieces of the log ``key`` (once the whole log is stored); how many."""
        parts = await self.log_parts(key)
        await self.delete([log_part_key(key, start) for start, _size in parts])
        return len(parts)

    async def read_log(self, key: str, offset: int, size: int) -> tuple[bytes, bool]:
        """Up to ``size`` bytes of the log ``key`` from ``offset``: (data, complete).

        From the whole object when it is stored (``complete`` True: fewer bytes
        than asked means the end); else from the pieces uploaded while its
        attempt ran (``complete`` False: more may come). BlobNotFound when
        there is neither.
        """
        if offset < 0:
            raise InvalidRequest(f"offset must be >= 0, got {offset}")
        try:
            return await self.read(key, offset, size), True
        except BlobNotFound:
            pass
        parts = await self.log_parts(key)
        if not parts:
            raise BlobNotFound(f"{key} is not in {self.url}")
        # pieces are contiguous from 0 (a restarted daemon may re-send overlapping ones,
        # with the same bytes): take the one reaching furthest past the offset
        holding = [(start + n, start) for start, n in parts if start <= offset < start + n]
        if not holding:
            return b"", False
        end, start = max(holding)
        want = min(size, end - offset)
        part = log_part_key(key, start)
        try:
            data = await self.read(part, offset - start, want)
        except BlobNotFound:  # the whole log landed and its pieces went meanwhile
            return await self.read(key, offset, size), True
        return data, False
