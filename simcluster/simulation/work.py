"""The work an instance did: FLOPs and bytes per timeline row, and its peaks, after the run.

Utilisation is counted post hoc from the timeline, so the event loop pays nothing for it. Each
row carries what the cost model was asked to time — tokens, sampled tokens, the decode KV
lengths at its first step, the prefill chunks' context and causal pairs — and a row of
``iterations`` pure-decode steps stands for that many steps whose KV lengths grow by one token
per sequence per step. The FLOPs and minimum bytes of those quantities are the model's own
counts for the *whole model* (one rank holding every head and FFN column), which is what model
FLOPs utilisation (MFU) and memory-bandwidth utilisation (MBU) divide by the devices' peaks:

* FLOPs: the weight matmuls per token (:attr:`ModelSpec.linear_flops_per_token`: in a mixture
  of experts its k routed experts, the shared experts and the router), the LM head per sampled
  token, and attention (:class:`~simcluster.models.operators.RankShape`'s ``attn_prefill`` /
  ``attn_decode``: grouped-query, latent, sliding-window) over the KV each query attends to;
* bytes: the layers' weights once per iteration — of a mixture of experts, the shared part and
  the routed experts its tokens touch, expected under uniform top-k routing (``E (1 - (1 -
  k/E)^tokens)`` per layer) — the LM head's when it samples, activations in and out of each
  matmul and elementwise kernel per token, and the KV read by attention.

Overheads the cost model adds on top of these counts (kernel launches, an engine model's host
time, TP collectives, KV replicated over TP ranks) are time without model work: they lower MFU
and MBU, as they do on real hardware. Prefill attention is counted from each row's sums of
chunk tokens, context tokens and causal pairs, exact for full attention and latent attention;
on sliding-window layers it counts the full causal pairs (an upper bound of their work).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from simcluster.lazy import lazy_module
from simcluster.calibration import compute_dtype
from simcluster.models.operators import RankShape

pd = lazy_module("pandas")     # (imported when a frame is first built)


def _unit(fn, *args) -> tuple[float, float]:
    f, b = fn(*args)
    return float(np.sum(f)), float(np.sum(b))


def _act_bytes(gemms, b) -> float:
    """Activation bytes per token of GEMMs (each reads its input row and writes its output)."""
    return float(sum(b * (k + n) for _, _, n, k in gemms))


@dataclass(frozen=True)
class WorkCoefficients:
    """The whole model's FLOPs and bytes per unit of each per-row quantity."""

    rs: RankShape                   # one rank holding the whole model
    layers: int
    flops_per_token: float          # weight matmuls, all layers (LM head apart)
    flops_per_sample: float         # LM head
    bytes_per_iteration: float      # the weights every iteration reads (routed experts apart)
    bytes_per_sampling_iteration: float   # the LM head, when the iteration samples
    bytes_per_token: float          # activations, embedding rows
    bytes_per_sample: float         # logits written, read by sampling
    moe_layers: int = 0
    experts: int = 0                # routed experts per MoE layer, k of them per token
    experts_per_token: int = 0
    bytes_per_expert: float = 0.0
    prefill_flops: tuple = (0.0, 0.0)          # per causal pair, per key attended
    prefill_bytes: tuple = (0.0, 0.0, 0.0)     # per sequence, per chunk token, per context token

    @classmethod
    def of(cls, model) -> "WorkCoefficients":
        rs = RankShape.of(model, 1.0, 1.0, 1.0, True)
        b, h, vocab = model.dtype_bytes, model.hidden_size, model.vocab_size
        lm = vocab * h
        moe = model.moe
        routed = model.routed_expert_params * model.expert_dtype_bytes
        embed = model.embedding_params * b
        lm_bytes = model.lm_head_params * b
        # norm weights are elementwise traffic (the cost model's norm kernels), not matmuls
        norms = (model.num_layers * model.norm_params_per_layer
                 + h * (2 if model.linear_bias else 1)) * b
        weights = model.weight_bytes - routed - embed - lm_bytes - norms
        act = (model.num_layers * _act_bytes(rs.attention_gemms(1), b)
               + model.num_dense_ffn_layers * (_act_bytes(rs.ffn_gemms(1), b)
                                               + rs.elementwise_bytes(1)[0]))
        kw = {}
        if moe is not None:     # a token's active experts as one MLP of their summed width
            active = dataclasses.replace(
                rs, ffn=moe.experts_per_token * moe.expert_ffn_size + moe.shared_ffn_size)
            act += model.num_moe_layers * (_act_bytes(active.ffn_gemms(1), b)
                                           + active.elementwise_bytes(1)[0])
            kw = dict(moe_layers=model.num_moe_layers, experts=moe.num_experts,
                      experts_per_token=moe.experts_per_token,
                      bytes_per_expert=moe.expert_params(h, model.ffn_gated)
                      * model.expert_dtype_bytes)
        z, pair_key = _unit(rs.attn_prefill, 1, 0), _unit(rs.attn_prefill, 0, 1)
        const = _unit(rs.attn_prefill, 0, 0)
        return cls(rs=rs, layers=model.num_layers,
                   flops_per_token=float(model.linear_flops_per_token - 2 * lm),
                   flops_per_sample=2.0 * lm, bytes_per_iteration=float(weights),
                   bytes_per_sampling_iteration=float(b * lm),
                   bytes_per_token=float(act + 2 * b * h),
                   bytes_per_sample=float(b * (h + vocab) + 2 * 4.0 * vocab),
                   prefill_flops=(z[0] - pair_key[0], pair_key[0] - const[0]),
                   prefill_bytes=(const[1], z[1] - const[1], pair_key[1] - const[1]),
                   **kw)

    def experts_touched(self, tokens: np.ndarray) -> np.ndarray:
        """Expected distinct routed experts per MoE layer that ``tokens`` tokens reach."""
        if not self.experts:
            return np.zeros_like(tokens, dtype=float)
        miss = (1.0 - self.experts_per_token / self.experts) ** tokens
        return np.where(tokens > 0, self.experts * (1.0 - miss), 0.0)


def _attention(c: WorkCoefficients, col, it, n_dec):
    """FLOPs and bytes of attention per row: prefill from the row's sums, decode from the
    model's own ``attn_decode`` at the run's mean KV length (exact where it is linear)."""
    pairs = col("prefill_pairs")
    chunk = col("prefill_tokens")
    ctx = col("prefill_context")
    seqs = col("prefill_seqs")
    fp, fk = c.prefill_flops
    bs, bc, bx = c.prefill_bytes
    flops = c.layers * (fp * pairs + fk * (ctx + chunk))
    bytes_ = c.layers * (bs * seqs + bc * chunk + bx * ctx)
    mean_kv = col("decode_context") + n_dec * (it - 1) / 2
    f, b = c.rs.attn_decode(n_dec, mean_kv)
    on = n_dec > 0
    flops = flops + np.where(on, c.layers * it * f, 0.0)
    bytes_ = bytes_ + np.where(on, c.layers * it * b, 0.0)
    return flops, bytes_


#: Timeline rows evaluated at once by :func:`row_work` (bounds its temporaries' memory).
WORK_ROWS = 1 << 16


def row_work(timeline: pd.DataFrame, coef: WorkCoefficients) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and bytes of each timeline row (arrays aligned with the frame), evaluated
    :data:`WORK_ROWS` rows at a time (every operation is elementwise: the same floats)."""
    n = len(timeline)
    flops, bytes_ = np.empty(n), np.empty(n)
    arrays = {name: timeline[name].to_numpy() for name in (
        "iterations", "decode_seqs", "prefill_tokens", "prefill_done", "prefill_pairs",
        "prefill_context", "prefill_seqs", "decode_context")}
    for a in range(0, n, WORK_ROWS):
        b = min(n, a + WORK_ROWS)
        flops[a:b], bytes_[a:b] = _row_work(lambda name: arrays[name][a:b].astype(float),
                                            coef)
    return flops, bytes_


def _row_work(col, c: WorkCoefficients):
    it = col("iterations")
    n_dec = col("decode_seqs")
    prefill = col("prefill_tokens")
    done = col("prefill_done")
    step_tokens = prefill + n_dec                 # per iteration (a run: the same each step)
    tokens = prefill + it * n_dec
    samples = done + it * n_dec
    sampling = np.where(n_dec > 0, it, np.where(done > 0, 1.0, 0.0))
    attn_f, attn_b = _attention(c, col, it, n_dec)
    flops = c.flops_per_token * tokens + c.flops_per_sample * samples + attn_f
    experts = c.moe_layers * c.bytes_per_expert * c.experts_touched(step_tokens)
    bytes_ = ((c.bytes_per_iteration + experts) * it
              + c.bytes_per_sampling_iteration * sampling + c.bytes_per_token * tokens
              + c.bytes_per_sample * samples + attn_b)
    return flops, bytes_


def layout_peaks(layout, dtype: str) -> tuple[float, float]:
    """Summed dense peak FLOP/s (at the dtype each device computes ``dtype`` in) and memory
    bandwidth of a layout's devices."""
    flops = sum(d.peak_flops_for(compute_dtype(d, dtype)) for d in layout.devices)
    return float(flops), float(sum(d.mem_bw_bytes_per_s for d in layout.devices))
