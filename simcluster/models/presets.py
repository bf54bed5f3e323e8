"""Model presets: the exact architectures of the models the source papers serve, cited, and
the mixture-of-experts models served today (:mod:`.moe_presets`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from simcluster.errors import UnknownNameError, did_you_mean, path_like
from simcluster.models.moe_presets import MOE_PRESETS
from simcluster.models.spec import DTYPE_BYTES, ModelSpec


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
) + MOE_PRESETS}


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def list_models() -> list[str]:
    """Names of all model presets."""
    return list(PRESETS)


def model_preset(name: str) -> ModelSpec:
    """A preset by name or alias (e.g. a Hugging Face repo id), ignoring case, '-', '_'."""
    if not isinstance(name, str):
        raise TypeError(f"model: expected a preset's name; got {type(name).__name__} {name!r}")
    for spec in PRESETS.values():
        if _norm(name) in {_norm(spec.name), *map(_norm, spec.aliases)}:
            return spec
    names = [n for spec in PRESETS.values() for n in (spec.name, *spec.aliases)]
    raise UnknownNameError(f"unknown model {name!r}{did_you_mean(name, names)}; presets: "
                           f"{', '.join(PRESETS)} (or give the path of a Hugging Face "
                           "config.json)", field="model")


def load_model(name_or_path: str | os.PathLike) -> ModelSpec:
    """A preset by name, or a model read from a config.json path (or a directory holding one:
    :func:`~.hf_config.model_from_hf_config`, imported only then)."""
    text = os.fspath(path_like(name_or_path, "model"))
    if text.endswith(".json") or Path(text).expanduser().exists():
        from simcluster.models.hf_config import model_from_hf_config
        return model_from_hf_config(text)
    return model_preset(text)   # names and aliases, including repo ids like 'facebook/opt-13b'
