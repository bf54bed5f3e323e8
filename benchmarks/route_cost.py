"""What least-outstanding-tokens routing costs a simulation, per request.

    python benchmarks/route_cost.py [--repeats 3] [--only ROW ...] [--quick] [--structures]

Each row (a ``bench_simulator`` row: Llama-2-7B on H100 replicas, the measured calibration)
runs once with least-outstanding-tokens routing to record where every request went; then,
``--repeats`` times each and alternating, with that router and with a router that only looks
the recorded replica up (no load read, no load table kept). The two runs serve the same
requests on the same replicas (checked: the same request frames), so the difference of their
CPU times is what finding the least-loaded replica costs, and the replayed run is what the
rest of the simulation costs at that pool size. Columns: CPU microseconds per simulated
request (medians), their difference, and each over the first row's (``vs`` columns).

``--structures`` adds, alternating with the others, runs with each of the router's ways of
finding the least-loaded replica forced at every pool size — the load table, the heap of
lower bounds (:mod:`simcluster.policies.load_index`) and the plain scan — and a second table
of what each costs over the replayed run: the measurement behind the router's choice of the
scan below 32 replicas and the table from there on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_simulator as bench  # noqa: E402

from simcluster.policies import ROUTERS  # noqa: E402

ROWS = ["inst-1", "inst-4", "inst-16", "inst-64", "inst-256", "inst-1024", "azure-x1",
        "azure-x4", "out-x1", "out-x16"]
QUICK = {"inst-1": {"span_s": 200.0}, "inst-4": {"span_s": 200.0},
         "inst-16": {"span_s": 200.0}, "inst-64": {"span_s": 100.0},
         "inst-256": {"span_s": 20.0}, "inst-1024": {"span_s": 5.0}}


@ROUTERS.register("bench-replay")
class Replay:
    """Routes request ``id`` to ``choices[id]`` (a replica id; candidates in id order)."""

    def __init__(self, choices=()):
        self.choices = choices

    def bind(self, cluster):
        return self

    def route(self, request, candidates, now):
        inst = candidates[self.choices[request.id]] if len(candidates) > 1 else candidates[0]
        if inst.id != self.choices[request.id]:
            raise RuntimeError("replay: candidates not in replica id order")
        return inst


#: ``--structures``: the router's two load structures forced on every pool size (by default
#: they answer only from ``index_from`` = 32 replicas on, where the plain scan below it costs
#: more): what each costs where the scan is used, and the scan where they are.
STRUCTURES = {"table": {"index_from": 2}, "index": {"index_from": 2, "table": False},
              "scan": {"index_from": 1 << 30}}


def measure(row: str, repeats: int, quick: bool, structures: bool = False) -> dict:
    from simcluster.calibration import load_calibration
    from simcluster.cost import CostModel
    kind, p, _ = bench.ROWS[row]
    p = {**p, **(QUICK.get(row, {}) if quick else {})}
    cost, cache = CostModel(load_calibration("measured")), {}
    first = bench._build(kind, p, cost, cache).run()      # (also fills the caches)
    choices = first.requests.instance.tolist()
    want = first.requests
    del first
    ways = {"lot": ("least_outstanding_tokens", None),
            "replay": ("bench-replay", {"choices": choices})}
    if structures:
        ways.update({k: ("least_outstanding_tokens", v) for k, v in STRUCTURES.items()})
    cpu = {how: [] for how in ways}
    for _ in range(repeats):
        for how, (router, params) in ways.items():
            sim = bench._build(kind, p, cost, cache, router, params)
            c = time.process_time()
            res = sim.run()
            cpu[how].append(time.process_time() - c)
            if how != "lot" and not res.requests.equals(want):
                raise RuntimeError(f"{row}: the {how} run served requests differently")
            del res, sim
    n = len(choices)
    return {"requests": n, **{h: statistics.median(v) / n * 1e6 for h, v in cpu.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", choices=ROWS, help="rows, the first the reference")
    ap.add_argument("--quick", action="store_true", help="shorter instance series")
    ap.add_argument("--structures", action="store_true",
                    help="also time the router with its load table, its heap of bounds and "
                         "the plain scan forced at every pool size (routing us/req each)")
    args = ap.parse_args(argv)
    rows = args.only or ROWS
    out = {}
    for row in rows:
        out[row] = measure(row, args.repeats, args.quick, args.structures)
        print(f"  ... {row} done", file=sys.stderr, flush=True)
    print(f"least-outstanding-tokens routing, {args.repeats} repeats (median CPU us/request)")
    hdr = ["row", "requests", "LOT us/req", "replayed", "routing", "LOT vs", "replayed vs"]
    print("  ".join(f"{h:>12}" if i else f"{h:<10}" for i, h in enumerate(hdr)))
    ref = out[rows[0]]
    for row, r in out.items():
        vals = [r["requests"], r["lot"], r["replay"], r["lot"] - r["replay"],
                r["lot"] / ref["lot"], r["replay"] / ref["replay"]]
        print(f"{row:<10}  " + "  ".join(f"{v:>12,}" if isinstance(v, int) else f"{v:>12.2f}"
                                        for v in vals))
    print(f"(vs: over {rows[0]})")
    if args.structures:
        print("\nrouting us/request (over the replayed run) with each load structure forced")
        print(f"{'row':<10}  " + "  ".join(f"{k:>12}" for k in STRUCTURES))
        for row, r in out.items():
            print(f"{row:<10}  " + "  ".join(f"{r[k] - r['replay']:>12.2f}" for k in STRUCTURES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
