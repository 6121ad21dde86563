"""The S3 backend of ``Blobs``: ``s3://`` and ``swift://`` through s3fs.

Theory of operation
-------------------
``s3://bucket/prefix`` talks to AWS S3 or anything speaking its API (give
``endpoint_url`` for the latter). ``swift://container/prefix`` is the same
code pointed at a Swift proxy's ``s3api`` middleware, with path-style
addressing (Swift has no virtual-host buckets unless its proxy runs
``domain_remap``). Credentials
come from the AWS chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_SHARED_CREDENTIALS_FILE`` and ``AWS_CONFIG_FILE``, a ``profile``, or an
instance role; for Swift with tempauth the access key is ``account:user`` and
the secret is that user's key.

No partial object is ever visible under a final key: a small upload is one
PUT, which S3 and Swift apply atomically; a large one is a multipart upload
of ``part_size`` parts (``max_concurrency`` in flight, so memory stays near
their product however large the log), visible only once
``CompleteMultipartUpload`` succeeds. Unless ``part_size`` is given, parts
are 8 MiB on S3 and 32 MiB on Swift, whose s3api stores each part as an SLO
segment and pays per segment: with 8 MiB parts a 100 MiB upload took 1.3-1.4x
plain s3fs's time, with 32 MiB parts 0.9-1.1x (docs/benchmarks.md).
s3fs aborts a multipart upload that fails; one whose writer died is left as
an invisible incomplete upload for the bucket's lifecycle rule to reap
(docs/storage.md).

Errors: botocore retries connection errors, 5xx, throttling and timeouts
(``standard`` mode, 3 tries with jittered backoff) and s3fs wraps that in 2
tries for connections dropped mid-body. Longer outages are the caller's to
wait out (the log uploader backs off and retries). What still fails is
translated here: unreachable endpoints, timeouts and 5xx become
``StorageUnavailable``; refused credentials, a missing bucket and missing
credentials ``StorageRefused``; a missing key ``BlobNotFound``.

Deadlines: botocore's ``read_timeout`` covers waiting for an answer, but
aiohttp applies no timeout while it sends a body (nor while it waits for the
``100 Continue`` botocore asks for on every PUT), so an upload to a server
that stopped reading would hang for ever. Every call therefore runs under a
deadline of ``timeout`` plus its size at ``min_rate``; past it the call is
cancelled and raises ``StorageUnavailable``.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any, final

import botocore.exceptions as bexc
import fsspec.asyn
import fsspec.exceptions
import s3fs

from dcrond.errors import (
    BlobNotFound,
    InvalidRequest,
    StorageError,
    StorageRefused,
    StorageUnavailable,
)
from dcrond.store._blobback import DEFAULT_PART_SIZE, MAX_PART_SIZE, MIN_PART_SIZE, BlobOptions

#: tries per request in botocore (connection errors, 5xx, throttling, timeouts)
_BOTO_ATTEMPTS = 3
#: tries per call in s3fs around those (dropped connections, timeouts mid-body)
_S3FS_ATTEMPTS = 2
#: bytes a whole-object read is budgeted for (scripts; page through large logs)
_UNBOUNDED_READ = 16 * 1024 * 1024
#: error codes that mean "these credentials may not do this"
_CREDENTIAL_CODES = {
    "AccessDenied": "access denied",
    "AccountProblem": "the account has a problem",
    "AllAccessDisabled": "all access to this bucket is disabled",
    "ExpiredToken": "the session token has expired",
    "InvalidAccessKeyId": "the access key id is unknown to the server",
    "InvalidClientTokenId": "the access key id is unknown to the server",
    "InvalidToken": "the session token is invalid",
    "RequestTimeTooSkewed": "this host's clock is too far off the server's",
    # Swift's s3api says this for an unknown access key too
    "SignatureDoesNotMatch": "the secret key does not match the access key id (or it is unknown)",
}
#: error codes that mean "try again later"
_TRANSIENT_CODES = frozenset(
    {"InternalError", "OperationAborted", "RequestTimeout", "ServiceUnavailable", "SlowDown"}
)
#: botocore errors that mean the credentials are missing or unreadable
_NO_CREDENTIALS = (
    bexc.NoCredentialsError,
    bexc.PartialCredentialsError,
    bexc.ProfileNotFound,
    bexc.CredentialRetrievalError,
    bexc.ConfigParseError,
)
#: errors that mean the endpoint could not be reached or did not answer in time
_UNREACHABLE = (
    bexc.HTTPClientError,
    bexc.ConnectionError,
    fsspec.exceptions.FSTimeoutError,
    asyncio.TimeoutError,
    TimeoutError,
    ConnectionError,
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


@final
class S3Backend:
    """Objects in an S3 bucket (or Swift container) under an optional prefix."""

    def __init__(
        self, url: str, scheme: str, bucket: str, prefix: str, options: BlobOptions
    ) -> None:
        if not bucket:
            raise InvalidRequest(f"storage url {url!r}: no bucket named ({scheme}://BUCKET/PREFIX)")
        if scheme == "swift" and not options.endpoint_url:
            raise InvalidRequest(
                f"storage url {url!r}: swift:// needs storage.endpoint_url, "
                "the Swift proxy's address (its s3api middleware answers there)"
            )
        part_size = options.part_size or DEFAULT_PART_SIZE[scheme]
        if (
            not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE
            or options.max_concurrency < 1
            or options.timeout <= 0
            or options.min_rate <= 0
        ):
            raise InvalidRequest(
                "storage: part_size must be 0 (the default) or 5 MiB to 5 GiB, "
                "max_concurrency >= 1, timeout and min_rate > 0"
            )
        #: the multipart part size in use (``options.part_size``, or the scheme's default)
        self.part_size = part_size
        self.url = url
        self.bucket = bucket
        self.root = f"{bucket}/{prefix}" if prefix else bucket
        self.endpoint = options.endpoint_url or "AWS S3"
        self.options = options
        config: dict[str, Any] = {
            "connect_timeout": options.connect_timeout,
            "read_timeout": options.read_timeout,
            "retries": {"mode": "standard", "max_attempts": _BOTO_ATTEMPTS},
        }
        if scheme == "swift":
            # Swift serves containers as paths (virtual hosts need domain_remap); for a
            # named endpoint botocore would otherwise put the bucket in the host name
            config["s3"] = {"addressing_style": "path"}
        kwargs: dict[str, Any] = {
            "skip_instance_cache": True,
            "use_listings_cache": False,
            "config_kwargs": config,
            "max_concurrency": options.max_concurrency,
        }
        if options.endpoint_url:
            kwargs["endpoint_url"] = options.endpoint_url
        if options.region:
            kwargs["client_kwargs"] = {"region_name": options.region}
        if options.profile:
            kwargs["profile"] = options.profile
        if options.key or options.secret:
            kwargs["key"] = options.key
            kwargs["secret"] = options.secret
        self.fs = s3fs.S3FileSystem(**kwargs)
        self.fs.retries = _S3FS_ATTEMPTS

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _deadline(self, nbytes: int) -> float:
        """Seconds one call may take: ``timeout``, plus its bytes at ``min_rate``."""
        return self.options.timeout + nbytes / self.options.min_rate

    def _sync(self, nbytes: int, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call an s3fs method under a deadline (aiohttp has none for stalled uploads)."""
        deadline = self._deadline(nbytes)
        try:
            return fn(*args, timeout=deadline, **kwargs)
        except fsspec.exceptions.FSTimeoutError:
            raise TimeoutError(f"no answer within {deadline:.0f} s") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        self._sync(len(data), self.fs.pipe_file, self._path(key), data, chunksize=self.part_size)

    def put_file(self, key: str, source: Path) -> None:
        self._sync(
            source.stat().st_size,
            self.fs.put_file,
            str(source),
            self._path(key),
            chunksize=self.part_size,
            max_concurrency=self.options.max_concurrency,
            ContentType="application/octet-stream",
        )

    def exists(self, key: str) -> bool:
        return bool(self._sync(0, self.fs.exists, self._path(key)))

    def size(self, key: str) -> int:
        return int(self._sync(0, self.fs.info, self._path(key))["size"])

    def read(self, key: str, start: int, end: int | None) -> bytes:
        if end is not None and end <= start:
            return b""
        nbytes = _UNBOUNDED_READ if end is None else end - start
        try:
            data: bytes = self._sync(
                nbytes, self.fs.cat_file, self._path(key), start=start or None, end=end
            )
        except OSError as exc:
            if start and self._code(exc) == "InvalidRange":
                return b""  # from past the end: nothing, as a local file would say
            raise
        return data

    def get_file(self, key: str, dest: Path) -> None:
        self._sync(
            self.size(key),
            self.fs.get_file,
            self._path(key),
            str(dest),
            max_concurrency=1,  # one streamed GET: parallel ranges would each sit in memory
        )

    def delete(self, key: str) -> None:
        self._sync(0, self.fs.rm_file, self._path(key))

    def list(self, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of the objects directly under ``prefix`` (ending in ``/``)."""
        try:
            entries = self._sync(0, self.fs.ls, self._path(prefix.rstrip("/")), detail=True)
        except FileNotFoundError:
            return []
        root = self.root + "/"
        return [
            (str(e["name"]).removeprefix(root), int(e.get("size") or 0))
            for e in entries
            if e.get("type") == "file"
        ]

    def probe(self) -> None:
        key = f".dcrond-probe/{secrets.token_hex(8)}"
        self.put_bytes(key, b"dcrond")
        try:
            if self.read(key, 0, None) != b"dcrond":
                raise StorageError(f"object storage {self.url}: a probe read back wrong bytes")
        finally:
            self.delete(key)

    @staticmethod
    def _code(exc: BaseException) -> str | None:
        for link in _chain(exc):
            if isinstance(link, bexc.ClientError):
                code = link.response.get("Error", {}).get("Code")
                return str(code) if code is not None else None
        return None

    def translate(self, exc: BaseException, key: str | None) -> StorageError:
        where = f"object storage {self.url}"
        if isinstance(exc, StorageError):
            return exc
        chain = _chain(exc)
        for link in chain:
            if isinstance(link, bexc.ClientError):
                return self._client_error(link, key)
        for link in chain:
            if isinstance(link, _NO_CREDENTIALS):
                return StorageRefused(
                    f"{where}: no usable credentials ({link}); set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, a shared credentials file, or storage.profile"
                )
            if isinstance(link, _UNREACHABLE):
                return StorageUnavailable(f"{where}: cannot reach {self.endpoint}: {link}")
        if isinstance(exc, FileNotFoundError) and key is not None:
            return BlobNotFound(f"{key} is not in {self.url}")
        if isinstance(exc, PermissionError):
            return StorageRefused(f"{where}: access refused: {exc}")
        return StorageError(f"{where}: {type(exc).__name__}: {exc}")

    def _client_error(self, err: bexc.ClientError, key: str | None) -> StorageError:
        where = f"object storage {self.url}"
        info = err.response.get("Error", {})
        code = str(info.get("Code", ""))
        message = str(info.get("Message", "")) or str(err)
        status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket":
            return StorageRefused(
                f"{where}: bucket {self.bucket!r} does not exist at {self.endpoint} "
                "(create it, or fix storage.url)"
            )
        if code in _CREDENTIAL_CODES or status in (401, 403):
            why = _CREDENTIAL_CODES.get(code, "access refused")
            return StorageRefused(
                f"{where}: the credentials were refused: {why} ({code or status}: {message})"
            )
        if code in ("NoSuchKey", "404") or status == 404:
            if key is None:
                return BlobNotFound(f"{where}: not found ({code or status}: {message})")
            return BlobNotFound(f"{key} is not in {self.url}")
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return StorageUnavailable(
                f"{where}: {self.endpoint} failed: {code or status}: {message}"
            )
        return StorageError(f"{where}: {code or status}: {message}")

    def close(self) -> None:
        """Close the HTTP session now rather than when the garbage collector runs."""
        creator = getattr(self.fs, "_s3creator", None)
        loop = getattr(self.fs, "loop", None)
        if creator is None or loop is None or not loop.is_running():
            return
        try:
            fsspec.asyn.sync(loop, creator.__aexit__, None, None, None, timeout=5)
        except Exception:
            return  # best effort: the finalizer s3fs registered closes the socket
        self.fs._s3 = None
        self.fs._s3creator = None
