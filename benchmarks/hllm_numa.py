"""hLLM's NUMA results and the assumptions they rest on.

1. Sensitivity of the NUMA-aware vs NUMA-oblivious comparison (docs/hllm.md, Figure 3) to the
   remote-access penalty: the whole Azure conversation trace through
   experiments/hllm_azure_conv_oblivious.toml with the penalty set to the slides' "~30% longer"
   (1.3x), the earlier bandwidth-only assumption (128/50 = 2.56x), the slides' "up to 7x on
   older hardware", and the cost model's figure from the 6148's measured latencies and
   bandwidths (2.52x); the aware placement (all local) beside them.
2. Weights first, KV spilled: Llama-3.1-70B (bf16, 141 GB) decoding on one socket of 2-socket
   Xeon 6148 hosts (192 GiB per socket), each socket asked to hold 32 sequences of 8k tokens
   (268k KV tokens, 88 GB) — more than its DRAM leaves after the weights. Decode step time
   per placement, by how full the KV is.

    python benchmarks/hllm_numa.py [--skip-trace]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from functools import partial

import numpy as np
import pandas as pd

from simcluster.analysis.hllm import serving_row
from simcluster.cluster import DisaggregatedCluster, InstanceSpec
from simcluster.cost import CostModel, Layout
from simcluster.cost.numa import remote_penalty
from simcluster.experiment import experiments_dir, load_experiment
from simcluster.hardware import load_device, load_link
from simcluster.models import model_preset
from simcluster.serving import InstanceConfig
from simcluster.simulation import Simulation
from simcluster.workload import Trace

PENALTIES = [("slides: ~30% longer", 1.3), ("6148 spec: latency + bandwidth", None),
             ("bandwidth only, 128/50 GB/s", 2.56), ("slides: up to 7x (older parts)", 7.0)]
EMPTY = np.zeros(0, dtype=np.int64)


def penalty_rows() -> pd.DataFrame:
    rows = []
    for label, name, penalty in ([("aware (all local)", "hllm_azure_conv.toml", None)]
                                 + [(f"oblivious, {lab}", "hllm_azure_conv_oblivious.toml", p)
                                    for lab, p in PENALTIES]):
        exp = load_experiment(experiments_dir() / name)
        dis = exp.disaggregation
        if penalty is not None:
            dis = {**dis, "numa_params": {**dis["numa_params"], "remote_penalty": penalty}}
        t0 = time.perf_counter()
        sim = dataclasses.replace(exp, disaggregation=dis).simulation()
        res = sim.run()
        row = serving_row(sim, res, label=label)
        xeon = sim.cluster.decode_pool[0].layout.devices[0]
        row["penalty"] = (float("nan") if name == "hllm_azure_conv.toml" else
                          penalty if penalty is not None else remote_penalty(xeon))
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
    return pd.DataFrame(rows)


def placement_rows(kv_tokens: int = 32 * 8192) -> pd.DataFrame:
    """Decode step of 32 sequences per placement, at KV fill levels."""
    model = model_preset("llama-3.1-70b")
    xeon = load_device("Xeon-Gold-6148")
    specs = [InstanceSpec(Layout.uniform(load_device("A100-80GB-PCIe")), pool="prefill"),
             InstanceSpec(Layout.uniform(xeon), InstanceConfig(max_num_seqs=32,
                                                               max_model_len=131072),
                          count=2, pool="decode")]
    trace = Trace(np.zeros(1), np.array([16]), np.array([2]))
    rows = []
    for label, placement, want in (("weights first, KV spills (aware)", "aware", kv_tokens),
                                   ("KV first, weights spill (kv_first)", "kv_first", kv_tokens),
                                   ("weights first, no spill (KV capped)", "aware", None)):
        params = {"sockets_per_host": 2, "decode_sockets": [0], "kv_tokens": want}
        factory = partial(DisaggregatedCluster, kv_link=load_link("PCIe3"), numa=placement,
                          numa_params=params)
        sim = Simulation(trace, model, specs, cost_model=CostModel(), cluster_factory=factory)
        inst = sim.cluster.decode_pool[0]
        _, _, _, fw, fk, local, cap = sim.cluster.numa.placed[0]
        row = {"placement": label, "weights_remote": fw,
               "kv_remote": "beyond local" if fk is None else fk,
               "kv_local_tokens": local if local is not None else cap,
               "kv_capacity_tokens": cap}
        for ctx in (1024, 4096, 8000):
            n = 32
            row[f"step_s@{ctx}"] = (inst.timer.time(EMPTY, EMPTY, n, n * ctx, n)
                                    if n * (ctx + 1) <= cap else float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


COLUMNS = {"config": "placement, penalty", "penalty": "penalty", "sustained_req_per_s":
           "sust req/s", "tpot_p50_s": "TPOT p50", "tpot_p90_s": "TPOT p90",
           "slo_attainment": "SLO att", "sockets_active_mean": "active",
           "cpu_batch_mean": "cpu batch", "usd_per_m_tokens_active": "$/Mtok act",
           "wall_s": "wall s"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-trace", action="store_true", help="only the placement table")
    args = ap.parse_args(argv)
    xeon = load_device("Xeon-Gold-6148")
    print(f"Xeon Gold 6148: local {xeon.local_mem_latency_s * 1e9:.1f} ns / "
          f"{xeon.mem_bw_bytes_per_s / 1e9:.0f} GB/s, remote "
          f"{xeon.remote_mem_latency_s * 1e9:.1f} ns / "
          f"{xeon.remote_mem_bw_bytes_per_s / 1e9:.2f} GB/s -> remote penalty "
          f"{remote_penalty(xeon):.2f}x (Little's law, {xeon.compute_units} cores)")
    if not args.skip_trace:
        t = penalty_rows()[list(COLUMNS)].rename(columns=COLUMNS)
        print("\nAzure conversation trace (19,366 requests), 12 sockets + M/M/c controller, "
              "SLO TTFT <= 1 s, TPOT <= 0.25 s:")
        with pd.option_context("display.width", 250, "display.max_columns", 30):
            print(t.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print("\nLlama-3.1-70B on one socket of each 2-socket 6148 host, 32 sequences of up to 8k "
          "tokens (268k KV tokens) asked of each decoding socket; decode step (s) of 32 "
          "sequences at 1,024 / 4,096 / 8,000 tokens each:")
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(placement_rows().to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    from docblocks import run_main
    run_main(main, "hllm.md", "hllm_numa")     # --doc [BLOCK] also writes docs/hllm.md
