"""Hugging Face ``config.json`` -> :class:`ModelSpec`, and :func:`load_model` (preset or file)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from simcluster.errors import InputError
from simcluster.models.hf_arch import arch_from_hf
from simcluster.models.presets import model_preset
from simcluster.models.spec import _HF_DTYPES, DTYPE_BYTES, ModelSpec


_GATED_TYPES = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3",
                "internlm2", "yi", "deepseek", "olmo", "olmo2", "granite", "cohere",
                "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "gpt_oss"}
_BIASED_TYPES = {"opt", "bloom", "gpt2", "gpt_neox", "gptj", "gpt_bigcode", "gpt_neo"}
_LEARNED_POS_TYPES = {"opt", "gpt2", "gpt_bigcode", "gpt_neo"}
_HF_KEYS = {"hidden_size": ("hidden_size", "n_embd", "d_model", "n_embed"),
            "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
            "num_heads": ("num_attention_heads", "n_head", "num_heads"),
            "vocab_size": ("vocab_size",)}


def model_from_hf_config(path_or_dict: str | os.PathLike | dict[str, Any],
                         name: str | None = None) -> ModelSpec:
    """A ModelSpec from a Hugging Face ``config.json`` (a path, a model directory, or a dict).

    Reads llama/mistral-, OPT-, BLOOM- and GPT-2/NeoX-style keys, and the mixture-of-experts,
    latent-attention and sliding-window keys of Mixtral, Qwen-MoE, DeepSeek and GPT-OSS
    (:mod:`.hf_arch`). The MLP is gated (SwiGLU)
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

    hidden, layers, heads, vocab = (first(_HF_KEYS[k]) for k in
                                    ("hidden_size", "num_layers", "num_heads", "vocab_size"))
    kv_heads = 1 if cfg.get("multi_query") else first(
        ("num_key_value_heads", "num_kv_heads", "n_head_kv"), heads)
    gated = (model_type in _GATED_TYPES or (model_type not in _BIASED_TYPES
             and str(cfg.get("hidden_act", "")).lower() in ("silu", "swish", "swiglu")))
    dtype = _HF_DTYPES.get(str(first(("torch_dtype", "dtype"), "float16")).lower())
    bias = model_type in _BIASED_TYPES or any(
        cfg.get(k) is True for k in ("mlp_bias", "bias", "enable_bias"))
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
        attention_bias=not bias and cfg.get("attention_bias") is True,
        source=f"Hugging Face config {file}" if file else "Hugging Face config (dict)")
    # mixture of experts, latent attention, sliding windows, quantised weights (hf_arch.py)
    values.update(arch_from_hf(cfg, model_type, first, file, values["dtype"]))
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


