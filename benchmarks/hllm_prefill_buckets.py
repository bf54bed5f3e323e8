"""Prefill throughput of one A100: random-length vs similar-length static batches.

hLLM (slides, "Challenge 2"): batches of random prompt lengths prefill at 2.0 queries/s, batches
of similar lengths at 2.57 q/s. The setup is not stated beyond "A100"; here: one
A100-80GB-PCIe, Llama-2-13B (a Llama-class model one A100 serves with room for batches),
prompts drawn from the Azure conversation trace (those within Llama-2's 4,096-token context),
all queued at time 0, one output token each (prefill only), static batches of 8 padded to their
longest prompt (one [batch, longest] tensor, as in Hugging Face generate).

  random    batches in arrival order: whatever lengths come together
  similar   the length_buckets router + bucketed batcher (buckets 256/512/1k/2k/4k tokens)
  unpadded  random batches run by variable-length kernels (vLLM): no padding at all

Then: how the gain depends on the spread of prompt lengths (lognormal prompts, median 1,000
tokens) and on the bucket widths. Usage: python benchmarks/hllm_prefill_buckets.py
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from simcluster.calibration import load_calibration
from simcluster.cost import CostModel
from simcluster.hardware import load_device
from simcluster.analysis.hllm import SOURCE_PREFILL_QPS, prefill_throughput
from simcluster.models import load_model
from simcluster.workload import load_trace

BUCKETS = (256, 512, 1024, 2048, 4096)


def compare(prompts, model, gpu, cost, batch, buckets=BUCKETS) -> dict:
    r = prefill_throughput(prompts, model, gpu, batch=batch, cost_model=cost)["queries_per_s"]
    s = prefill_throughput(prompts, model, gpu, batch=batch, bucketed=True, buckets=buckets,
                           cost_model=cost)["queries_per_s"]
    u = prefill_throughput(prompts, model, gpu, batch=batch, padded=False,
                           cost_model=cost)["queries_per_s"]
    return {"random_qps": r, "similar_qps": s, "gain": s / r, "unpadded_qps": u}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-2-13b")
    ap.add_argument("--gpu", default="A100-80GB-PCIe")
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args(argv)
    model, gpu = load_model(args.model), load_device(args.gpu)
    rng = np.random.default_rng(0)
    trace = load_trace("azure-conv")
    fits = trace.prompt_tokens[trace.prompt_tokens < model.max_position]
    prompts = rng.permutation(fits)[:args.n]
    print(f"{model.name} on {gpu.name}; {len(prompts)} Azure-conv prompts (median "
          f"{np.median(prompts):.0f}, mean {prompts.mean():.0f}, p90 "
          f"{np.percentile(prompts, 90):.0f} tokens); source: random "
          f"{SOURCE_PREFILL_QPS['random']} q/s, similar {SOURCE_PREFILL_QPS['similar']} q/s "
          f"(gain {SOURCE_PREFILL_QPS['similar'] / SOURCE_PREFILL_QPS['random']:.2f})")
    rows = []
    for cal in ("datasheet", "measured"):
        try:
            cost = CostModel(load_calibration(cal))
        except Exception as err:
            print(f"({cal} calibration unavailable: {err})")
            continue
        for batch in (4, 8, 16):
            rows.append({"calibration": cal, "batch": batch,
                         **compare(prompts, model, gpu, cost, batch)})
    fmt = {"float_format": lambda v: f"{v:.2f}", "index": False}
    print(pd.DataFrame(rows).to_string(**fmt))

    cost = CostModel()
    print("\nGain vs spread of prompt lengths (lognormal, median 1,000 tokens, batch 8, "
          "datasheet):")
    rows = []
    for sigma in (0.1, 0.2, 0.3, 0.5, 0.75, 1.0):
        p = np.clip(rng.lognormal(np.log(1000), sigma, args.n), 16, 4000).astype(int)
        rows.append({"sigma": sigma, "p90/p10": np.percentile(p, 90) / np.percentile(p, 10),
                     **compare(p, model, gpu, cost, 8)})
    print(pd.DataFrame(rows).to_string(**fmt))

    print("\nGain vs bucket widths (Azure-conv prompts, batch 8, datasheet):")
    rows = []
    for name, b in (("one bucket", (4096,)), ("1k/2k/4k", (1024, 2048, 4096)),
                    ("powers of 2 from 256", BUCKETS),
                    ("every 128 tokens", tuple(range(128, 4097, 128)))):
        rows.append({"buckets": name, **compare(prompts, model, gpu, cost, 8, b)})
    print(pd.DataFrame(rows).to_string(**fmt))


if __name__ == "__main__":
    from docblocks import run_main
    run_main(main, "hllm.md", "hllm_prefill_buckets")     # --doc [BLOCK] also writes docs/hllm.md
