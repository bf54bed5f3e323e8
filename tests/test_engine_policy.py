"""The hf_cb batching policy: transformers' FIFO continuous-batching rules, scenario by scenario."""

from collections import deque
from types import SimpleNamespace

from simcluster.serving.config import InstanceConfig

from simcluster.serving.kv import KVCache
from simcluster.policies import BATCHERS
from simcluster.serving.request import Request


def _inst(total_blocks=100, used=0, block_size=16, budget=64, **cfg):
    kv = KVCache(total_blocks, block_size)
    kv.free_blocks -= used
    return SimpleNamespace(kv=kv, running=[], waiting=deque(),
                           config=InstanceConfig(block_size=block_size, max_batched_tokens=budget,
                                                 chunked_prefill=True, **cfg))


def _decoding(rid, kv_tokens, block_size=16):
    r = Request(rid, 0.0, kv_tokens, 100)
    r.kv_tokens, r.generated = kv_tokens, 1
    r.blocks = -(-kv_tokens // block_size) + 1        # room to grow: no new block needed
    return r


def test_decodes_first_then_a_chunk_of_the_next_prompt():
    inst = _inst()
    inst.running = [_decoding(i, 40) for i in range(3)]
    inst.kv.free_blocks -= sum(r.blocks for r in inst.running)
    inst.waiting.extend([Request(10, 0.0, 500, 5), Request(11, 0.0, 20, 5)])
    plan = BATCHERS.create("hf_cb").bind(inst).schedule(0.0)
    assert plan.decode == inst.running
    assert [(r.id, c) for r, c in plan.prefill] == [(10, 61)]   # 64-token budget - 3 decodes
    assert [r.id for r in plan.admit] == [10]


def test_a_split_prompt_goes_before_new_ones():
    inst = _inst()
    part = Request(5, 0.0, 300, 5)
    part.kv_tokens, part.blocks = 64, 4
    inst.running = [part]
    inst.kv.free_blocks -= 4
    inst.waiting.append(Request(6, 0.0, 10, 5))
    plan = BATCHERS.create("hf_cb").bind(inst).schedule(0.0)
    assert [(r.id, c) for r, c in plan.prefill] == [(5, 64)]
    assert not plan.admit


def test_safety_margin_holds_prompts_back_while_anything_runs():
    inst = _inst(total_blocks=100, budget=512)
    inst.running = [_decoding(0, 40)]
    inst.kv.free_blocks = 10                                  # < 15% free
    inst.waiting.append(Request(1, 0.0, 32, 5))
    plan = BATCHERS.create("hf_cb").bind(inst).schedule(0.0)
    assert plan.decode == inst.running and not plan.prefill and not plan.admit
    # alone, the first prompt still runs (transformers admits one to avoid a deadlock)
    inst.running = []
    plan = BATCHERS.create("hf_cb").bind(inst).schedule(0.0)
    assert [r.id for r in plan.admit] == [1]
    # a smaller margin lets it in beside the decode
    inst.running = [_decoding(0, 40)]
    plan = BATCHERS.create("hf_cb", safety_margin=0.05).bind(inst).schedule(0.0)
    assert [r.id for r in plan.admit] == [1]


def test_engine_block_count_caps_the_replica():
    inst = _inst(total_blocks=1000, budget=4096)
    pol = BATCHERS.create("hf_cb", num_blocks=20).bind(inst)
    assert pol.total_blocks() == 20
    inst.waiting.extend([Request(0, 0.0, 16 * 15, 5), Request(1, 0.0, 16 * 10, 5)])
    plan = pol.schedule(0.0)
    assert [r.id for r in plan.admit] == [0]                  # the second does not fit in 20


def test_requests_per_batch_limit():
    inst = _inst(budget=4096)
    inst.running = [_decoding(i, 40) for i in range(5)]
    inst.kv.free_blocks -= sum(r.blocks for r in inst.running)
    inst.waiting.append(Request(9, 0.0, 8, 2))
    plan = BATCHERS.create("hf_cb", max_requests_per_batch=3).bind(inst).schedule(0.0)
    assert len(plan.decode) == 3 and not plan.prefill


def test_hf_cb_runs_with_the_settings_its_rules_fix(tmp_path):
    """Under the default InstanceConfig (chunked_prefill false) a prompt longer than the token
    budget was rejected "without chunked prefill", though transformers chunks it; a trace with
    block hashes counted prefix-cache hits hf_cb cannot have. An experiment that sets either
    against the policy is refused, naming it."""
    import numpy as np
    import pytest

    import simcluster as sc
    from simcluster.errors import InputError
    trace = sc.Trace(np.array([0.0, 0.1]), np.array([10000, 500]), np.array([10, 10]))
    spec = {"layout": sc.Layout.uniform("H100-SXM")}
    hf = sc.Simulation(trace, "llama-3.1-8b", sc.InstanceSpec(**spec, batching="hf_cb"))
    assert hf.cluster.instances[0].config.chunked_prefill is True
    assert not hf.run().requests.rejected.any()
    vllm = sc.Simulation(trace, "llama-3.1-8b", sc.InstanceSpec(**spec)).run().requests
    assert vllm.reason[0] == "max_batched_tokens: prompt of 10000 tokens > 8192 without " \
                             "chunked prefill"                # (vLLM v0's rule, unchanged)
    hashed = sc.shared_prefix_trace(20, arrivals=4.0, system_tokens=1024, user=64, output=8,
                                    rng=np.random.default_rng(0))
    assert not sc.Simulation(hashed, "llama-3.1-8b", sc.InstanceSpec(
        **spec, batching="hf_cb")).prefix_caching
    # (the default experiment's scheduler table says chunked_prefill = false)
    ok = {"instances.0.batching": "hf_cb", "instances.0.scheduler.chunked_prefill": True}
    for key, value in (("chunked_prefill", False), ("prefix_caching", True)):
        with pytest.raises(InputError, match=rf"field 'instances\[0\].scheduler.{key}': "
                                             rf"{str(value).lower()} does not go with "
                                             rf"batching 'hf_cb'"):
            sc.load_experiment(overrides={**ok, f"instances.0.scheduler.{key}": value})
    exp = sc.load_experiment(overrides={**ok, "trace.first_n": 10})
    assert exp.run().summary()["finished"] == 10
    from simcluster.policies import BATCHERS           # (listed: simcluster list batching)
    assert BATCHERS.describe("hf_cb").endswith("Runs with chunked_prefill = true, "
                                               "prefix_caching = false.")
