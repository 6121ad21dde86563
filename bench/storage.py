"""Print how fast LogStorage.save makes Raft entries durable, against a raw-SQLite anchor.

Usage: ``.venv/bin/python bench/storage.py [--seconds 3] [--dir /path/on/the/disk]``

For batch sizes 1 and 64 of 256-byte entries, with fsync (synchronous=FULL),
it saves in a loop for ``--seconds`` and prints saves/s, entries/s and the
p50/p99 latency of one save (a hard state rides along in every save, as in a
Ready); then the same with synchronous=NORMAL (no fsync) for comparison. The
anchor, measured right before each configuration on the same disk, is a bare
apsw WAL commit of one 256-byte row with synchronous=FULL: compare the ratios,
not the figures (the machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import apsw

from dcrond.raft._storage import LogStorage
from dcrond.raft._types import Entry, HardState

ENTRY_BYTES = 256


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def anchor(folder: Path, seconds: float) -> tuple[float, float]:
    """Raw apsw: one 256-byte row per committed transaction, WAL, synchronous=FULL."""
    conn = apsw.Connection(str(folder / "anchor.db"))
    conn.pragma("journal_mode", "WAL")
    conn.pragma("synchronous", "FULL")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    payload = b"a" * ENTRY_BYTES
    lat: list[float] = []
    k = 0
    started = time.perf_counter()
    end = started + seconds
    while time.perf_counter() < end:
        k += 1
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?, ?)", (k, payload))
        conn.execute("COMMIT")
        lat.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    conn.close()
    (folder / "anchor.db").unlink()
    return len(lat) / wall, statistics.median(lat)


def run(folder: Path, batch: int, seconds: float, sync: bool) -> dict[str, float]:
    """Save batches of ``batch`` entries for ``seconds``; return the figures."""
    path = folder / f"log-{batch}-{int(sync)}.db"
    payload = b"p" * ENTRY_BYTES
    lat: list[float] = []
    with LogStorage.open(path, sync=sync) as log:
        log.load()
        index = 0
        started = time.perf_counter()
        end = started + seconds
        while time.perf_counter() < end:
            entries = [Entry(term=1, index=index + i + 1, data=payload) for i in range(batch)]
            hard_state = HardState(term=1, vote="n1", commit=index)
            t0 = time.perf_counter()
            log.save(hard_state=hard_state, entries=entries, snapshot=None)
            lat.append(time.perf_counter() - t0)
            index += batch
        wall = time.perf_counter() - started
        stats = log.statistics()
    assert stats.entries == index
    return {
        "saves_s": len(lat) / wall,
        "entries_s": index / wall,
        "p50_ms": statistics.median(lat) * 1e3,
        "p99_ms": _percentile(lat, 0.99) * 1e3,
        "fsyncs": stats.fsyncs,
    }


def main() -> None:
    """Run the benchmark and print one line per configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dir", default=None, help="folder on the disk to measure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        for sync in (True, False):
            for batch in (1, 64):
                # the anchor right before each configuration, so both see the same noise
                commits_s, anchor_p50 = anchor(folder, args.seconds / 2)
                r = run(folder, batch, args.seconds, sync)
                mode = "FULL  " if sync else "NORMAL"
                print(
                    f"save {mode} batch {batch:3d}: {r['saves_s']:7.0f} saves/s "
                    f"{r['entries_s']:8.0f} entries/s  p50 {r['p50_ms']:.3f} ms  "
                    f"p99 {r['p99_ms']:.3f} ms | anchor {commits_s:5.0f} commits/s "
                    f"p50 {anchor_p50 * 1e3:.3f} ms | ratio saves/s {r['saves_s'] / commits_s:.2f}"
                    f" p50 {r['p50_ms'] / (anchor_p50 * 1e3):.2f}"
                )


if __name__ == "__main__":
    main()
