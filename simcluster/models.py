"""Model architectures as plain data: the shapes that set weight bytes, KV bytes and FLOPs.

A :class:`ModelSpec` is a dense decoder-only transformer described by the numbers in its
published config (layers, widths, heads, vocabulary, dtype). Parameter counts, weight bytes and
KV-cache bytes per token are derived from those numbers, never typed in. Presets carry the
exact architectures of the models the source papers serve; :func:`model_from_hf_config` reads a
Hugging Face ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
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


def _preset(name: str, layers: int, hidden: int, heads: int, kv_heads: int, ffn: int,
            gated: bool, vocab: int, max_position: int, dtype: str, source: str,
            aliases: tuple[str, ...] = (), bias: bool = False, learned_pos: bool = False,
            tied: bool = False) -> ModelSpec:
    return ModelSpec(name=name, num_layers=layers, hidden_size=hidden, num_heads=heads,
                     num_kv_heads=kv_heads, head_dim=hidden // heads, ffn_size=ffn,
                     ffn_gated=gated, vocab_size=vocab, dtype_bytes=DTYPE_BYTES[dtype],
                     dtype=dtype, tied_embeddings=tied, max_position=max_position,
                     linear_bias=bias, learned_position_embeddings=learned_pos, source=source,
                     aliases=aliases)


_LLAMA2 = "Hugging Face meta-llama/Llama-2-{}-hf config.json; Touvron et al. 2023, Table 1"
_LLAMA31 = "Hugging Face meta-llama/Llama-3.1-{}B config.json; Llama 3 Herd of Models (2024)"
_OPT = "Hugging Face facebook/opt-{} config.json; Zhang et al. 2022 (OPT), Table 1"
_OPT_KW: dict[str, Any] = dict(gated=False, vocab=50272, max_position=2048, dtype="fp16",
                               bias=True, learned_pos=True, tied=True)
PRESETS: dict[str, ModelSpec] = {m.name: m for m in (
    _preset("Llama-2-7B", 32, 4096, 32, 32, 11008, True, 32000, 4096, "fp16",
            _LLAMA2.format("7b"), ("meta-llama/Llama-2-7b-hf", "llama2-7b")),
    _preset("Llama-2-13B", 40, 5120, 40, 40, 13824, True, 32000, 4096, "fp16",
            _LLAMA2.format("13b"), ("meta-llama/Llama-2-13b-hf", "llama2-13b")),
    _preset("Llama-2-70B", 80, 8192, 64, 8, 28672, True, 32000, 4096, "fp16",
            _LLAMA2.format("70b"), ("meta-llama/Llama-2-70b-hf", "llama2-70b")),
    _preset("Llama-3.1-8B", 32, 4096, 32, 8, 14336, True, 128256, 131072, "bf16",
            _LLAMA31.format(8), ("meta-llama/Llama-3.1-8B", "meta-llama/Meta-Llama-3.1-8B")),
    _preset("Llama-3.1-70B", 80, 8192, 64, 8, 28672, True, 128256, 131072, "bf16",
            _LLAMA31.format(70), ("meta-llama/Llama-3.1-70B", "meta-llama/Meta-Llama-3.1-70B")),
    _preset("OPT-13B", 40, 5120, 40, 40, 20480, source=_OPT.format("13b"),
            aliases=("facebook/opt-13b",), **_OPT_KW),
    _preset("OPT-30B", 48, 7168, 56, 56, 28672, source=_OPT.format("30b"),
            aliases=("facebook/opt-30b",), **_OPT_KW),
    _preset("OPT-66B", 64, 9216, 72, 72, 36864, source=_OPT.format("66b"),
            aliases=("facebook/opt-66b",), **_OPT_KW),
    _preset("OPT-175B", 96, 12288, 96, 96, 49152, source="Zhang et al. 2022 (OPT), Table 1 "
            "(weights by request; architecture as GPT-3 175B with OPT's vocabulary)",
            **_OPT_KW),
    _preset("GPT-3-175B", 96, 12288, 96, 96, 49152, False, 50257, 2048, "fp16",
            "Brown et al. 2020 (GPT-3), Table 2.1: 96 layers, d_model 12288, 96 heads of 128, "
            "context 2048; GPT-2 vocabulary, tied embeddings", ("GPT-3", "gpt3-175b"),
            bias=True, learned_pos=True, tied=True),
    _preset("BLOOM-176B", 70, 14336, 112, 112, 57344, False, 250880, 2048, "bf16",
            "Hugging Face bigscience/bloom config.json (n_layer 70, hidden 14336, n_head 112, "
            "vocab 250880, ALiBi positions); BigScience 2022 (BLOOM), Table 3",
            ("bigscience/bloom", "BLOOM"), bias=True, tied=True),
)}


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def list_models() -> list[str]:
    """Names of all model presets."""
    return list(PRESETS)


def model_preset(name: str) -> ModelSpec:
    """A preset by name or alias (e.g. a Hugging Face repo id), ignoring case, '-', '_'."""
    for spec in PRESETS.values():
        if _norm(name) in {_norm(spec.name), *map(_norm, spec.aliases)}:
            return spec
    raise InputError(f"unknown model {name!r}; presets: {', '.join(PRESETS)} (or give the path "
                     "of a Hugging Face config.json)", field="model")


_GATED_TYPES = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3",
                "internlm2", "yi", "deepseek", "olmo", "olmo2", "granite", "cohere"}
_BIASED_TYPES = {"opt", "bloom", "gpt2", "gpt_neox", "gptj", "gpt_bigcode", "gpt_neo"}
_LEARNED_POS_TYPES = {"opt", "gpt2", "gpt_bigcode", "gpt_neo"}
_HF_KEYS = {"hidden_size": ("hidden_size", "n_embd", "d_model", "n_embed"),
            "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
            "num_heads": ("num_attention_heads", "n_head", "num_heads"),
            "vocab_size": ("vocab_size",)}


def model_from_hf_config(path_or_dict: str | os.PathLike | dict[str, Any],
                         name: str | None = None) -> ModelSpec:
    """A ModelSpec from a Hugging Face ``config.json`` (a path, a model directory, or a dict).

    Reads llama/mistral-, OPT-, BLOOM- and GPT-2/NeoX-style keys. The MLP is gated (SwiGLU)
    for llama-family model types, or when an unknown type's ``hidden_act`` is silu; its width
    defaults to 4 x hidden. KV heads default to the attention heads; dtype to fp16 when the
    config names none. A missing required key raises InputError naming the file and key.
    """
    cfg, file = _read_config(path_or_dict)
    model_type = str(cfg.get("model_type", "")).lower()

    def first(keys: tuple[str, ...], default: Any = KeyError) -> Any:
        for key in keys:
            if cfg.get(key) is not None:
                return cfg[key]
        if default is KeyError:
            raise InputError(f"missing key (expected one of {', '.join(keys)})", file=file,
                             field=keys[0])
        return default

    if (first(("num_local_experts", "num_experts", "n_routed_experts"), 1) or 1) > 1:
        raise InputError("mixture-of-experts models are not supported (dense models only)",
                         file=file, field="num_local_experts")
    hidden, layers, heads, vocab = (first(_HF_KEYS[k]) for k in
                                    ("hidden_size", "num_layers", "num_heads", "vocab_size"))
    kv_heads = 1 if cfg.get("multi_query") else first(
        ("num_key_value_heads", "num_kv_heads", "n_head_kv"), heads)
    gated = (model_type in _GATED_TYPES or (model_type not in _BIASED_TYPES
             and str(cfg.get("hidden_act", "")).lower() in ("silu", "swish", "swiglu")))
    dtype = _HF_DTYPES.get(str(first(("torch_dtype", "dtype"), "float16")).lower())
    bias = model_type in _BIASED_TYPES or any(
        cfg.get(k) is True for k in ("attention_bias", "mlp_bias", "bias", "enable_bias"))
    values = dict(
        name=name or str(cfg.get("_name_or_path") or (file.parent.name if file else "hf-model")),
        num_layers=layers, hidden_size=hidden, num_heads=heads, num_kv_heads=kv_heads,
        head_dim=first(("head_dim",), None) or _head_dim(hidden, heads, file),
        ffn_size=first(("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size"),
                       4 * hidden if isinstance(hidden, int) else 0),
        ffn_gated=gated, vocab_size=vocab, tied_embeddings=bool(cfg.get("tie_word_embeddings",
                                                                         True)),
        max_position=first(("max_position_embeddings", "n_positions", "n_ctx", "seq_length"),
                           None),
        dtype=dtype or "fp16", dtype_bytes=DTYPE_BYTES[dtype or "fp16"], linear_bias=bias,
        learned_position_embeddings=model_type in _LEARNED_POS_TYPES,
        source=f"Hugging Face config {file}" if file else "Hugging Face config (dict)")
    try:
        return ModelSpec(**values)
    except InputError as err:
        raise InputError(err.reason, file=str(file) if file else "<config dict>",
                         field=err.field) from None


def _head_dim(hidden: Any, heads: Any, file: Path | None) -> Any:
    """hidden / heads where the config states no head_dim; it must divide evenly."""
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        if hidden % heads:
            raise InputError(f"{heads} heads do not divide hidden size {hidden}; give head_dim",
                             file=str(file or "<config dict>"), field="head_dim")
        return hidden // heads
    return hidden   # not a number: ModelSpec names the bad field


def _read_config(path_or_dict: Any) -> tuple[dict[str, Any], Path | None]:
    if isinstance(path_or_dict, dict):
        return path_or_dict, None
    path = Path(path_or_dict).expanduser()
    if path.is_dir():
        path = path / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("no such file (expected a Hugging Face config.json)",
                         file=str(path)) from None
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON: {err.msg}", file=str(path), line=err.lineno) from None
    if not isinstance(cfg, dict):
        raise InputError("expected a JSON object", file=str(path))
    return cfg, path


def load_model(name_or_path: str | os.PathLike) -> ModelSpec:
    """A preset by name, or a model read from a config.json path (or a directory holding one)."""
    text = os.fspath(name_or_path)
    if text.endswith(".json") or Path(text).expanduser().exists():
        return model_from_hf_config(text)
    return model_preset(text)   # names and aliases, including repo ids like 'facebook/opt-13b'


def with_dtype(model: ModelSpec, dtype: str) -> ModelSpec:
    """The same architecture served at another dtype (e.g. 'fp8' weights and KV)."""
    return dataclasses.replace(model, dtype=dtype, dtype_bytes=DTYPE_BYTES.get(dtype, 0))
