"""Model architectures as plain data: the shapes that set weight bytes, KV bytes and FLOPs.

A :class:`ModelSpec` is a decoder-only transformer described by the numbers in its published
config (layers, widths, heads, vocabulary, dtype): dense, or with mixture-of-experts FFN layers
(:mod:`.moe`), multi-head latent attention (:mod:`.mla`), grouped-query attention and
sliding-window layers. Parameter counts, weight bytes and KV-cache bytes per token are derived
from those numbers, never typed in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from simcluster.errors import InputError
from simcluster.models.mla import MLASpec
from simcluster.models.moe import EXPERT_DTYPE_BYTES, MoESpec

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "int4": 0.5}
_HF_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
              "float8_e4m3fn": "fp8", "int8": "int8"}


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer, as its config describes it.

    ``ffn_gated`` marks a SwiGLU-style MLP (gate, up and down matrices) rather than two.
    ``linear_bias`` marks models whose linear layers and LayerNorms carry biases (OPT, BLOOM,
    GPT-3); ``learned_position_embeddings`` marks a learned position table (OPT, GPT-3).
    ``dtype`` is the weight and KV dtype the model is served in (inferred from ``dtype_bytes``
    when not given: 2 -> fp16); ``dtype_bytes`` is its size.
    ``max_position`` is the context limit (None: none stated).

    Attention variants: ``attention_bias`` (Q, K, V and output biases only, as GPT-OSS and
    Qwen2 have without MLP biases), ``qk_norm`` (Qwen3's per-head RMSNorm of queries and keys),
    ``attention_sinks`` (GPT-OSS's learned per-head sink logit), ``sliding_window`` tokens on
    ``sliding_window_layers`` of the layers (GPT-OSS: every other layer attends to the last
    128 tokens), ``mla`` (latent attention; ``head_dim`` is then the query/key head dim,
    non-rotary plus rotary). ``moe`` makes every layer but ``moe.dense_layers`` a mixture of
    experts. ``kv_dtype`` is the KV cache's dtype where it differs from ``dtype`` (DeepSeek-V3
    ships FP8 weights and serves a bf16 cache).
    """

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_size: int
    ffn_gated: bool
    vocab_size: int
    dtype_bytes: float = 2
    tied_embeddings: bool = False
    max_position: int | None = None
    dtype: str | None = None
    linear_bias: bool = False
    learned_position_embeddings: bool = False
    attention_bias: bool = False
    qk_norm: bool = False
    attention_sinks: bool = False
    sliding_window: int | None = None
    sliding_window_layers: int = 0
    kv_dtype: str | None = None
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    source: str = field(default="", compare=False)
    aliases: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(f"expected a non-empty string, got {self.name!r}", field="name")
        for f in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                  "ffn_size", "vocab_size") + (("max_position",) if self.max_position is not None else ()):
            value = getattr(self, f)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"expected a whole number >= 1, got {value!r}", field=f)
        if self.num_heads % self.num_kv_heads:
            raise InputError(f"{self.num_kv_heads} KV heads do not divide {self.num_heads} "
                             "attention heads (grouped-query attention needs whole groups)",
                             field="num_kv_heads")
        if self.dtype is None:   # infer from the byte width: 4 fp32, 2 fp16, 1 int8, 0.5 int4
            inferred = {4: "fp32", 2: "fp16", 1: "int8", 0.5: "int4"}.get(self.dtype_bytes)
            if inferred is None:
                raise InputError(f"expected 4, 2, 1 or 0.5, got {self.dtype_bytes!r}",
                                 field="dtype_bytes")
            object.__setattr__(self, "dtype", inferred)
        if self.dtype not in DTYPE_BYTES:
            raise InputError(f"expected one of {', '.join(DTYPE_BYTES)}, got {self.dtype!r}",
                             field="dtype")
        if self.dtype_bytes != DTYPE_BYTES[self.dtype]:
            raise InputError(f"dtype {self.dtype!r} takes {DTYPE_BYTES[self.dtype]} bytes, got "
                             f"dtype_bytes={self.dtype_bytes!r}", field="dtype_bytes")
        for f in ("ffn_gated", "tied_embeddings", "linear_bias", "learned_position_embeddings",
                  "attention_bias", "qk_norm", "attention_sinks"):
            if not isinstance(getattr(self, f), bool):
                raise InputError(f"expected true or false, got {getattr(self, f)!r}", field=f)
        self._check_variants()
        object.__setattr__(self, "aliases", tuple(self.aliases))

    def _check_variants(self) -> None:
        """The MoE, MLA, sliding-window and KV-dtype fields agree with the rest."""
        if self.kv_dtype is not None and self.kv_dtype not in DTYPE_BYTES:
            raise InputError(f"expected one of {', '.join(DTYPE_BYTES)}, got {self.kv_dtype!r}",
                             field="kv_dtype")
        w, n = self.sliding_window, self.sliding_window_layers
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= self.num_layers:
            raise InputError(f"expected a whole number of layers in [0, {self.num_layers}], "
                             f"got {n!r}", field="sliding_window_layers")
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise InputError(f"expected a whole number of tokens >= 1, got {w!r}",
                             field="sliding_window")
        if (w is None) != (n == 0):
            raise InputError("give sliding_window (tokens) together with sliding_window_layers "
                             f"(how many layers use it), got {w!r} and {n!r}",
                             field="sliding_window_layers")
        if self.moe is not None and not isinstance(self.moe, MoESpec):
            raise InputError(f"expected a MoESpec, got {type(self.moe).__name__}", field="moe")
        if self.mla is not None and not isinstance(self.mla, MLASpec):
            raise InputError(f"expected an MLASpec, got {type(self.mla).__name__}", field="mla")
        if self.moe is not None and any(i >= self.num_layers for i in self.moe.dense_layers):
            raise InputError(f"dense layer indices {list(self.moe.dense_layers)} must be below "
                             f"num_layers={self.num_layers}", field="moe.dense_layers")
        if self.mla is not None and self.head_dim != self.mla.qk_head_dim:
            raise InputError(f"an MLA model's head_dim is qk_nope_head_dim + qk_rope_head_dim = "
                             f"{self.mla.qk_head_dim}, got {self.head_dim}", field="head_dim")
        if self.mla is not None and w is not None:
            raise InputError("sliding-window layers with latent attention are not modelled",
                             field="sliding_window")

    # ------------------------------------------------------------------ shapes
    @property
    def q_size(self) -> int:
        """Width of the query projection: heads x head_dim."""
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Width of the key (or value) projection: KV heads x head_dim."""
        return self.num_kv_heads * self.head_dim

    @property
    def gqa_group_size(self) -> int:
        """Query heads sharing one KV head (1: multi-head attention)."""
        return self.num_heads // self.num_kv_heads

    # ------------------------------------------------------------------ parameters
    @property
    def attention_params_per_layer(self) -> int:
        """Attention weights of one layer: Q, K, V and output projections (and biases), or
        MLA's latent projections; plus QK norms and sinks where the model has them."""
        if self.mla is not None:
            return self.mla.params(self.hidden_size, self.num_heads)
        h, q, kv = self.hidden_size, self.q_size, self.kv_size
        bias = (q + 2 * kv + h) if (self.linear_bias or self.attention_bias) else 0
        extra = ((2 * self.head_dim if self.qk_norm else 0)
                 + (self.num_heads if self.attention_sinks else 0))
        return h * q + 2 * h * kv + q * h + bias + extra

    @property
    def ffn_params_per_layer(self) -> int:
        """Dense MLP weights (and biases) of one layer: 3 matrices if gated, else 2. In a
        mixture of experts this is the MLP of the ``moe.dense_layers`` only."""
        h, f = self.hidden_size, self.ffn_size
        matrices = 3 if self.ffn_gated else 2
        bias = ((matrices - 1) * f + h) if self.linear_bias else 0
        return matrices * h * f + bias

    @property
    def moe_ffn_params_per_layer(self) -> int:
        """FFN weights of one MoE layer: every routed expert, the shared experts, the router
        (0 for a dense model)."""
        moe = self.moe
        if moe is None:
            return 0
        h, g = self.hidden_size, self.ffn_gated
        return (moe.num_experts * moe.expert_params(h, g) + moe.shared_params(h, g)
                + moe.router_params(h))

    @property
    def num_moe_layers(self) -> int:
        """Layers whose FFN is a mixture of experts (0 for a dense model)."""
        return 0 if self.moe is None else self.moe.moe_layer_count(self.num_layers)

    @property
    def num_dense_ffn_layers(self) -> int:
        """Layers with a dense MLP."""
        return self.num_layers - self.num_moe_layers

    @property
    def norm_params_per_layer(self) -> int:
        """Two norms per layer: weight only (RMSNorm) or weight and bias (LayerNorm)."""
        return 2 * self.hidden_size * (2 if self.linear_bias else 1)

    @property
    def transformer_params(self) -> int:
        """All parameters of the transformer layers (embeddings and head excluded)."""
        per = self.attention_params_per_layer + self.norm_params_per_layer
        return (self.num_layers * per + self.num_dense_ffn_layers * self.ffn_params_per_layer
                + self.num_moe_layers * self.moe_ffn_params_per_layer)

    @property
    def params_per_layer(self) -> int:
        """All parameters of one transformer layer (a mixture of experts: the mean over its
        dense and MoE layers, rounded down)."""
        if self.moe is None:
            return (self.attention_params_per_layer + self.ffn_params_per_layer
                    + self.norm_params_per_layer)
        return self.transformer_params // self.num_layers

    @property
    def embedding_params(self) -> int:
        """Token embedding table, plus the learned position table where there is one."""
        positions = (self.max_position or 0) if self.learned_position_embeddings else 0
        return (self.vocab_size + positions) * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """Output projection to the vocabulary; 0 when tied to the token embeddings."""
        return 0 if self.tied_embeddings else self.vocab_size * self.hidden_size

    @property
    def params(self) -> int:
        """Total parameter count (layers, embeddings, LM head, final norm)."""
        final_norm = self.hidden_size * (2 if self.linear_bias else 1)
        if self.moe is None:
            return (self.num_layers * self.params_per_layer + self.embedding_params
                    + self.lm_head_params + final_norm)
        return (self.transformer_params + self.embedding_params + self.lm_head_params
                + final_norm)

    @property
    def routed_expert_params(self) -> int:
        """Parameters of all routed experts (the part stored at ``moe.expert_dtype``)."""
        if self.moe is None:
            return 0
        return (self.num_moe_layers * self.moe.num_experts
                * self.moe.expert_params(self.hidden_size, self.ffn_gated))

    @property
    def active_params(self) -> int:
        """Parameters one token uses: all but the routed experts it is not sent to."""
        if self.moe is None:
            return self.params
        per_expert = self.moe.expert_params(self.hidden_size, self.ffn_gated)
        unused = self.moe.num_experts - self.moe.experts_per_token
        return self.params - self.num_moe_layers * unused * per_expert

    # ------------------------------------------------------------------ bytes and FLOPs
    @property
    def expert_dtype_bytes(self) -> float:
        """Bytes per routed-expert weight (the model's dtype unless ``moe.expert_dtype``)."""
        if self.moe is None or self.moe.expert_dtype is None:
            return self.dtype_bytes
        return EXPERT_DTYPE_BYTES[self.moe.expert_dtype]

    @property
    def kv_dtype_bytes(self) -> float:
        """Bytes per KV-cache element (``kv_dtype``, else ``dtype``)."""
        return DTYPE_BYTES[self.kv_dtype] if self.kv_dtype else self.dtype_bytes

    @property
    def weight_bytes(self) -> int:
        """Bytes of all weights: at ``dtype``, routed experts at their own dtype."""
        experts = self.routed_expert_params
        if not experts:
            return int(self.params * self.dtype_bytes)
        return int((self.params - experts) * self.dtype_bytes
                   + experts * self.expert_dtype_bytes)

    @property
    def layer_weight_bytes(self) -> int:
        """Bytes of one transformer layer's weights (a mixture of experts: the mean)."""
        if self.moe is None:
            return int(self.params_per_layer * self.dtype_bytes)
        experts = self.routed_expert_params
        return int(((self.transformer_params - experts) * self.dtype_bytes
                    + experts * self.expert_dtype_bytes) / self.num_layers)

    @property
    def window_layers(self) -> int:
        """Layers whose KV is bounded by the sliding window. A model whose every layer slides
        (Mistral-7B v0.1) keeps every layer's KV at full length, as vLLM's single block table
        does; only a mix of full and sliding layers (GPT-OSS) bounds the sliding ones."""
        n = self.sliding_window_layers
        return n if n < self.num_layers else 0

    @property
    def kv_bytes_per_layer_token(self) -> float:
        """KV bytes one token adds to one layer: K and V (``2 x kv_size``), or MLA's latent."""
        if self.mla is not None:
            return self.mla.latent_dim * self.kv_dtype_bytes
        return 2 * self.kv_size * self.kv_dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token of context occupies in the layers that keep every token:
        2 (K and V) x layers x kv_size x dtype bytes (MLA: layers x latent dims x bytes).
        Sliding-window layers hold at most :attr:`window_kv_bytes` per sequence instead."""
        if self.mla is None and not self.window_layers and not self.kv_dtype:
            return int(2 * self.num_layers * self.kv_size * self.dtype_bytes)
        return int((self.num_layers - self.window_layers) * self.kv_bytes_per_layer_token)

    @property
    def window_kv_bytes(self) -> int:
        """KV bytes one sequence's sliding-window layers hold at most (a full window)."""
        return int(self.window_layers * (self.sliding_window or 0)
                   * self.kv_bytes_per_layer_token)

    def kv_bytes(self, tokens: int) -> float:
        """KV bytes of one sequence of ``tokens`` tokens, sliding-window layers included."""
        extra = (self.window_layers * min(tokens, self.sliding_window)
                 * self.kv_bytes_per_layer_token) if self.window_layers else 0
        return tokens * self.kv_bytes_per_token + extra

    @property
    def linear_flops_per_token(self) -> int:
        """FLOPs of the weight matmuls for one token (2 per weight it multiplies through, LM
        head included; in a mixture of experts only its k routed experts, the shared experts
        and the router count).

        Attention score and value products depend on context length and are excluded; see
        :meth:`attention_flops_per_token`.
        """
        h, mlp = self.hidden_size, (3 if self.ffn_gated else 2) * self.ffn_size
        if self.moe is None and self.mla is None:
            per_layer = 2 * h * self.q_size + 2 * h * self.kv_size + mlp * h
            return 2 * (self.num_layers * per_layer + self.vocab_size * h)
        attn = (self.mla.matmul_weights_per_token(h, self.num_heads) if self.mla is not None
                else 2 * h * self.q_size + 2 * h * self.kv_size)
        moe = (self.moe.ffn_matmul_weights_per_token(h, self.ffn_gated)
               if self.moe is not None else 0)
        return 2 * (self.num_layers * attn + self.num_dense_ffn_layers * mlp * h
                    + self.num_moe_layers * moe + self.vocab_size * h)

    def attention_flops_per_token(self, context_tokens: int) -> int:
        """FLOPs of QK^T and the value product for one token attending to ``context_tokens``
        (MLA: the expanded form; sliding-window layers attend to at most their window)."""
        ctx = int(context_tokens)
        if self.mla is not None:
            return int(self.num_layers * self.mla.attention_flops_per_pair(self.num_heads)
                       * ctx)
        if self.sliding_window_layers:
            windowed = self.sliding_window_layers * min(ctx, self.sliding_window)
            return 4 * self.q_size * ((self.num_layers - self.sliding_window_layers) * ctx
                                      + windowed)
        return 4 * self.num_layers * self.q_size * ctx

    def to_hf_config(self) -> dict[str, Any]:
        """A Hugging Face style config dict that :func:`model_from_hf_config` reads back."""
        from simcluster.models.hf_arch import arch_to_hf, hf_model_type
        model_type = hf_model_type(self, "llama" if self.ffn_gated and not self.linear_bias else
                                   "opt" if self.learned_position_embeddings else "bloom")
        out = {"model_type": model_type, "hidden_size": self.hidden_size,
               "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
               "num_key_value_heads": self.num_kv_heads, "head_dim": self.head_dim,
               "intermediate_size": self.ffn_size, "vocab_size": self.vocab_size,
               "tie_word_embeddings": self.tied_embeddings,
               "torch_dtype": {v: k for k, v in _HF_DTYPES.items()}.get(self.dtype, self.dtype)}
        if self.max_position:
            out["max_position_embeddings"] = self.max_position
        out.update(arch_to_hf(self))
        return out


def with_dtype(model: ModelSpec, dtype: str) -> ModelSpec:
    """The same architecture served at another dtype (e.g. 'fp8' weights and KV; routed
    experts stored in their own format, such as GPT-OSS's MXFP4, keep it)."""
    return dataclasses.replace(model, dtype=dtype, dtype_bytes=DTYPE_BYTES.get(dtype, 0),
                               kv_dtype=None)
