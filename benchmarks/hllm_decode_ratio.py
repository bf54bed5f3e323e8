"""GPU/CPU decode throughput ratio vs context length: A100 vs one Xeon Gold 6148 socket.

hLLM (slides, "Challenge 1") measured 235x at 512 tokens and 13.5x at 24k tokens. The ratio here
is of decode *throughput* (tokens/s), each device at the best batch whose KV fits its memory
after the weights, from the devices' spec files through the cost model. Columns:

  datasheet     roofline at datasheet peaks (the 6148 computes the fp16 model in fp32: no
                16-bit units; weights and KV stay 16-bit in DRAM)
  cpu_fp32      the CPU holds fp32 weights and KV (a model converted for a CPU without bf16)
  cpu_batch1    the CPU decodes one request at a time
  cpu_eff       the CPU reaching only the fp32 efficiency that makes 512 tokens match 235x
                (bandwidth at datasheet): what the source's CPU implementation implies
  measured      the fitted calibration (tables measured on H100 hosts; the A100 and the 6148
                borrow them across families), if it loads

Usage: python benchmarks/hllm_decode_ratio.py [--model llama-2-7b] [--gpu A100-80GB-PCIe]
"""

from __future__ import annotations

import argparse
import dataclasses

import pandas as pd

from simcluster.calibration import Calibration
from simcluster.cost import CostModel
from simcluster.hardware import load_device
from simcluster.analysis.hllm import SOURCE_RATIOS, decode_ratio_curve
from simcluster.models import load_model, with_dtype

CONTEXTS = [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 24576, 32768]


def _fresh() -> CostModel:
    """A cost model with its own neutral calibration: the calibration memoises rates by device
    name, so a device with overridden peaks needs one that has not seen the original."""
    return CostModel(Calibration())


def _derated(cpu, efficiency):
    return cpu.with_overrides(peak_flops_fp32=cpu.peak_flops["fp32"] * efficiency)


def implied_cpu_efficiency(model, gpu, cpu, target=235.0, context=512) -> float:
    """The fraction of its fp32 peak the CPU must reach for the ratio at ``context`` to equal
    ``target`` (bisection; bandwidth kept at the datasheet)."""
    lo, hi = 0.04, 1.0            # (device specs refuse peaks below 1e11 FLOP/s)
    for _ in range(40):
        mid = (lo * hi) ** 0.5
        r = float(decode_ratio_curve(model, gpu, _derated(cpu, mid), [context],
                                     _fresh()).ratio.iloc[0])
        lo, hi = (mid, hi) if r > target else (lo, mid)
    return (lo * hi) ** 0.5


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-2-7b")
    ap.add_argument("--gpu", default="A100-80GB-PCIe")
    ap.add_argument("--cpu", default="Xeon-Gold-6148")
    args = ap.parse_args(argv)
    # a 32k-context variant of the architecture (as LongLoRA-style Llama-2 extensions serve it)
    model = dataclasses.replace(load_model(args.model), max_position=32768)
    gpu, cpu = load_device(args.gpu), load_device(args.cpu)
    base = decode_ratio_curve(model, gpu, cpu, CONTEXTS)
    cols = {"context": base.context, "gpu_batch": base.gpu_batch,
            "gpu_tok_s": base.gpu_tokens_per_s, "cpu_batch": base.cpu_batch,
            "cpu_tok_s": base.cpu_tokens_per_s, "datasheet": base.ratio}
    cols["cpu_fp32"] = decode_ratio_curve(model, gpu, cpu, CONTEXTS,
                                          cpu_model=with_dtype(model, "fp32")).ratio
    cols["cpu_batch1"] = decode_ratio_curve(model, gpu, cpu, CONTEXTS, cpu_max_batch=1).ratio
    eff = implied_cpu_efficiency(model, gpu, cpu)
    cols["cpu_eff"] = decode_ratio_curve(model, gpu, _derated(cpu, eff), CONTEXTS,
                                         _fresh()).ratio
    try:
        from simcluster.calibration import load_calibration
        measured = CostModel(load_calibration("measured"))
        cols["measured"] = decode_ratio_curve(model, gpu, cpu, CONTEXTS, measured).ratio
    except Exception as err:       # the fitted calibration is optional here
        print(f"(measured calibration unavailable: {err})")
    cols["source"] = base.context.map(SOURCE_RATIOS)
    table = pd.DataFrame(cols)
    print(f"{model.name} ({model.dtype}), {gpu.name} vs one {cpu.name} socket; decode "
          "throughput ratio GPU/CPU, each at its best batch that fits memory")
    print(f"GPU/CPU memory bandwidth ratio {gpu.mem_bw_bytes_per_s / cpu.mem_bw_bytes_per_s:.1f}x;"
          f" 16-bit GPU peak / fp32 CPU peak "
          f"{gpu.peak_flops_for(model.dtype) / cpu.peak_flops['fp32']:.0f}x; implied CPU fp32 "
          f"efficiency for 235x at 512 tokens: {eff:.3f}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))


if __name__ == "__main__":
    from docblocks import run_main
    run_main(main, "hllm.md", "hllm_decode_ratio")     # --doc [BLOCK] also writes docs/hllm.md
