"""Multipart part sizes: 8 MiB on S3 and 32 MiB on Swift unless [storage] part_bytes says.

Swift's s3api pays per part (each is an SLO segment), so swift:// defaults to
bigger parts (docs/benchmarks.md#object-storage). The sizes are checked on
what the servers stored: a multipart object's ETag ends in ``-<parts>``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from dcrond.config import load_config
from dcrond.errors import ConfigError, InvalidRequest
from dcrond.store._blobs import Blobs, log_key
from dcrond.store._blobs3 import S3Backend
from tests.storage.conftest import Store, make_store

MIB = 1024 * 1024
TIMEOUT = 60


def _part_size(blobs: Blobs) -> int:
    assert isinstance(blobs.backend, S3Backend)
    return blobs.backend.part_size


def _config(tmp_path: Path, storage: str) -> Path:
    path = tmp_path / "dcrond.toml"
    path.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n[storage]\n{storage}\n')
    return path


@pytest.mark.parametrize(
    ("url", "part_bytes", "expected"),
    [
        ("s3://b/p", None, 8 * MIB),
        ("swift://c/p", None, 32 * MIB),
        ("swift://c/p", 16 * MIB, 16 * MIB),
        ("s3://b/p", 64 * MIB, 64 * MIB),
    ],
)
def test_the_config_gives_each_scheme_its_default_part_size_unless_set(
    tmp_path: Path, url: str, part_bytes: int | None, expected: int
) -> None:
    lines = f'url = "{url}"\nendpoint_url = "http://127.0.0.1:9"'
    if part_bytes is not None:
        lines += f"\npart_bytes = {part_bytes}"
    config = load_config(_config(tmp_path, lines))
    blobs = Blobs(config.storage_url, cache_dir=None, **config.storage_options)
    assert _part_size(blobs) == expected


@pytest.mark.parametrize("part_bytes", [-1, 1024, 5 * MIB - 1, 5 * 1024 * MIB + 1])
def test_a_part_size_s3_would_refuse_is_a_config_error(tmp_path: Path, part_bytes: int) -> None:
    path = _config(tmp_path, f'url = "swift://c/p"\npart_bytes = {part_bytes}')
    with pytest.raises(ConfigError, match=r"storage\.part_bytes: must be 0"):
        load_config(path)


def test_blobs_refuses_a_part_size_out_of_range() -> None:
    with pytest.raises(InvalidRequest, match="part_size must be 0"):
        Blobs("swift://c/p", endpoint_url="http://127.0.0.1:9", part_size=-1)


@pytest.mark.parametrize(("kind", "parts"), [("s3", 9), ("swift", 3)])
async def test_a_70_mib_log_goes_up_in_the_default_parts_of_its_backend(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, parts: int
) -> None:
    store: Store = make_store(kind, request, tmp_path)
    try:
        blobs = store.blobs()  # no part_size: the scheme's default
        source = tmp_path / "big.log"
        with source.open("wb") as f:
            for _ in range(70):
                f.write(os.urandom(MIB))
        key = log_key("parts", "parts@1", 1)
        with trio.fail_after(TIMEOUT):
            await blobs.put_log(key, source)
            assert await blobs.size(key) == 70 * MIB
        backend = blobs.backend
        assert isinstance(backend, S3Backend)
        info = await trio.to_thread.run_sync(backend.fs.info, f"{backend.root}/{key}")
        # 8 MiB parts: 8 x 8 + 6; 32 MiB parts: 32 + 32 + 6
        assert str(info["ETag"]).strip('"').endswith(f"-{parts}"), info["ETag"]
    finally:
        store.close()
