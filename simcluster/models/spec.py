"""Model architectures as plain data: the shapes that set weight bytes, KV bytes and FLOPs.

A :class:`ModelSpec` is a dense decoder-only transformer described by the numbers in its
published config (layers, widths, heads, vocabulary, dtype). Parameter counts, weight bytes and
KV-cache bytes per token are derived from those numbers, never typed in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from simcluster.errors import InputError

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "int4": 0.5}
_HF_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
              "float8_e4m3fn": "fp8", "int8": "int8"}


@dataclass(frozen=True)
class ModelSpec:
    """A dense decoder-only transformer, as its config describes it.

    ``ffn_gated`` marks a SwiGLU-style MLP (gate, up and down matrices) rather than two.
    ``linear_bias`` marks models whose linear layers and LayerNorms carry biases (OPT, BLOOM,
    GPT-3); ``learned_position_embeddings`` marks a learned position table (OPT, GPT-3).
    ``dtype`` is the weight and KV dtype the model is served in (inferred from ``dtype_bytes``
    when not given: 2 -> fp16); ``dtype_bytes`` is its size.
    ``max_position`` is the context limit (None: none stated).
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
    source: str = field(default="", compare=False)
    aliases: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(f"expected a non-empty string, got {self.name!r}", field="name")
        for f in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                  "ffn_size", "vocab_size") + (("max_position",) if self.max_position else ()):
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
        for f in ("ffn_gated", "tied_embeddings", "linear_bias", "learned_position_embeddings"):
            if not isinstance(getattr(self, f), bool):
                raise InputError(f"expected true or false, got {getattr(self, f)!r}", field=f)
        object.__setattr__(self, "aliases", tuple(self.aliases))

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
        """Q, K, V and output projection weights (and biases) of one layer."""
        h, q, kv = self.hidden_size, self.q_size, self.kv_size
        bias = (q + 2 * kv + h) if self.linear_bias else 0
        return h * q + 2 * h * kv + q * h + bias

    @property
    def ffn_params_per_layer(self) -> int:
        """MLP weights (and biases) of one layer: 3 matrices if gated, else 2."""
        h, f = self.hidden_size, self.ffn_size
        matrices = 3 if self.ffn_gated else 2
        bias = ((matrices - 1) * f + h) if self.linear_bias else 0
        return matrices * h * f + bias

    @property
    def norm_params_per_layer(self) -> int:
        """Two norms per layer: weight only (RMSNorm) or weight and bias (LayerNorm)."""
        return 2 * self.hidden_size * (2 if self.linear_bias else 1)

    @property
    def params_per_layer(self) -> int:
        """All parameters of one transformer layer."""
        return (self.attention_params_per_layer + self.ffn_params_per_layer
                + self.norm_params_per_layer)

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
        return (self.num_layers * self.params_per_layer + self.embedding_params
                + self.lm_head_params + final_norm)

    # ------------------------------------------------------------------ bytes and FLOPs
    @property
    def weight_bytes(self) -> int:
        """Bytes of all weights at ``dtype``."""
        return int(self.params * self.dtype_bytes)

    @property
    def layer_weight_bytes(self) -> int:
        """Bytes of one transformer layer's weights at ``dtype``."""
        return int(self.params_per_layer * self.dtype_bytes)

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token occupies: 2 (K and V) x layers x kv_size x dtype bytes."""
        return int(2 * self.num_layers * self.kv_size * self.dtype_bytes)

    @property
    def linear_flops_per_token(self) -> int:
        """FLOPs of the weight matmuls for one token (2 per weight, LM head included).

        Attention score and value products depend on context length and are excluded; see
        :meth:`attention_flops_per_token`.
        """
        h, mlp = self.hidden_size, (3 if self.ffn_gated else 2) * self.ffn_size
        per_layer = 2 * h * self.q_size + 2 * h * self.kv_size + mlp * h
        return 2 * (self.num_layers * per_layer + self.vocab_size * h)

    def attention_flops_per_token(self, context_tokens: int) -> int:
        """FLOPs of QK^T and the value product for one token attending to ``context_tokens``."""
        return 4 * self.num_layers * self.q_size * int(context_tokens)

    def to_hf_config(self) -> dict[str, Any]:
        """A Hugging Face style config dict that :func:`model_from_hf_config` reads back."""
        model_type = ("llama" if self.ffn_gated and not self.linear_bias else
                      "opt" if self.learned_position_embeddings else "bloom")
        out = {"model_type": model_type, "hidden_size": self.hidden_size,
               "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
               "num_key_value_heads": self.num_kv_heads, "head_dim": self.head_dim,
               "intermediate_size": self.ffn_size, "vocab_size": self.vocab_size,
               "tie_word_embeddings": self.tied_embeddings,
               "torch_dtype": {v: k for k, v in _HF_DTYPES.items()}.get(self.dtype, self.dtype)}
        if self.max_position:
            out["max_position_embeddings"] = self.max_position
        return out


def with_dtype(model: ModelSpec, dtype: str) -> ModelSpec:
    """The same architecture served at another dtype (e.g. 'fp8' weights and KV)."""
    return dataclasses.replace(model, dtype=dtype, dtype_bytes=DTYPE_BYTES.get(dtype, 0))
