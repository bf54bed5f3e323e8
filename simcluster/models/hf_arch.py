"""Hugging Face config keys of the attention and FFN variants: MoE, MLA, sliding windows.

:func:`arch_from_hf` reads the keys that the released configs of Mixtral, Qwen2/3-MoE,
DeepSeek-V2/V3 and GPT-OSS use (and their spellings elsewhere) into :class:`ModelSpec` fields;
:func:`arch_to_hf` writes them back, so that every preset round-trips through ``config.json``.

=====================  ========================================================================
what                   keys read (first one present wins)
=====================  ========================================================================
routed experts         ``num_local_experts`` (Mixtral, GPT-OSS), ``num_experts`` (Qwen),
                       ``n_routed_experts`` (DeepSeek); 1 or absent: a dense model
experts per token      ``num_experts_per_tok``, ``experts_per_token``, ``num_experts_per_token``
expert width           ``moe_intermediate_size``, else ``intermediate_size`` (Mixtral, GPT-OSS)
shared experts         ``shared_expert_intermediate_size`` (Qwen2-MoE), else
                       ``n_shared_experts x moe_intermediate_size`` (DeepSeek)
dense layers           ``first_k_dense_replace`` (the first k), ``mlp_only_layers``,
                       ``decoder_sparse_step`` (layer i is MoE when (i+1) % step == 0),
                       ``moe_layer_freq`` (DeepSeek-V2: i % freq == 0 past the first k)
latent attention       ``kv_lora_rank``, ``q_lora_rank``, ``qk_nope_head_dim``,
                       ``qk_rope_head_dim``, ``v_head_dim``
sliding window         ``sliding_window`` with ``layer_types`` (one entry a layer, each
                       ``full_attention`` or ``sliding_attention``), or ``use_sliding_window`` +
                       ``max_window_layers`` (Qwen2: layers from that index slide), or a
                       ``sliding_window`` alone (every layer: Mistral-7B v0.1)
quantised weights      ``quantization_config.quant_method``: ``fp8`` (DeepSeek-V3: weights fp8,
                       KV at ``torch_dtype``), ``mxfp4`` (GPT-OSS: routed experts only); any
                       other method (awq, gptq, ...) is refused, not read as unquantised
per model type         qwen3 / qwen3_moe: per-head QK norms; gpt_oss: attention sinks and
                       biased experts and router
=====================  ========================================================================

Counts are checked where they are read (layers named by ``mlp_only_layers`` exist,
``first_k_dense_replace`` at most the layers, steps and frequencies >= 1), each error naming
the config's key.
"""

from __future__ import annotations

from typing import Any, Callable

from simcluster.errors import InputError
from simcluster.models.mla import MLASpec
from simcluster.models.moe import MoESpec

QK_NORM_TYPES = {"qwen3", "qwen3_moe"}
SINK_TYPES = {"gpt_oss"}
_QUANT_DTYPES = {"fp8": "fp8"}
_HF_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16",
             "fp8": "float8_e4m3fn", "int8": "int8"}


def arch_from_hf(cfg: dict[str, Any], model_type: str, first: Callable, file,
                 dtype: str) -> dict[str, Any]:
    """ModelSpec fields of the variants a config describes (see module docstring).

    ``first(keys, default)`` is the reader's key lookup; ``dtype`` the model dtype read from
    ``torch_dtype``. Only fields that differ from a dense MHA/GQA model are returned.
    """
    out: dict[str, Any] = {}
    layers = first(("num_hidden_layers", "n_layer", "num_layers"))
    quant = _quant_method(cfg, file)
    moe = _moe(cfg, model_type, first, file, layers, quant)
    if moe is not None:
        out["moe"] = moe
    if cfg.get("kv_lora_rank"):
        mla = _mla(cfg, file)
        out["mla"] = mla
        out["head_dim"] = mla.qk_head_dim
    window, n = _sliding(cfg, layers, file)
    if window is not None and n:
        out["sliding_window"], out["sliding_window_layers"] = window, n
    if model_type in QK_NORM_TYPES or cfg.get("use_qk_norm") is True:
        out["qk_norm"] = True
    if model_type in SINK_TYPES:
        out["attention_sinks"] = True
    if quant in _QUANT_DTYPES:
        out.update(dtype=_QUANT_DTYPES[quant], dtype_bytes=1, kv_dtype=dtype)
    kv = cfg.get("kv_cache_dtype")
    if kv is not None:
        out["kv_dtype"] = str(kv)
    return out


#: quant_method values whose weights are modelled (others, e.g. awq or gptq, are refused:
#: reading them as unquantised would misstate the weights' memory and bytes several-fold).
QUANT_METHODS = ("fp8", "mxfp4")


def _quant_method(cfg, file) -> str:
    """``quantization_config.quant_method``, lower case ('' without one); one this module
    does not model is an InputError (see :data:`QUANT_METHODS`)."""
    q = cfg.get("quantization_config")
    if q is None:
        return ""
    method = q.get("quant_method")
    if not isinstance(method, str) or method.lower() not in QUANT_METHODS:
        raise InputError(f"quant_method {method!r} is not modelled; known: "
                         f"{', '.join(QUANT_METHODS)} (drop quantization_config to model the "
                         "unquantised weights)", file=str(file or "<config dict>"),
                         field="quantization_config.quant_method")
    return method.lower()


def _count(cfg, key: str, file, least: int = 0, most: int | None = None, default: int = 0):
    """``cfg[key]`` (a whole number, :func:`~.hf_config._check_types` saw to that) in
    ``[least, most]``, or ``default`` where absent."""
    v = cfg.get(key)
    if v is None:
        return default
    if v < least or (most is not None and v > most):
        span = f">= {least}" if most is None else f"in [{least}, {most}]"
        raise InputError(f"expected a whole number {span}, got {v}",
                         file=str(file or "<config dict>"), field=key)
    return v


def _moe(cfg, model_type, first, file, layers, quant: str) -> MoESpec | None:
    experts = first(("num_local_experts", "num_experts", "n_routed_experts"), None)
    if experts is None or experts == 1:
        return None
    k = first(("num_experts_per_tok", "experts_per_token", "num_experts_per_token"), None)
    if k is None:
        raise InputError("a mixture-of-experts config needs the experts per token "
                         "(expected num_experts_per_tok or experts_per_token)",
                         file=str(file or "<config dict>"), field="num_experts_per_tok")
    width = first(("moe_intermediate_size", "intermediate_size"), None)
    shared = cfg.get("shared_expert_intermediate_size")
    if shared is None:
        shared = (_count(cfg, "n_shared_experts", file)
                  * (cfg.get("moe_intermediate_size") or 0))
    dense = set(cfg.get("mlp_only_layers") or ())
    if isinstance(layers, int):
        first_k = _count(cfg, "first_k_dense_replace", file, 0, layers)
        step = _count(cfg, "decoder_sparse_step", file, 1, default=1)
        freq = cfg.get("moe_layer_freq", 1)
        if isinstance(freq, bool) or not isinstance(freq, int) or freq < 1:
            raise InputError(f"expected a whole number >= 1 (every freq-th layer is MoE), got "
                             f"{freq!r}", file=str(file or "<config dict>"),
                             field="moe_layer_freq")
        outside = sorted(i for i in dense if isinstance(i, int) and not 0 <= i < layers)
        if outside:
            raise InputError(f"layer {outside[0]} is not one of the model's {layers} "
                             f"(0 .. {layers - 1})", file=str(file or "<config dict>"),
                             field="mlp_only_layers")
        dense |= {i for i in range(layers)
                  if i < first_k or (i + 1) % step or (i - first_k) % freq}
    gpt_oss = model_type in SINK_TYPES
    try:
        return MoESpec(num_experts=experts, experts_per_token=k, expert_ffn_size=width,
                       shared_ffn_size=shared, dense_layers=tuple(sorted(dense)),
                       router_bias=gpt_oss or cfg.get("router_bias") is True,
                       expert_bias=gpt_oss or cfg.get("expert_bias") is True,
                       expert_dtype="mxfp4" if quant == "mxfp4" else None)
    except (InputError, TypeError) as err:
        raise InputError(getattr(err, "reason", str(err)), file=str(file or "<config dict>"),
                         field=getattr(err, "field", None)) from None


def _mla(cfg, file) -> MLASpec:
    try:
        return MLASpec(kv_lora_rank=cfg.get("kv_lora_rank"),
                       qk_nope_head_dim=cfg.get("qk_nope_head_dim"),
                       qk_rope_head_dim=cfg.get("qk_rope_head_dim"),
                       v_head_dim=cfg.get("v_head_dim"), q_lora_rank=cfg.get("q_lora_rank"))
    except InputError as err:
        raise InputError(err.reason, file=str(file or "<config dict>"),
                         field=err.field) from None


#: ``layer_types`` entries modelled: a full-attention layer, a sliding-window one.
LAYER_TYPES = ("full_attention", "sliding_attention")


def _sliding(cfg, layers, file=None) -> tuple[int | None, int]:
    window = cfg.get("sliding_window")
    types = cfg.get("layer_types")
    if types is not None and isinstance(layers, int):
        odd = [t for t in types if t not in LAYER_TYPES]
        if odd or len(types) != layers:
            what = (f"{odd[0]!r} is not a layer type modelled ({', '.join(LAYER_TYPES)})"
                    if odd else f"{len(types)} entries for the model's {layers} layers")
            raise InputError(what, file=str(file or "<config dict>"), field="layer_types")
    if not window or not isinstance(layers, int):
        return None, 0
    if types is not None:
        return window, sum(1 for t in types if t == "sliding_attention")
    if "use_sliding_window" in cfg:
        if not cfg.get("use_sliding_window"):
            return None, 0
        start = _count(cfg, "max_window_layers", file)
        return window, max(0, layers - start)
    return window, layers


def arch_to_hf(m) -> dict[str, Any]:
    """The variant keys of ``m`` (a ModelSpec) that :func:`arch_from_hf` reads back."""
    out: dict[str, Any] = {}
    if m.moe is not None:
        moe = m.moe
        out.update(num_experts=moe.num_experts, num_experts_per_tok=moe.experts_per_token,
                   moe_intermediate_size=moe.expert_ffn_size,
                   shared_expert_intermediate_size=moe.shared_ffn_size,
                   mlp_only_layers=list(moe.dense_layers))
        if moe.router_bias:
            out["router_bias"] = True
        if moe.expert_bias:
            out["expert_bias"] = True
        if moe.expert_dtype == "mxfp4":
            out["quantization_config"] = {"quant_method": "mxfp4"}
    if m.mla is not None:
        a = m.mla
        out.update(kv_lora_rank=a.kv_lora_rank, q_lora_rank=a.q_lora_rank,
                   qk_nope_head_dim=a.qk_nope_head_dim, qk_rope_head_dim=a.qk_rope_head_dim,
                   v_head_dim=a.v_head_dim)
    if m.sliding_window is not None:
        n = m.sliding_window_layers
        out.update(sliding_window=m.sliding_window,
                   layer_types=["sliding_attention"] * n + ["full_attention"] * (m.num_layers - n))
    if m.qk_norm:
        out["use_qk_norm"] = True
    if m.attention_bias:
        out["attention_bias"] = True
    if m.kv_dtype is not None:
        if m.dtype == "fp8" and "quantization_config" not in out:
            out.update(quantization_config={"quant_method": "fp8"},
                       torch_dtype=_HF_NAMES.get(m.kv_dtype, m.kv_dtype))
        else:
            out["kv_cache_dtype"] = m.kv_dtype
    return out


def hf_model_type(m, default: str) -> str:
    """The ``model_type`` that makes the reader infer ``m``'s per-type features."""
    if m.attention_sinks:
        return "gpt_oss"
    if m.mla is not None:
        return "deepseek_v3"
    if m.qk_norm:
        return "qwen3_moe" if m.moe is not None else "qwen3"
    if m.moe is not None:
        return "mixtral"
    return default
