"""A separate process that uses Blobs, for tests that measure or kill it.

``python -m tests.storage._child SPEC_JSON`` where SPEC has ``url``,
``options``, ``key``, ``source`` and ``op``:

* ``roundtrip``: check(), note the peak RSS, upload ``source``, download it
  to ``dest``, and print one JSON line with the peak RSS before and after
  (KiB) and the sha256 of what came back.
* ``upload``: upload ``source`` and print ``done`` (the parent may kill us first).
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
from pathlib import Path
from typing import Any

import trio

from dcrond.store._blobs import Blobs


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


async def main(spec: dict[str, Any]) -> None:
    blobs = Blobs(spec["url"], **spec["options"])
    source = Path(spec["source"])
    if spec["op"] == "upload":
        print("started", flush=True)
        await blobs.put_log(spec["key"], source)
        print("done", flush=True)
        return
    await blobs.check()
    before = _peak_kib()
    await blobs.put_log(spec["key"], source)
    after_upload = _peak_kib()
    dest = Path(spec["dest"])
    await blobs.fetch_log(spec["key"], dest)
    after_download = _peak_kib()
    size = await blobs.size(spec["key"])
    tail = await blobs.read(spec["key"], size - 10)
    result = {
        "before_kib": before,
        "after_upload_kib": after_upload,
        "after_download_kib": after_download,
        "sha256": await trio.to_thread.run_sync(_sha256, dest),
        "tail": tail.hex(),
    }
    print(json.dumps(result), flush=True)
    await blobs.aclose()


if __name__ == "__main__":
    trio.run(main, json.loads(sys.argv[1]))
