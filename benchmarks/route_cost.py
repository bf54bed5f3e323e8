"""What least-outstanding-tokens routing costs a simulation, per request.

    python benchmarks/route_cost.py [--repeats 3] [--only ROW ...] [--quick] [--structures]
                                    [--parts]

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
scan below 32 replicas and the table from there on (moved to 24 after 6d66f7c made the scan
cheaper, by instructions counted: the router's docstring).

``--parts`` splits the load table's cost in two, with two more replayed runs: one keeping a
table of the pool current at every replica event, as the router does, but never asking it
(its *upkeep*), one also asking it at each arrival (checked: it names the replayed replica),
whose extra over the first is the *queries*. The upkeep is per replica event, so per request
it is about the same on every pool size (``--parts --quick --only inst-1 inst-16 inst-64
--repeats 5``: 5.9, 4.9 and 6.1 us); the queries cost 7.8 and 7.7 us on 16 and 64 replicas
(none on one: a single candidate is not asked), against 12.4 us of routing on 64. Those
times are from before the table's marks wrote through memoryviews (da3fa98), which took the
upkeep from 33.5 to 29.6 thousand instructions a request on 64 replicas (callgrind, the
replay router with ``table="upkeep"``, inst-64 ``--quick``).
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
from simcluster.policies.load_index import LoadTable  # noqa: E402

ROWS = ["inst-1", "inst-4", "inst-16", "inst-64", "inst-256", "inst-1024", "azure-x1",
        "azure-x4", "out-x1", "out-x16"]
QUICK = {"inst-1": {"span_s": 200.0}, "inst-4": {"span_s": 200.0},
         "inst-16": {"span_s": 200.0}, "inst-64": {"span_s": 100.0},
         "inst-256": {"span_s": 20.0}, "inst-1024": {"span_s": 5.0}}


@ROUTERS.register("bench-replay")
class Replay:
    """Routes request ``id`` to ``choices[id]`` (a replica id; candidates in id order).

    ``table`` (``--parts``): ``"upkeep"`` also keeps a :class:`LoadTable` of the pool current
    at the replicas' events, as the router's table is kept, without asking it; ``"query"``
    also asks it at each arrival with more than one candidate, as the router does, and
    checks that it names the replayed replica."""

    def __init__(self, choices=(), table=None):
        if table not in (None, "upkeep", "query"):
            raise ValueError(f"table: expected None, 'upkeep' or 'query', got {table!r}")
        self.choices, self.mode, self.table = choices, table, None

    def bind(self, cluster):
        if self.mode is not None:
            self.table = LoadTable(cluster.instances)
        return self

    def route(self, request, candidates, now):
        inst = candidates[self.choices[request.id]] if len(candidates) > 1 else candidates[0]
        if inst.id != self.choices[request.id]:
            raise RuntimeError("replay: candidates not in replica id order")
        if self.mode == "query" and len(candidates) > 1 and self.table.least(now) is not inst:
            raise RuntimeError(f"replay: the load table chose another replica than "
                               f"{inst.id} for request {request.id}")
        return inst


#: ``--structures``: the router's two load structures forced on every pool size (by default
#: they answer only from ``index_from`` = 24 replicas on, where the plain scan below it costs
#: more): what each costs where the scan is used, and the scan where they are.
STRUCTURES = {"table": {"index_from": 2}, "index": {"index_from": 2, "table": False},
              "scan": {"index_from": 1 << 30}}


def measure(row: str, repeats: int, quick: bool, structures: bool = False,
            parts: bool = False) -> dict:
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
    if parts:
        ways.update({k: ("bench-replay", {"choices": choices, "table": k})
                     for k in ("upkeep", "query")})
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
    ap.add_argument("--parts", action="store_true",
                    help="also time the replayed run keeping the load table current, and "
                         "asking it at each arrival: the table's upkeep and queries (us/req)")
    args = ap.parse_args(argv)
    rows = args.only or ROWS
    out = {}
    for row in rows:
        out[row] = measure(row, args.repeats, args.quick, args.structures, args.parts)
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
    if args.parts:
        print("\nthe load table's parts, us/request: upkeep (kept current at the replicas' "
              "events, never asked) over the replayed run, queries (asked at each arrival) "
              "over that")
        print(f"{'row':<10}  " + "  ".join(f"{k:>12}" for k in ("upkeep", "queries", "both")))
        for row, r in out.items():
            up, q = r["upkeep"] - r["replay"], r["query"] - r["upkeep"]
            print(f"{row:<10}  {up:>12.2f}  {q:>12.2f}  {up + q:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
