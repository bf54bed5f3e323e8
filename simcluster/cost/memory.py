"""Memory plan of a replica: weights, activation reserve and KV-cache capacity per device.

Each TP rank of each stage (stages may differ in TP degree and layer count) holds its share of
the stage's layer weights, a reserve for
activations (an estimate of the peak vLLM profiles with a ``max_batched_tokens`` dummy batch:
the hidden states, QKV, FFN intermediate of that many tokens, and fp32 logits for
``max_num_seqs`` samples), and its share of the KV cache in what is left of
``mem_bytes * memory_utilization``. The replica's KV capacity in tokens is the smallest over its
ranks. A rank whose weights and reserve do not fit is an OOM, reported with the device and the
shortfall rather than raised mid-simulation. A rank that recomputes a share of its KV
(``Layout.recompute_shares``) keeps, for those tokens, the layer input (hidden size) instead of
their K and V: less memory per token only where its K and V are wider than the hidden state.

Mixtures of experts and latent attention (:func:`_variant_weight_bytes`): a rank holds ``E /
ep`` whole routed experts (expert parallelism) or ``1/tp`` of every expert's width (experts
sharded by TP), at the experts' own storage dtype; the router whole; the shared experts and
dense MLPs by TP; MLA's latent projections whole and its per-head ones by head. The latent KV
cache is replicated on every TP rank of a group (each needs every head's latent). With
attention data parallelism (``dp``) each of the ``dp`` groups keeps its own sequences' KV: the
replica holds ``dp`` times one group's capacity, but one sequence must fit in one group
(:attr:`MemoryPlan.max_seq_tokens`). Sliding-window layers reserve a full window for each of a
rank's ``max_num_seqs / dp`` sequences instead of growing with the context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simcluster.cost.layout import Layout
from simcluster.cost.parallel import check_parallel
from simcluster.models.operators import RankShape
from simcluster.models import ModelSpec


@dataclass(frozen=True)
class RankMemory:
    stage: int
    rank: int
    device: str
    mem_bytes: float           # usable: device memory x utilisation limit
    weight_bytes: float
    reserve_bytes: float
    kv_bytes_per_token: float  # this rank's bytes for one token of context
    kv_bytes: float            # left for KV (negative: OOM)


@dataclass(frozen=True)
class MemoryPlan:
    ranks: tuple[RankMemory, ...]
    kv_capacity_tokens: int
    max_seq_tokens: int | None = None   # KV tokens one sequence may hold (one DP group's)

    @property
    def seq_capacity_tokens(self) -> int:
        """KV tokens a single sequence may hold: one data-parallel group's capacity."""
        return self.kv_capacity_tokens if self.max_seq_tokens is None else self.max_seq_tokens

    @property
    def oom(self) -> list[str]:
        """One line per device that cannot hold its weights and reserve."""
        return [f"{r.device} (stage {r.stage}, rank {r.rank}) short by "
                f"{-r.kv_bytes / 2**30:.2f} GiB: weights {r.weight_bytes / 2**30:.2f} GiB + "
                f"reserve {r.reserve_bytes / 2**30:.2f} GiB > usable "
                f"{r.mem_bytes / 2**30:.2f} GiB" for r in self.ranks if r.kv_bytes < 0]

    @property
    def weight_bytes(self) -> float:
        return sum(r.weight_bytes for r in self.ranks)


def rank_weight_bytes(model: ModelSpec, rs: RankShape, layers: int, first: bool, last: bool,
                      tp: int) -> float:
    """Bytes of the weights one TP rank of a stage holds: its share of each layer's attention
    (by query heads, KV heads replicated where tp exceeds their count) and FFN, an equal share
    of the norms, and a vocabulary-parallel share of the embeddings (first stage) and LM head
    (last stage), all counted by :class:`ModelSpec` (biases, learned positions included)."""
    head_share = rs.heads / model.num_heads
    kv_extra = (rs.kv_heads - model.num_kv_heads * head_share) * model.head_dim
    attn = (model.attention_params_per_layer * head_share
            + 2 * model.hidden_size * kv_extra)
    ffn = model.ffn_params_per_layer * rs.ffn / model.ffn_size
    params = layers * (attn + ffn + model.norm_params_per_layer / tp)
    if first:
        params += model.embedding_params / tp
    if last:
        final_norm = model.hidden_size * (2 if model.linear_bias else 1)
        params += (model.lm_head_params + final_norm) / tp
    return params * model.dtype_bytes


def _variant_weight_bytes(model: ModelSpec, rs: RankShape, layout: Layout, layers: int,
                          moe_layers: int, first: bool, last: bool) -> float:
    """Weight bytes of one rank of a MoE and/or MLA model (see module docstring)."""
    tp, h, g = layout.tp, model.hidden_size, model.ffn_gated
    share = rs.heads / model.num_heads
    if model.mla is not None:
        attn = (model.mla.replicated_params(h)
                + rs.heads * model.mla.per_head_params(h))
    else:
        kv_extra = (rs.kv_heads - model.num_kv_heads * share) * model.head_dim
        attn = model.attention_params_per_layer * share + 2 * h * kv_extra
    dense = model.ffn_params_per_layer * rs.ffn / model.ffn_size
    params = layers * (attn + model.norm_params_per_layer / tp) + (layers - moe_layers) * dense
    expert_bytes = 0.0
    if model.moe is not None and moe_layers:
        moe = model.moe
        params += moe_layers * (moe.router_params(h) + moe.shared_params(h, g) / tp)
        experts = (moe.num_experts / layout.ep if layout.ep > 1
                   else moe.num_experts / tp)          # whole experts, or 1/tp of each
        expert_bytes = (moe_layers * experts * moe.expert_params(h, g)
                        * model.expert_dtype_bytes)
    if first:
        params += model.embedding_params / tp
    if last:
        final_norm = h * (2 if model.linear_bias else 1)
        params += (model.lm_head_params + final_norm) / tp
    return params * model.dtype_bytes + expert_bytes


def _stage_moe_layers(model: ModelSpec, start: int, count: int) -> int:
    if model.moe is None:
        return 0
    dense = set(model.moe.dense_layers)
    return sum(1 for i in range(start, start + count) if i not in dense)


def memory_plan(model: ModelSpec, layout: Layout, *, memory_utilization: float = 0.9,
                max_batched_tokens: int = 8192, max_num_seqs: int = 256) -> MemoryPlan:
    if not 0 < memory_utilization <= 1:
        raise ValueError(f"memory_utilization must be in (0, 1], got {memory_utilization}")
    check_parallel(model, layout)
    if model.moe is not None or model.mla is not None or model.sliding_window_layers \
            or model.kv_dtype:
        return _variant_plan(model, layout, memory_utilization, max_batched_tokens,
                             max_num_seqs)
    tied = layout.kv_shares == layout.head_shares
    layers_of = layout.layers(model.num_layers)
    ranks, capacity = [], math.inf
    for s, (tp, layers) in enumerate(zip(layout.stage_tps, layers_of)):
        for r, (dev, rc) in enumerate(zip(layout.stage(s), layout.recompute(s))):
            if layout.stage_tp:           # asymmetric stages split equally within a stage
                rs = RankShape.of(model, 1 / tp, 1 / tp, 1 / tp, True, rc)
            else:
                rs = RankShape.of(model, layout.head_shares[r], layout.ffn_shares[r],
                                  layout.kv_shares[r], tied, rc)
            w = rank_weight_bytes(model, rs, layers, s == 0, s == layout.pp - 1, tp)
            b = model.dtype_bytes
            if rc and not rs.kv_tied:     # recomputing KV of heads it does not own: their W_K, W_V
                w += layers * 2 * model.hidden_size * model.head_dim * b * max(
                    0.0, rs.stored_kv_heads - rs.kv_heads)
            act = max_batched_tokens * (4 * model.hidden_size
                                        + (rs.heads + 2 * rs.kv_heads) * model.head_dim
                                        + (2 if model.ffn_gated else 1) * rs.ffn) * b
            logits = max_num_seqs * model.vocab_size / tp * 4
            reserve = act + logits
            kv_width = 2 * rs.stored_kv_heads * model.head_dim
            # recomputed tokens keep the layer input (hidden size) instead of their K and V
            width = (1 - rc) * kv_width + (rc * model.hidden_size if kv_width else 0.0)
            per_token = layers * width * b
            usable = dev.mem_bytes * memory_utilization
            free = usable - w - reserve
            ranks.append(RankMemory(s, r, dev.name, usable, w, reserve, per_token, free))
            if per_token > 0:
                capacity = min(capacity, max(free, 0.0) / per_token)
    cap = 0 if math.isinf(capacity) else int(capacity)
    return MemoryPlan(tuple(ranks), cap)


def _variant_plan(model: ModelSpec, layout: Layout, memory_utilization: float,
                  max_batched_tokens: int, max_num_seqs: int) -> MemoryPlan:
    """The plan of a MoE / MLA / sliding-window model (identical devices, equal split)."""
    dp, tp = layout.dp, layout.tp
    base, extra = divmod(model.num_layers, layout.pp)
    b, kvb, h = model.dtype_bytes, model.kv_dtype_bytes, model.hidden_size
    tokens = -(-max_batched_tokens // dp)          # one data-parallel group's batch
    seqs = -(-max_num_seqs // dp)
    ranks, capacity, start = [], math.inf, 0
    for s in range(layout.pp):
        layers = base + (1 if s < extra else 0)
        moe_layers = _stage_moe_layers(model, start, layers)
        start += layers
        rs = RankShape.of(model, layout.head_shares[0], layout.ffn_shares[0],
                          layout.kv_shares[0], True, dp=dp)
        w = _variant_weight_bytes(model, rs, layout, layers, moe_layers, s == 0,
                                  s == layout.pp - 1)
        act = tokens * (4 * h + (rs.heads + 2 * rs.kv_heads) * model.head_dim
                        + (2 if model.ffn_gated else 1) * rs.ffn) * b
        if moe_layers:
            moe = model.moe
            rows = max_batched_tokens * moe.experts_per_token / layout.ep
            width = moe.expert_ffn_size / (tp if layout.ep == 1 else 1)
            act = max(act, rows * (2 if model.ffn_gated else 1) * width * b + tokens * h * b)
        reserve = act + seqs * model.vocab_size / tp * 4
        if model.mla is not None:       # the latent: every rank of the group holds all of it
            per_token = layers * model.mla.latent_dim * kvb
        else:
            full = layers * (1 - model.window_layers / model.num_layers)
            per_token = full * 2 * rs.kv_heads * model.head_dim * kvb
        win = (layers * model.window_layers / model.num_layers * 2 * rs.kv_heads
               * model.head_dim * kvb * (model.sliding_window or 0) * seqs)
        reserve += win
        dev = layout.devices[0]
        usable = dev.mem_bytes * memory_utilization
        free = usable - w - reserve
        for r in range(tp * dp):
            ranks.append(RankMemory(s, r, dev.name, usable, w, reserve, per_token, free))
        if per_token > 0:
            capacity = min(capacity, max(free, 0.0) / per_token)
    group = 0 if math.isinf(capacity) else int(capacity)
    return MemoryPlan(tuple(ranks), group * dp, group)
