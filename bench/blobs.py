"""Time Blobs' uploads and script fetches against plain s3fs on the same server, same run.

Usage: ``.venv/bin/python bench/blobs.py [--runs 7] [--backend s3|swift|both] [--memory]``

It starts moto's S3 server (and, with ``--backend swift`` or ``both``, a
one-replica Swift through its S3 API) on 127.0.0.1, then times, alternating
the two sides in every round so both see the same noise:

* uploading a 1 MiB and a 100 MiB log file: ``Blobs.put_log`` against
  ``S3FileSystem.put_file`` of the same file to another key;
* fetching a 4 KiB script on a cache miss: ``Blobs.get_script`` with an empty
  cache (hash checked, cache written) against ``S3FileSystem.cat_file``.

The anchor is s3fs as a user would set it up: ``S3FileSystem`` with the
endpoint, region and keys, path-style addressing for Swift, and every other
setting at its default (``put_file`` in 50 MiB parts, up to 10 in flight, so
it holds a 100 MiB file whole). Blobs runs with dcrond's defaults for the
scheme (parts of 8 MiB on S3, 32 MiB on Swift, 4 in flight) unless
``--part-mib`` / ``--concurrency`` say otherwise; those never touch s3fs.

A round does each small operation 5 times and the 100 MiB upload once; it
prints the median over ``--runs`` rounds of every operation and the ratio
Blobs / s3fs; the goal is at most 1.2. Compare ratios, not absolute figures:
the machines are shared and noisy, and moto keeps objects in memory.

``--memory`` then uploads the 100 MiB log once more per side, each in a fresh
process, and prints how far the upload raised that process's peak resident
size (Linux: ``VmHWM`` after resetting it through ``/proc/self/clear_refs``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import s3fs
import trio

from dcrond.store._blobs import Blobs, script_key
from dcrond.store._blobs3 import S3Backend
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


def run_backend(scheme: str, options: dict[str, Any], folder: Path, args: Any) -> None:
    """Time one backend, print its lines, and (with --memory) the RSS figures."""
    backend = Blobs(f"{scheme}://{BUCKET}/blobs", **options).backend
    assert isinstance(backend, S3Backend)
    part, conc = backend.part_size // MIB, backend.options.max_concurrency
    print(f"{scheme:5s} Blobs parts {part} MiB x {conc} in flight; plain s3fs defaults")
    report(scheme, trio.run(measure, scheme, options, folder, args.runs))
    if args.memory:
        big = folder / "100mib.log"
        for side in ("Blobs", "s3fs"):
            spec = {"side": side, "scheme": scheme, "options": options, "path": str(big)}
            out = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps(spec)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            grew = int(out.split()[-1]) / 1024
            print(f"{scheme:5s} upload 100 MiB log, peak RSS growth   {side:5s} {grew:6.0f} MiB")


def child(spec: dict[str, Any]) -> None:
    """One 100 MiB upload in a fresh process; prints the peak RSS growth in KiB."""
    scheme, options, path = spec["scheme"], spec["options"], Path(spec["path"])
    key = f"logs/bench/memory-{spec['side']}"
    if spec["side"] == "Blobs":
        blobs = Blobs(f"{scheme}://{BUCKET}/blobs", **options)
        trio.run(blobs.check)  # connections open, libraries loaded: only the upload counts
        before = reset_peak()
        trio.run(blobs.put_log, key, path)
    else:
        fs = plain_s3fs(options, scheme == "swift")
        fs.pipe_file(f"{BUCKET}/plain/probe", b"x")
        before = reset_peak()
        fs.put_file(str(path), f"{BUCKET}/plain/{key}")
    print(peak_kib() - before)


def peak_kib() -> int:
    """This process's peak resident size (KiB) since the last ``reset_peak()``."""
    return status_kib("VmHWM")


def reset_peak() -> int:
    """Start a new peak at the current resident size (Linux), and return that size (KiB).

    (``ru_maxrss`` would not do: Linux carries it over from the parent across exec.)
    """
    Path("/proc/self/clear_refs").write_text("5")
    return status_kib("VmRSS")


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    """Start the servers, run the rounds, print one line per operation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="rounds per operation")
    parser.add_argument("--backend", choices=["s3", "swift", "both"], default="s3")
    parser.add_argument("--part-mib", type=int, default=None, help="Blobs part_size in MiB")
    parser.add_argument("--concurrency", type=int, default=None, help="Blobs max_concurrency")
    parser.add_argument(
        "--memory", action="store_true", help="also measure each side's peak RSS growth"
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    tuning: dict[str, Any] = {}
    if args.part_mib:
        tuning["part_size"] = args.part_mib * MIB
    if args.concurrency:
        tuning["max_concurrency"] = args.concurrency
    if args.child:
        child(json.loads(args.child))
        return
    load = os.getloadavg()[0]
    print(f"bench/blobs.py --runs {args.runs} --backend {args.backend}; load avg {load:.1f}")
    with tempfile.TemporaryDirectory(prefix="dcrond-bench-") as tmp:
        folder = Path(tmp)
        if args.backend in ("s3", "both"):
            with MotoServer(auth=False) as moto:
                moto.create_bucket(BUCKET)
                options = {**moto.options(), **tuning}
                run_backend("s3", options, folder, args)
        if args.backend in ("swift", "both"):
            reason = swift_missing()
            if reason is not None:
                raise SystemExit(reason)
            with SwiftServer() as swift:
                swift.create_container(BUCKET)
                options = {**swift.options(), **tuning}
                run_backend("swift", options, folder, args)


if __name__ == "__main__":
    main()
