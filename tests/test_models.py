"""Model presets and Hugging Face configs: exact architectures, derived sizes, bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest

from simcluster.errors import InputError
from simcluster.models import (ModelSpec, list_models, load_model, model_from_hf_config,
                               model_preset, with_dtype)

# name -> (nominal size, published parameter count)
PUBLISHED = {
    "Llama-2-7B": (7e9, 6_738_415_616), "Llama-2-13B": (13e9, 13_015_864_320),
    "Llama-2-70B": (70e9, 68_976_648_192), "Llama-3.1-8B": (8e9, 8_030_261_248),
    "Llama-3.1-70B": (70e9, 70_553_706_496), "OPT-13B": (13e9, 12.85e9),
    "OPT-30B": (30e9, 29.97e9), "OPT-66B": (66e9, 65.7e9), "OPT-175B": (175e9, 175e9),
    "GPT-3-175B": (175e9, 175.0e9), "BLOOM-176B": (176e9, 176_247_271_424),
    # mixture-of-experts presets: totals from the model cards (hand counts in test_moe_models)
    "Mixtral-8x7B": (46.7e9, 46.7e9), "Qwen3-30B-A3B": (30.5e9, 30.5e9),
    "Qwen3-235B-A22B": (235e9, 235e9), "DeepSeek-V3": (671e9, 671e9),
    "GPT-OSS-120B": (117e9, 117e9),
}
DENSE = [n for n in PUBLISHED if model_preset(n).moe is None]

# Llama-2 7B config.json as published on Hugging Face (meta-llama/Llama-2-7b-hf).
LLAMA2_7B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
    "tie_word_embeddings": False, "torch_dtype": "float16", "vocab_size": 32000,
}
OPT_13B_CONFIG = {
    "_name_or_path": "facebook/opt-13b", "activation_function": "relu", "ffn_dim": 20480,
    "hidden_size": 5120, "max_position_embeddings": 2048, "model_type": "opt",
    "num_attention_heads": 40, "num_hidden_layers": 40, "torch_dtype": "float16",
    "vocab_size": 50272, "word_embed_proj_dim": 5120, "do_layer_norm_before": True,
}


def test_every_preset_is_listed():
    assert set(list_models()) == set(PUBLISHED)


@pytest.mark.parametrize("name", list_models())
def test_preset_contract(name):
    m = model_preset(name)
    for f in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "ffn_size",
              "vocab_size", "max_position"):
        assert isinstance(getattr(m, f), int) and getattr(m, f) > 0, f
    assert m.num_heads % m.num_kv_heads == 0 and m.gqa_group_size >= 1
    assert m.layer_weight_bytes * m.num_layers < m.weight_bytes
    assert model_preset(name.upper()) is m and load_model(name) is m
    assert m.source and m.active_params <= m.params
    if m.moe is None:     # (MoE, MLA and sliding-window presets: tests/test_moe_models.py)
        assert m.num_heads * m.head_dim == m.hidden_size == m.q_size
        assert m.kv_bytes_per_token == (2 * m.num_layers * m.num_kv_heads * m.head_dim
                                        * m.dtype_bytes)
        assert m.weight_bytes == m.params * m.dtype_bytes
        # two FLOPs per matmul weight per token: every weight but the embedding lookups and
        # norms, with the LM head counted even when tied to the embeddings
        matmul_weights = (m.params - m.embedding_params - m.lm_head_params
                          + m.vocab_size * m.hidden_size)
        assert m.linear_flops_per_token == pytest.approx(2 * matmul_weights, rel=0.001)
        assert m.attention_flops_per_token(1000) == 4 * m.num_layers * m.q_size * 1000
    nominal, published = PUBLISHED[name]
    assert m.params == pytest.approx(published, rel=0.005)
    # Llama-2-7B is 6.74B parameters: 3.7% below its '7B' label, so it gets 4%.
    assert m.params == pytest.approx(nominal, rel=0.04 if name == "Llama-2-7B" else 0.03)


def test_dense_presets_unchanged_by_the_variant_fields():
    for name in DENSE:
        m = model_preset(name)
        assert m.active_params == m.params and m.num_moe_layers == 0 and m.window_kv_bytes == 0
        assert m.kv_bytes(1000) == 1000 * m.kv_bytes_per_token


def test_llama_parameter_counts_are_exact():
    for name in ("Llama-2-7B", "Llama-2-13B", "Llama-2-70B", "Llama-3.1-8B", "Llama-3.1-70B"):
        assert model_preset(name).params == PUBLISHED[name][1]


def test_architecture_details():
    l70 = model_preset("Llama-2-70B")
    assert (l70.num_kv_heads, l70.ffn_size, l70.gqa_group_size) == (8, 28672, 8)
    l3 = model_preset("Llama-3.1-8B")
    assert (l3.vocab_size, l3.num_kv_heads, l3.dtype) == (128256, 8, "bf16")
    opt66 = model_preset("OPT-66B")
    assert (opt66.hidden_size, opt66.num_heads, opt66.head_dim) == (9216, 72, 128)
    assert not opt66.ffn_gated and opt66.ffn_size == 4 * opt66.hidden_size
    gpt3 = model_preset("GPT-3-175B")
    assert (gpt3.num_layers, gpt3.hidden_size, gpt3.num_heads) == (96, 12288, 96)
    bloom = model_preset("BLOOM-176B")
    assert (bloom.num_layers, bloom.hidden_size, bloom.num_heads, bloom.vocab_size) == (
        70, 14336, 112, 250880)


def test_kv_bytes_per_token():
    assert model_preset("Llama-2-7B").kv_bytes_per_token == 524_288          # fp16
    assert model_preset("Llama-2-70B").kv_bytes_per_token == 327_680         # GQA, 8 KV heads
    assert with_dtype(model_preset("Llama-2-7B"), "fp8").kv_bytes_per_token == 262_144


def test_presets_by_alias_and_unknown_names():
    assert model_preset("meta-llama/Llama-2-7b-hf").name == "Llama-2-7B"
    assert load_model("facebook/opt-30b").name == "OPT-30B"
    assert model_preset("llama 2 70b").name == "Llama-2-70B"
    with pytest.raises(InputError, match=r"unknown model 'Llama-9'.*Llama-2-7B.*BLOOM-176B"):
        model_preset("Llama-9")


# ------------------------------------------------------------------ Hugging Face configs
@pytest.mark.parametrize("name", list_models())
def test_hf_config_round_trip(tmp_path, name):
    preset = model_preset(name)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(preset.to_hf_config()))
    loaded = model_from_hf_config(path, name=name)
    assert loaded == preset and loaded.params == preset.params
    assert str(path) in loaded.source
    assert load_model(tmp_path).params == preset.params        # a model directory works too


def test_published_configs_match_presets(tmp_path):
    path = tmp_path / "llama" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(LLAMA2_7B_CONFIG))
    assert load_model(path) == dataclasses.replace(model_preset("Llama-2-7B"), name="llama")
    opt = model_from_hf_config(OPT_13B_CONFIG)
    assert opt.name == "facebook/opt-13b"
    assert opt == dataclasses.replace(model_preset("OPT-13B"), name="facebook/opt-13b")


def test_gpt2_style_keys():
    cfg = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None,
           "n_positions": 1024, "vocab_size": 50257, "activation_function": "gelu_new"}
    m = model_from_hf_config(cfg, name="gpt2")
    assert (m.hidden_size, m.num_layers, m.num_heads, m.ffn_size) == (768, 12, 12, 3072)
    assert not m.ffn_gated and m.tied_embeddings and m.dtype == "fp16"
    assert m.params == pytest.approx(124.4e6, rel=0.01)        # GPT-2 small: 124M


def test_missing_key_names_file_and_key(tmp_path):
    cfg = dict(LLAMA2_7B_CONFIG)
    del cfg["num_attention_heads"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(InputError) as info:
        model_from_hf_config(path)
    assert info.value.file == str(path) and info.value.field == "num_attention_heads"
    assert str(path) in str(info.value) and "n_head" in str(info.value)


MIXTRAL_LIKE = {"model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2}


@pytest.mark.parametrize("extra, field, what", [
    ({"quantization_config": "fp8"}, "quantization_config", "expected an object"),
    ({"quantization_config": {"quant_method": "awq", "bits": 4}},
     "quantization_config.quant_method", "'awq' is not modelled; known: fp8, mxfp4"),
    ({"quantization_config": {"bits": 4}}, "quantization_config.quant_method", "None"),
    ({"sliding_window": 128, "layer_types": ["sliding_attention"] * 3}, "layer_types",
     "3 entries for the model's 32 layers"),
    ({"layer_types": ["linear_attention"] * 32}, "layer_types", "'linear_attention' is not"),
    ({"sliding_window": 128, "use_sliding_window": "no"}, "use_sliding_window",
     "expected true or false"),
    ({**MIXTRAL_LIKE, "first_k_dense_replace": 40}, "first_k_dense_replace", "in [0, 32]"),
    ({**MIXTRAL_LIKE, "moe_layer_freq": 0}, "moe_layer_freq", ">= 1"),
    ({**MIXTRAL_LIKE, "n_shared_experts": -1}, "n_shared_experts", ">= 0"),
    ({**MIXTRAL_LIKE, "mlp_only_layers": [3, 32]}, "mlp_only_layers", "layer 32 is not one"),
    ({**MIXTRAL_LIKE, "decoder_sparse_step": 0}, "decoder_sparse_step", ">= 1"),
])
def test_variant_keys_are_checked_not_guessed(extra, field, what):
    """Each of these was read as something else: a string quantization_config raised
    AttributeError, awq weights were taken as fp16, layer_types of another length or kind,
    moe_layer_freq 0 and a negative n_shared_experts were used as given."""
    with pytest.raises(InputError) as err:
        model_from_hf_config({**LLAMA2_7B_CONFIG, **extra})
    assert err.value.field == field and what in err.value.reason


def test_bad_configs(tmp_path):
    with pytest.raises(InputError, match="mixture-of-experts"):
        model_from_hf_config({**LLAMA2_7B_CONFIG, "num_local_experts": 8})
    with pytest.raises(InputError, match=r"num_key_value_heads.*do not divide"):
        model_from_hf_config({**LLAMA2_7B_CONFIG, "num_key_value_heads": 5})
    with pytest.raises(InputError, match=r"head_dim.*do not divide"):
        model_from_hf_config({**LLAMA2_7B_CONFIG, "num_attention_heads": 30})
    with pytest.raises(InputError, match=r"hidden_size.*whole number"):
        model_from_hf_config({**LLAMA2_7B_CONFIG, "hidden_size": "4096"})
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON") as info:
        load_model(path)
    assert info.value.file == str(path)
    with pytest.raises(InputError, match="no such file"):
        load_model(tmp_path / "missing.json")


def test_model_spec_validates():
    base = model_preset("Llama-2-7B")
    with pytest.raises(InputError, match="num_kv_heads"):
        dataclasses.replace(base, num_kv_heads=3)
    with pytest.raises(InputError, match=r"field 'num_layers'.*>= 1"):
        dataclasses.replace(base, num_layers=0)
    with pytest.raises(InputError, match="dtype_bytes"):
        dataclasses.replace(base, dtype="fp32")
    assert dataclasses.replace(base, dtype="fp32", dtype_bytes=4).weight_bytes == 4 * base.params
    plain = ModelSpec("tiny", 2, 64, 4, 4, 16, 256, False, 100, dtype_bytes=4)
    assert plain.dtype == "fp32" and hash(plain) == hash(dataclasses.replace(plain))


def test_config_without_a_context_length_needs_max_model_len(tmp_path, h100):
    """Issue 10, defect 6: a config without max_position_embeddings loaded, then every
    simulation died with a TypeError. The model states no context length; an instance serving
    it needs max_model_len, and says so by name."""
    from conftest import make_trace, one_instance
    from simcluster.experiment import load_experiment
    from simcluster.simulation import Simulation
    cfg = {k: v for k, v in LLAMA2_7B_CONFIG.items() if k != "max_position_embeddings"}
    (tmp_path / "my-llama").mkdir()
    (tmp_path / "my-llama" / "config.json").write_text(json.dumps(cfg))
    model = load_model(tmp_path / "my-llama" / "config.json")
    assert model.max_position is None and model.name == "my-llama"
    trace = make_trace([0.0, 0.1], [100, 5000], [10, 10])
    with pytest.raises(InputError, match=r"field 'max_model_len'.*states no context length"):
        Simulation(trace, model, one_instance(h100)).run()
    res = Simulation(trace, model, one_instance(h100, max_model_len=4096)).run()
    assert res.requests.rejected.tolist() == [False, True]
    exp = tmp_path / "exp.toml"
    text = ('[trace.synthetic]\nn = 4\nrate_per_s = 1.0\nprompt = {dist = "fixed", tokens = 10}\n'
            'output = {dist = "fixed", tokens = 2}\n[model]\nconfig = "my-llama/config.json"\n'
            '[[instances]]\ndevice = "H100-SXM"\n')
    exp.write_text(text)
    with pytest.raises(InputError, match=r"exp.toml: field 'instances\[0\].scheduler."
                                         r"max_model_len'.*my-llama"):
        load_experiment(exp)
    exp.write_text(text + "[instances.scheduler]\nmax_model_len = 4096\n")
    assert load_experiment(exp).run().summary()["finished"] == 4


@pytest.mark.parametrize("key, value, match", [
    ("torch_dtype", "float13", "unknown dtype 'float13'"),
    ("tie_word_embeddings", "false", "expected true or false"),
    ("head_dim", 0, "whole number >= 1"),
    ("max_position_embeddings", 0, "whole number >= 1"),
    ("hidden_size", 4096.0, "expected a whole number"),
])
def test_bad_config_values_name_the_key(key, value, match):
    with pytest.raises(InputError, match=match) as info:
        model_from_hf_config({**LLAMA2_7B_CONFIG, key: value})
    assert info.value.field == key


def test_config_in_the_current_folder_is_named_after_the_folder(tmp_path, monkeypatch):
    (tmp_path / "llama-local").mkdir()
    (tmp_path / "llama-local" / "config.json").write_text(json.dumps(LLAMA2_7B_CONFIG))
    monkeypatch.chdir(tmp_path / "llama-local")
    assert load_model("config.json").name == "llama-local"
    (tmp_path / "llama-local" / "tiny.json").write_text(json.dumps(LLAMA2_7B_CONFIG))
    assert load_model("tiny.json").name == "tiny"
