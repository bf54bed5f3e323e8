"""Disaggregated prefill/decode pools: hand-off, KV transfer timing, offload policies."""

import numpy as np
import pytest

from simcluster.cluster import InstanceSpec
from simcluster.cost import Layout
from simcluster.cost.analytic import PolynomialCostModel
from simcluster.cluster.pools import DisaggregatedCluster
from simcluster.hardware import load_link
from simcluster.serving.config import InstanceConfig
from simcluster.simulation import Simulation
from functools import partial

from conftest import make_trace


def _sim(trace, device, model, offload="all", **kw):
    specs = [InstanceSpec(Layout.uniform(device), InstanceConfig(), pool="prefill"),
             InstanceSpec(Layout.uniform(device), InstanceConfig(), pool="decode", count=2)]
    link = load_link("PCIe4")
    factory = partial(DisaggregatedCluster, kv_link=link, offload=offload, **kw)
    cost = PolynomialCostModel(prefill=(0.010, 0, 0), decode=(0.001, 0, 0))
    return Simulation(trace, model, specs, cost_model=cost, cluster_factory=factory), link


def test_handoff_golden(h100, llama7b):
    sim, link = _sim(make_trace([0.0], [1000], [4]), h100, llama7b)
    res = sim.run()
    r = res.requests.iloc[0]
    ship = 1000 * llama7b.kv_bytes_per_token / link.bw_bytes_per_s + link.latency_s
    assert r.first_token_s == pytest.approx(0.010)
    # decode pool: 3 decode steps of 1 ms after the KV arrives
    assert r.finish_s == pytest.approx(0.010 + ship + 0.003)
    assert r.instance in (1, 2)
    assert sim.cluster.transfers[0][4] == 1000 * llama7b.kv_bytes_per_token


def test_offload_policy_keeps_short_outputs_on_prefill_pool(h100, llama7b):
    trace = make_trace([0.0, 0.5], [100, 100], [2, 50])
    sim, _ = _sim(trace, h100, llama7b, offload="min_output",
                  offload_params={"min_output_tokens": 10})
    r = sim.run().requests
    assert r.instance.tolist()[0] == 0 and r.instance.tolist()[1] in (1, 2)


def test_transfers_on_one_link_are_serialised(h100, llama7b):
    trace = make_trace(np.zeros(3), [4000] * 3, [5] * 3)
    sim, _ = _sim(trace, h100, llama7b)
    sim.run()
    spans = sorted((s, e) for _, _, s, e, _ in sim.cluster.transfers)
    assert all(a[1] <= b[0] + 1e-12 for a, b in zip(spans, spans[1:]))
    assert all(inst.outstanding_tokens == 0 for inst in sim.cluster.instances)


def test_needs_both_pools(h100, llama7b):
    specs = [InstanceSpec(Layout.uniform(h100))]
    with pytest.raises(ValueError, match="pool"):
        Simulation(make_trace([0.0], [10], [2]), llama7b, specs,
                   cluster_factory=partial(DisaggregatedCluster, kv_link=load_link("PCIe4")))


def test_kv_link_is_taken_by_name_and_anything_else_is_named(h100, llama7b):
    """``kv_link`` takes a link's name as every other spec argument does (it was read as a
    LinkSpec at the first transfer: "'str' object has no attribute 'bw_bytes_per_s'")."""
    trace = make_trace([0.0], [1000], [4])
    specs = [InstanceSpec(Layout.uniform(h100), InstanceConfig(), pool="prefill"),
             InstanceSpec(Layout.uniform(h100), InstanceConfig(), pool="decode")]
    cost = PolynomialCostModel(prefill=(0.010, 0, 0), decode=(0.001, 0, 0))
    by_name = Simulation(trace, llama7b, specs, cost_model=cost, cluster_factory=partial(
        DisaggregatedCluster, kv_link="PCIe4")).run().requests
    by_spec = Simulation(trace, llama7b, specs, cost_model=cost, cluster_factory=partial(
        DisaggregatedCluster, kv_link=load_link("PCIe4"))).run().requests
    assert by_name.finish_s.tolist() == by_spec.finish_s.tolist()
    with pytest.raises(TypeError, match="kv_link must be a LinkSpec"):
        Simulation(trace, llama7b, specs, cluster_factory=partial(DisaggregatedCluster,
                                                                  kv_link=3))
    with pytest.raises(TypeError, match="cluster_factory must be a callable"):
        Simulation(trace, llama7b, specs, cluster_factory=3)


def test_prefill_instance_holds_kv_until_shipped(h100, llama7b):
    """While its KV crosses the link, a handed-off request's blocks stay allocated."""
    sim, link = _sim(make_trace([0.0, 0.0101], [4000, 16], [3, 2]), h100, llama7b,
                     offload="min_output", offload_params={"min_output_tokens": 2})
    res = sim.run()
    tl = res.timeline[res.timeline.instance == 0]
    # the second request's prefill starts at 0.010, during the first one's transfer
    second = tl[tl.start_s >= 0.010].iloc[0]
    assert second.kv_blocks_used >= -(-4000 // 16)
    assert (res.timeline.kv_blocks_used >= 0).all()


def test_overridden_device_is_not_served_from_the_originals_memo(h100):
    from simcluster.cost import CostModel
    cost = CostModel()
    base = cost.predict_op("gemm", h100, m=1, n=8192, k=8192)["time_s"]
    faster = h100.with_overrides(mem_bw_bytes_per_s=2 * h100.mem_bw_bytes_per_s)
    assert cost.predict_op("gemm", faster, m=1, n=8192, k=8192)["time_s"] == \
        pytest.approx(base / 2, rel=1e-6)


def test_prefill_instance_waits_for_shipped_blocks_instead_of_rejecting(h100, llama7b):
    """Issue 10, defect 1: an instance whose KV blocks are all held by hand-offs still on the
    link, with nothing of its own to run, waits for the blocks; it used to reject the prompt
    ("scheduler could not admit it with an empty instance") although it fits once they return.
    """
    def build(prompt, trace):
        cfg = InstanceConfig(memory_utilization=0.23, max_batched_tokens=2 * prompt,
                             max_model_len=prompt + 8)
        specs = [InstanceSpec(Layout.uniform(h100), cfg, pool="prefill"),
                 InstanceSpec(Layout.uniform(h100), cfg, pool="decode", count=2)]
        slow = load_link("PCIe4").__class__("slow", bw_bytes_per_s=1e9, latency_s=1e-5)
        cost = PolynomialCostModel(prefill=(0.010, 0, 0), decode=(0.001, 0, 0))
        return Simulation(trace, llama7b, specs, cost_model=cost,
                          cluster_factory=partial(DisaggregatedCluster, kv_link=slow))
    capacity = build(1000, make_trace([0.0], [10], [2])).cluster.instances[0].kv.total_blocks * 16
    prompt = int(capacity / 2.5)       # two fit with room for half a third
    sim = build(prompt, make_trace([0.0, 0.0, 0.0], [prompt] * 3, [4] * 3))
    r = sim.run().requests
    assert not r.rejected.any(), r.reason.tolist()
    first_shipped = min(end for _, _, _, end, _ in sim.cluster.transfers)
    assert r.prefill_start_s[2] >= first_shipped > 0.010
    assert all(inst.outstanding_tokens == 0 for inst in sim.cluster.instances)
    assert all(inst.kv.used_blocks == 0 for inst in sim.cluster.instances)


def test_partial_prefill_waits_for_shipped_blocks(h100, llama7b):
    """The same with chunked prefill: a prompt half-prefilled whose next chunk needs blocks
    that hand-offs still hold. With a request running, the instance used to count stalls,
    then reject the head of an empty queue (an IndexError that ended the simulation)."""
    budget = 1024

    def build(util, trace):
        cfg = InstanceConfig(memory_utilization=util, max_batched_tokens=budget,
                             chunked_prefill=True, max_model_len=4 * budget)
        specs = [InstanceSpec(Layout.uniform(h100), cfg, pool="prefill"),
                 InstanceSpec(Layout.uniform(h100), InstanceConfig(max_model_len=4 * budget),
                              pool="decode")]
        slow = load_link("PCIe4").__class__("slow", bw_bytes_per_s=1e9, latency_s=1e-5)
        cost = PolynomialCostModel(prefill=(0.010, 0, 0), decode=(0.001, 0, 0))
        return Simulation(trace, llama7b, specs, cost_model=cost,
                          cluster_factory=partial(DisaggregatedCluster, kv_link=slow))
    probe = make_trace([0.0], [10], [2])
    util = next(u for u in np.arange(0.17, 0.3, 0.0025)    # KV room for 3 to 4 chunks
                if 3.1 * budget < build(u, probe).cluster.instances[0].kv.total_blocks * 16
                < 3.9 * budget)
    # two one-chunk prompts handed off, then a three-chunk prompt whose second chunk must wait
    sim = build(util, make_trace([0.0, 0.0, 0.0], [budget, budget, 3 * budget], [4, 4, 4]))
    r = sim.run().requests
    assert not r.rejected.any(), r.reason.tolist()
    assert r.finish_s.notna().all()
    assert all(inst.outstanding_tokens == 0 for inst in sim.cluster.instances)


def test_shipped_blocks_cut_a_run_that_a_part_prefilled_prompt_sits_out(h100, llama7b,
                                                                          monkeypatch):
    """A prefill replica decodes what the decode pool has no room for (``pool_room``) while a
    prompt, part-prefilled in chunks, waits for blocks that hand-offs on a slow link still
    hold. When a hand-off's blocks come back during the decode run, stepping one by one
    would give the prompt its next chunk at the next step: the run is cut there (it used to
    be cut only for a request waiting in the queue, so the prompt sat out the whole run).
    The frames equal those of one step per event."""
    import dataclasses
    from simcluster.cost import CostModel
    from simcluster.hardware import LinkSpec, load_device
    from simcluster.serving import instance as instance_mod
    slow = LinkSpec("slow", bw_bytes_per_s=2e9, latency_s=1e-5)
    trace = make_trace([0.0] * 7, [1359, 17, 16, 16, 1127, 16, 1121],
                       [40, 40, 40, 40, 44, 40, 40])
    cfg = InstanceConfig(block_size=8, max_num_seqs=2, max_batched_tokens=512,
                         chunked_prefill=True, memory_utilization=0.18)
    cuts = []
    real = instance_mod.Instance.release_kv

    def release_kv(self, req):
        run = self._live
        if run is not None and not self.waiting and len(self.running) > run.n:
            cuts.append(self.env.now)
        return real(self, req)
    monkeypatch.setattr(instance_mod.Instance, "release_kv", release_kv)

    def go(steps=None):
        c = cfg if steps is None else dataclasses.replace(cfg, max_steady_steps=steps)
        specs = [InstanceSpec(Layout.uniform(h100), c, pool="prefill"),
                 InstanceSpec(Layout.uniform(load_device("A100-80GB")),
                              dataclasses.replace(c, memory_utilization=0.17), pool="decode")]
        factory = partial(DisaggregatedCluster, kv_link=slow, offload="pool_room",
                          offload_params={"slots": 2})
        return Simulation(trace, llama7b, specs, cost_model=CostModel(),
                          cluster_factory=factory).run().requests
    runs = go()
    assert cuts, "no hand-off came back during a run that a running prompt sat out"
    stepped = go(1)
    assert runs.instance.tolist() == stepped.instance.tolist()
    for col in ("prefill_start_s", "first_token_s", "finish_s"):
        np.testing.assert_allclose(runs[col], stepped[col], rtol=1e-9, atol=1e-12)
