"""Blobs behaves the same on a local folder, S3 (moto's server) and Swift (s3api).

Every test here runs once per backend against a real server on loopback.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from dcrond.errors import BlobNotFound, InvalidRequest, StorageError
from dcrond.store._blobs import log_key, script_key
from tests.storage.conftest import Store

TIMEOUT = 60


async def test_check_passes_and_leaves_nothing_behind(store: Store) -> None:
    b = store.blobs()
    with trio.fail_after(TIMEOUT):
        await b.check()
        assert await trio.to_thread.run_sync(store.keys) == []


async def test_a_script_is_fetched_once_then_served_from_the_cache(
    store: Store, tmp_path: Path
) -> None:
    data = b"#!/bin/sh\necho backup of $(hostname)\n"
    with trio.fail_after(TIMEOUT):
        writer = store.blobs()
        sha = await writer.put_script(data)
        assert sha == hashlib.sha256(data).hexdigest()
        assert await writer.put_script(data) == sha
        assert writer.uploads == 1  # content-addressed: the second put wrote nothing

        reader = store.blobs(cache_dir=tmp_path / "host2-cache")
        assert await reader.get_script(sha) == data  # miss: from storage
        assert (reader.downloads, reader.cache_hits) == (1, 0)
        cached = reader.cached_script_path(sha)
        assert cached is not None
        assert cached.read_bytes() == data

        # a hit never touches storage: it works with the object gone
        await writer.delete([script_key(sha)])
        assert await reader.get_script(sha) == data
        assert (reader.downloads, reader.cache_hits) == (1, 1)
        with pytest.raises(BlobNotFound, match=f"script {sha} is missing from"):
            await store.blobs().get_script(sha)


async def test_a_script_pins_its_bytes_and_a_swapped_object_is_refused(
    store: Store, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        b = store.blobs()
        sha = await b.put_script(b"echo the real script\n")
        # someone replaces the object behind dcrond's back
        await trio.to_thread.run_sync(b.backend.put_bytes, script_key(sha), b"rm -rf /\n")
        fresh = store.blobs(cache_dir=tmp_path / "fresh-cache")
        with pytest.raises(StorageError, match="does not match its hash"):
            await fresh.get_script(sha)
        assert fresh.cached_script_path(sha) is None  # the bad bytes were not cached
        with pytest.raises(InvalidRequest, match="not a sha256"):
            await fresh.get_script("../../etc/passwd")


async def test_a_log_uploads_and_reads_back_by_range(store: Store, tmp_path: Path) -> None:
    spool = tmp_path / "spool.log"
    spool.write_bytes(b"line 1\nline 2\n\xff\xfe not utf-8\n")
    key = log_key("backup", "backup@2026-11-23T03:00:00Z", 1)
    with trio.fail_after(TIMEOUT):
        b = store.blobs()
        assert await b.put_log(key, spool) == spool.stat().st_size
        assert await b.size(key) == spool.stat().st_size
        assert await b.read(key) == spool.read_bytes()
        assert await b.read(key, 7, 6) == b"line 2"
        assert await b.read(key, 7) == spool.read_bytes()[7:]
        assert await b.read(key, 1000, 10) == b""  # past the end: nothing
        fetched = tmp_path / "fetched.log"
        assert await b.fetch_log(key, fetched) == spool.stat().st_size
        assert fetched.read_bytes() == spool.read_bytes()


async def test_a_reupload_replaces_the_log_whole(store: Store, tmp_path: Path) -> None:
    key = log_key("j", "j@1", 1)
    spool = tmp_path / "spool.log"
    with trio.fail_after(TIMEOUT):
        b = store.blobs()
        spool.write_bytes(b"a much longer first version\n")
        await b.put_log(key, spool)
        spool.write_bytes(b"short\n")
        await b.put_log(key, spool)
        assert await b.read(key) == b"short\n"


async def test_delete_removes_objects_and_ignores_missing_ones(
    store: Store, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.log"
    spool.write_bytes(b"x" * 100)
    keys = [log_key("j", f"j@{i}", 1) for i in range(3)]
    with trio.fail_after(TIMEOUT):
        b = store.blobs()
        for key in keys:
            await b.put_log(key, spool)
        await b.delete([*keys[:2], "logs/never/was/1.log"])
        assert await trio.to_thread.run_sync(store.keys) == [keys[2]]
        for key in keys[:2]:
            with pytest.raises(BlobNotFound, match=f"{key} is not in {store.url}"):
                await b.read(key)
        assert await b.read(keys[2]) == spool.read_bytes()


async def test_an_empty_log_is_an_object_of_size_zero(store: Store, tmp_path: Path) -> None:
    spool = tmp_path / "empty.log"
    spool.write_bytes(b"")
    key = log_key("quiet", "quiet@1", 1)
    with trio.fail_after(TIMEOUT):
        b = store.blobs()
        assert await b.put_log(key, spool) == 0
        assert await b.read(key) == b""
        assert await b.size(key) == 0


def test_statistics_count_what_was_done(store: Store) -> None:
    b = store.blobs()
    stats = b.statistics()
    assert (stats.uploads, stats.downloads, stats.cache_hits, stats.failures) == (0, 0, 0, 0)
