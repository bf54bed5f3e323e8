"""Simulator cost as instructions per simulated request: the noise-free companion of
``bench_simulator.py``.

    python benchmarks/bench_instructions.py [--quick] [--only NAME ...] [--jobs 2]
                                            [--replayed] [--parts]

On a shared machine the CPU time of one tree moves by up to 40% between runs (stop 33's note:
azure-x1 at 23.5 to 33.9 us/req in one afternoon), which hides any change below that and
makes the ratios issue 12 asks for (four replicas against one, 16x outputs against 1x, 64
replicas against one) hard to settle. Instructions executed move far less: this script counts
them with valgrind's callgrind (``valgrind`` on PATH; it is not a Python dependency), one
process per row that builds and runs the row once (imports, calibration set-up, trace, a first
run whose caches start cold), then runs it again with counting on only for that run (the
run is called through ``sys.call_tracing``, a C function nothing else calls, and callgrind
counts only inside it: ``--collect-atstart=no --toggle-collect``): the warm run that
``bench_simulator`` calls the event loop. Three processes of ``inst-1 --quick`` started
together counted the same 194,946,142 instructions in that run; runs of this script an hour
apart counted 194.89 and 195.02 thousand per request (inst-1), 222.86 and 223.14 (azure-x4):
0.07-0.13% apart, where CPU time moves by tens of percent. Two checkouts of one commit count
up to 0.4% apart when their paths differ in length (``exp-default``: 210.35 thousand a request
in ``/tmp/w_f74856c``, 211.10 in ``/work/main``; 210.35 and 210.43 for two checkouts of
another commit): the path's strings move the memory layout, and with it hash probes and
allocator paths — compare two trees from paths of the same length. In their whole (set-up
included) processes differ by 0.3%, which is why the run is counted alone rather than as the
difference of a one-run and a two-run process (that carried the set-up's 0.3% into a small
row: 3.5% on 1,000 requests). Two versions of the code move a row by more even where its
executed path did not change (``chunked``, which never reaches the code changed, counted
204.63 and 202.91 thousand a request at 837d727 and 5f05091, both from paths of one length):
where a change can be switched off, count it on and off in one tree.

It is what the CPU executes, not how long it takes: cache misses, which grow with the pool and
the run (the raw ``vs`` of ``bench_simulator`` against its ``vs/floor``), are not in it, so
quote it beside the timed table, not instead of it.

Each row's SimPy floor is counted the same way (a minimal program issuing the row's number of
timeouts), so ``floor x`` is the row's instructions over the floor's.

Columns: requests, events/req, instructions per request (thousands, of the counted run),
``floor x``, ``vs`` (instructions per request over the row named in ``ref``); with
``--replayed``, the same row counted once more with its routing decisions replayed for free
(``route_cost``'s replay router, the same replicas checked) and the difference, what
least-outstanding-tokens routing costs per request; with ``--parts`` (rows of 24 replicas
or more, where the router keeps a load table; ``-`` for the others), that cost split as
``route_cost --parts`` splits its time: the replayed run counted again with the load table
kept current at the replicas' events (``upkeep``, over the replayed run), and again with it
also asked at each arrival (``queries``, over the upkeep run). ``--quick`` takes
``bench_simulator``'s smaller series (and a 100-second ``inst-64``): under valgrind a row
runs about 50 times slower. The bundled experiments are counted when named (``--only
exp-default exp-hllm exp-llmshare``: each as ``simcluster run`` builds it, with its own cost
model and policies).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_simulator as bench  # noqa: E402

from simcluster.policies.routing import LeastOutstandingTokens  # noqa: E402

DEFAULT = ["azure-x1", "azure-x4", "out-x1", "out-x4", "out-x16", "inst-1", "inst-4",
           "inst-16", "inst-64"]
QUICK = {**bench.QUICK, "inst-64": {"span_s": 100.0}}
#: Row kinds whose runs are counted (the whole-process rows are not: they time a process, not
#: a run). Bundled experiments (``exp-default``, ``exp-hllm``, ``exp-llmshare``)
#: are counted on request, without ``--replayed`` (they route with their own policies).
COUNTED = ("azure", "syn", "experiment")
#: References beside ``bench_simulator``'s own (it quotes azure-x4 without one).
REFS = {"azure-x4": "azure-x1"}
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")
#: Pools from this size on are routed with a load table (below it the router scans): only
#: their rows are split by ``--parts``. A table built for a smaller row would be counted
#: (inst-1 once printed an upkeep of 27.74 thousand a request) where the router keeps none.
TABLE_FROM = LeastOutstandingTokens().index_from


def worker(kind: str, p: dict, replayed: bool | str = False) -> dict:
    """Build and run a row once, then again inside ``sys.call_tracing`` (the counted run);
    ``replayed``: the counted run sends each request where the first run's router did, with
    ``route_cost``'s replay router (no load read), checked to serve the same replicas;
    ``"upkeep"`` / ``"query"``: that router also keeps the router's load table current at the
    replicas' events / and asks it at each arrival (``route_cost --parts``)."""
    from simcluster.calibration import load_calibration
    from simcluster.cost import CostModel
    cost, cache = CostModel(load_calibration("measured")), {}
    first = bench._build(kind, p, cost, cache).run()
    want = first.requests.instance.tolist()
    del first
    kw = {}
    if replayed:
        import route_cost  # noqa: F401  (registers the replay router)
        kw = {"router": "bench-replay", "router_params": {"choices": want}}
        if replayed in ("upkeep", "query"):
            kw["router_params"]["table"] = replayed
    gc.collect()
    sim = bench._build(kind, p, cost, cache, **kw)
    res = sys.call_tracing(sim.run, ())
    if res.requests.instance.tolist() != want:
        raise RuntimeError("the counted run served other replicas than the first")
    return {"requests": len(sim.trace), "events": next(sim.env._eid),
            "finished": int((~res.requests.rejected).sum())}


def floor_worker(n_events: int) -> dict:
    import simpy  # noqa: F401  (imported before counting: bench._floor imports it)
    sys.call_tracing(bench._floor, (n_events,))
    return {}


def _count(args: list[str]) -> tuple[int, dict]:
    """Instructions counted inside ``sys.call_tracing`` of ``python this ARGS`` under
    callgrind, and the result it printed."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
           "--collect-atstart=no", "--toggle-collect=*sys_call_tracing*",
           sys.executable, __file__, *args]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    m = _COLLECTED.search(done.stderr)
    if done.returncode or m is None:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return int(m.group(1)), json.loads(done.stdout.strip().splitlines()[-1])


def measure(name: str, quick: bool, replayed: bool = False, parts: bool = False) -> dict:
    kind, p, _ = bench.ROWS[name]
    p = {**p, **(QUICK.get(name, {}) if quick else {})}
    instructions, out = _count(["--worker", json.dumps([kind, p])])
    floor = _count(["--floor", str(out["events"])])[0]
    if not instructions or not floor:
        raise RuntimeError(f"{name}: nothing counted (is sys_call_tracing a symbol of "
                           f"{sys.executable}?)")
    out = {**out, "instructions": instructions, "floor": floor}
    if replayed or parts:
        out["replayed"] = _count(["--worker", json.dumps([kind, p, True])])[0]
    if parts and p.get("count", 1) >= TABLE_FROM:
        for mode in ("upkeep", "query"):
            out[mode] = _count(["--worker", json.dumps([kind, p, mode])])[0]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the smaller series")
    ap.add_argument("--only", nargs="*", help="row names (default: %s)" % " ".join(DEFAULT))
    ap.add_argument("--jobs", type=int, default=2, help="rows counted at once")
    ap.add_argument("--replayed", action="store_true",
                    help="also count each row with its routing decisions replayed (no load "
                         "read): the routing column is the difference")
    ap.add_argument("--parts", action="store_true",
                    help="with --replayed's count, the load table's two parts (rows from 24 "
                         "replicas, where the router uses it): kept current at the replicas' "
                         "events (upkeep) and asked at each arrival (queries)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--floor", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.replayed |= args.parts        # (the parts are differences from the replayed count)
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return 0
    if args.floor is not None:
        print(json.dumps(floor_worker(args.floor)))
        return 0
    if shutil.which("valgrind") is None:
        print("bench_instructions: valgrind is not on PATH (it counts the instructions)",
              file=sys.stderr)
        return 2
    names = args.only or DEFAULT
    rows = [n for n, r in bench.ROWS.items() if r[0] in COUNTED]
    unknown = [n for n in names if n not in rows]
    if unknown:
        print(f"bench_instructions: unknown or untimed rows {unknown}; rows: "
              f"{', '.join(rows)}", file=sys.stderr)
        return 2
    if args.replayed and any(bench.ROWS[n][0] == "experiment" for n in names):
        print("bench_instructions: --replayed replays least-outstanding-tokens routing; the "
              "experiment rows route with their own policies: count them without it",
              file=sys.stderr)
        return 2
    results = {}
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:      # (rows side by side)
        futures = {name: pool.submit(measure, name, args.quick, args.replayed, args.parts)
                   for name in names}
        for name in names:
            results[name] = futures[name].result()
            print(f"  ... {name} done", file=sys.stderr, flush=True)
    print("simcluster event loop, instructions retired (callgrind) by one warm run")
    hdr = ["row", "requests", "events/req", "kinstr/req", "floor x", "vs", "ref"]
    if args.replayed:
        hdr += ["replayed", "routing"]
    if args.parts:
        hdr += ["upkeep", "queries"]
    print(f"{hdr[0]:<12}" + "".join(f"{h:>12}" for h in hdr[1:]))
    for name, r in results.items():
        ref = bench.ROWS[name][2] or REFS.get(name)
        per = r["instructions"] / r["requests"]
        vs = (per / (results[ref]["instructions"] / results[ref]["requests"])
              if ref in results else float("nan"))
        vals = [r["requests"], r["events"] / r["requests"], per / 1e3,
                r["instructions"] / r["floor"], vs]
        line = (f"{name:<12}" + f"{vals[0]:>12,}" + "".join(f"{v:>12.2f}" for v in vals[1:])
                + f"{ref or '-':>12}")
        if args.replayed:
            rep = r["replayed"] / r["requests"]
            line += f"{rep / 1e3:>12.2f}{(per - rep) / 1e3:>12.2f}"
        if args.parts and "upkeep" in r:
            up, q = r["upkeep"] / r["requests"], r["query"] / r["requests"]
            line += f"{(up - rep) / 1e3:>12.2f}{(q - up) / 1e3:>12.2f}"
        elif args.parts:               # (the router scans: it keeps no table to split)
            line += f"{'-':>12}{'-':>12}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
