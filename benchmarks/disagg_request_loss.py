"""Requests refused by prefill pools while their KV blocks were still being shipped.

    python benchmarks/disagg_request_loss.py [--n 3000]

Llama-2-13B served by prefill/decode pools (Splitwise / DistServe style): one prefill instance
hands every prompt's KV to a decode pool over a KV link; the prefill instance keeps a request's
KV blocks until its transfer ends. When the link is slower than the prefill GPU (an H100 against
100 GbE, or against PCIe with several prompts batched), finished prompts queue on the link and
hold most of the prefill instance's KV blocks; a long prompt then waits at the head of the
queue. Before issue 10 such an instance *rejected* the prompt ("scheduler could not admit it
with an empty instance") although it fits once the transfers return the blocks.

Prints, per configuration, the requests of the first ``--n`` of the Azure code and
conversation traces that were rejected, split into those over the model's 4,096-token context
(correct) and the others (lost), and the TTFT p99 of the finished ones. A correct simulator
loses none.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import simcluster as sc
from simcluster.cluster import DisaggregatedCluster, InstanceSpec
from simcluster.cost import Layout
from simcluster.hardware import load_device, load_link
from simcluster.serving import InstanceConfig
from simcluster.workload import first_n, load_trace, rescale_rate

CONFIGS = [  # (label, trace, rate or None, prefill device, decode device, decode count, link)
    ("H100 -> 2x A100, 100GbE", "azure-code", None, "H100-SXM", "A100-80GB", 2, "Eth-100G"),
    ("H100 -> 2x A100, 100GbE, 2x rate", "azure-code", 2.0, "H100-SXM", "A100-80GB", 2,
     "Eth-100G"),
    ("H100 -> 3x A100, 100GbE, conv", "azure-conv", None, "H100-SXM", "A100-80GB", 3, "Eth-100G"),
    ("A100 -> 2x A100, PCIe4", "azure-code", None, "A100-80GB", "A100-80GB", 2, "PCIe4"),
]


def run(trace_name, n, rate_x, prefill, decode, n_decode, link):
    trace = first_n(load_trace(trace_name), n)
    if rate_x:
        trace = rescale_rate(trace, trace.rate_per_s * rate_x)
    model = sc.model_preset("llama-2-13b")
    specs = [InstanceSpec(Layout.uniform(load_device(prefill)), InstanceConfig(), pool="prefill"),
             InstanceSpec(Layout.uniform(load_device(decode)), InstanceConfig(), count=n_decode,
                          pool="decode")]
    sim = sc.Simulation(trace, model, specs, router="least_outstanding_tokens",
                        cost_model=sc.CostModel(sc.load_calibration("measured")),
                        cluster_factory=partial(DisaggregatedCluster, kv_link=load_link(link)))
    r = sim.run().requests
    too_long = r.reason.str.startswith("max_model_len")
    lost = r.rejected & ~too_long
    return len(r), int(too_long.sum()), int(lost.sum()), \
        int(r[lost].prompt_tokens.min()) if lost.any() else 0, \
        float(r[~r.rejected].ttft_s.quantile(0.99))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args(argv)
    print(f"{'configuration':<36} {'requests':>8} {'> context':>9} {'lost':>5} "
          f"{'shortest lost':>13} {'TTFT p99 s':>10}")
    total = 0
    for label, trace, rate, pre, dec, nd, link in CONFIGS:
        n, long_, lost, shortest, ttft = run(trace, args.n, rate, pre, dec, nd, link)
        total += lost
        print(f"{label:<36} {n:>8} {long_:>9} {lost:>5} {shortest:>13} {ttft:>10.2f}")
    print(f"lost in all: {total}")
    return 0 if total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
