"""The block-hash prefix cache: vLLM's semantics, exact KV accounting, the prefix-aware router,
block hashes in traces, and the synthetic prefix workloads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcluster.cluster import DisaggregatedCluster, InstanceSpec
from simcluster.cost import CostModel, Layout
from simcluster.cost.analytic import PolynomialCostModel
from simcluster.errors import InputError
from simcluster.hardware import load_link
from simcluster.serving import InstanceConfig, KVCache, Request
from simcluster.serving.instance import Instance
from simcluster.serving.prefix_cache import PrefixCache, chain_keys
from simcluster.simulation import Simulation
from simcluster.workload import Trace, load_trace
from simcluster.workload.prefixes import (conversation_trace, ideal_hit_rate,
                                          shared_prefix_hit_rate, shared_prefix_trace)

from conftest import one_instance
from test_instance import _check_invariants
from simcluster.hardware import load_device
from simcluster.models import model_preset

H100, LLAMA7B = load_device("H100-SXM"), model_preset("llama-2-7b")

POLY = PolynomialCostModel(prefill=(0.002, 1e-5, 0), decode=(0.001, 0, 0))


def hashed(arrivals, prompts, outputs, ids, block=512):
    t = Trace(np.asarray(arrivals, float), np.asarray(prompts), np.asarray(outputs))
    return t.with_block_hashes(ids, block)


def run(trace, device, model, cost=POLY, count=1, router="round_robin", **cfg):
    return Simulation(trace, model, one_instance(device, count=count, **cfg), router=router,
                      cost_model=cost).run()


# --------------------------------------------------------------------------- semantics
def test_second_identical_request_hits_its_whole_prefix(h100, llama7b):
    ids = [0, 1, 2, 3, 4]                       # 2049 tokens: four full blocks and one token
    res = run(hashed([0.0, 1.0], [2049, 2049], [4, 4], [ids, ids]), h100, llama7b)
    r = res.requests
    assert r.cached_tokens.tolist() == [0, 2048]
    assert res.timeline.prefill_tokens[res.timeline.prefill_seqs > 0].tolist() == [2049, 1]
    # the hit skips 2048 tokens of prefill: 2 ms + 1e-5 s per token
    assert r.ttft_s.tolist() == pytest.approx([0.002 + 2049e-5, 0.002 + 1e-5])
    s = res.summary()
    assert s["prefix_cached_tokens"] == 2048
    assert s["prefix_hit_rate"] == pytest.approx(2048 / 4098)
    assert s["prefix_request_hit_fraction"] == 0.5
    assert s["ttft_hit_p50_s"] < s["ttft_miss_p50_s"]


def test_the_last_prompt_token_is_always_computed(h100, llama7b):
    # a prompt of exactly four blocks: vLLM recomputes the last block so that it has logits
    res = run(hashed([0.0, 1.0], [2048, 2048], [2, 2], [[0, 1, 2, 3]] * 2), h100, llama7b)
    assert res.requests.cached_tokens.tolist() == [0, 1536]


def test_partial_and_divergent_prefixes(h100, llama7b):
    trace = hashed([0, 1, 2, 3], [1500, 1500, 1500, 1500], [2] * 4,
                   [[7, 8, 9], [7, 8, 10], [7, 11, 12], [13, 8, 9]])
    r = run(trace, h100, llama7b).requests
    # the third block of a 1500-token prompt is partial (never cached); block 2 matches only
    # after the same first block: chained keys, not bare ids
    assert r.cached_tokens.tolist() == [0, 1024, 512, 0]
    assert chain_keys([13, 8]) != chain_keys([7, 8])


def test_caching_off_or_no_hashes_changes_nothing(h100, llama7b):
    trace = hashed([0, 1], [2049, 2049], [4, 4], [[0, 1, 2, 3, 4]] * 2)
    plain = Trace(trace.arrival_s, trace.prompt_tokens, trace.output_tokens)
    off = run(trace, h100, llama7b, prefix_caching=False)
    base = run(plain, h100, llama7b)
    assert off.requests.cached_tokens.sum() == 0
    assert off.requests.drop(columns="request_id").equals(base.requests.drop(columns="request_id"))
    assert "prefix_hit_rate" not in base.summary()


def _units(cache, keys):
    r = Request(len(keys), 0.0, 10_000, 1)
    r.prefix_keys, r.prefix_block_tokens = keys, cache.unit
    return r


def test_eviction_order_is_lru_over_unreferenced_units():
    kv = KVCache(total_blocks=8, block_size=16)
    cache = PrefixCache(kv, 32)                        # two KV blocks per unit
    kv.cache = cache
    reqs = []
    for key in (1, 2, 3):                              # three one-unit requests compute
        r = _units(cache, (key,))
        kv.alloc(2)
        r.blocks, r.kv_tokens = 2, 32
        cache.computed(r)
        reqs.append(r)
    assert kv.free_blocks == 2 and cache.refs == {1: 1, 2: 1, 3: 1}
    for r in reqs:                                     # finish A, B, C in that order
        kv.release(r.blocks - r.shared_blocks)
        cache.release(r)
    assert list(cache.lru) == [1, 2, 3] and kv.free_blocks == 8
    again = _units(cache, (2, 9))                      # a hit on B takes it out of the queue
    assert cache.peek(again) == (32, 2)
    cache.acquire(again, 1)
    assert list(cache.lru) == [1, 3] and kv.free_blocks == 6
    kv.release(again.blocks - again.shared_blocks)
    cache.release(again)                               # B back, at the tail
    assert list(cache.lru) == [1, 3, 2]
    kv.alloc(5)                                        # 2 truly free: evict A, then C
    assert list(cache.lru) == [2] and cache.evictions == 2 and set(cache.refs) == {2}
    # a finished request's units join deepest first (its tail is evicted first)
    deep = _units(cache, (4, 5, 6))
    kv.release(5)
    kv.alloc(6)
    deep.blocks, deep.kv_tokens = 6, 96
    cache.computed(deep)
    kv.release(deep.blocks - deep.shared_blocks)
    cache.release(deep)
    assert list(cache.lru)[-3:] == [6, 5, 4]
    cache.check([])


def test_hit_rate_on_a_shared_prefix_trace_is_the_analytic_value(h100, llama7b):
    rng = np.random.default_rng(1)
    n = 60
    trace = shared_prefix_trace(n, arrivals=np.arange(n) * 0.5, system_tokens=1800,
                                user=lambda k, rng: rng.integers(1, 900, k), output=3,
                                system_prompts=4, zipf_s=1.0, rng=rng)
    expected = shared_prefix_hit_rate(trace, 1800, 512)
    assert expected == pytest.approx(ideal_hit_rate(trace))
    res = run(trace, h100, llama7b)
    assert res.summary()["prefix_hit_rate"] == pytest.approx(expected, abs=1e-12)
    assert 0.4 < expected < 0.8


# --------------------------------------------------------------------------- accounting
def _checked_run(trace, device, model, cost, count=1, router="least_outstanding_tokens", **cfg):
    """Run while asserting the cache's exact accounting after every recorded event."""
    orig = Instance._record

    def record(self, *args):
        orig(self, *args)
        if self.cache is not None:
            self.cache.check(self.running)
    Instance._record = record
    try:
        sim = Simulation(trace, model, one_instance(device, count=count, **cfg), router=router,
                         cost_model=cost)
        res = sim.run()
    finally:
        Instance._record = orig
    for inst in sim.cluster.instances:
        assert inst.kv.used_blocks == 0
        if inst.cache is not None:
            inst.cache.check([])
    return res


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3), st.integers(0, 2), st.integers(1, 1500),
                          st.integers(1, 200)), min_size=1, max_size=30),
       st.booleans(), st.sampled_from([0.16, 0.9]), st.integers(1, 2))
def test_invariants_with_prefix_caching(reqs, chunked, mem, count):
    """KV within capacity and counted once, tokens conserved, every request served."""
    reqs.sort()
    prompts = [512 * s + u for _, s, u, _ in reqs]    # 0-2 shared blocks, then a unique part
    ids = [[0, 1][:s] + list(range(1000 * (i + 1), 1000 * (i + 1) + -(-u // 512)))
           for i, (_, s, u, _) in enumerate(reqs)]
    trace = hashed([a for a, *_ in reqs], prompts, [o for *_, o in reqs], ids)
    kw = dict(chunked_prefill=chunked, memory_utilization=mem, max_batched_tokens=2048,
              max_num_seqs=16, block_size=16)
    res = _checked_run(trace, H100, LLAMA7B, CostModel(), count=count, **kw)
    # tokens conserved: prefill computes exactly the prompt tokens not found cached (more
    # with recomputes after preemptions)
    r = res.requests.copy()
    r["prompt_tokens"] = r.prompt_tokens - r.cached_tokens
    res.requests = r
    _check_invariants(res, trace)


def test_eviction_under_pressure_keeps_accounting_exact(h100, llama7b):
    rng = np.random.default_rng(5)
    trace = conversation_trace(40, rate_per_s=2.0, turns=3, user=700, output=150,
                               think_s=2.0, system_tokens=1024, rng=rng)
    res = _checked_run(trace, h100, llama7b, CostModel(), memory_utilization=0.2,
                       chunked_prefill=True)
    assert res.summary()["prefix_hit_rate"] > 0.2
    assert not res.requests.rejected.any()


# --------------------------------------------------------------------------- routing
def test_prefix_aware_router_follows_the_cache(h100, llama7b):
    rng = np.random.default_rng(2)
    trace = shared_prefix_trace(80, arrivals=np.arange(80) * 0.3, system_tokens=3072,
                                user=200, output=20, system_prompts=8, rng=rng)
    rr = run(trace, h100, llama7b, count=4, router="round_robin").summary()
    pa = run(trace, h100, llama7b, count=4, router="prefix_aware").summary()
    assert pa["prefix_hit_rate"] > rr["prefix_hit_rate"] + 0.1
    # with no cache to follow it is least-outstanding-tokens
    plain = Trace(trace.arrival_s, trace.prompt_tokens, trace.output_tokens)
    a = run(plain, h100, llama7b, count=4, router="prefix_aware").requests
    b = run(plain, h100, llama7b, count=4, router="least_outstanding_tokens").requests
    assert a.instance.tolist() == b.instance.tolist()
    assert pa["prefix_hit_rate"] == pytest.approx(shared_prefix_hit_rate(trace, 3072, 512))
    with pytest.raises(ValueError, match="prefix_weight"):
        from simcluster.policies import ROUTERS
        ROUTERS.create("prefix_aware", prefix_weight=-1)


def test_disaggregated_cache_lives_with_the_prefill(h100, llama7b):
    ids = [0, 1, 2, 3, 4]
    trace = hashed([0.0, 1.0], [2049, 2049], [5, 5], [ids, ids])
    specs = [InstanceSpec(Layout.uniform(h100), InstanceConfig(), pool="prefill"),
             InstanceSpec(Layout.uniform(h100), InstanceConfig(), pool="decode")]
    from functools import partial
    sim = Simulation(trace, llama7b, specs, cost_model=POLY,
                     cluster_factory=partial(DisaggregatedCluster,
                                             kv_link=load_link("NVLink4")))
    res = sim.run()
    pre, dec = sim.cluster.prefill_pool[0], sim.cluster.decode_pool[0]
    assert res.requests.cached_tokens.tolist() == [0, 2048]
    assert pre.cache is not None and dec.cache is None
    # the whole KV ships, cached prefix included
    assert [b for *_, b in sim.cluster.transfers] == [2049 * llama7b.kv_bytes_per_token] * 2


# --------------------------------------------------------------------------- traces
def test_mooncake_hashes_and_the_canonical_column(tmp_path):
    moon = load_trace("mooncake-conv")
    assert moon.hash_block_tokens == 512 and moon.has_block_hashes
    assert moon.extras["hash_ids"][0] == tuple(range(14))
    assert 0.35 < ideal_hit_rate(moon) < 0.40
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 600, "output_length": 5, '
                   '"hash_ids": [0, 1, 2]}\n')
    with pytest.raises(InputError) as info:
        load_trace(bad)
    assert info.value.line == 1 and info.value.field == "hash_ids" and "at most 2" in str(
        info.value)
    csv = tmp_path / "c.csv"
    csv.write_text("arrival_s,prompt_tokens,output_tokens,hash_ids,hash_block_tokens\n"
                   "0,600,5,0 1,512\n1,700,5,0 x,512\n")
    with pytest.raises(InputError, match="space-separated") as info:
        load_trace(csv)
    assert info.value.line == 3
    csv.write_text("arrival_s,prompt_tokens,output_tokens,hash_ids,hash_block_tokens\n"
                   "0,600,5,0 1,512\n1,700,5,0 2,256\n")
    with pytest.raises(InputError, match="one block size"):
        load_trace(csv)
    with pytest.raises(InputError, match="whole numbers >= 0"):
        Trace([0.0], [10], [1]).with_block_hashes([[-1]], 16)


def test_block_size_must_divide_the_hash_blocks(h100, llama7b):
    trace = hashed([0.0], [100], [1], [[0]], block=24)
    with pytest.raises(InputError, match="block_size"):
        Simulation(trace, llama7b, one_instance(h100), cost_model=POLY)
    Simulation(trace, llama7b, one_instance(h100, prefix_caching=False), cost_model=POLY)
    Simulation(trace, llama7b, one_instance(h100, block_size=8), cost_model=POLY)


def test_conversation_hash_chains_extend_turn_by_turn():
    rng = np.random.default_rng(0)
    t = conversation_trace(5, rate_per_s=1.0, turns=lambda k, rng: rng.integers(1, 5, k),
                           user=300, output=lambda k, rng: rng.integers(1, 600, k),
                           system_tokens=600, think_s=10.0, rng=rng)
    conv, turn = t.extras["conversation"], t.extras["turn"]
    ids, prompt = t.extras["hash_ids"], t.prompt_tokens
    for c in set(conv.tolist()):
        idx = [i for i in np.argsort(turn) if conv[i] == c]
        for a, b in zip(idx, idx[1:]):
            full = prompt[a] // 512
            assert ids[b][:full] == ids[a][:full]          # the earlier prompt's full blocks
            assert prompt[b] > prompt[a]
    firsts = [ids[i][0] for i in range(len(t)) if prompt[i] >= 512]
    assert len(set(firsts)) == 1                           # the shared system block
    with pytest.raises(ValueError, match="turns"):
        conversation_trace(2, rate_per_s=1.0, turns=np.array([1, 0]), user=1, output=1,
                           rng=rng)
