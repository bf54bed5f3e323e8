"""Mixture-of-experts, latent-attention and sliding-window models: hand counts from the configs.

Each preset's parameters, weight bytes, FLOPs per token and KV bytes are counted here by hand
from the published ``config.json`` fields (written out below, as released on Hugging Face),
independently of ModelSpec's own accounting.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from simcluster.errors import InputError
from simcluster.models import load_model, model_from_hf_config, model_preset
from simcluster.models.mla import MLASpec
from simcluster.models.moe import MoESpec

MIXTRAL = {"architectures": ["MixtralForCausalLM"], "hidden_act": "silu", "hidden_size": 4096,
           "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mixtral",
           "num_attention_heads": 32, "num_experts_per_tok": 2, "num_hidden_layers": 32,
           "num_key_value_heads": 8, "num_local_experts": 8, "rms_norm_eps": 1e-05,
           "rope_theta": 1e6, "sliding_window": None, "tie_word_embeddings": False,
           "torch_dtype": "bfloat16", "vocab_size": 32000}
QWEN3_30B = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
             "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 6144,
             "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32,
             "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128,
             "num_experts_per_tok": 8, "decoder_sparse_step": 1, "mlp_only_layers": [],
             "norm_topk_prob": True, "vocab_size": 151936, "max_position_embeddings": 40960,
             "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": None,
             "max_window_layers": 48, "attention_bias": False, "torch_dtype": "bfloat16"}
QWEN3_235B = {**QWEN3_30B, "hidden_size": 4096, "intermediate_size": 12288,
              "moe_intermediate_size": 1536, "num_hidden_layers": 94, "num_attention_heads": 64,
              "max_window_layers": 94}
DEEPSEEK_V3 = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
               "hidden_act": "silu", "hidden_size": 7168, "intermediate_size": 18432,
               "moe_intermediate_size": 2048, "num_hidden_layers": 61,
               "num_attention_heads": 128, "num_key_value_heads": 128, "n_routed_experts": 256,
               "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
               "moe_layer_freq": 1, "n_group": 8, "topk_group": 4, "q_lora_rank": 1536,
               "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
               "v_head_dim": 128, "vocab_size": 129280, "max_position_embeddings": 163840,
               "num_nextn_predict_layers": 1, "tie_word_embeddings": False,
               "attention_bias": False, "torch_dtype": "bfloat16",
               "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                                       "quant_method": "fp8", "weight_block_size": [128, 128]}}
GPT_OSS_120B = {"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
                "hidden_act": "silu", "hidden_size": 2880, "intermediate_size": 2880,
                "num_hidden_layers": 36, "num_attention_heads": 64, "num_key_value_heads": 8,
                "head_dim": 64, "num_local_experts": 128, "num_experts_per_tok": 4,
                "experts_per_token": 4, "vocab_size": 201088, "max_position_embeddings": 131072,
                "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"] * 18,
                "attention_bias": True, "swiglu_limit": 7.0, "rope_theta": 150000,
                "tie_word_embeddings": False, "torch_dtype": "bfloat16",
                "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
                    "model.layers.*.self_attn", "model.layers.*.mlp.router",
                    "model.embed_tokens", "lm_head"]}}
CONFIGS = {"Mixtral-8x7B": MIXTRAL, "Qwen3-30B-A3B": QWEN3_30B, "Qwen3-235B-A22B": QWEN3_235B,
           "DeepSeek-V3": DEEPSEEK_V3, "GPT-OSS-120B": GPT_OSS_120B}


def hand_mixtral():
    attn = 2 * 4096 * 4096 + 2 * 4096 * 1024            # q, o (32 x 128) and k, v (8 x 128)
    expert = 3 * 4096 * 14336                            # w1, w3, w2
    layer = attn + 8 * expert + 4096 * 8 + 2 * 4096      # + router + two RMSNorms
    params = 32 * layer + 2 * 32000 * 4096 + 4096        # + embeddings, head, final norm
    flops = 2 * (32 * (attn + 2 * expert + 4096 * 8) + 32000 * 4096)
    return dict(params=params, active=params - 32 * 6 * expert, bytes=2 * params, flops=flops,
                kv=2 * 32 * 8 * 128 * 2)


def hand_qwen3(h, layers, heads, moe_ffn):
    attn = h * heads * 128 + 2 * h * 4 * 128 + heads * 128 * h   # q, k, v (4 KV heads), o
    attn_w = attn + 2 * 128                                      # + q_norm, k_norm
    expert = 3 * h * moe_ffn
    layer = attn_w + 128 * expert + h * 128 + 2 * h
    params = layers * layer + 2 * 151936 * h + h
    flops = 2 * (layers * (attn + 8 * expert + h * 128) + 151936 * h)
    return dict(params=params, active=params - layers * 120 * expert, bytes=2 * params,
                flops=flops, kv=2 * layers * 4 * 128 * 2)


def hand_deepseek_v3():
    h = 7168
    attn_w = (h * 1536 + 1536 * 128 * 192 + h * (512 + 64) + 512 * 128 * (128 + 128)
              + 128 * 128 * h)                            # q_a, q_b, kv_a (+rope), kv_b, o
    attn = attn_w + 1536 + 512                            # + q_a and kv_a norms
    dense = 3 * h * 18432
    expert = 3 * h * 2048
    moe = 256 * expert + expert + 256 * h                 # routed, one shared, router
    params = 61 * (attn + 2 * h) + 3 * dense + 58 * moe + 2 * 129280 * h + h
    flops = 2 * (61 * attn_w + 3 * dense + 58 * (9 * expert + 256 * h) + 129280 * h)
    return dict(params=params, active=params - 58 * 248 * expert, bytes=params,   # fp8
                flops=flops, kv=61 * (512 + 64) * 2)      # latent + rope key, bf16 cache


def hand_gpt_oss_120b():
    h = 2880
    attn_w = h * 4096 + 2 * h * 512 + 4096 * h            # q (64 x 64), k, v (8 x 64), o
    attn = attn_w + 4096 + 2 * 512 + h + 64               # + biases and 64 sinks
    expert = h * 2 * 2880 + 2 * 2880 + 2880 * h + h       # gate_up, down, with biases
    layer = attn + 128 * expert + (h * 128 + 128) + 2 * h
    params = 36 * layer + 2 * 201088 * h + h
    experts = 36 * 128 * expert
    flops = 2 * (36 * (attn_w + 4 * 3 * h * 2880 + h * 128) + 201088 * h)
    return dict(params=params, active=params - 36 * 124 * expert,
                bytes=int((params - experts) * 2 + experts * 17 / 32), flops=flops,
                kv=18 * 2 * 8 * 64 * 2)                   # 18 full-attention layers


HAND = {"Mixtral-8x7B": hand_mixtral, "Qwen3-30B-A3B": lambda: hand_qwen3(2048, 48, 32, 768),
        "Qwen3-235B-A22B": lambda: hand_qwen3(4096, 94, 64, 1536),
        "DeepSeek-V3": hand_deepseek_v3, "GPT-OSS-120B": hand_gpt_oss_120b}
CARD_TOTAL = {"Mixtral-8x7B": 46.7e9, "Qwen3-30B-A3B": 30.5e9, "Qwen3-235B-A22B": 235e9,
              "DeepSeek-V3": 671e9, "GPT-OSS-120B": 117e9}


@pytest.mark.parametrize("name", list(HAND))
def test_moe_preset_against_hand_count(name):
    m, hand = model_preset(name), HAND[name]()
    assert m.params == hand["params"]
    assert m.active_params == hand["active"]
    assert m.weight_bytes == hand["bytes"]
    assert m.linear_flops_per_token == hand["flops"]
    assert m.kv_bytes_per_token == hand["kv"]
    assert m.params == pytest.approx(CARD_TOTAL[name], rel=0.005)


def test_active_parameters_match_the_cards():
    assert model_preset("Mixtral-8x7B").active_params == pytest.approx(12.9e9, rel=0.01)
    assert model_preset("Qwen3-30B-A3B").active_params == pytest.approx(3.3e9, rel=0.02)
    assert model_preset("Qwen3-235B-A22B").active_params == pytest.approx(22e9, rel=0.01)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_published_config_reads_as_the_preset(tmp_path, name):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIGS[name]))
    loaded = load_model(path)
    assert loaded == dataclasses.replace(model_preset(name), name=loaded.name)
    assert loaded.params == HAND[name]()["params"]


def test_sliding_window_kv_and_attention():
    m = model_preset("GPT-OSS-120B")
    assert (m.sliding_window, m.sliding_window_layers, m.window_layers) == (128, 18, 18)
    assert m.window_kv_bytes == 18 * 128 * 2 * 8 * 64 * 2
    # 18 full layers grow with the context; 18 sliding layers stop at 128 tokens
    assert m.kv_bytes(100) == 100 * 36 * 2 * 8 * 64 * 2
    assert m.kv_bytes(1000) == 1000 * m.kv_bytes_per_token + m.window_kv_bytes
    q = 64 * 64
    assert m.attention_flops_per_token(1000) == 4 * q * (18 * 1000 + 18 * 128)
    # every layer sliding (Mistral-7B v0.1): compute windowed, KV held at full length
    cfg = {"model_type": "mistral", "hidden_size": 4096, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
           "vocab_size": 32000, "sliding_window": 4096, "torch_dtype": "bfloat16"}
    mistral = model_from_hf_config(cfg)
    assert mistral.sliding_window_layers == 32 and mistral.window_layers == 0
    assert mistral.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 and mistral.window_kv_bytes == 0
    assert mistral.attention_flops_per_token(8192) == 4 * 4096 * 32 * 4096


def test_mla_kv_and_attention_flops():
    m = model_preset("DeepSeek-V3")
    assert m.head_dim == 192 and m.mla.latent_dim == 576
    # expanded form: q.k over 192 dims and p.v over 128 for each of 128 heads
    assert m.attention_flops_per_token(100) == 61 * 2 * 128 * (192 + 128) * 100
    assert m.mla.absorbed_flops_per_pair(128) == 2 * 128 * (576 + 512)
    assert m.kv_bytes(1000) == 1000 * 61 * 576 * 2
    assert m.dtype == "fp8" and m.kv_dtype == "bf16" and m.kv_dtype_bytes == 2


def test_qwen_layer_patterns_and_shared_experts():
    cfg = dict(QWEN3_30B, mlp_only_layers=[0, 5], decoder_sparse_step=2)
    m = model_from_hf_config(cfg)
    # sparse step 2: odd-numbered layers (1-based even) are MoE; 0 and 5 forced dense
    assert m.moe.dense_layers == tuple(sorted({0, 5} | set(range(0, 48, 2))))
    assert m.num_moe_layers == 48 - len(m.moe.dense_layers)
    q2 = {"model_type": "qwen2_moe", "hidden_size": 2048, "num_hidden_layers": 24,
          "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 5632,
          "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
          "num_experts": 60, "num_experts_per_tok": 4, "vocab_size": 151936,
          "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    qm = model_from_hf_config(q2)
    assert qm.moe.shared_ffn_size == 5632 and qm.num_moe_layers == 24
    assert qm.params == pytest.approx(14.3e9, rel=0.01)   # Qwen1.5-MoE-A2.7B: 14.3B total


def test_bad_moe_and_mla_fields():
    with pytest.raises(InputError, match="experts per token"):
        model_from_hf_config({**MIXTRAL, "num_experts_per_tok": None})
    with pytest.raises(InputError, match="experts_per_token"):
        MoESpec(num_experts=8, experts_per_token=9, expert_ffn_size=10)
    with pytest.raises(InputError, match="expert_dtype"):
        MoESpec(num_experts=8, experts_per_token=2, expert_ffn_size=10, expert_dtype="fp3")
    with pytest.raises(InputError, match="repeated"):
        MoESpec(num_experts=8, experts_per_token=2, expert_ffn_size=10, dense_layers=(1, 1))
    with pytest.raises(InputError, match="mla.kv_lora_rank"):
        MLASpec(kv_lora_rank=0, qk_nope_head_dim=1, qk_rope_head_dim=1, v_head_dim=1)
    m = model_preset("Mixtral-8x7B")
    with pytest.raises(InputError, match="below num_layers"):
        dataclasses.replace(m, moe=dataclasses.replace(m.moe, dense_layers=(40,)))
    with pytest.raises(InputError, match="sliding_window_layers"):
        dataclasses.replace(m, sliding_window=128)
    with pytest.raises(InputError, match="head_dim"):
        dataclasses.replace(model_preset("DeepSeek-V3"), head_dim=128)
    with pytest.raises(InputError, match="kv_dtype"):
        dataclasses.replace(m, kv_dtype="fp9")
    with pytest.raises(InputError, match="mla.q_lora_rank"):
        model_from_hf_config({**DEEPSEEK_V3, "q_lora_rank": -1})
