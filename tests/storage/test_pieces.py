"""Logs in pieces while an attempt runs, and scripts taken from a URL in storage.

Every ``store`` test runs once per backend (a local folder, moto's S3, Swift's
s3api) against a real server on loopback; the uploader test drives the real
``LogUploader`` and ``Blobs`` the daemon uses.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from dcrond.engine import LogUploader
from dcrond.errors import BlobNotFound, InvalidRequest, NotFound
from dcrond.store._blobs import Blobs, log_key, log_part_key, script_key
from tests.storage.conftest import Store

TIMEOUT = 60


async def _covered(b: Blobs, key: str) -> int:
    """Bytes the stored pieces of ``key`` cover from 0."""
    return max((start + n for start, n in await b.log_parts(key)), default=0)


async def test_a_log_reads_from_its_pieces_until_the_whole_object_lands(
    store: Store, tmp_path: Path
) -> None:
    b = store.blobs()
    key = log_key("report", "report@2026-11-23T03:00:00Z", 1)
    log = b"".join(b"line %d\n" % i for i in range(3000))  # 26,890 bytes
    with trio.fail_after(TIMEOUT):
        with pytest.raises(BlobNotFound):
            await b.read_log(key, 0, 100)
        await b.put_log_part(key, 0, log[:10000])
        await b.put_log_part(key, 10000, log[10000:20000])
        assert await b.log_parts(key) == [(0, 10000), (10000, 10000)]
        # read across the pieces, in any page size: what a reader on another host sees
        got, offset = b"", 0
        while True:
            data, whole = await b.read_log(key, offset, 4096)
            assert not whole
            if not data:
                break
            got += data
            offset += len(data)
        assert got == log[:20000]
        # a restarted daemon sends from 0 again: overlapping pieces hold the same bytes
        await b.put_log_part(key, 0, log[:25000])
        assert await b.log_parts(key) == [(0, 25000), (10000, 10000)]
        assert await b.read_log(key, 19990, 100) == (log[19990:20090], False)
        assert await b.read_log(key, 25000, 100) == (b"", False)

        spool = tmp_path / "spool.log"
        spool.write_bytes(log)
        await b.put_log(key, spool)
        assert await b.read_log(key, 26000, 4096) == (log[26000:], True)
        assert await b.delete_log_parts(key) == 2
        assert await b.log_parts(key) == []
        assert await trio.to_thread.run_sync(store.keys) == [key]


async def test_the_uploader_sends_pieces_while_a_spool_grows_then_the_whole_log(
    store: Store, tmp_path: Path
) -> None:
    b = store.blobs()
    key = log_key("long", "long@2026-11-23T03:00:00Z", 1)
    spool = tmp_path / "spool.log"
    spool.write_bytes(b"")
    up = LogUploader(b, tmp_path / "queue", chunk_every=0.2, chunk_bytes=1 << 20)
    written = b""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(up.run)
            up.follow(key, spool)
            for i in range(3):
                chunk = b"step %d of a long run\n" % i * 50
                with spool.open("ab") as f:
                    f.write(chunk)
                written += chunk
                for _ in range(200):  # a piece within ~0.2 s
                    if await _covered(b, key) >= len(written):
                        break
                    await trio.sleep(0.05)
            # another host reads the log from storage while the run goes on
            seen, offset = b"", 0
            while True:
                data, whole = await b.read_log(key, offset, 1000)
                if not data:
                    break
                assert not whole
                seen += data
                offset += len(data)
            assert seen == written
            assert up.statistics().following == 1
            assert up.statistics().pieces == 3

            up.put(key, spool)  # the attempt ended: the whole log goes, then the pieces
            assert up.statistics().following == 0
            await up.wait_idle()
            nursery.cancel_scope.cancel()
    assert await b.read(key) == written
    assert await b.log_parts(key) == []
    assert not spool.exists()


async def test_a_script_url_in_the_storage_is_read_and_others_are_refused(store: Store) -> None:
    b = store.blobs()
    data = b"#!/bin/sh\necho from a url\n"
    with trio.fail_after(TIMEOUT):
        await trio.to_thread.run_sync(b.backend.put_bytes, "shared/scripts/report.sh", data)
        url = f"{store.url}/shared/scripts/report.sh"
        assert await b.read_script_url(url, 1024) == (url, data)
        with pytest.raises(NotFound, match="no object there"):
            await b.read_script_url(f"{store.url}/shared/scripts/missing.sh", 1024)
        with pytest.raises(InvalidRequest, match="is 26 bytes; the limit is 10"):
            await b.read_script_url(url, 10)
        outside = [
            "https://example.com/report.sh",
            store.url.replace(store.url.split("://")[0], "s3" if store.kind != "s3" else "file"),
            store.url.rsplit("/", 1)[0] + "/other-prefix/report.sh",
        ]
        for bad in outside:
            with pytest.raises(InvalidRequest, match="not in this cluster's object storage"):
                await b.read_script_url(bad, 1024)
        for bad in (store.url, f"{store.url}/", f"{store.url}/a/../../x", f"{store.url}/a//b"):
            with pytest.raises(InvalidRequest, match="name one object"):
                await b.read_script_url(bad, 1024)
        sha = await b.put_script(data)
        assert sha == hashlib.sha256(data).hexdigest()
        assert await b.read(script_key(sha)) == data
        assert log_part_key("a", 5) == "a.parts/0000000000000005"
