"""GPU-only vs hLLM offload on the Azure conversation trace: the comparison table of docs/hllm.md.

Runs experiments/hllm_azure_conv*.toml (all with one A100-80GB-PCIe) and prints, per config:
throughput (over the whole span, and sustained while requests arrive), TTFT and TPOT
percentiles, SLO attainment, cost per million tokens (all devices; CPU sockets only while
active), and the CPU sockets: count, mean active, idle fraction, mean batch. Then the M/M/c
controller's active sockets over time (5-minute means) and its sizing.

Usage:
    python benchmarks/hllm_compare.py                      # full trace (19,366 requests)
    python benchmarks/hllm_compare.py --window 0 600       # the first 10 minutes
    python benchmarks/hllm_compare.py --window 0 1200 --rate 15 --configs gpu_only spill 8480 8480_spill
    python benchmarks/hllm_compare.py --calibration measured
    python benchmarks/hllm_compare.py --configs "" batches          # the controller's two readings
    python benchmarks/hllm_compare.py --configs "" padded padded_buckets   # a static-batch GPU

Configs are the suffixes of the TOMLs, plus variants built here (VARIANTS): ``batches`` is the
main config with the controller in the slides' batch units (lambda = prefill batches per
second, 1/mu = one socket's decode latency of such a batch, max_wait_s = 2 s per *batch*).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import pandas as pd

from simcluster import workload as wl
from simcluster.calibration import load_calibration
from simcluster.cost import CostModel
from simcluster.experiment import experiments_dir, load_experiment
from simcluster.analysis.hllm import serving_row
from simcluster.policies.controllers import active_over_time

CONFIGS = ["gpu_only", "", "static", "oblivious", "spill", "8480", "8480_spill", "padded",
           "padded_buckets", "batches"]
#: name -> (TOML suffix, controller_params overrides)
VARIANTS = {"batches": ("", {"units": "batches"})}
COLUMNS = {"config": "config", "req_per_s": "req/s", "sustained_req_per_s": "sust req/s",
           "out_tok_per_s": "out tok/s", "ttft_p50_s": "TTFT p50", "ttft_p90_s": "TTFT p90",
           "tpot_p50_s": "TPOT p50", "tpot_p90_s": "TPOT p90", "slo_attainment": "SLO att",
           "usd_per_m_tokens": "$/Mtok", "usd_per_m_tokens_active": "$/Mtok act",
           "sockets": "sockets", "sockets_active_mean": "active", "cpu_idle_fraction": "idle",
           "cpu_batch_mean": "cpu batch", "wall_s": "wall s"}


def load(config: str, window=None, rate=None, calibration=None):
    suffix, ctl = VARIANTS.get(config, (config, None))
    path = experiments_dir() / f"hllm_azure_conv{'_' + suffix if suffix else ''}.toml"
    exp = load_experiment(path)
    if ctl:
        dis = exp.disaggregation
        exp = dataclasses.replace(exp, disaggregation={
            **dis, "controller_params": {**dis["controller_params"], **ctl}})
    trace = exp.trace
    if window:
        trace = wl.time_window(trace, *window)
    if rate:
        trace = wl.rescale_rate(trace, rate)
    changes = {"trace": trace}
    if calibration:
        changes["cost_model"] = CostModel(load_calibration(calibration))
    return dataclasses.replace(exp, **changes)


def active_bins(sim, bin_s: float = 300.0) -> pd.Series:
    """Time-weighted mean active sockets per ``bin_s`` bin, from the controller's record."""
    ctl = sim.cluster.controller
    steps = active_over_time(ctl.activity)
    end = float(sim.env.now)
    edges = list(steps.time_s) + [end]
    out = {}
    t0 = float(steps.time_s.iloc[0])
    k = 0
    while t0 + k * bin_s < end:
        lo, hi = t0 + k * bin_s, min(end, t0 + (k + 1) * bin_s)
        acc = sum(max(0.0, min(b, hi) - max(a, lo)) * n
                  for a, b, n in zip(edges, edges[1:], steps.active))
        out[int(lo)] = acc / (hi - lo)
        k += 1
    return pd.Series(out, name="active sockets")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="*", default=CONFIGS,
                    help="suffixes of experiments/hllm_azure_conv_*.toml ('' is the main one)")
    ap.add_argument("--window", nargs=2, type=float, default=None, metavar=("START", "END"))
    ap.add_argument("--rate", type=float, default=None, help="rescale arrivals to this rate")
    ap.add_argument("--calibration", default=None, help="override the TOMLs' calibration")
    args = ap.parse_args(argv)
    rows, sims = [], {}
    for config in args.configs:
        exp = load(config, args.window, args.rate, args.calibration)
        t0 = time.perf_counter()
        sim = exp.simulation()
        res = sim.run()
        row = serving_row(sim, res, label=config or "hllm")
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        sims[config] = sim
    trace = exp.trace
    print(f"Azure conversation trace: {len(trace)} requests, "
          f"{trace.arrival_s[-1] - trace.arrival_s[0]:.0f} s, "
          f"{len(trace) / (trace.arrival_s[-1] - trace.arrival_s[0]):.2f} req/s; "
          f"model {exp.model.name}; calibration "
          f"{args.calibration or 'as in each TOML'}; one A100-80GB-PCIe in every config")
    table = pd.DataFrame(rows)[[c for c in COLUMNS if c in rows[0]]].rename(columns=COLUMNS)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    for config, sim in sims.items():
        if getattr(sim.cluster, "controller", None) is None:
            continue
        ctl = sim.cluster.controller
        d = ctl.decisions
        busy = d[d.lambda_per_s > 0]
        unit = "batches" if len(busy) and busy.units.iloc[0] == "batches" else "requests"
        print(f"\n[{config or 'hllm'}] M/M/c controller ({unit}): {len(d)} decisions; lambda "
              f"{busy.lambda_per_s.mean():.2f}/s, mu {busy.mu_per_s.mean():.3f}/s per socket "
              f"({busy.mu_source.iloc[0] if len(busy) else '-'}), mean batch "
              f"{busy.mean_batch.mean():.2f}, E[W] {busy.expected_wait_s.mean():.3g} s, "
              f"active sockets "
              f"min {busy.active.min() if len(busy) else 0} / mean {busy.active.mean():.1f} / "
              f"max {busy.active.max() if len(busy) else 0}; CPU idle fraction "
              f"{ctl.idle_fraction():.3f}")
        bins = active_bins(sim)
        print("active sockets, 5-minute means from the first arrival:")
        print("  " + " ".join(f"{v:.1f}" for v in bins.values))


if __name__ == "__main__":
    from docblocks import run_main
    run_main(main, "hllm.md", "hllm_compare")     # --doc [BLOCK] also writes docs/hllm.md
