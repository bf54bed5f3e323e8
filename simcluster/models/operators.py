"""Operator accounting: the FLOPs and minimum bytes of each operator of one iteration.

It sits with the model specs, below both the calibration (which fits measured kernels against
these counts) and the cost model (which times them): both need the same accounting.

Counts are per tensor-parallel rank and per layer, for a rank holding ``head_share`` of the
attention heads, ``ffn_share`` of the FFN columns and ``kv_share`` of the KV cache. Latent
attention (MLA: expanded in prefill, absorbed in decode, see :mod:`.mla`), sliding-window
layers (a ``window_frac`` of the layers attend to the last ``window`` tokens; counts are the
mean over layers) and attention data parallelism (``dp`` groups, each running the attention
of ``1/dp`` of the batch: balanced groups) are accounted in :meth:`RankShape._variant_*`. Bytes are
the fewest a kernel must move through device memory: each input read once, each output
written once. Attention-prefill bytes are FlashAttention's ideal IO (Q, K, V read once, O
written once): re-reads of K/V tiles hit on-chip memory or L2, and the achievable-rate
calibration absorbs what does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simcluster.models.mla import MLASpec
from simcluster.models.spec import ModelSpec


@dataclass(frozen=True)
class RankShape:
    """The slice of each layer that one TP rank computes."""

    heads: float
    kv_heads: float
    ffn: float
    kv_share: float        # fraction of the KV bytes of every token this rank stores
    hidden: int
    head_dim: int
    dtype_bytes: int
    gated: bool
    kv_tied: bool          # KV lives with the heads that use it (no q/o transfers)
    total_heads: float     # the model's query and KV head counts (a decoupled KV share
    total_kv_heads: float  # serves every head)
    recompute: float = 0.0  # share of its KV tokens kept as layer inputs, K/V recomputed
    mla: MLASpec | None = None
    window: int = 0            # sliding-window tokens, on a window_frac of the layers
    window_frac: float = 0.0
    dp: int = 1                # attention data-parallel groups sharing the batch
    kv_elem_bytes: float = 0   # KV-cache element bytes where they differ from dtype_bytes

    @classmethod
    def of(cls, model: ModelSpec, head_share: float, ffn_share: float, kv_share: float,
           kv_tied: bool, recompute: float = 0.0, *, dp: int = 1) -> "RankShape":
        heads = model.num_heads * head_share
        # GQA: a rank with any query head must hold at least one KV head (replication when
        # tp exceeds the KV-head count, as vLLM does).
        kv_heads = model.num_kv_heads * head_share
        if heads > 0:
            kv_heads = max(kv_heads, 1.0)
        if model.mla is not None:    # one latent vector per token serves every head
            kv_heads = 1.0 if heads > 0 else 0.0
        return cls(heads=heads, kv_heads=kv_heads, ffn=model.ffn_size * ffn_share,
                   kv_share=kv_share, hidden=model.hidden_size, head_dim=model.head_dim,
                   dtype_bytes=model.dtype_bytes, gated=model.ffn_gated, kv_tied=kv_tied,
                   total_heads=model.num_heads, total_kv_heads=model.num_kv_heads,
                   recompute=float(recompute),
                   mla=model.mla, window=model.sliding_window or 0,
                   window_frac=model.sliding_window_layers / model.num_layers, dp=dp,
                   kv_elem_bytes=model.kv_dtype_bytes if model.kv_dtype else 0)

    @property
    def variant(self) -> bool:
        """Latent attention, sliding windows, data-parallel groups or a separate KV dtype."""
        return (self.mla is not None or self.window_frac > 0 or self.dp > 1
                or bool(self.kv_elem_bytes))

    def attention_gemms(self, tokens):
        """(name, m, n, k) of one layer's attention projections over ``tokens`` rows."""
        if self.mla is not None:
            a, h, q = self.mla, self.hidden, self.mla.q_lora_rank
            out = [("q_a", tokens, q, h)] if q else []
            out += [("q_b", tokens, self.heads * a.qk_head_dim, q or h),
                    ("kv_a", tokens, a.latent_dim, h),
                    ("attn_out", tokens, h, self.heads * a.v_head_dim)]
            return [g for g in out if g[2] > 0 and g[3] > 0]
        hd, h = self.head_dim, self.hidden
        out = [("qkv", tokens, (self.heads + 2 * self.kv_heads) * hd, h),
               ("attn_out", tokens, h, self.heads * hd)]
        return [g for g in out if g[2] > 0 and g[3] > 0]

    def ffn_gemms(self, tokens):
        """(name, m, n, k) of one dense MLP's GEMMs over ``tokens`` rows."""
        h = self.hidden
        out = [("ffn_up", tokens, self.ffn * (2 if self.gated else 1), h),
               ("ffn_down", tokens, h, self.ffn)]
        return [g for g in out if g[2] > 0 and g[3] > 0]

    def gemms(self, tokens):
        """(name, m, n, k) of the projection GEMMs of one layer over ``tokens`` rows."""
        if self.mla is not None:
            return self.attention_gemms(tokens) + self.ffn_gemms(tokens)
        hd, h = self.head_dim, self.hidden
        out = [("qkv", tokens, (self.heads + 2 * self.kv_heads) * hd, h),
               ("attn_out", tokens, h, self.heads * hd),
               ("ffn_up", tokens, self.ffn * (2 if self.gated else 1), h),
               ("ffn_down", tokens, h, self.ffn)]
        return [g for g in out if g[2] > 0 and g[3] > 0]

    def elementwise_bytes(self, tokens) -> tuple[float, int]:
        """Bytes of one layer's norms, activation, rotary and residual adds, and kernel count."""
        b, h = self.dtype_bytes, self.hidden
        norms = 2 * 2 * tokens * h
        act = (3 if self.gated else 2) * tokens * self.ffn
        rotary = 2 * tokens * (self.heads + self.kv_heads) * self.head_dim
        residual = 2 * 3 * tokens * h
        return (norms + act + rotary + residual) * b, 6

    def attn_prefill(self, chunk, context):
        """FLOPs and bytes of causal attention for new tokens ``chunk`` after ``context``."""
        if self.variant:
            return self._variant_prefill(chunk, context)
        hd, b = self.head_dim, self.dtype_bytes      # (plain arithmetic: floats or arrays)
        # each new token attends to the context plus the new tokens before it (causal)
        pairs = chunk * (context + (chunk + 1) / 2)
        flops = 4.0 * self.heads * hd * pairs
        bytes_ = b * hd * (2 * chunk * self.heads + 2 * (context + chunk) * self.kv_heads)
        return flops, bytes_

    def attn_decode(self, batch, context_sum):
        """FLOPs and bytes of one decode step: ``batch`` queries over ``context_sum`` KV tokens.

        With a decoupled KV share (Hels), the rank runs the attention over ``kv_share`` of all
        the KV (whichever GPUs own those heads' projections) instead of over the KV of its own
        heads: the same FLOPs and bytes as that share of the heads over every sequence.
        """
        if self.variant:
            return self._variant_decode(batch, context_sum)
        flops_per_kv, frac, bytes_per_kv, bytes_fixed, scale = self.attn_decode_terms(batch)
        flops = flops_per_kv * context_sum * frac
        bytes_ = scale * (bytes_per_kv * context_sum * frac + bytes_fixed)
        return flops, bytes_

    def attn_decode_terms(self, batch):
        """The constants of :meth:`attn_decode` for ``batch`` queries (not :attr:`variant`):
        FLOPs are ``flops_per_kv * context_sum * frac`` and bytes ``scale * (bytes_per_kv *
        context_sum * frac + bytes_fixed)``, evaluated in that order (the simulator's decode
        runs evaluate them once per batch size and get the same floats)."""
        hd, b = self.head_dim, self.dtype_bytes
        if self.kv_tied:
            q_heads, kv_heads, frac = self.heads, self.kv_heads, 1.0
        else:
            q_heads, kv_heads, frac = self.total_heads, self.total_kv_heads, self.kv_share
        return 4.0 * q_heads * hd, frac, 2 * kv_heads, 2 * batch * q_heads, b * hd

    @property
    def stored_kv_heads(self) -> float:
        """KV heads' worth of every token this rank stores (its own, or its decoupled share)."""
        return self.kv_heads if self.kv_tied else self.total_kv_heads * self.kv_share

    def recompute_gemm(self, context_sum):
        """(m, n, k) of the per-layer GEMM that recomputes the K and V of the ``recompute``
        share of the KV this rank attends over, from the stored layer inputs (KV
        partial-store-and-recompute): m = that share of ``context_sum`` tokens, n = their K
        and V width, k = the hidden size. Zero rows when nothing is recomputed."""
        return (self.recompute * context_sum, 2 * self.stored_kv_heads * self.head_dim,
                self.hidden)

    # -- latent attention, sliding windows, data-parallel groups -----------------------------
    def _variant_prefill(self, chunk, context):
        b, kvb, dp = self.dtype_bytes, self.kv_elem_bytes or self.dtype_bytes, self.dp
        keys = context + chunk
        pairs = chunk * (context + (chunk + 1) / 2)
        if self.mla is not None:    # expanded: kv_b lifts every key's latent, then MHA
            a, h = self.mla, self.heads
            lift = a.kv_lora_rank * (a.qk_nope_head_dim + a.v_head_dim) * h
            flops = a.attention_flops_per_pair(h) * pairs + 2.0 * keys * lift
            bytes_ = (kvb * keys * a.latent_dim + b * lift
                      + b * (2 * keys + chunk) * h * (a.qk_head_dim + a.v_head_dim))
            return flops / dp, bytes_ / dp
        hd, f = self.head_dim, self.window_frac
        if f:                       # the sliding layers' pairs: sum of min(position, window)
            w = self.window
            a_, b_ = context + 1, context + chunk
            c = np.minimum(b_, w)
            win = (np.maximum(c - a_ + 1, 0) * (a_ + c) / 2
                   + w * np.maximum(b_ - np.maximum(a_, w + 1) + 1, 0))
            pairs = (1 - f) * pairs + f * win
            keys = (1 - f) * keys + f * (np.minimum(context, w) + chunk)
        flops = 4.0 * self.heads * hd * pairs
        bytes_ = hd * (b * 2 * chunk * self.heads + kvb * 2 * keys * self.kv_heads)
        return flops / dp, bytes_ / dp

    def _variant_decode(self, batch, context_sum):
        b, kvb, dp = self.dtype_bytes, self.kv_elem_bytes or self.dtype_bytes, self.dp
        if self.mla is not None:    # absorbed: heads attend over the latent, read once
            a, h = self.mla, self.heads
            absorb = a.kv_lora_rank * (a.qk_nope_head_dim + a.v_head_dim) * h
            flops = a.absorbed_flops_per_pair(h) * context_sum + 2.0 * batch * absorb
            bytes_ = (kvb * context_sum * a.latent_dim + b * absorb
                      + b * batch * h * (a.latent_dim + a.kv_lora_rank))
            return flops / dp, bytes_ / dp
        hd, f = self.head_dim, self.window_frac
        if self.kv_tied:
            q_heads, kv_heads, frac = self.heads, self.kv_heads, 1.0
        else:
            q_heads, kv_heads, frac = self.total_heads, self.total_kv_heads, self.kv_share
        ctx = context_sum
        if f:     # (the window bounds each sequence; from the sum alone: at most batch x w)
            ctx = (1 - f) * context_sum + f * np.minimum(context_sum, batch * self.window)
        flops = 4.0 * q_heads * hd * ctx * frac
        bytes_ = hd * (kvb * 2 * kv_heads * ctx * frac + b * 2 * batch * q_heads)
        return flops / dp, bytes_ / dp

    def kv_transfer_bytes(self, decode_batch, new_tokens) -> float:
        """Per-layer link bytes of a decoupled KV share (Hels).

        Each head's KV stays on the GPU that owns the head as far as that GPU's KV share
        allows; the attention of the remaining heads runs where their KV lives (head-level
        dispatch, as Hetis does). A rank whose KV share differs from its head share by
        ``|kv_share - heads/total_heads|`` of the heads therefore sends (or receives) those
        heads' q and partial o for every decode query, and ships their K/V for every new token
        of the iteration: ``new_tokens`` prefill tokens plus one per decoding sequence.
        A rank whose two shares agree moves nothing.
        """
        if self.kv_tied or self.total_heads == 0:
            return 0.0
        b, hd = self.dtype_bytes, self.head_dim
        mismatch = abs(self.kv_share - self.heads / self.total_heads)
        return b * hd * mismatch * (2 * decode_batch * self.total_heads
                                    + 2 * (new_tokens + decode_batch) * self.total_kv_heads)


def op_counts(op: str, shape: dict):
    """FLOPs, bytes and calibration shape of a standalone operator (for ``predict_op``)."""
    def need(*keys):
        missing = [k for k in keys if k not in shape]
        if missing:
            raise ValueError(f"operator {op!r} needs shape fields {missing}")
        return [shape[k] for k in keys]

    b = shape.get("dtype_bytes", 2)
    if op == "gemm":
        m, n, k = need("m", "n", "k")
        return 2.0 * m * n * k, b * (m * k + k * n + m * n), {"m": m, "n": n, "k": k}
    if op in ("attn_prefill", "attn_decode"):
        h, kvh, hd = need("num_heads", "num_kv_heads", "head_dim")
        rs = RankShape(heads=h, kv_heads=kvh, ffn=0, kv_share=1, hidden=h * hd, head_dim=hd,
                       dtype_bytes=b, gated=False, kv_tied=True, total_heads=h,
                       total_kv_heads=kvh)
        batch = shape.get("batch", 1)
        if op == "attn_prefill":
            tokens, = need("tokens")
            context = shape.get("context", 0)
            f, by = rs.attn_prefill(tokens, context)
            return batch * float(f), batch * float(by), {"tokens": tokens, "context": context,
                                                         "batch": batch, "heads": h,
                                                         "kv_heads": kvh}
        kv_len, = need("kv_len")
        f, by = rs.attn_decode(batch, batch * kv_len)
        return float(f), float(by), {"batch": batch, "kv_len": kv_len, "heads": h,
                                     "kv_heads": kvh}
    if op == "grouped_gemm":
        m, n, k, groups = need("m", "n", "k", "groups")
        wb = shape.get("weight_dtype_bytes", b)
        rows = m * groups
        return (2.0 * rows * n * k, wb * groups * n * k + b * rows * (k + n),
                {"m": m, "n": n, "k": k, "groups": groups})
    if op == "elementwise":
        bytes_, = need("bytes")
        return 0.0, float(bytes_), {"kernels": shape.get("kernels", 1), "bytes": bytes_,
                                    "kind": shape.get("kind"), "hidden": shape.get("hidden")}
    raise ValueError(f"unknown operator {op!r}; known: gemm, grouped_gemm, attn_prefill, "
                     "attn_decode, elementwise")
