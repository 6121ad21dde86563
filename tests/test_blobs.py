"""Scripts and logs in a local-folder object store through fsspec."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dcrond.errors import InvalidRequest, StorageError
from dcrond.store._blobs import Blobs, log_key, script_key


@pytest.fixture
def blobs(tmp_path: Path) -> Blobs:
    return Blobs(f"file://{tmp_path / 'store'}", cache_dir=tmp_path / "cache")


async def test_a_script_is_stored_once_by_its_sha256(blobs: Blobs, tmp_path: Path) -> None:
    data = b"#!/bin/sh\necho backup\n"
    sha = await blobs.put_script(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert await blobs.put_script(data) == sha
    stored = list((tmp_path / "store" / "scripts").rglob("*"))
    assert [p.name for p in stored if p.is_file()] == [sha]


async def test_a_cache_miss_fetches_from_storage_and_fills_the_cache(tmp_path: Path) -> None:
    writer = Blobs(f"file://{tmp_path / 'store'}")
    sha = await writer.put_script(b"print('hi')\n")
    reader = Blobs(f"file://{tmp_path / 'store'}", cache_dir=tmp_path / "other-host")
    assert await reader.get_script(sha) == b"print('hi')\n"
    assert (reader.downloads, reader.cache_hits) == (1, 0)
    assert await reader.get_script(sha) == b"print('hi')\n"
    assert (reader.downloads, reader.cache_hits) == (1, 1)
    assert reader.cached_script_path(sha) is not None


async def test_a_tampered_script_is_refused(blobs: Blobs, tmp_path: Path) -> None:
    sha = await blobs.put_script(b"echo ok\n")
    (tmp_path / "store" / script_key(sha)).write_bytes(b"rm -rf /\n")
    fresh = Blobs(f"file://{tmp_path / 'store'}")
    with pytest.raises(StorageError, match="does not match its hash"):
        await fresh.get_script(sha)


async def test_a_missing_script_is_a_clear_error(blobs: Blobs) -> None:
    with pytest.raises(StorageError, match="missing"):
        await blobs.get_script("0" * 64)
    with pytest.raises(InvalidRequest, match="not a sha256"):
        await blobs.get_script("../../etc/passwd")


async def test_logs_upload_and_read_back_by_range(blobs: Blobs, tmp_path: Path) -> None:
    spool = tmp_path / "spool.log"
    spool.write_bytes(b"line 1\nline 2\n\xff\xfe not utf-8\n")
    key = log_key("backup", "backup@2026-11-23T03:00:00Z", 1)
    assert key == "logs/backup/backup@2026-11-23T03:00:00Z/1.log"
    assert await blobs.put_log(key, spool) == spool.stat().st_size
    assert await blobs.read(key) == spool.read_bytes()
    assert await blobs.read(key, 7, 6) == b"line 2"
    await blobs.delete([key, "logs/never/was.log"])
    with pytest.raises(StorageError):
        await blobs.read(key)


def test_log_keys_cannot_escape_their_folder() -> None:
    assert ".." not in log_key("a/../../b", "x/../y", 2).split("/")[1:3]


async def test_check_reports_an_unwritable_root(tmp_path: Path) -> None:
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o500)
    try:
        blobs = Blobs(f"file://{target / 'sub'}")
        import os

        if os.geteuid() == 0:
            # root ignores the mode bits; use a path under a regular file instead
            (tmp_path / "file").write_text("x")
            blobs = Blobs(f"file://{tmp_path / 'file' / 'sub'}")
        with pytest.raises(StorageError, match="object storage"):
            await blobs.check()
    finally:
        target.chmod(0o700)
