"""Simulation invariants over generated configurations (hypothesis).

Four families of generated clusters, each run on a small generated trace:

- colocated replicas (every router, every batching policy, chunked prefill or not) under
  preemption pressure (KV room for one or two prompts) — 300 cases;
- heterogeneous clusters: replicas of different GPUs behind one router, and tensor-parallel
  groups of different GPUs split by every partition policy — 200 cases;
- prefill/decode pools of GPUs: every offload policy, every decode router, KV links slow
  enough that hand-offs hold the prefill instance's blocks — 300 cases;
- CPU-socket decode pools behind a GPU prefill instance: NUMA placements, the M/M/c
  controller, the mini-batch dispatcher — 200 cases.

At least 1,000 generated cases per run (derandomised: conftest.SEEDED, the same cases every
run, so CI is repeatable; ``SIMCLUSTER_HYPOTHESIS=explore`` draws new ones). Every run must keep: each request finished or rejected with a reason (none
lost); times ordered (arrival <= prefill start <= first token <= finish); every output token
sampled exactly once; KV blocks within capacity and all returned at the end, load signals
drained; hand-offs shipped before their decode starts. A third of the cases also run with
decode runs capped at one step per event and must give the same result (the optimisation
must not change it). Each family checks that its cases reached what it is for (preemptions,
hand-offs, controller decisions, heterogeneous partitions).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from functools import lru_cache, partial

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import simcluster.policies  # noqa: F401  (fills the registries)
from simcluster.cluster import DisaggregatedCluster, InstanceSpec
from simcluster.cost import CostModel, Layout
from simcluster.hardware import LinkSpec, load_device, load_link
from simcluster.models import model_preset
from simcluster.policies import BATCHERS, OFFLOADS, ROUTERS
from simcluster.serving import InstanceConfig
from simcluster.simulation import Simulation

from conftest import SEEDED, make_trace

COST = CostModel()                       # datasheet roofline: real shapes, no fitting cost
LLAMA7, LLAMA8, LLAMA13 = (model_preset(n) for n in ("llama-2-7b", "llama-3.1-8b",
                                                     "llama-2-13b"))
# memory_utilization -> KV room for Llama-2-7B on an 80 GB GPU: ~1.7k, 3.4k, 6.7k, 23k tokens
PRESSURE = [0.17, 0.17, 0.18, 0.2, 0.3, 0.9]
QUEUEING_ROUTERS = {"pool_fcfs", "length_buckets"}   # hold requests in front of the pool


def _dev(name):
    return load_device(name)


# ----------------------------------------------------------------------------- traces
@st.composite
def traces(draw, max_n=14, max_prompt=3000, max_output=240, span_s=2.0):
    """Bursts of up to ``max_n`` requests: mostly prompts that fit a small KV cache and
    outputs long enough to outgrow it (preemptions), some as long as ``max_prompt``."""
    n = draw(st.integers(1, max_n))
    arrivals = sorted(draw(st.lists(st.floats(0, span_s), min_size=n, max_size=n)))
    prompt = st.one_of(st.integers(16, 600), st.integers(1, max_prompt))
    prompts = draw(st.lists(prompt, min_size=n, max_size=n))
    output = st.one_of(st.integers(40, max_output), st.integers(1, max_output))
    outputs = draw(st.lists(output, min_size=n, max_size=n))
    return make_trace(arrivals, prompts, outputs)


@st.composite
def bursts(draw):
    """6-14 requests within 0.1 s whose KV outgrows a cache of ~1.7k tokens while they
    decode: preemptions by recompute for certain."""
    n = draw(st.integers(6, 14))
    arrivals = sorted(draw(st.lists(st.floats(0, 0.1), min_size=n, max_size=n)))
    prompts = draw(st.lists(st.integers(150, 500), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(100, 240), min_size=n, max_size=n))
    return make_trace(arrivals, prompts, outputs)


@st.composite
def configs(draw, pressure=PRESSURE):
    return InstanceConfig(block_size=draw(st.sampled_from([8, 16, 32])),
                          max_num_seqs=draw(st.integers(1, 12)),
                          max_batched_tokens=draw(st.sampled_from([512, 2048, 4096])),
                          chunked_prefill=draw(st.booleans()),
                          memory_utilization=draw(st.sampled_from(pressure)))


def _batching(draw):
    name = draw(st.sampled_from(sorted(BATCHERS)))
    params = {}
    if name == "bucketed":
        params = {"buckets": [256, 1024], "padded": draw(st.booleans())}
    return name, params


# ----------------------------------------------------------------------------- checks
def check(sim, res, seen: Counter) -> None:
    r, tl = res.requests, res.timeline
    assert len(r) == len(sim.trace)
    assert (r.rejected == (r.reason != "")).all(), "a rejection without a reason, or vice versa"
    done = r[~r.rejected]
    assert done.finish_s.notna().all(), "a request neither finished nor rejected"
    assert (done.prefill_start_s >= done.arrival_s - 1e-12).all()
    assert (done.first_token_s >= done.prefill_start_s).all()
    assert (done.finish_s >= done.first_token_s).all()
    sampled = (tl.decode_seqs * tl.iterations).sum() + tl.prefill_done.sum()
    assert sampled == done.output_tokens.sum(), "output tokens not conserved"
    if not r.preemptions.any() and not r.rejected.any():
        assert tl.prefill_tokens.sum() == done.prompt_tokens.sum()
    cap = res.instances.set_index("instance").kv_blocks_total
    assert (tl.kv_blocks_used <= cap[tl.instance].values).all(), "KV over capacity"
    for inst in sim.cluster.instances:
        assert inst.outstanding_tokens == 0 and inst.kv.used_blocks == 0
        assert not inst.running and not inst.waiting and inst._handoffs == 0
    transfers = getattr(sim.cluster, "transfers", [])
    if transfers:
        by_id = r.set_index("request_id") if "request_id" in r else r
        for rid, _, start, end, _ in transfers:
            req = by_id.loc[rid]
            assert start >= req.first_token_s - 1e-12 and end >= start
            assert np.isnan(req.finish_s) or req.finish_s >= end - 1e-12
        seen["handoffs"] += len(transfers)
    seen["preempted"] += int(r.preemptions.sum() > 0)
    seen["rejected"] += int(r.rejected.any())
    seen["cases"] += 1


def run(trace, model, specs, steps=None, **kw):
    if steps is not None:
        specs = [dataclasses.replace(s, config=dataclasses.replace(s.config,
                                                                   max_steady_steps=steps))
                 for s in specs]
    sim = Simulation(trace, model, specs, cost_model=COST, **kw)
    return sim, sim.run()


def check_all(trace, model, specs, seen, compare_steps, **kw):
    sim, res = run(trace, model, specs, **kw)
    check(sim, res, seen)
    if compare_steps:
        sim1, res1 = run(trace, model, specs, steps=1, **kw)
        check(sim1, res1, Counter())
        a, b = res.requests, res1.requests
        assert a.instance.tolist() == b.instance.tolist()
        assert a.reason.tolist() == b.reason.tolist()
        for col in ("first_token_s", "finish_s"):
            np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-12)
        seen["compared"] += 1
    return sim, res


# ----------------------------------------------------------------------------- families
def test_colocated_replicas_under_preemption_pressure():
    seen = Counter()

    @settings(max_examples=300, **SEEDED)
    @given(traces(), configs(), st.data())
    def prop(trace, cfg, data):
        if data.draw(st.integers(0, 3)) == 0:       # a quarter under certain KV pressure
            trace = data.draw(bursts())
            cfg = dataclasses.replace(cfg, memory_utilization=0.17, max_num_seqs=12)
        router = data.draw(st.sampled_from(sorted(set(ROUTERS) - {"numa_minibatch"})))
        batching, params = _batching(data.draw)
        count = data.draw(st.integers(1, 3))
        spec = InstanceSpec(Layout.uniform(_dev("H100-SXM")), cfg, count=count,
                            batching=batching, batching_params=params)
        params_r = {"buckets": [512, 2048]} if router == "length_buckets" else {}
        check_all(trace, LLAMA7, [spec], seen, data.draw(st.integers(0, 2)) == 0,
                  router=router, router_params=params_r)
    prop()
    assert seen["cases"] >= 300 and seen["preempted"] >= 25 and seen["compared"] >= 50


@lru_cache(maxsize=None)
def _partitioned(policy: str, devices: tuple[str, ...]):
    from simcluster.policies.partition import TargetBatch, partition
    devs = [_dev(d) for d in devices]
    return partition(policy, LLAMA13, devs, load_link("PCIe4"),
                     batch=TargetBatch(batch_size=8, context_tokens=512),
                     cost_model=COST).layout


def test_heterogeneous_replicas_and_partitions():
    seen = Counter()
    groups = [("A100-80GB-PCIe", "P100"), ("A100-80GB-PCIe", "A100-80GB-PCIe", "P100", "P100"),
              ("A100-80GB-PCIe", "RTX3090")]

    @settings(max_examples=200, **SEEDED)
    @given(traces(max_prompt=2000), configs(pressure=[0.5, 0.9]), st.data())
    def prop(trace, cfg, data):
        router = data.draw(st.sampled_from(["least_outstanding_tokens", "round_robin",
                                            "join_shortest_queue", "pool_fcfs"]))
        if data.draw(st.booleans()):     # a TP group of different GPUs, cut by a policy
            policy = data.draw(st.sampled_from(["equal", "hexgen", "hels"]))
            layout = _partitioned(policy, data.draw(st.sampled_from(groups)))
            specs = [InstanceSpec(layout, cfg)]
            seen["partitions"] += 1
        else:                            # replicas of different GPUs behind one router
            names = data.draw(st.lists(st.sampled_from(["H100-SXM", "A100-80GB", "L40S",
                                                        "A100-40GB"]),
                                       min_size=2, max_size=3, unique=True))
            specs = [InstanceSpec(Layout.uniform(_dev(n)), cfg) for n in names]
        check_all(trace, LLAMA13, specs, seen, data.draw(st.integers(0, 2)) == 0,
                  router=router)
    prop()
    assert seen["cases"] >= 200 and seen["partitions"] >= 30


def _disagg_factory(data, link, decode_routers):
    offload = data.draw(st.sampled_from(sorted(OFFLOADS)))
    params = {"min_output": {"min_output_tokens": 4}, "max_context": {"max_context_tokens": 2000},
              "pool_room": {"slots": 2}}.get(offload, {})
    return partial(DisaggregatedCluster, kv_link=link, offload=offload, offload_params=params,
                   decode_router=data.draw(st.sampled_from(decode_routers)))


def test_prefill_decode_pools_of_gpus():
    seen = Counter()
    slow = LinkSpec("slow", bw_bytes_per_s=2e9, latency_s=1e-5)

    @settings(max_examples=300, **SEEDED)
    @given(traces(), configs(pressure=[0.18, 0.2, 0.3, 0.9]), st.data())
    def prop(trace, cfg, data):
        link = data.draw(st.sampled_from([slow, load_link("PCIe4"), load_link("NVLink4")]))
        if data.draw(st.integers(0, 3)) == 0:   # long chunked prompts behind slow hand-offs
            trace = data.draw(traces(max_n=8, max_prompt=3000, span_s=0.2))
            cfg = dataclasses.replace(cfg, chunked_prefill=True, max_batched_tokens=512,
                                      memory_utilization=0.18)
            link = slow
        decode_cfg = dataclasses.replace(cfg, memory_utilization=data.draw(
            st.sampled_from([0.17, 0.18, 0.2, 0.9])))
        specs = [InstanceSpec(Layout.uniform(_dev("H100-SXM")), cfg, pool="prefill",
                              count=data.draw(st.integers(1, 2))),
                 InstanceSpec(Layout.uniform(_dev("A100-80GB")), decode_cfg, pool="decode",
                              count=data.draw(st.integers(1, 2)))]
        factory = _disagg_factory(data, link, ["least_outstanding_tokens", "round_robin",
                                               "join_shortest_queue", "pool_fcfs"])
        check_all(trace, LLAMA7, specs, seen, data.draw(st.integers(0, 2)) == 0,
                  router=data.draw(st.sampled_from(["least_outstanding_tokens",
                                                    "round_robin"])),
                  cluster_factory=factory)
    prop()
    assert seen["cases"] >= 300 and seen["handoffs"] >= 500 and seen["preempted"] >= 2


def test_cpu_socket_decode_pools_with_controllers():
    seen = Counter()

    @settings(max_examples=200, **SEEDED)
    @given(traces(max_n=12, max_output=60, span_s=4.0), st.data())
    def prop(trace, data):
        gpu = InstanceConfig(chunked_prefill=data.draw(st.booleans()),
                             max_batched_tokens=4096)
        sockets = data.draw(st.integers(2, 4))
        specs = [InstanceSpec(Layout.uniform(_dev("A100-80GB-PCIe")), gpu, pool="prefill"),
                 InstanceSpec(Layout.uniform(_dev("Xeon-Gold-6148")),
                              InstanceConfig(max_num_seqs=data.draw(st.integers(1, 8))),
                              pool="decode", count=sockets)]
        controller = data.draw(st.sampled_from([None, "model", "online"]))
        kw = {}
        if controller:
            kw = {"controller": "mmc", "controller_params": {
                "max_wait_s": data.draw(st.sampled_from([0.5, 2.0])), "window_s": 1.0,
                "interval_s": 0.5, "mu_source": controller,
                "initial_active": data.draw(st.integers(1, sockets))}}
        factory = partial(_disagg_factory(data, load_link("PCIe3"),
                                          ["numa_minibatch", "least_outstanding_tokens",
                                           "pool_fcfs"]),
                          numa=data.draw(st.sampled_from([None, "aware", "oblivious",
                                                          "interleave"])), **kw)
        # (the online service rate depends on decode-run granularity: issue 10 defect 3,
        # owned by issue 16; the comparison covers the model-based controller only)
        compare = controller != "online" and data.draw(st.integers(0, 2)) == 0
        sim, _ = check_all(trace, LLAMA8, specs, seen, compare, cluster_factory=factory)
        if sim.cluster.controller is not None:
            seen["controlled"] += 1
    prop()
    assert seen["cases"] >= 200 and seen["controlled"] >= 50 and seen["handoffs"] >= 300
