"""Simulator speed and memory: one table of every figure issue 12 asks for.

    python benchmarks/bench_simulator.py [--repeats 3] [--quick] [--only NAME ...]
                                         [--ten-million]

Every row runs in its own subprocess (so its peak RSS is its own), ``--repeats`` times with
one cost model (the event-loop figure is the median; ``first`` is the first run, whose
cost-model caches start cold) — a short row more often, until its repeats after the first
have taken :data:`MIN_CPU_S` of CPU or it has run :data:`MAX_REPEATS` times (``inst-1``, 0.14
s a run, is the reference of the instance series: the median of three such runs moved its
ratios by 15%) —, each repeat followed by a raw SimPy floor: a minimal program
issuing the same number of timeouts as the simulation did. The ratio to the floor takes a
machine's drift out, taken per repeat (the median of the repeats' ratios): on a shared
machine whose speed drifts by up to 2x over minutes, a repeat and the floor right after it run
at the same speed, where rows run minutes apart may not. Across machines it is not
independent of the hardware: the floor fits in the caches and the simulation does not, so
one tree ran ``azure-x1`` at 7.5x its floor on one machine of this kind and 10.5x on another
(compare ratios within one run of this script). CPU time (``process_time``) is the steady
one on a shared machine.
``bench_instructions.py`` counts the instructions of the same rows' runs, which do not drift
(but leave out cache misses).

Rows (Llama-2-7B on H100-SXM replicas, vLLM-like scheduling without chunked prefill,
max_model_len 16k, the measured calibration, least-outstanding-tokens routing unless noted):

* ``azure-x1``, ``azure-x4``: the Azure LLM inference 2023 conversation trace (19,366
  requests); ``...-process`` rows: the same as a whole fresh process (imports, calibration
  set-up from the on-disk slice cache, trace, run, results frames, summary and the CSV and
  JSON files ``simcluster run --out`` writes), one run.
* ``setup-cold``, ``setup-warm``: ``azure-x1`` run once in a fresh process with a private,
  empty disk cache (calibration slices and parsed traces computed and written), then again
  with that cache filled; the figure is their ``setup s``.
* ``syn-10k``/``100k``/``1M``: Poisson arrivals at 5 req/s per replica, prompt and output
  lengths resampled from the Azure trace, 4 replicas (20 req/s).
* ``out-x4``/``x16``: every output 4x/16x longer, arrivals 4x/16x slower (the same
  concurrency), 40k requests on 4 replicas; ``out-x1`` is their reference.
* ``inst-1``..``inst-64``: 1 to 64 replicas at 5 req/s each for 1,000 simulated seconds;
  ``inst-256``, ``inst-1024``: the same for 120 and 30 simulated seconds (153,600 requests
  each; the first few seconds, while the replicas fill, are a larger share of the run), pools
  past the issue's series, where routing chooses among hundreds of replicas.
* ``chunked``: ``azure-x1`` with chunked prefill (vLLM v1's scheduling) and a 2,048-token
  budget; ``overload``: ``azure-x1`` on one A100-80GB, which cannot keep up (the queue grows
  to minutes, about 3,500 preemptions under KV pressure): the regimes a capacity search
  visits beside the profiled one. Not targets of issue 12; ``vs`` is against ``azure-x1``.
* ``disagg``: 1 prefill + 3 decode replicas, KV over NVLink4; ``hetero``: 2 H100-SXM + 2
  A100-80GB replicas (speed-weighted routing); both on ``out-x1``'s trace.
* ``exp-default``, ``exp-hllm``, ``exp-llmshare``: bundled experiments as the command line
  runs them (their own model, hardware, policies and cost model): the default (Azure
  conversation trace, Llama-3.1-8B on 4 H100s), hLLM's (an A100 prefilling, 12 Xeon sockets
  decoding, length-bucketed batches, mini-batch dispatch, M/M/c controller) and LLMShare's
  (GPT-3 175B on prefill and decode pools of parametric accelerators, KV over shared network
  ports, Splitwise routing, a rebalancer): the source systems' disaggregated serving against
  the plain one, per request.
* ``--ten-million``: 10M requests on 64 replicas streamed to Parquet (one run): peak RSS.

Columns: repeats (the runs the medians are over), events/req (SimPy events scheduled per
request), loop req/cpu-s (median), first (first run), floor x (simulation CPU over the
floor's, median over repeats), us/req, vs (us/req
over the row named in ``ref``), vs/floor (floor x over the ref's floor x: the same ratio with
each row's machine speed taken out), rss MiB (peak of the row's process: one run's, as each
repeat's garbage is collected before the next), wall s (median), setup s (CPU from
process start to the first run, imports and calibration included — and, where Python does
not cache bytecode (``PYTHONDONTWRITEBYTECODE``, set on the machines these figures come
from), compiling every simcluster module imported; slices the run asks for are computed or
read lazily, in the run), proc cpu s (CPU of the whole row process: imports,
set-up, every repeat and its floor, results; a ``-process`` row's, whose figure it is, has no
floor in it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROWS = {
    # name: (kind, params, reference row)
    "azure-x1": ("azure", {"count": 1}, None),
    "azure-x4": ("azure", {"count": 4}, None),
    "azure-x1-process": ("azure-process", {"count": 1}, None),
    "azure-x4-process": ("azure-process", {"count": 4}, None),
    "setup-cold": ("azure", {"count": 1, "cache": "cold"}, None),
    "setup-warm": ("azure", {"count": 1, "cache": "warm"}, None),
    "syn-10k": ("syn", {"n": 10_000, "count": 4}, None),
    "syn-100k": ("syn", {"n": 100_000, "count": 4}, "syn-10k"),
    "syn-1M": ("syn", {"n": 1_000_000, "count": 4}, "syn-10k"),
    "out-x1": ("syn", {"n": 40_000, "count": 4}, None),
    "out-x4": ("syn", {"n": 40_000, "count": 4, "scale": 4}, "out-x1"),
    "out-x16": ("syn", {"n": 40_000, "count": 4, "scale": 16}, "out-x1"),
    "inst-1": ("syn", {"span_s": 1000.0, "count": 1}, None),
    "inst-4": ("syn", {"span_s": 1000.0, "count": 4}, "inst-1"),
    "inst-16": ("syn", {"span_s": 1000.0, "count": 16}, "inst-1"),
    "inst-64": ("syn", {"span_s": 1000.0, "count": 64}, "inst-1"),
    "inst-256": ("syn", {"span_s": 120.0, "count": 256}, "inst-1"),
    "inst-1024": ("syn", {"span_s": 30.0, "count": 1024}, "inst-1"),
    "chunked": ("azure", {"count": 1, "chunked": 2048}, "azure-x1"),
    "overload": ("azure", {"count": 1, "device": "A100-80GB"}, "azure-x1"),
    "disagg": ("syn", {"n": 40_000, "count": 4, "disagg": True}, "out-x1"),
    "exp-default": ("experiment", {"name": "default"}, None),
    "exp-hllm": ("experiment", {"name": "hllm_azure_conv"}, "exp-default"),
    "exp-llmshare": ("experiment", {"name": "llmshare_h100"}, "exp-default"),
    "hetero": ("syn", {"n": 40_000, "count": 4, "hetero": True}, "out-x1"),
}
QUICK = {"syn-1M": {"n": 200_000}, "out-x1": {"n": 10_000}, "out-x4": {"n": 10_000},
         "out-x16": {"n": 10_000}, "disagg": {"n": 10_000}, "hetero": {"n": 10_000},
         "inst-1": {"span_s": 200.0}, "inst-4": {"span_s": 200.0},
         "inst-16": {"span_s": 200.0}, "inst-64": {"span_s": 200.0},
         "inst-256": {"span_s": 30.0}, "inst-1024": {"span_s": 8.0}}
TEN_M = ("syn-10M", {"n": 10_000_000, "count": 64, "stream": True}, None)


# -- the worker (one row, in its own process) -------------------------------------------------
def _build(kind, p, cost, trace_cache, router="least_outstanding_tokens", router_params=None):
    if kind == "experiment":          # a bundled experiment, as ``simcluster run NAME`` runs it
        from simcluster.experiment import load_experiment
        exp = trace_cache.get("experiment")
        if exp is None:
            exp = trace_cache["experiment"] = load_experiment(p["name"])
        return exp.simulation()
    # (only what the row uses: its set-up is a user's, who imports no unused pool kind)
    from simcluster.cluster import InstanceSpec
    from simcluster.cost import Layout
    from simcluster.hardware import load_device, load_link
    from simcluster.models import model_preset
    from simcluster.serving.config import InstanceConfig
    from simcluster.simulation import Simulation
    import functools
    model = model_preset("llama-2-7b")
    trace = trace_cache.get("trace")
    if trace is None:
        trace = trace_cache["trace"] = _trace(kind, p)
    # 16k context: Llama-2-7B's native 4k would reject 8% of the Azure prompts
    chunk = p.get("chunked")
    cfg = InstanceConfig(max_model_len=16384 * p.get("scale", 1),
                         max_batched_tokens=chunk or 16384, chunked_prefill=bool(chunk))
    h100 = Layout.uniform(load_device(p.get("device", "H100-SXM")))
    count, factory = p["count"], None
    if p.get("disagg"):
        from simcluster.cluster.pools import DisaggregatedCluster
        specs = [InstanceSpec(h100, cfg, count=1, pool="prefill"),
                 InstanceSpec(h100, cfg, count=count - 1, pool="decode")]
        factory = functools.partial(DisaggregatedCluster, kv_link=load_link("NVLink4"))
    elif p.get("hetero"):
        specs = [InstanceSpec(h100, cfg, count=count // 2),
                 InstanceSpec(Layout.uniform(load_device("A100-80GB-PCIe")), cfg,
                              count=count - count // 2)]
    else:
        specs = [InstanceSpec(h100, cfg, count=count)]
    kw = {} if factory is None else {"cluster_factory": factory}
    return Simulation(trace, model, specs, router=router, router_params=router_params,
                      cost_model=cost, **kw)


def _trace(kind, p):
    import numpy as np
    from simcluster.workload import Trace, load_trace
    azure = load_trace("azure-conv")
    if kind.startswith("azure"):
        return azure
    from simcluster.workload import synthetic_trace
    scale, count = p.get("scale", 1), p["count"]
    rate = 5.0 * count / scale
    n = p.get("n") or int(p["span_s"] * rate)
    t = synthetic_trace(n, arrivals=rate, prompt=azure, rng=np.random.default_rng(0),
                        name="azure-resampled")
    if scale != 1:
        t = Trace(t.arrival_s, t.prompt_tokens, t.output_tokens * scale, name=t.name)
    return t


def _floor(n_events: int) -> float:
    """CPU seconds of a minimal SimPy program issuing ``n_events`` timeouts."""
    import simpy
    env = simpy.Environment()

    def proc(env):
        for _ in range(n_events):
            yield env.timeout(1.0)
    env.process(proc(env))
    c = time.process_time()
    env.run()
    return time.process_time() - c


#: A row repeated more than once runs until its repeats after the first took this much CPU...
MIN_CPU_S = 2.0
#: ...or this many times.
MAX_REPEATS = 15


def worker(kind: str, p: dict, repeats: int) -> dict:
    from simcluster.calibration import load_calibration
    from simcluster.cost import CostModel
    cost = CostModel(load_calibration("measured"))
    cache: dict = {}
    cpus, walls, floors, out = [], [], [], {}
    setup = None
    while (len(cpus) < repeats or repeats > 1 and len(cpus) < MAX_REPEATS
           and sum(cpus[1:]) < MIN_CPU_S):
        sim = _build(kind, p, cost, cache)
        if setup is None:
            setup = time.process_time()      # (CPU since the process started)
        stream = tempfile.mkdtemp(prefix="bench-") if p.get("stream") else None
        c, w = time.process_time(), time.perf_counter()
        res = sim.run(stream_to=stream)
        if kind == "azure-process":           # the outputs a command-line run writes
            res.summary()
            res.save(tempfile.mkdtemp(prefix="bench-out-"))
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - w)
        if not out:
            done = res.requests.rejected if not stream else None
            out = {"requests": len(sim.trace), "events": next(sim.env._eid),
                   "rejected": int(done.sum()) if done is not None else -1}
        # a finished simulation is cyclic garbage (the env and its instances refer to each
        # other): collected now, so the next repeat's peak RSS is its own, not two runs' at once
        del res, sim
        gc.collect()
        if kind != "azure-process":    # (the floor right after the repeat: the same speed)
            floors.append(_floor(out["events"]))
    out["process_cpu"] = time.process_time()
    if not floors:
        floors = [_floor(out["events"])]
    ratios = [c / f for c, f in zip(cpus, floors)]
    out.update(repeats=len(cpus), cpu_first=cpus[0], cpu_med=statistics.median(cpus),
               wall_med=statistics.median(walls), floor=statistics.median(floors),
               floor_x=statistics.median(ratios), setup=setup,
               rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


# -- the driver -------------------------------------------------------------------------------
_CACHE: list = []      # the private disk cache of the setup rows (cold fills it, warm reads)
_FILLED: set = set()   # ("setup-cold" once a cold row has filled _CACHE)


def _run_row(name, kind, p, repeats):
    reps = 1 if kind == "azure-process" or p.get("stream") or p.get("cache") else repeats
    cmd = [sys.executable, __file__, "--worker", json.dumps([kind, p, reps])]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if p.get("cache"):
        if p["cache"] == "cold" or not _CACHE:
            _CACHE[:] = [tempfile.mkdtemp(prefix="bench-cache-")]
        env["SIMCLUSTER_CACHE_DIR"] = _CACHE[0]
        if p["cache"] == "warm" and "setup-cold" not in _FILLED:
            # a warm row asked without the cold one: fill the cache first (untimed)
            fill = [sys.executable, __file__, "--worker",
                    json.dumps([kind, {**p, "cache": "cold"}, 1])]
            subprocess.run(fill, capture_output=True, text=True, env=env, check=True)
        if p["cache"] == "cold":
            _FILLED.add("setup-cold")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"row {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller series (a smoke run)")
    ap.add_argument("--only", nargs="*", help="row names")
    ap.add_argument("--ten-million", action="store_true", help="add the streamed 10M row")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        kind, p, reps = json.loads(args.worker)
        print(json.dumps(worker(kind, p, reps)))
        return 0
    rows = dict(ROWS)
    if args.ten_million:
        rows["syn-10M"] = TEN_M
    if args.only:
        rows = {k: v for k, v in rows.items() if k in args.only}
    results = {}
    for name, (kind, p, ref) in rows.items():
        p = {**p, **(QUICK.get(name, {}) if args.quick else {})}
        results[name] = _run_row(name, kind, p, args.repeats)
        print(f"  ... {name} done", file=sys.stderr, flush=True)
    print(f"simcluster event loop, {args.repeats} repeats per row or more (median; see the "
          f"repeats column); "
          f"CPU = process_time; floor = raw SimPy timeouts")
    hdr = ["row", "requests", "rejected", "repeats", "events/req", "loop req/cpu-s", "first",
           "floor x", "us/req", "vs", "vs/floor", "ref", "rss MiB", "wall s", "setup s", "proc cpu s"]
    print("  ".join(f"{h:>15}" if i else f"{h:<18}" for i, h in enumerate(hdr)))
    for name, r in results.items():
        n = r["requests"]
        ref = rows[name][2]
        if rows[name][0] == "azure-process":
            cpu = r["process_cpu"]
            loop = first = n / cpu
            floor_x = float("nan")
        else:
            cpu, loop, first = r["cpu_med"], n / r["cpu_med"], n / r["cpu_first"]
            floor_x = r["floor_x"]
        us = cpu / n * 1e6
        vs = (us / (results[ref]["cpu_med"] / results[ref]["requests"] * 1e6)
              if ref in results else float("nan"))
        vs_floor = floor_x / results[ref]["floor_x"] if ref in results else float("nan")
        vals = [name, n, r["rejected"], r.get("repeats", 1), r["events"] / n, loop, first,
                floor_x, us, vs,
                vs_floor, ref or "-", r["rss_mib"], r["wall_med"], r["setup"], r["process_cpu"]]
        print("  ".join(_fmt(v, i) for i, v in enumerate(vals)))
    floor_rate = statistics.median(r["events"] / r["floor"] for r in results.values())
    print(f"SimPy floor on this machine: {floor_rate:,.0f} timeouts per CPU-second "
          f"(median over rows)")
    return 0


def _fmt(v, i):
    if i == 0:
        return f"{v:<18}"
    if isinstance(v, float):
        return f"{v:>15,.2f}" if abs(v) < 1000 else f"{v:>15,.0f}"
    return f"{v:>15}"


if __name__ == "__main__":
    sys.exit(main())
