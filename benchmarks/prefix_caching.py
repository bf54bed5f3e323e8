"""Prefix caching on Mooncake's conversation trace: with and without, and with a prefix-aware
router, beside the figures Mooncake publishes.

    python benchmarks/prefix_caching.py [--write] [--first N]

Replays the bundled ``mooncake-conv`` trace (12,031 requests, one hour, block hashes of 512
tokens) on four replicas of Llama-3.1-8B, one H200 each (vLLM v1 scheduling: chunked prefill,
8,192-token budget, 16-token KV blocks, 90% memory), measured calibration, at the trace's own
rate and at twice it. Prints, per configuration: token hit rate, the requests that found at
least half their prompt cached, prefill tokens saved, TTFT p50/p90 (and p50 of the requests
with at least / less than half cached), TPOT p50, and simulator wall time; then the
trace-level hit rates of one global cache (unbounded, and LRU pools of 1,000 / 6,600 / 50,000
blocks: the method of Mooncake's technical report, section 4.2, Table 1).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from simcluster import workload as wl
from simcluster.calibration import load_calibration
from simcluster.cluster import InstanceSpec
from simcluster.cost import CostModel, Layout
from simcluster.cost.memory import memory_plan
from simcluster.hardware import load_device
from simcluster.models import model_preset
from simcluster.serving import InstanceConfig
from simcluster.simulation import Simulation
from simcluster.workload.prefixes import ideal_hit_rate

from docblocks import md_table, section, write_block  # benchmarks/, beside this script

MODEL, DEVICE, REPLICAS = "Llama-3.1-8B", "H200", 4
CONFIGS = [  # label, prefix caching, router, router params
    ("no caching, least outstanding tokens", False, "least_outstanding_tokens", {}),
    ("caching, round robin", True, "round_robin", {}),
    ("caching, least outstanding tokens", True, "least_outstanding_tokens", {}),
    ("caching, prefix-aware (weight 1)", True, "prefix_aware", {}),
    ("caching, prefix-aware (weight 4)", True, "prefix_aware", {"prefix_weight": 4.0}),
]



def simulate(trace, caching: bool, router: str, params: dict, cost) -> dict:
    cfg = InstanceConfig(chunked_prefill=True, max_batched_tokens=8192, block_size=16,
                         prefix_caching=caching)
    spec = InstanceSpec(Layout.uniform(load_device(DEVICE)), cfg, count=REPLICAS)
    t0 = time.perf_counter()
    res = Simulation(trace, model_preset(MODEL), [spec], router=router, router_params=params,
                     cost_model=cost).run()
    wall = time.perf_counter() - t0
    s = res.summary()
    r = res.requests[~res.requests.rejected]
    half = r.cached_tokens >= r.prompt_tokens / 2
    return {"hit rate": round(float(r.cached_tokens.sum() / r.prompt_tokens.sum()), 3),
            "requests >= half cached": round(float(half.mean()), 3),
            "prefill tokens saved (M)": round(r.cached_tokens.sum() / 1e6, 1),
            "TTFT p50 s": round(s["ttft_p50_s"], 3), "TTFT p90 s": round(s["ttft_p90_s"], 3),
            "TTFT p50 >= half / < half cached s": (
                f"{r.ttft_s[half].median():.3f} / {r.ttft_s[~half].median():.3f}"
                if half.any() else "-"),
            "TPOT p50 ms": round(s["tpot_p50_s"] * 1e3, 1), "rejected": s["rejected"],
            "sim s": round(wall, 1)}


def cache_capacity_blocks(cost) -> int:
    plan = memory_plan(model_preset(MODEL), Layout.uniform(load_device(DEVICE)),
                       max_batched_tokens=8192)
    return plan.kv_capacity_tokens // 512


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true",
                    help="rewrite the tables in docs/prefix-caching.md")
    ap.add_argument("--first", type=int, default=None, help="only the first N requests")
    args = ap.parse_args(argv)
    trace = wl.load_trace("mooncake-conv")
    if args.first:
        trace = wl.first_n(trace, args.first)
    cost = CostModel(load_calibration("measured"))
    text = []
    blocks = cache_capacity_blocks(cost)
    stats = pd.DataFrame([{
        "requests": len(trace), "span s": round(trace.span_s), "rate req/s": round(
            trace.rate_per_s, 2), "mean prompt": round(trace.prompt_tokens.mean()),
        "mean output": round(trace.output_tokens.mean()),
        "512-token blocks per replica KV": blocks}])
    text.append(f"### The trace and the cluster\n\n{md_table(stats)}\n")
    print(stats.to_string(index=False))
    for scale in (1.0, 2.0):
        t = trace if scale == 1.0 else wl.rescale_rate(trace, trace.rate_per_s * scale)
        rows = [{"configuration": label, **simulate(t, caching, router, params, cost)}
                for label, caching, router, params in CONFIGS]
        df = pd.DataFrame(rows)
        title = (f"{REPLICAS} x {MODEL} on {DEVICE}, trace at {scale:g}x its rate "
                 f"({t.rate_per_s:.2f} req/s)")
        section(text, title, df)
    ideal = pd.DataFrame([{"one global cache": "unbounded" if c is None else f"LRU, {c:,} blocks",
                           "token hit rate": round(ideal_hit_rate(trace, c), 3)}
                          for c in (None, 1000, blocks, REPLICAS * blocks, 50_000)])
    title = "Trace-level hit rates (every block cached on arrival, one pool)"
    section(text, title, ideal)
    if args.write:
        write_block("prefix-caching.md", "prefix_caching", "\n".join(text), fenced=False)
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
