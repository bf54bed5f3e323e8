"""The work an instance did: FLOPs and bytes per timeline row, and its peaks, after the run.

Utilisation is counted post hoc from the timeline, so the event loop pays nothing for it. Each
row carries what the cost model was asked to time — tokens, sampled tokens, the decode KV
lengths at its first step, the prefill chunks' context and causal pairs — and a row of
``iterations`` pure-decode steps stands for that many steps whose KV lengths grow by one token
per sequence per step. The FLOPs and minimum bytes of those quantities are the operator counts
of :mod:`simcluster.models.operators` for the *whole model* (one rank holding every head and
FFN column), which is what model FLOPs utilisation (MFU) and memory-bandwidth utilisation
(MBU) divide by the devices' peaks:

* FLOPs: the projection GEMMs of every layer per token, the LM head per sampled token, and
  attention (QK^T and PV) over the KV each query attends to;
* bytes: every layer's weights once per iteration (the LM head's when it samples), activations
  in and out of each GEMM and elementwise kernel per token, and the KV read by attention.

Overheads the cost model adds on top of these counts (kernel launches, an engine model's host
time, TP collectives, KV replicated over TP ranks) are time without model work: they lower MFU
and MBU, as they do on real hardware. The accounting is linear in the per-row quantities — true
of the dense decoder operators here; an operator whose counts are not (a mixture of experts
touching a data-dependent set of experts) needs its own term.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from simcluster.calibration import compute_dtype
from simcluster.models.operators import RankShape


@dataclass(frozen=True)
class WorkCoefficients:
    """FLOPs and bytes per unit of each per-row quantity, for one model (whole model)."""

    flops_per_token: float          # projection GEMMs, all layers
    flops_per_sample: float         # LM head
    flops_per_decode_kv: float      # decode attention, per KV token attended
    flops_per_prefill_pair: float   # prefill attention, per (query, key) causal pair
    bytes_per_iteration: float      # layer weights, read once per iteration
    bytes_per_sampling_iteration: float   # LM head weights, when the iteration samples
    bytes_per_token: float          # GEMM and elementwise activations, embedding rows
    bytes_per_sample: float         # logits written, read by sampling
    bytes_per_decode_kv: float      # KV read by decode attention
    bytes_per_decode_seq: float     # q read and o written by decode attention
    bytes_per_prefill_token: float  # q, o, and the chunk's own K, V
    bytes_per_prefill_context: float   # cached K, V read by a chunk

    @classmethod
    def of(cls, model) -> "WorkCoefficients":
        rs = RankShape.of(model, 1.0, 1.0, 1.0, True)
        layers, b = model.num_layers, model.dtype_bytes
        gemms = rs.gemms(1)
        weights = layers * sum(b * k * n for _, _, n, k in gemms)
        act = layers * sum(b * (k + n) for _, _, n, k in gemms)
        ew, _ = rs.elementwise_bytes(1)
        h, vocab = model.hidden_size, model.vocab_size
        f_dec = _linear(lambda batch, kv: rs.attn_decode(batch, kv))
        f_pre = _linear(lambda chunk, ctx: rs.attn_prefill(chunk, ctx))
        return cls(
            flops_per_token=layers * sum(2.0 * n * k for _, _, n, k in gemms),
            flops_per_sample=2.0 * vocab * h,
            flops_per_decode_kv=layers * f_dec["flops", 1],
            # attn_prefill(1, 0) is one causal pair
            flops_per_prefill_pair=layers * float(rs.attn_prefill(1, 0)[0]),
            bytes_per_iteration=float(weights),
            bytes_per_sampling_iteration=float(b * vocab * h),
            bytes_per_token=float(act + layers * ew + 2 * b * h),
            bytes_per_sample=float(b * (h + vocab) + 2 * 4.0 * vocab),
            bytes_per_decode_kv=layers * f_dec["bytes", 1],
            bytes_per_decode_seq=layers * f_dec["bytes", 0],
            bytes_per_prefill_token=layers * f_pre["bytes", 0],
            bytes_per_prefill_context=layers * f_pre["bytes", 1])


def _linear(fn) -> dict:
    """Coefficients of a function linear in its two arguments, from three evaluations:
    ``(quantity, i)`` is the slope in argument ``i``."""
    base = [float(np.sum(v)) for v in fn(0, 0)]
    one = [[float(np.sum(v)) for v in fn(*(1 if j == i else 0 for j in range(2)))]
           for i in range(2)]
    return {(q, i): one[i][k] - base[k] for k, q in enumerate(("flops", "bytes"))
            for i in range(2)}


def row_work(timeline: pd.DataFrame, coef: WorkCoefficients) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and bytes of each timeline row (arrays aligned with the frame)."""
    it = timeline.iterations.to_numpy(float)
    n_dec = timeline.decode_seqs.to_numpy(float)
    prefill = timeline.prefill_tokens.to_numpy(float)
    tokens = prefill + it * n_dec
    samples = timeline.prefill_done.to_numpy(float) + it * n_dec
    sampling_iters = np.where(timeline.prefill_done.to_numpy() > 0, 1.0, 0.0)
    sampling_iters = np.where(n_dec > 0, it, sampling_iters)
    # KV attended over the row's steps: each step's KV lengths are one longer per sequence
    kv = it * timeline.decode_context.to_numpy(float) + n_dec * it * (it - 1) / 2
    c = coef
    flops = (c.flops_per_token * tokens + c.flops_per_sample * samples
             + c.flops_per_decode_kv * kv
             + c.flops_per_prefill_pair * timeline.prefill_pairs.to_numpy(float))
    bytes_ = (c.bytes_per_iteration * it + c.bytes_per_sampling_iteration * sampling_iters
              + c.bytes_per_token * tokens + c.bytes_per_sample * samples
              + c.bytes_per_decode_kv * kv + c.bytes_per_decode_seq * it * n_dec
              + c.bytes_per_prefill_token * prefill
              + c.bytes_per_prefill_context * timeline.prefill_context.to_numpy(float))
    return flops, bytes_


def layout_peaks(layout, dtype: str) -> tuple[float, float]:
    """Summed dense peak FLOP/s (at the dtype each device computes ``dtype`` in) and memory
    bandwidth of a layout's devices."""
    flops = sum(d.peak_flops_for(compute_dtype(d, dtype)) for d in layout.devices)
    return float(flops), float(sum(d.mem_bw_bytes_per_s for d in layout.devices))
