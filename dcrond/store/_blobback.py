"""Where ``Blobs`` keeps its bytes: one backend per URL scheme.

Theory of operation
-------------------
A backend is a small synchronous object (``Blobs`` calls it from a worker
thread) that stores whole objects under string keys relative to the root of
the storage URL. Every backend keeps one promise the callers rely on: **a
reader never sees a partial object under its final key**. A key holds nothing
or the complete bytes of one upload, even when the writer dies halfway.

* ``file://`` (``LocalBackend``): plain files. An upload is written to a
  hidden temporary file beside its final name, flushed to disk, and renamed
  over it; ``rename(2)`` is atomic within a file system. fsspec's local file
  system writes in place, so this backend uses the os module directly.
* ``s3://`` and ``swift://`` (``S3Backend`` in ``_blobs3``, through s3fs):
  an S3 PUT is atomic, and a multipart upload is invisible until its
  ``CompleteMultipartUpload``; a failed one is aborted. Swift is reached
  through its own S3 API (the ``s3api`` middleware): docs/storage.md says why.

Every failure is turned into one of the storage errors of ``dcrond.errors``
with a message that names the URL: ``StorageUnavailable`` (retry later),
``StorageRefused`` (fix the configuration), ``BlobNotFound``, or plain
``StorageError`` for anything unexpected.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar, final
from urllib.parse import unquote, urlsplit

from dcrond.errors import (
    BlobNotFound,
    InvalidRequest,
    StorageError,
    StorageRefused,
    StorageUnavailable,
)

T = TypeVar("T")

#: bytes copied per read/write when streaming a file
COPY_CHUNK = 1024 * 1024
#: the schemes ``Blobs`` accepts
SCHEMES = ("file", "s3", "swift")
#: multipart part size when ``part_size`` is 0, per scheme. Swift's s3api builds a
#: multipart upload from SLO segments and pays per segment, so bigger parts keep its
#: uploads as fast as plain s3fs (docs/benchmarks.md#object-storage)
DEFAULT_PART_SIZE = {"s3": 8 * 1024 * 1024, "swift": 32 * 1024 * 1024}
#: the part sizes S3 allows (the last part of an upload may be smaller)
MIN_PART_SIZE, MAX_PART_SIZE = 5 * 1024 * 1024, 5 * 1024 * 1024 * 1024


@final
@dataclass(frozen=True, slots=True)
class BlobOptions:
    """How to reach object storage; the names match the ``[storage]`` config keys.

    ``key`` and ``secret`` are for tests and tools: the daemon leaves them
    empty so the AWS credential chain (environment variables, the shared
    credentials file, ``profile``, instance roles) supplies them.
    """

    endpoint_url: str = ""  #: S3 or Swift (s3api) endpoint; empty: AWS
    region: str = ""  #: signing region; empty: botocore's default
    profile: str = ""  #: a profile of the shared AWS credentials/config files
    key: str = ""  #: access key id (empty: the credential chain)
    secret: str = ""  #: secret access key (empty: the credential chain)
    part_size: int = 0  #: multipart upload part size; 0: ``DEFAULT_PART_SIZE`` of the scheme
    max_concurrency: int = 4  #: parts in flight per upload
    connect_timeout: float = 10.0  #: seconds to open a connection
    read_timeout: float = 60.0  #: seconds without a byte before a request fails
    timeout: float = 120.0  #: deadline of one call, retries included, before transfer time
    min_rate: int = 256 * 1024  #: slowest transfer tolerated (bytes/s): adds size/min_rate

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> BlobOptions:
        """Options from keyword arguments; InvalidRequest names an unknown one."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidRequest(f"unknown storage option(s): {', '.join(unknown)}")
        return cls(**options)


class Backend(Protocol):
    """One kind of storage; every method blocks and may raise any exception.

    ``Blobs`` runs the methods in a worker thread and passes whatever they
    raise through ``translate``.
    """

    url: str

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, source: Path) -> None: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def read(self, key: str, start: int, end: int | None) -> bytes: ...

    def get_file(self, key: str, dest: Path) -> None: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> list[tuple[str, int]]: ...

    def probe(self) -> None: ...

    def translate(self, exc: BaseException, key: str | None) -> StorageError: ...

    def close(self) -> None: ...


def open_backend(url: str, options: BlobOptions) -> Backend:
    """The backend for ``url``; InvalidRequest if the URL or options do not fit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidRequest(
            f"storage url {url!r}: scheme {scheme or '(none)'!r} is not supported "
            f"(use {', '.join(s + '://' for s in SCHEMES)})"
        )
    if scheme == "file":
        remote = [f.name for f in fields(BlobOptions) if f.name in _REMOTE_ONLY]
        given = [name for name in remote if getattr(options, name)]
        if given:
            raise InvalidRequest(
                f"storage url {url!r} is a local folder, but "
                f"{', '.join('storage.' + g for g in given)} is set"
            )
        if parts.netloc not in ("", "localhost"):
            raise InvalidRequest(f"storage url {url!r}: file:// takes no host")
        return LocalBackend(url, Path(unquote(parts.path)))
    # s3fs and botocore take ~0.3 s to import: only nodes that use them pay it
    from dcrond.store._blobs3 import S3Backend  # noqa: PLC0415

    return S3Backend(url, scheme, parts.netloc, parts.path.strip("/"), options)


_REMOTE_ONLY = ("endpoint_url", "region", "profile", "key", "secret")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@final
class LocalBackend:
    """Objects as files under a local (or shared) folder, written by rename."""

    def __init__(self, url: str, root: Path) -> None:
        if not root.is_absolute():
            raise InvalidRequest(f"storage url {url!r}: the path must be absolute")
        self.url = url
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key

    def _write(self, key: str, fill: Callable[[Any], None]) -> None:
        final_path = self._path(key)
        final_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = final_path.with_name(f".{final_path.name}.{secrets.token_hex(6)}.tmp")
        try:
            with tmp.open("wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(final_path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(final_path.parent)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda out: out.write(data))

    def put_file(self, key: str, source: Path) -> None:
        with source.open("rb") as src:
            self._write(key, lambda out: shutil.copyfileobj(src, out, COPY_CHUNK))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def read(self, key: str, start: int, end: int | None) -> bytes:
        with self._path(key).open("rb") as f:
            f.seek(start)
            return f.read(-1 if end is None else max(0, end - start))

    def get_file(self, key: str, dest: Path) -> None:
        with self._path(key).open("rb") as src, dest.open("wb") as out:
            shutil.copyfileobj(src, out, COPY_CHUNK)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def list(self, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of the objects directly under ``prefix`` (a folder ending in ``/``)."""
        folder = self._path(prefix)
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [
            (prefix + e.name, e.stat().st_size)
            for e in entries
            if not e.name.startswith(".") and e.is_file(follow_symlinks=False)
        ]

    def probe(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        key = f".dcrond-probe/{secrets.token_hex(8)}"
        self.put_bytes(key, b"dcrond")
        try:
            if self.read(key, 0, None) != b"dcrond":
                raise StorageError(f"object storage {self.url}: a probe read back wrong bytes")
        finally:
            self.delete(key)

    def translate(self, exc: BaseException, key: str | None) -> StorageError:
        where = f"object storage {self.url}"
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, FileNotFoundError) and key is not None:
            return BlobNotFound(f"{key} is not in {self.url}")
        if isinstance(exc, OSError) and exc.errno in _LOCAL_REFUSED:
            return StorageRefused(f"{where}: {exc.strerror or exc} ({exc.filename})")
        if isinstance(exc, OSError):
            return StorageUnavailable(f"{where}: {exc}")
        return StorageError(f"{where}: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        pass


#: local errors that need an operator (a wrong path or permissions), not a retry
_LOCAL_REFUSED = frozenset(
    {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EROFS, errno.EEXIST, errno.ENOENT}
)
