"""Hugging Face ``config.json`` -> :class:`ModelSpec` (:func:`~.presets.load_model` takes a
preset's name or such a file)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from simcluster.errors import InputError, unique_keys
from simcluster.models.hf_arch import arch_from_hf
from simcluster.models.spec import _HF_DTYPES, DTYPE_BYTES, ModelSpec


_GATED_TYPES = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3",
                "internlm2", "yi", "deepseek", "olmo", "olmo2", "granite", "cohere",
                "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "gpt_oss"}
_BIASED_TYPES = {"opt", "bloom", "gpt2", "gpt_neox", "gptj", "gpt_bigcode", "gpt_neo"}
_LEARNED_POS_TYPES = {"opt", "gpt2", "gpt_bigcode", "gpt_neo"}
_HF_KEYS = {"hidden_size": ("hidden_size", "n_embd", "d_model", "n_embed"),
            "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
            "num_heads": ("num_attention_heads", "n_head", "num_heads"),
            "vocab_size": ("vocab_size",),
            "num_kv_heads": ("num_key_value_heads", "num_kv_heads", "n_head_kv"),
            "head_dim": ("head_dim",),
            "ffn_size": ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size"),
            "max_position": ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"),
            "dtype": ("torch_dtype", "dtype"),
            "tied_embeddings": ("tie_word_embeddings",)}
# JSON types of the keys read (null is "not stated" for every key)
_JSON_TYPES = {**{k: int for f in ("hidden_size", "num_layers", "num_heads", "vocab_size",
                                   "num_kv_heads", "head_dim", "ffn_size", "max_position")
                  for k in _HF_KEYS[f]},
               **{k: int for k in ("num_local_experts", "num_experts", "n_routed_experts",
                                   "n_shared_experts", "first_k_dense_replace",
                                   "decoder_sparse_step", "max_window_layers")},
               **{k: bool for k in ("tie_word_embeddings", "multi_query", "attention_bias",
                                    "mlp_bias", "bias", "enable_bias", "use_sliding_window",
                                    "use_qk_norm", "router_bias", "expert_bias")},
               **{k: str for k in ("model_type", "hidden_act", "torch_dtype", "dtype")},
               **{k: list for k in ("layer_types", "mlp_only_layers")},
               "quantization_config": dict}


def model_from_hf_config(path_or_dict: str | os.PathLike | dict[str, Any],
                         name: str | None = None) -> ModelSpec:
    """A ModelSpec from a Hugging Face ``config.json`` (a path, a model directory, or a dict).

    Reads llama/mistral-, OPT-, BLOOM- and GPT-2/NeoX-style keys, and the mixture-of-experts,
    latent-attention and sliding-window keys of Mixtral, Qwen-MoE, DeepSeek and GPT-OSS
    (:mod:`.hf_arch`). The MLP is gated (SwiGLU)
    for llama-family model types, or when an unknown type's ``hidden_act`` is silu; its width
    defaults to 4 x hidden. KV heads default to the attention heads; dtype to fp16 when the
    config names none. A missing required key, a value of the wrong JSON type (``"false"``
    for a boolean), an unknown ``torch_dtype`` or a value out of range raises InputError
    naming the file and the config's key. ``max_position_embeddings`` (or its GPT-2 names)
    may be absent: the model then states no context length, and the instances serving it
    must set ``max_model_len``.
    """
    cfg, file = _read_config(path_or_dict)
    where = str(file) if file else "<config dict>"
    _check_types(cfg, where)
    model_type = str(cfg.get("model_type", "")).lower()

    def first(keys: tuple[str, ...], default: Any = KeyError) -> Any:
        for key in keys:
            if cfg.get(key) is not None:
                return cfg[key]
        if default is KeyError:
            raise InputError(f"missing key (expected one of {', '.join(keys)})", file=where,
                             field=keys[0])
        return default

    hidden, layers, heads, vocab = (first(_HF_KEYS[k]) for k in
                                    ("hidden_size", "num_layers", "num_heads", "vocab_size"))
    kv_heads = 1 if cfg.get("multi_query") else first(_HF_KEYS["num_kv_heads"], heads)
    gated = (model_type in _GATED_TYPES or (model_type not in _BIASED_TYPES
             and str(cfg.get("hidden_act", "")).lower() in ("silu", "swish", "swiglu")))
    dtype_key = next((k for k in _HF_KEYS["dtype"] if cfg.get(k) is not None), None)
    dtype = _HF_DTYPES.get(str(cfg[dtype_key]).lower()) if dtype_key else "fp16"
    if dtype is None:
        raise InputError(f"unknown dtype {cfg[dtype_key]!r}; known: "
                         f"{', '.join(sorted(_HF_DTYPES))}", file=where, field=dtype_key)
    head_dim = first(("head_dim",), None)
    bias = model_type in _BIASED_TYPES or any(
        cfg.get(k) is True for k in ("mlp_bias", "bias", "enable_bias"))
    values = dict(
        name=name or str(cfg.get("_name_or_path") or _name_of(file)),
        num_layers=layers, hidden_size=hidden, num_heads=heads, num_kv_heads=kv_heads,
        head_dim=head_dim if head_dim is not None else _head_dim(hidden, heads, file),
        ffn_size=first(("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size"),
                       4 * hidden if isinstance(hidden, int) else 0),
        ffn_gated=gated, vocab_size=vocab,
        tied_embeddings=cfg.get("tie_word_embeddings", True) is not False,
        max_position=first(_HF_KEYS["max_position"], None),
        dtype=dtype, dtype_bytes=DTYPE_BYTES[dtype], linear_bias=bias,
        learned_position_embeddings=model_type in _LEARNED_POS_TYPES,
        attention_bias=not bias and cfg.get("attention_bias") is True,
        source=f"Hugging Face config {file}" if file else "Hugging Face config (dict)")
    # mixture of experts, latent attention, sliding windows, quantised weights (hf_arch.py)
    values.update(arch_from_hf(cfg, model_type, first, file, values["dtype"]))
    try:
        return ModelSpec(**values)
    except InputError as err:   # name the config's key, not the ModelSpec field
        keys = _HF_KEYS.get(err.field or "", ())
        field = next((k for k in keys if cfg.get(k) is not None), keys[0] if keys else err.field)
        raise InputError(err.reason, file=where, field=field) from None


def _check_types(cfg: dict[str, Any], where: str) -> None:
    """Every key read has its JSON type (or null): no "false" read as true, no "4096"."""
    for key, kind in _JSON_TYPES.items():
        value = cfg.get(key)
        if value is None:
            continue
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise InputError(f"expected a whole number, got {value!r}", file=where, field=key)
        if kind is not int and not isinstance(value, kind):
            expected = {bool: "true or false", str: "a string", list: "a list",
                        dict: "an object ({...})"}[kind]
            raise InputError(f"expected {expected}, got {value!r}", file=where, field=key)


def _name_of(file: Path | None) -> str:
    """A model read from ``.../NAME/config.json`` is called NAME (the folder of a config in
    the current folder included); a config file of another name is called by its stem."""
    if file is None:
        return "hf-model"
    path = file.resolve()
    return (path.parent.name or "hf-model") if path.stem == "config" else path.stem


def _head_dim(hidden: Any, heads: Any, file: Path | None) -> Any:
    """hidden / heads where the config states no head_dim; it must divide evenly."""
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        if hidden % heads:
            raise InputError(f"{heads} attention heads do not divide hidden size {hidden} "
                             "(num_attention_heads, hidden_size); give head_dim",
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
        cfg = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=unique_keys)
    except InputError as err:          # (a key given twice)
        raise InputError(err.reason, file=str(path), field=err.field) from None
    except FileNotFoundError:
        raise InputError("no such file (expected a Hugging Face config.json)",
                         file=str(path)) from None
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text ({err.reason} at byte {err.start})",
                         file=str(path)) from None
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON: {err.msg}", file=str(path), line=err.lineno) from None
    if not isinstance(cfg, dict):
        raise InputError("expected a JSON object", file=str(path))
    return cfg, path
