"""Time Blobs' uploads and script fetches against plain s3fs on the same server, same run.

Usage: ``.venv/bin/python bench/blobs.py [--runs 7] [--backend s3|swift|both]``

It starts moto's S3 server (and, with ``--backend swift`` or ``both``, a
one-replica Swift through its S3 API) on 127.0.0.1, then times, alternating
the two sides in every round so both see the same noise:

* uploading a 1 MiB and a 100 MiB log file: ``Blobs.put_log`` against
  ``S3FileSystem.put_file`` of the same file to another key;
* fetching a 4 KiB script on a cache miss: ``Blobs.get_script`` with an empty
  cache (hash checked, cache written) against ``S3FileSystem.cat_file``.

The anchor is s3fs as a user would set it up (defaults, except the options
Swift needs). A round does each small operation 5 times and the 100 MiB
upload once; it prints the median over ``--runs`` rounds of every operation
and the ratio Blobs / s3fs; the goal is at most 1.2. Compare ratios, not absolute
figures: the machines are shared and noisy, and moto keeps objects in memory.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import s3fs
import trio

from dcrond.store._blobback import BlobOptions
from dcrond.store._blobs import Blobs, script_key
from dcrond.testing._s3server import MotoServer
from dcrond.testing._swiftserver import SwiftServer, swift_missing

MIB = 1024 * 1024
BUCKET = "dcrond-bench"
GOAL = 1.2
#: small operations are repeated this many times per round (they take milliseconds)
SMALL_REPEATS = 5


def plain_s3fs(options: dict[str, Any], swift: bool) -> Any:
    """The anchor: an S3FileSystem configured as its documentation shows."""
    config: dict[str, Any] = {}
    if swift:
        config = {
            "s3": {"addressing_style": "path"},
        }
    return s3fs.S3FileSystem(
        key=options["key"],
        secret=options["secret"],
        endpoint_url=options["endpoint_url"],
        client_kwargs={"region_name": options["region"]},
        config_kwargs=config,
        skip_instance_cache=True,
    )


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0


def timed_sync(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


async def measure(
    scheme: str, options: dict[str, Any], folder: Path, runs: int
) -> dict[str, tuple[float, float]]:
    """Median seconds (Blobs, s3fs) per operation."""
    swift = scheme == "swift"
    blobs = Blobs(f"{scheme}://{BUCKET}/blobs", **options)
    fs = plain_s3fs(options, swift)  # tuning options apply to Blobs only
    files = {}
    for size in (1, 100):
        path = folder / f"{size}mib.log"
        with path.open("wb") as f:
            for _ in range(size):
                f.write(os.urandom(MIB))
        files[f"upload {size:3d} MiB log"] = path
    script = os.urandom(4096)
    sha = await blobs.put_script(script)
    fs.pipe_file(f"{BUCKET}/plain/script", script)
    cache = folder / "cache"
    reader = Blobs(f"{scheme}://{BUCKET}/blobs", cache_dir=cache, **options)
    await reader.get_script(sha)  # both sides start with open connections
    fs.cat_file(f"{BUCKET}/plain/script")

    samples: dict[str, tuple[list[float], list[float]]] = {
        name: ([], []) for name in [*files, "fetch 4 KiB script, cache miss"]
    }
    for i in range(runs):
        for name, path in files.items():
            ours, theirs = samples[name]
            key = f"logs/bench/{path.name}"
            ours_fn = functools.partial(blobs.put_log, key, path)
            theirs_fn = functools.partial(fs.put_file, str(path), f"{BUCKET}/plain/{key}")
            for j in range(SMALL_REPEATS if path.stat().st_size <= MIB else 1):
                if (i + j) % 2 == 0:  # alternate who goes first
                    ours.append(await timed(ours_fn))
                    theirs.append(timed_sync(theirs_fn))
                else:
                    theirs.append(timed_sync(theirs_fn))
                    ours.append(await timed(ours_fn))
        ours, theirs = samples["fetch 4 KiB script, cache miss"]
        for j in range(SMALL_REPEATS):
            shutil.rmtree(cache, ignore_errors=True)  # a miss every time
            downloads = reader.downloads
            if (i + j) % 2 == 0:
                ours.append(await timed(lambda: reader.get_script(sha)))
                theirs.append(timed_sync(lambda: fs.cat_file(f"{BUCKET}/plain/script")))
            else:
                theirs.append(timed_sync(lambda: fs.cat_file(f"{BUCKET}/plain/script")))
                ours.append(await timed(lambda: reader.get_script(sha)))
            assert reader.downloads == downloads + 1 and (cache / script_key(sha)).exists()
    await blobs.aclose()
    await reader.aclose()
    return {
        name: (statistics.median(ours), statistics.median(theirs))
        for name, (ours, theirs) in samples.items()
    }


def report(scheme: str, results: dict[str, tuple[float, float]]) -> None:
    for name, (ours, theirs) in results.items():
        ratio = ours / theirs
        mark = "ok" if ratio <= GOAL else f"over {GOAL}"
        print(
            f"{scheme:5s} {name:31s} Blobs {ours * 1e3:8.1f} ms   s3fs {theirs * 1e3:8.1f} ms"
            f"   ratio {ratio:4.2f} ({mark})"
        )


def main() -> None:
    """Start the servers, run the rounds, print one line per operation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="rounds per operation")
    parser.add_argument("--backend", choices=["s3", "swift", "both"], default="s3")
    parser.add_argument("--part-mib", type=int, default=None, help="Blobs part_size in MiB")
    parser.add_argument("--concurrency", type=int, default=None, help="Blobs max_concurrency")
    args = parser.parse_args()
    tuning: dict[str, Any] = {}
    if args.part_mib:
        tuning["part_size"] = args.part_mib * MIB
    if args.concurrency:
        tuning["max_concurrency"] = args.concurrency
    load = os.getloadavg()[0]
    defaults = BlobOptions()
    part = tuning.get("part_size", defaults.part_size) // MIB
    conc = tuning.get("max_concurrency", defaults.max_concurrency)
    print(
        f"bench/blobs.py --runs {args.runs} --backend {args.backend}; "
        f"Blobs parts {part} MiB x {conc}; load avg {load:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="dcrond-bench-") as tmp:
        folder = Path(tmp)
        if args.backend in ("s3", "both"):
            with MotoServer(auth=False) as moto:
                moto.create_bucket(BUCKET)
                options = {**moto.options(), **tuning}
                report("s3", trio.run(measure, "s3", options, folder, args.runs))
        if args.backend in ("swift", "both"):
            reason = swift_missing()
            if reason is not None:
                raise SystemExit(reason)
            with SwiftServer() as swift:
                swift.create_container(BUCKET)
                options = {**swift.options(), **tuning}
                report("swift", trio.run(measure, "swift", options, folder, args.runs))


if __name__ == "__main__":
    main()
