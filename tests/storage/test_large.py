"""A 100 MiB log streams up and back down without ever being held in memory whole."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from dcrond.store._blobs import log_key
from tests.storage.conftest import Store

MIB = 1024 * 1024
BIG = 100 * MIB
ROOT = Path(__file__).resolve().parents[2]
STREAMING = {"part_size": 5 * MIB, "max_concurrency": 2}
#: what the peak RSS may grow by: well under the log, so it cannot have been held whole
BOUND = 40 * MIB


@dataclass(frozen=True)
class BigLog:
    path: Path
    sha256: str
    tail: bytes


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigLog]:
    """100 MiB of random bytes (incompressible, unlike a real log), removed afterwards."""
    path = tmp_path_factory.mktemp("big") / "big.log"
    h = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(BIG // MIB):
            chunk = os.urandom(MIB)
            h.update(chunk)
            f.write(chunk)
    yield BigLog(path, h.hexdigest(), chunk[-10:])
    path.unlink()


async def test_a_100_mib_log_round_trips_in_bounded_memory(
    store: Store, big_log: BigLog, tmp_path: Path
) -> None:
    dest = tmp_path / "back.log"
    spec = {
        "op": "roundtrip",
        "url": store.url,
        # small parts, two in flight: a streaming transfer stays near 2 x 2 x 5 MiB
        "options": {**store.options, **STREAMING} if store.kind != "file" else {},
        "key": log_key("big", "big@1", 1),
        "source": str(big_log.path),
        "dest": str(dest),
    }
    with trio.fail_after(120):
        done = await trio.run_process(
            [sys.executable, "-m", "tests.storage._child", json.dumps(spec)],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result = json.loads(done.stdout.decode().splitlines()[-1])
    dest.unlink()
    assert result["sha256"] == big_log.sha256
    assert bytes.fromhex(result["tail"]) == big_log.tail
    # the peak resident size grows by far less than the log: it was streamed
    grew_up = (result["after_upload_kib"] - result["before_kib"]) * 1024
    grew_down = (result["after_download_kib"] - result["before_kib"]) * 1024
    print(f"{store.kind}: peak RSS +{grew_up / MIB:.0f} MiB up, +{grew_down / MIB:.0f} MiB down")
    assert grew_up < BOUND, f"upload raised the peak RSS by {grew_up / MIB:.0f} MiB"
    assert grew_down < BOUND, f"download raised the peak RSS by {grew_down / MIB:.0f} MiB"
