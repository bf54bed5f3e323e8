"""Mixture-of-experts in the cost model: hand counts of FLOPs, bytes and all-to-all traffic,
the routing model, the parallel-layout checks and the memory plan."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simcluster.calibration import NEUTRAL, load_calibration
from simcluster.cost import Batch, CostModel, Layout
from simcluster.cost.memory import memory_plan
from simcluster.cost.moe import RoutingModel, all_to_all_bytes, remote_ranks_per_token
from simcluster.cost.parallel import ParallelismError, check_parallel
from simcluster.errors import InputError
from simcluster.hardware import load_device, load_link
from simcluster.models import model_preset

H200, NV = load_device("H200"), load_link("NVLink4")


def _lay(tp=1, ep=1, dp=1, pp=1):
    return Layout.uniform(H200, tp=tp, pp=pp, link=NV if tp * dp * pp > 1 else None,
                          ep=ep, dp=dp)


def _flops(ops, names):
    return ops[ops.name.isin(names)].flops.sum()


def test_expert_flops_against_hand_count():
    m = model_preset("Qwen3-30B-A3B")            # 48 MoE layers, 128 experts, top-8
    t = 64
    ops = CostModel(NEUTRAL).iteration(m, _lay(), Batch(decode_context=(1000,) * t)).ops
    h, f, k, e = 2048, 768, 8, 128
    assert _flops(ops, ["experts_up"]) == 48 * 2 * t * k * h * 2 * f
    assert _flops(ops, ["experts_down"]) == 48 * 2 * t * k * f * h
    assert _flops(ops, ["router"]) == 48 * 2 * t * h * e
    # every weight matmul of the iteration: exactly T x the model's FLOPs per token
    matmul = ops[ops.op.isin(["gemm", "grouped_gemm"])].flops.sum()
    assert matmul == t * m.linear_flops_per_token


def test_expert_weight_bytes_follow_the_active_experts():
    m = model_preset("Mixtral-8x7B")
    # one token: exactly 2 of 8 experts active in every layer
    ops = CostModel(NEUTRAL).iteration(m, _lay(), Batch(decode_context=(100,))).ops
    up = ops[ops.name == "experts_up"].iloc[0]
    per_expert_up = 2 * 14336 * 4096 * 2                   # gate+up, bf16
    assert up.bytes == pytest.approx(32 * (2 * per_expert_up + 2 * 2 * (4096 + 2 * 14336)))
    # many tokens: every expert active, weights read once each
    ops = CostModel(NEUTRAL).iteration(m, _lay(), Batch(decode_context=(100,) * 256)).ops
    up = ops[ops.name == "experts_up"].iloc[0]
    assert up.bytes == pytest.approx(32 * (8 * per_expert_up + 2 * 512 * (4096 + 2 * 14336)))


def test_ep_all_to_all_bytes_against_hand_count():
    m = model_preset("DeepSeek-V3")
    tokens, ep = 1024, 8
    # a token's 8 experts avoid a given rank (32 of 256 experts) with prob C(224,8)/C(256,8)
    miss = np.prod([(224 - i) / (256 - i) for i in range(8)])
    remote = 7 * (1 - miss)
    assert remote_ranks_per_token(256, 8, 8) == pytest.approx(remote)
    dispatch, combine = all_to_all_bytes(m, tokens, 8, ep)
    assert dispatch == pytest.approx(tokens / 8 * remote * 7168 * 1)   # fp8 dispatch
    assert combine == pytest.approx(tokens / 8 * remote * 7168 * 2)    # bf16 combine
    cost = CostModel(NEUTRAL)
    rows = cost.iteration(m, _lay(dp=8, ep=8), Batch(decode_context=(500,) * tokens)).ops
    link = rows[rows.name == "ep_dispatch"].iloc[0]
    assert link["count"] == 58                                      # the MoE layers
    assert link.time_s == pytest.approx(58 * (dispatch / NV.bw_bytes_per_s + NV.latency_s))
    assert not len(rows[rows.name == "tp_allreduce"])               # attention TP = 1


def test_tensor_parallel_experts_end_in_an_allreduce():
    m = model_preset("Mixtral-8x7B")
    ops = CostModel(NEUTRAL).iteration(m, _lay(tp=4), Batch(decode_context=(100,) * 8)).ops
    ar = ops[ops.name == "tp_allreduce"].iloc[0]
    assert ar["count"] == 2 * 32 and not len(ops[ops.name == "ep_dispatch"])
    up = ops[(ops.name == "experts_up") & (ops["rank"] == 0)].iloc[0]
    assert up.flops == 32 * 2 * 8 * 2 * 4096 * 2 * 14336 / 4      # a quarter of each expert


def test_routing_model_is_seeded_and_its_imbalance_grows_with_skew():
    m = model_preset("Qwen3-235B-A22B")
    lay = _lay(tp=8, ep=8)
    loads = {}
    for cv in (0.0, 1.0):
        timer = CostModel(NEUTRAL, routing=RoutingModel(popularity_cv=cv)).timer(m, lay)
        rows, active = timer.moe_ops.critical_load(4096)
        again = CostModel(NEUTRAL, routing=RoutingModel(popularity_cv=cv)).timer(m, lay)
        assert again.moe_ops.critical_load(4096) == (rows, active)          # seeded
        loads[cv] = rows
    mean = 4096 * 8 / 8
    assert mean < loads[0.0] < 1.15 * mean        # multinomial noise only: a few % above
    assert loads[1.0] > 1.3 * mean                # skewed popularity: hot experts
    # TP-sharded experts: each rank sees all T k rows; active experts as the occupancy law
    rt = RoutingModel()
    loads1 = rt.loads(16, 128, 8)
    active = (loads1 > 0).sum(axis=1).mean()
    assert active == pytest.approx(128 * (1 - (1 - 1 / 128) ** 128), rel=0.05)
    with pytest.raises(ValueError, match="popularity_cv"):
        RoutingModel(popularity_cv=-1)


def test_moe_iteration_grows_with_tokens_and_ep_beats_tp_on_decode_weights():
    cost = CostModel(load_calibration("measured"))
    m = model_preset("DeepSeek-V3")
    small = cost.iteration(m, _lay(tp=8), Batch(decode_context=(2000,) * 8)).time_s
    big = cost.iteration(m, _lay(tp=8), Batch(decode_context=(2000,) * 256)).time_s
    assert 0 < small < big
    res = cost.iteration(m, _lay(dp=8, ep=8), Batch(decode_context=(2000,) * 256))
    assert "grouped_gemm: H200 measured" in res.provenance
    assert "link model" in res.provenance and "seed 0" in res.provenance


def test_parallel_layout_checks_name_the_degree():
    dense, moe = model_preset("Llama-2-7B"), model_preset("DeepSeek-V3")
    cases = [(dense, _lay(tp=3), "tp", "32 attention heads"),
             (dense, _lay(dp=2, ep=2), "ep", "dense"),
             (moe, _lay(tp=8, ep=4), "ep", "every rank"),
             (moe, _lay(tp=2, dp=4, ep=1), "dp", "ep = tp x dp"),
             (model_preset("Mixtral-8x7B"), _lay(tp=1, dp=2, ep=2), None, None),
             (model_preset("Mixtral-8x7B"), _lay(tp=16, ep=16), "ep", "8 routed"),
             (model_preset("Qwen3-30B-A3B"), _lay(tp=64), "tp", None)]
    for model, lay, field, text in cases:
        if field is None:
            check_parallel(model, lay)
            continue
        with pytest.raises(ParallelismError) as info:
            check_parallel(model, lay)
        assert info.value.field == field and isinstance(info.value, InputError)
        if text:
            assert text in str(info.value)
    with pytest.raises(ParallelismError, match="pp=40"):
        check_parallel(dense, _lay(pp=40))
    het = Layout(devices=(H200, load_device("H100-SXM")), tp=2, link=NV)
    with pytest.raises(ParallelismError, match="identical devices"):
        check_parallel(moe, het)
    with pytest.raises(ValueError, match="tp\\*dp\\*pp = 4"):
        Layout(devices=(H200,) * 2, tp=2, dp=2, link=NV)


def test_memory_plan_expert_weights_and_kv_per_rank():
    m = model_preset("Qwen3-235B-A22B")
    ep = memory_plan(m, _lay(tp=8, ep=8))
    tp = memory_plan(m, _lay(tp=8))
    per_expert = 3 * 4096 * 1536 * 2
    # both hold 1/8 of the experts' bytes; EP as 16 whole experts, TP as 1/8 of each
    assert ep.ranks[0].weight_bytes == pytest.approx(tp.ranks[0].weight_bytes)
    experts_per_rank = 94 * 16 * per_expert
    assert ep.ranks[0].weight_bytes > experts_per_rank
    assert ep.ranks[0].weight_bytes - experts_per_rank < 0.1 * experts_per_rank
    # KV: 4 KV heads over 8 ranks -> one (replicated) KV head per rank
    assert ep.ranks[0].kv_bytes_per_token == 94 * 2 * 1 * 128 * 2
    # DeepSeek-V3: the latent is replicated under TP; DP groups hold their own sequences
    ds = model_preset("DeepSeek-V3")
    tp8, dp8 = memory_plan(ds, _lay(tp=8)), memory_plan(ds, _lay(dp=8, ep=8))
    assert tp8.ranks[0].kv_bytes_per_token == 61 * 576 * 2
    assert dp8.kv_capacity_tokens == 8 * dp8.seq_capacity_tokens
    assert dp8.kv_capacity_tokens > 4 * tp8.kv_capacity_tokens
    assert len(dp8.ranks) == 8 and not dp8.oom
    one = memory_plan(ds, _lay())
    assert one.oom and "short by" in one.oom[0] and one.kv_capacity_tokens == 0


def test_sliding_window_attention_in_the_cost_model():
    m = model_preset("GPT-OSS-120B")
    cost = CostModel(NEUTRAL)
    short = cost.iteration(m, _lay(), Batch(decode_context=(100,))).ops
    long = cost.iteration(m, _lay(), Batch(decode_context=(10_000,))).ops
    f = lambda ops: ops[ops.op == "attn_decode"].flops.sum()  # noqa: E731
    q = 64 * 64
    assert f(short) == pytest.approx(36 * 4 * q * 100)
    assert f(long) == pytest.approx(36 * 4 * q * (10_000 + 128) / 2)
    plan = memory_plan(m, _lay(), max_num_seqs=256)
    assert plan.ranks[0].kv_bytes_per_token == 18 * 2 * 8 * 64 * 2
    assert plan.ranks[0].reserve_bytes > m.window_kv_bytes * 256


def test_mla_decode_reads_the_latent_once():
    m = model_preset("DeepSeek-V3")
    ops = CostModel(NEUTRAL).iteration(m, _lay(tp=8), Batch(decode_context=(4096,) * 32)).ops
    att = ops[(ops.op == "attn_decode") & (ops["rank"] == 0)].iloc[0]
    heads = 128 / 8
    ctx = 32 * 4096
    assert att.flops == pytest.approx(61 * (2 * heads * (576 + 512) * ctx
                                            + 2 * 32 * 512 * 256 * heads))
    assert att.bytes > 61 * ctx * 576 * 2              # the whole latent, on every TP rank
    assert att.bytes < 1.1 * 61 * ctx * 576 * 2 + 61 * 512 * 256 * heads * 2 + 1e9
    pre = ops = CostModel(NEUTRAL).iteration(m, _lay(tp=8), Batch(prefill_tokens=(1000,))).ops
    names = set(pre[pre["rank"] == 0].name)
    assert {"q_a", "q_b", "kv_a", "attn_out", "experts_up", "shared_up"} <= names
    assert math.isclose(pre[pre.name == "ffn_up"].iloc[0]["count"], 3)     # 3 dense layers
