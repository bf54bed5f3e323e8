"""Mixture-of-experts models on H200 layouts: TP vs EP vs attention DP, tokens/s per GPU.

    python benchmarks/moe_layouts.py [--write] [--quick]

Prints (and with ``--write`` writes into docs/moe.md) five tables, all from simcluster's cost
model with the measured H200 calibration (kernel tables of hwspecs/calibration/H200, grouped
GEMMs included) and the default routing model (uniform expert popularity, seeded):

1. memory per GPU and KV capacity of each layout (vLLM's 0.9 memory utilisation);
2. steady decode: tokens/s per GPU and step time (TPOT) at a batch of sequences holding 2,048
   tokens of context each, for batches up to what the layout's KV holds;
3. prefill: prompt tokens/s per GPU for 8,192-token iterations of 2,048-token prompts;
4. a served trace: the first N requests of the Azure conversation trace on one replica of
   each layout (vLLM scheduler, chunked prefill) at a moderate rate (TTFT, TPOT p50) and at a
   saturating one (output tokens/s per GPU over the run, TPOT p50);
5. the grouped-GEMM calibration: held-out error of the fitted curve on the H200 table, and the
   error of the dense-GEMM fallback (what a device without the table uses) on the same rows;
   plus the expert-load imbalance the routing model gives.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from simcluster import workload as wl
from simcluster.calibration import load_calibration
from simcluster.calibration.fitted import MeasuredCalibration, fit_curves, table_rows
from simcluster.calibration.tables import calibration_dir, load_tables
from simcluster.cluster import InstanceSpec
from simcluster.cost import Batch, CostModel, Layout
from simcluster.cost.memory import memory_plan
from simcluster.cost.moe import RoutingModel
from simcluster.hardware import load_device, load_link
from simcluster.models import model_preset
from simcluster.serving import InstanceConfig
from simcluster.simulation import Simulation

from docblocks import section, write_block  # benchmarks/, beside this script

H200, NV = load_device("H200"), load_link("NVLink4")
GiB = 2 ** 30
CONTEXT = 2048
BATCHES = (16, 64, 256, 1024)
# (model, label, tp, dp, ep)
LAYOUTS = [
    ("DeepSeek-V3", "TP8 (experts by TP)", 8, 1, 1),
    ("DeepSeek-V3", "TP8 + EP8", 8, 1, 8),
    ("DeepSeek-V3", "TP2 x DP4 + EP8", 2, 4, 8),
    ("DeepSeek-V3", "DP8 + EP8", 1, 8, 8),
    ("Qwen3-235B-A22B", "TP8 (experts by TP)", 8, 1, 1),
    ("Qwen3-235B-A22B", "TP8 + EP8", 8, 1, 8),
    ("Qwen3-235B-A22B", "DP8 + EP8", 1, 8, 8),
    ("Qwen3-235B-A22B", "TP4 + EP4 (4 GPUs)", 4, 1, 4),
    ("Qwen3-30B-A3B", "1 GPU", 1, 1, 1),
    ("Qwen3-30B-A3B", "TP2", 2, 1, 1),
    ("Qwen3-30B-A3B", "DP2 + EP2", 1, 2, 2),
]



def layout(tp, dp, ep):
    return Layout.uniform(H200, tp=tp, link=NV if tp * dp > 1 else None, ep=ep, dp=dp)


def memory_table() -> pd.DataFrame:
    rows = []
    for name, label, tp, dp, ep in LAYOUTS:
        m, lay = model_preset(name), layout(tp, dp, ep)
        plan = memory_plan(m, lay)
        r = plan.ranks[0]
        rows.append({"model": name, "layout": label, "GPUs": tp * dp,
                     "weights GiB/GPU": round(r.weight_bytes / GiB, 1),
                     "KV KiB/token/GPU": round(r.kv_bytes_per_token / 1024, 1),
                     "KV tokens": plan.kv_capacity_tokens,
                     f"seqs of {2 * CONTEXT}": plan.kv_capacity_tokens // (2 * CONTEXT),
                     "OOM": "; ".join(plan.oom)[:40]})
    return pd.DataFrame(rows)


def decode_table(cost: CostModel) -> pd.DataFrame:
    rows = []
    for name, label, tp, dp, ep in LAYOUTS:
        m, lay = model_preset(name), layout(tp, dp, ep)
        cap = memory_plan(m, lay).kv_capacity_tokens // (CONTEXT + 1)
        timer = cost.timer(m, lay)
        row = {"model": name, "layout": label}
        for b in BATCHES:
            if b > cap:
                row[f"B={b}"] = "KV full"
                continue
            t = float(timer.decode_steps(b, b * CONTEXT, 1)[0])
            row[f"B={b}"] = f"{b / t / (tp * dp):,.0f} ({t * 1e3:.0f} ms)"
        rows.append(row)
    return pd.DataFrame(rows)


def prefill_table(cost: CostModel) -> pd.DataFrame:
    rows = []
    batch = Batch(prefill_tokens=(2048,) * 4)
    for name, label, tp, dp, ep in LAYOUTS:
        m, lay = model_preset(name), layout(tp, dp, ep)
        res = cost.iteration(m, lay, batch)
        ops = res.ops
        a2a = ops[ops.name.isin(["ep_dispatch", "ep_combine"])].time_s.sum()
        rows.append({"model": name, "layout": label,
                     "prefill tok/s/GPU": round(batch.tokens / res.time_s / (tp * dp)),
                     "iteration ms": round(res.time_s * 1e3, 1),
                     "all-to-all ms": round(a2a * 1e3, 1)})
    return pd.DataFrame(rows)


def served_table(cost: CostModel, n: int, rates: tuple[float, float]) -> pd.DataFrame:
    """Each layout serves the trace at a moderate and at a saturating rate: latency at the
    first, capacity (output tokens/s per GPU over the run) at the second."""
    base = wl.first_n(wl.load_trace("azure-conv"), n)
    rows = []
    for name, label, tp, dp, ep in LAYOUTS:
        m, lay = model_preset(name), layout(tp, dp, ep)
        cfg = InstanceConfig(chunked_prefill=True, max_num_seqs=512, max_batched_tokens=8192)
        row = {"model": name, "layout": label}
        t0 = time.perf_counter()
        for rate, tag in zip(rates, ("moderate", "saturated")):
            trace = wl.rescale_rate(base, rate)
            s = Simulation(trace, m, [InstanceSpec(lay, cfg)], cost_model=cost).run().summary()
            if tag == "moderate":
                row.update({f"TTFT p50 s @{rate:g}/s": round(s["ttft_p50_s"], 3),
                            f"TPOT p50 ms @{rate:g}/s": round(s["tpot_p50_s"] * 1e3, 1)})
            else:
                row[f"out tok/s/GPU @{rate:g}/s"] = round(
                    s["output_token_throughput_per_s"] / (tp * dp))
                row[f"TPOT p50 ms @{rate:g}/s"] = round(s["tpot_p50_s"] * 1e3, 1)
            row["rejected"] = row.get("rejected", 0) + s["rejected"]
        row["sim s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
    return pd.DataFrame(rows)


def grouped_validation(seed: int = 0) -> pd.DataFrame:
    """Held-out error of the grouped-GEMM curve, and the dense-GEMM fallback's error."""
    tables = load_tables(calibration_dir() / "H200")
    rows = table_rows(tables, "grouped_gemm", "bf16")
    rng = np.random.default_rng(seed)
    test = rng.random(len(rows)) < 0.25
    train = {k: v for k, v in tables.items() if k != "grouped_gemm"}
    train["grouped_gemm"] = (tables["grouped_gemm"][0], rows[~test])
    fitted = MeasuredCalibration({"H200": fit_curves(train, H200)}, {"H200": H200})
    dense = MeasuredCalibration({"H200": fit_curves(
        {k: v for k, v in tables.items() if k == "gemm"}, H200)}, {"H200": H200})
    out = []
    for label, cal, sel in (("fitted, 25% held out", fitted, test),
                            ("dense-GEMM fallback", dense, np.ones(len(rows), bool))):
        cost = CostModel(cal)
        errs = []
        for r in rows[sel].to_dict("records"):
            p = cost.predict_op("grouped_gemm", H200, m=r["m"], n=r["n"], k=r["k"],
                                groups=r["groups"])
            errs.append(p["time_s"] / r["time_s"] - 1)
        e = np.abs(errs) * 100
        small = np.array([r["m"] <= 16 for r in rows[sel].to_dict("records")])
        out.append({"calibration": label, "rows": len(e), "median APE %": round(np.median(e), 1),
                    "p90 APE %": round(np.percentile(e, 90), 1),
                    "mean signed % (m <= 16)": round(np.mean(np.array(errs)[small]) * 100, 1)})
    return pd.DataFrame(out)


def imbalance_table() -> pd.DataFrame:
    """Critical-rank rows over the mean rows per rank, DeepSeek-V3 DP8 + EP8."""
    m, lay = model_preset("DeepSeek-V3"), layout(1, 8, 8)
    out = []
    for cv in (0.0, 0.3, 1.0):
        timer = CostModel(load_calibration("measured"),
                          routing=RoutingModel(popularity_cv=cv)).timer(m, lay)
        row = {"expert popularity CV": cv}
        for t in (64, 512, 4096, 16384):
            rows, active = timer.moe_ops.critical_load(t, H200)
            row[f"T={t}"] = f"{rows / (t * 8 / 8):.2f} ({active:.0f} experts)"
        out.append(row)
    return pd.DataFrame(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the tables in docs/moe.md")
    ap.add_argument("--quick", action="store_true", help="fewer served requests")
    args = ap.parse_args(argv)
    cost = CostModel(load_calibration("measured"))
    n, rates = (300, (4.0, 40.0)) if args.quick else (1000, (4.0, 40.0))
    sections = [("Memory per GPU", memory_table()),
                (f"Decode tokens/s per GPU (step time) at {CONTEXT} tokens of context",
                 decode_table(cost)),
                ("Prefill: 4 prompts x 2,048 tokens per iteration", prefill_table(cost)),
                (f"Served: first {n} requests of azure-conv, one replica per layout",
                 served_table(cost, n, rates)),
                ("Grouped-GEMM calibration on the H200 (kernel times)", grouped_validation()),
                ("Routing model: critical-rank rows / mean rows per rank (DeepSeek-V3, DP8 + "
                 "EP8, k = 8 of 256)", imbalance_table())]
    text = []
    for title, df in sections:
        section(text, title, df)
    if args.write:
        write_block("moe.md", "moe_layouts", "\n".join(text), fenced=False)
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
