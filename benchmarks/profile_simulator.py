"""Where the event loop's time goes: cProfile of one run of a ``bench_simulator`` row.

    python benchmarks/profile_simulator.py [ROW] [--top 25] [--sort tottime]

The row (default ``azure-x1``: the Azure conversation trace on one H100 replica) is built as
``bench_simulator.py`` builds it; one warm-up run fills the cost model's caches, then a second
run is profiled (result frames included) and the top functions printed by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_simulator as bench  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row", nargs="?", default="azure-x1", choices=sorted(bench.ROWS))
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--sort", default="tottime", choices=("tottime", "cumulative"))
    args = ap.parse_args(argv)
    from simcluster.calibration import load_calibration
    from simcluster.cost import CostModel
    kind, p, _ = bench.ROWS[args.row]
    kind = "azure" if kind == "azure-process" else kind
    cost, cache = CostModel(load_calibration("measured")), {}
    bench._build(kind, p, cost, cache).run()          # warm-up: the caches filled
    sim = bench._build(kind, p, cost, cache)
    prof = cProfile.Profile()
    prof.enable()
    sim.run()
    prof.disable()
    print(f"{args.row}: {len(sim.trace):,} requests, {next(sim.env._eid):,} events")
    pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
