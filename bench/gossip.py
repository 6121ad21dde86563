"""Gossip failure detection in the simulator: dcrond's timings against memberlist's defaults.

    .venv/bin/python bench/gossip.py [--sizes 100,500] [--losses 0,0.01,0.05]
                                     [--trials 5] [--fp-seconds 120] [--json FILE]

Four configurations of the same core run the same scenarios from the same
seeds:

- ``memberlist``: memberlist's ``DefaultLANConfig`` timings (probe interval
  1 s, probe timeout 0.5 s, suspicion multiplier 4, gossip every 200 ms to 3
  members), Lifeguard on, as memberlist ships;
- ``memberlist-noLG``: the same without Lifeguard (plain SWIM with suspicion);
- ``dcrond``: our defaults (probe interval 0.5 s, timeout 0.25 s, suspicion
  multiplier 5), Lifeguard on;
- ``dcrond-noLG``: ours without Lifeguard.

For every cluster size and loss rate, in one converged cluster per
configuration: ``--trials`` new members join one after another (seconds
until every member sees the newcomer alive) and ``--trials`` members crash
one after another (seconds until the first suspicion, the first "dead"
verdict, and until every member has declared it dead). Then two runs of
``--fp-seconds`` count false positives -- suspicions and death verdicts about
healthy members -- first in a healthy cluster, then with 5 % of the members
degraded (their receive path handles packets up to 2 s late, the CPU-starved
member Lifeguard was designed for). Medians and ratios are printed; the runs
are deterministic, so a rerun prints the same figures.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

from dcrond.gossip import GossipConfig
from dcrond.testing._gossipscenarios import (
    FalsePositives,
    converged_sim,
    measure_death,
    measure_false_positives,
    measure_join,
    median,
)

CONFIGS: dict[str, GossipConfig] = {
    "memberlist": GossipConfig.memberlist(),
    "memberlist-noLG": GossipConfig.memberlist(lifeguard=False),
    "dcrond": GossipConfig(),
    "dcrond-noLG": GossipConfig(lifeguard=False),
}


def detection(n: int, loss: float, cfg: GossipConfig, trials: int, seed: int) -> dict[str, object]:
    """Join and crash dissemination in one converged cluster."""
    sim = converged_sim(seed, n, cfg, loss=loss)
    joins = []
    for i in range(trials):
        joins.append(measure_join(sim, f"new{i:02d}", f"m{i:03d}"))
        sim.run_until(sim.now + 2_000_000)
    deaths = []
    for i in range(trials):
        deaths.append(measure_death(sim, f"m{n - 1 - i:03d}"))
        sim.run_until(sim.now + 5_000_000)
    return {
        "join_all_s": median(list(joins)),
        "first_suspect_s": median([d.first_suspect_s for d in deaths]),
        "first_dead_s": median([d.first_dead_s for d in deaths]),
        "all_dead_s": median([d.all_dead_s for d in deaths]),
        "missed": sum(d.all_dead_s is None for d in deaths) + sum(j is None for j in joins),
    }


def _fmt(v: object, unit: str = "s") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f} {unit}".rstrip()
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="100,500")
    ap.add_argument("--losses", default="0,0.01,0.05")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--fp-seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    losses = [float(x) for x in args.losses.split(",")]
    results: list[dict[str, object]] = []
    t_start = time.perf_counter()

    print("== Failure detection and join dissemination (median of "
          f"{args.trials} crashes / joins; seconds of simulated time) ==")  # fmt: skip
    head = f"{'members':>7} {'loss':>5}  {'config':<16} {'join→all':>9} {'1st susp':>9} "
    print(head + f"{'1st dead':>9} {'all dead':>9} {'missed':>6}")
    for n in sizes:
        for loss in losses:
            row: dict[str, dict[str, object]] = {}
            for name, cfg in CONFIGS.items():
                r = detection(n, loss, cfg, args.trials, args.seed + n)
                row[name] = r
                results.append(
                    {"kind": "detection", "members": n, "loss": loss, "config": name, **r}
                )
                print(
                    f"{n:>7} {loss:>5.0%}  {name:<16} {_fmt(r['join_all_s']):>9} "
                    f"{_fmt(r['first_suspect_s']):>9} {_fmt(r['first_dead_s']):>9} "
                    f"{_fmt(r['all_dead_s']):>9} {r['missed']:>6}",
                    flush=True,
                )
            ours, theirs = row["dcrond"]["all_dead_s"], row["memberlist"]["all_dead_s"]
            if isinstance(ours, float) and isinstance(theirs, float):
                print(f"{'':>15}ratio all-dead dcrond / memberlist: {ours / theirs:.2f}")

    print()
    print(f"== False positives in {args.fp_seconds:g} simulated s (episodes = distinct "
          "member+incarnation; per healthy member-hour) ==")  # fmt: skip
    print(f"{'members':>7} {'loss':>5} {'degraded':>8}  {'config':<16} {'suspicions':>10} "
          f"{'/member-h':>9} {'deaths':>6} {'accused':>7}")  # fmt: skip
    for n in sizes:
        for loss in losses:
            for degraded in (0, max(1, n // 20)):
                fps: dict[str, FalsePositives] = {}
                for name, cfg in CONFIGS.items():
                    fp = measure_false_positives(
                        args.seed + n, n, cfg, loss=loss, seconds=args.fp_seconds,
                        degraded=degraded, lag_s=2.0,
                    )  # fmt: skip
                    fps[name] = fp
                    results.append({"kind": "false_positives", "loss": loss, "config": name,
                                    **asdict(fp)})  # fmt: skip
                    print(
                        f"{n:>7} {loss:>5.0%} {degraded:>8}  {name:<16} {fp.suspicions:>10} "
                        f"{fp.per_member_hour(fp.suspicions):>9.2f} {fp.deaths:>6} "
                        f"{fp.accused:>7}",
                        flush=True,
                    )
                for base in ("memberlist", "dcrond"):
                    on, off = fps[base].suspicions, fps[f"{base}-noLG"].suspicions
                    ratio = f"{off / on:.1f}x" if on else ("inf" if off else "-")
                    print(f"{'':>25}{base}: suspicions without / with Lifeguard: {ratio}")
    print(f"\n(bench took {time.perf_counter() - t_start:.0f} s of wall-clock time)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
