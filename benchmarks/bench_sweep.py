"""Sweep throughput: points per second on local processes and on a local Ray, same frames.

    python benchmarks/bench_sweep.py [--points 200] [--jobs N] [--requests 300] [--serial]
    python benchmarks/bench_sweep.py --memory [--points 12]

A grid over the bundled default experiment (the Azure conversation trace, Llama-3.1-8B on H100
replicas): rate x replicas x seed, at least ``--points`` points, each a seeded random 80% of
the trace's first ``--requests`` / 0.8 requests, rate-scaled. Each runner runs the whole grid from nothing (no cache); the table gives
wall time and points per second, and the frames (every column but the points' own wall times)
must be equal. Ray's figure includes starting Ray and its workers (``--ray local`` does that
inside the command). ``--serial`` adds a one-process run for reference.

``--memory``: peak RSS of a one-process sweep over ``--points`` seeds of the whole default
experiment (19,366 requests a point), each in a fresh process, with the full garbage collection
after each long point (``sweep.COLLECT_AFTER_S``) and without it; the frames must be equal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from simcluster.experiment.study import sweep  # noqa: E402


def grid(points: int) -> dict:
    rates = [2, 4, 6, 8, 10, 12, 14, 16, 20, 24]
    counts = [1, 2, 3, 4]
    seeds = list(range(max(1, math.ceil(points / (len(rates) * len(counts))))))
    return {"trace.rate_per_s": rates, "instances.0.count": counts, "seed": seeds}


def timed(**kw):
    t0 = time.perf_counter()
    res = sweep("default.toml", progress=False, **kw)
    return res, time.perf_counter() - t0


def _memory_child(points: int, collect: bool) -> None:
    """(in a fresh process) One serial sweep; prints its peak RSS, wall time and frame."""
    import simcluster.search.sweep as sw
    if not collect:
        sw.COLLECT_AFTER_S = math.inf
    res, wall = timed(grid={"seed": list(range(points))}, jobs=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    frame = res.frame.drop(columns=["wall_s"])
    print(json.dumps({"peak_mib": peak, "wall_s": wall, "failed": len(res.failed),
                      "frame": frame.to_json()}))


def memory(points: int) -> int:
    rows, frames = [], {}
    for collect in (True, False):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(points)]
                             + ([] if collect else ["--no-collect"]),
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        frames[collect] = r.pop("frame")
        rows.append({"collect after long points": collect, "points": points, **r})
    print(f"one-process sweep of {points} seeds of the default experiment (19,366 requests "
          f"each); load average {os.getloadavg()[0]:.1f}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"frames equal: {frames[True] == frames[False]}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--serial", action="store_true")
    ap.add_argument("--memory", action="store_true",
                    help="peak RSS of a serial sweep with and without the collection")
    ap.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--no-collect", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        _memory_child(args.memory_child, not args.no_collect)
        return 0
    if args.memory:
        return memory(args.points or 12)
    args.points = args.points or 200
    g = grid(args.points)
    base = {"trace.first_n": int(args.requests / 0.8), "trace.subsample": 0.8}
    n = math.prod(len(v) for v in g.values())
    print(f"sweep of {n} points ({' x '.join(f'{len(v)} {k}' for k, v in g.items())}), "
          f"{args.requests} requests of azure-conv each; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    runs = []
    if args.serial:
        runs.append(("serial", dict(jobs=1)))
    runs += [("local processes", dict(jobs=args.jobs)), ("ray local", dict(ray="local"))]
    frames, rows = {}, []
    for name, kw in runs:
        res, wall = timed(grid=g, set=base, **kw)
        frames[name] = res.frame.drop(columns=["wall_s"])
        sim_s = res.frame.wall_s.sum()
        rows.append({"runner": name, "workers": kw.get("jobs") or "all cores", "points": n,
                     "failed": len(res.failed), "wall_s": wall, "points_per_s": n / wall,
                     "sim_s_per_point": sim_s / n})
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ref = frames["local processes"]
    for name, f in frames.items():
        pd.testing.assert_frame_equal(ref, f)
    print(f"frames equal across {', '.join(frames)}: True ({len(ref)} rows, "
          f"{len(ref.columns)} columns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
