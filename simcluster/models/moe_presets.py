"""Mixture-of-experts presets: the released configs of Mixtral, Qwen3-MoE, DeepSeek-V3, GPT-OSS.

Every number below is a field of the model's ``config.json`` on Hugging Face (cited in each
``source``); parameter counts are derived from them (:class:`ModelSpec`) and match the totals
the model cards publish (tests/test_moe_models.py counts them by hand).
"""

from __future__ import annotations

from simcluster.models.mla import MLASpec
from simcluster.models.moe import MoESpec
from simcluster.models.spec import DTYPE_BYTES, ModelSpec


def _moe_preset(name: str, *, layers: int, hidden: int, heads: int, kv_heads: int,
                head_dim: int, ffn: int, vocab: int, max_position: int, dtype: str,
                moe: MoESpec, source: str, aliases: tuple[str, ...] = (), **extra) -> ModelSpec:
    return ModelSpec(name=name, num_layers=layers, hidden_size=hidden, num_heads=heads,
                     num_kv_heads=kv_heads, head_dim=head_dim, ffn_size=ffn, ffn_gated=True,
                     vocab_size=vocab, dtype_bytes=DTYPE_BYTES[dtype], dtype=dtype,
                     tied_embeddings=False, max_position=max_position, moe=moe, source=source,
                     aliases=aliases, **extra)


MOE_PRESETS = (
    _moe_preset(
        "Mixtral-8x7B", layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, ffn=14336,
        vocab=32000, max_position=32768, dtype="bf16",
        moe=MoESpec(num_experts=8, experts_per_token=2, expert_ffn_size=14336),
        source="Hugging Face mistralai/Mixtral-8x7B-v0.1 config.json: hidden_size 4096, "
               "num_hidden_layers 32, num_attention_heads 32, num_key_value_heads 8, "
               "intermediate_size 14336, num_local_experts 8, num_experts_per_tok 2, "
               "vocab_size 32000, max_position_embeddings 32768, sliding_window null, "
               "torch_dtype bfloat16; Jiang et al. 2024 (Mixtral of Experts): 46.7B total, "
               "12.9B active",
        aliases=("mistralai/Mixtral-8x7B-v0.1", "mistralai/Mixtral-8x7B-Instruct-v0.1",
                 "mixtral")),
    _moe_preset(
        "Qwen3-30B-A3B", layers=48, hidden=2048, heads=32, kv_heads=4, head_dim=128, ffn=6144,
        vocab=151936, max_position=40960, dtype="bf16", qk_norm=True,
        moe=MoESpec(num_experts=128, experts_per_token=8, expert_ffn_size=768),
        source="Hugging Face Qwen/Qwen3-30B-A3B config.json: hidden_size 2048, "
               "num_hidden_layers 48, num_attention_heads 32, num_key_value_heads 4, head_dim "
               "128, intermediate_size 6144 (no mlp_only_layers: unused), "
               "moe_intermediate_size 768, num_experts 128, num_experts_per_tok 8, "
               "decoder_sparse_step 1, vocab_size 151936, max_position_embeddings 40960, "
               "tie_word_embeddings false, torch_dtype bfloat16; model card: 30.5B total, "
               "3.3B active",
        aliases=("Qwen/Qwen3-30B-A3B", "qwen3-30b")),
    _moe_preset(
        "Qwen3-235B-A22B", layers=94, hidden=4096, heads=64, kv_heads=4, head_dim=128,
        ffn=12288, vocab=151936, max_position=40960, dtype="bf16", qk_norm=True,
        moe=MoESpec(num_experts=128, experts_per_token=8, expert_ffn_size=1536),
        source="Hugging Face Qwen/Qwen3-235B-A22B config.json: hidden_size 4096, "
               "num_hidden_layers 94, num_attention_heads 64, num_key_value_heads 4, head_dim "
               "128, intermediate_size 12288 (unused), moe_intermediate_size 1536, num_experts "
               "128, num_experts_per_tok 8, vocab_size 151936, max_position_embeddings 40960, "
               "tie_word_embeddings false, torch_dtype bfloat16; model card: 235B total, 22B "
               "active, 94 layers, 64 Q / 4 KV heads",
        aliases=("Qwen/Qwen3-235B-A22B", "qwen3-235b")),
    _moe_preset(
        "DeepSeek-V3", layers=61, hidden=7168, heads=128, kv_heads=128, head_dim=192,
        ffn=18432, vocab=129280, max_position=163840, dtype="fp8", kv_dtype="bf16",
        moe=MoESpec(num_experts=256, experts_per_token=8, expert_ffn_size=2048,
                    shared_ffn_size=2048, dense_layers=(0, 1, 2)),
        mla=MLASpec(kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
                    v_head_dim=128, q_lora_rank=1536),
        source="Hugging Face deepseek-ai/DeepSeek-V3 config.json: hidden_size 7168, "
               "num_hidden_layers 61 (the MTP module, num_nextn_predict_layers 1, is not "
               "counted), num_attention_heads 128, intermediate_size 18432, "
               "moe_intermediate_size 2048, n_routed_experts 256, n_shared_experts 1, "
               "num_experts_per_tok 8, first_k_dense_replace 3, q_lora_rank 1536, "
               "kv_lora_rank 512, qk_nope_head_dim 128, qk_rope_head_dim 64, v_head_dim 128, "
               "vocab_size 129280, max_position_embeddings 163840, quantization_config fp8 "
               "e4m3 128x128 blocks (served with a bf16 KV cache); README_WEIGHTS.md: 671B "
               "main-model parameters",
        aliases=("deepseek-ai/DeepSeek-V3", "deepseek-v3-671b", "deepseek-ai/DeepSeek-R1")),
    _moe_preset(
        "GPT-OSS-120B", layers=36, hidden=2880, heads=64, kv_heads=8, head_dim=64, ffn=2880,
        vocab=201088, max_position=131072, dtype="bf16", attention_bias=True,
        attention_sinks=True, sliding_window=128, sliding_window_layers=18,
        moe=MoESpec(num_experts=128, experts_per_token=4, expert_ffn_size=2880,
                    router_bias=True, expert_bias=True, expert_dtype="mxfp4"),
        source="Hugging Face openai/gpt-oss-120b config.json: hidden_size 2880, "
               "num_hidden_layers 36, num_attention_heads 64, num_key_value_heads 8, head_dim "
               "64, intermediate_size 2880, num_local_experts 128, experts_per_token 4, "
               "vocab_size 201088, max_position_embeddings 131072, sliding_window 128 with "
               "layer_types alternating sliding_attention / full_attention, attention_bias "
               "true, quantization_config mxfp4 (experts only), tie_word_embeddings false; "
               "model card: 117B total, 5.1B active",
        aliases=("openai/gpt-oss-120b", "gpt-oss-120b")),
)
