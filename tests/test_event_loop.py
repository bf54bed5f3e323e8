"""The fast event loop gives exactly the results of the plain one (issue 12).

Decode step tables, the iteration memo, shared timers, the routing index, column chunks and
streaming are all caches or storage: each test runs a scenario both ways and compares frames
bit for bit.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simcluster.serving.instance as instance_mod
import simcluster.simulation.simulation as simulation_mod
from simcluster.calibration import load_calibration
from simcluster.cost import CostModel, Layout
from simcluster.cost.model import IterationTimer
from simcluster.hardware import load_device
from simcluster.models import list_models, model_preset
from simcluster.policies import BATCHERS
from simcluster.simulation import Simulation

from conftest import make_trace, one_instance


def _poisson(n, rate, seed=0, out_scale=1):
    rng = np.random.default_rng(seed)
    return make_trace(np.cumsum(rng.exponential(1 / rate, n)), rng.integers(20, 3000, n),
                      rng.integers(1, 400, n) * out_scale)


def _frames_equal(a, b):
    assert a.requests.equals(b.requests)
    assert a.timeline.equals(b.timeline)


@pytest.mark.parametrize("name", list_models())
def test_decode_step_tables_equal_evaluating_each_step(name):
    """A run's steps read from the per-batch-size table are the floats of evaluating them
    (every operation is elementwise), for every model preset, at block edges too."""
    cal = load_calibration("measured")
    model = model_preset(name)
    for dev in ("H100-SXM", "Xeon-Gold-6148"):
        t = IterationTimer(cal, model, Layout.uniform(load_device(dev)))
        for n, s0, k in ((1, 1, 3000), (7, 1017, 9), (64, 64 * 900, 200), (200, 1024, 1)):
            got = t.decode_steps(n, s0, k)
            sums = s0 + n * np.arange(k, dtype=float)
            want = t._attn_decode_scalar(n, sums) + (t._dense(n, n)[0, 0] + t._links(n, n))
            assert np.array_equal(got, want)
        assert not any(b.flags.writeable for b in t._step_table.values())   # views of it too


def test_shared_timers_and_memos_change_nothing(h100, llama7b):
    """Simulations that reuse a cost model's timers (and their caches) equal fresh ones."""
    trace = _poisson(300, 4.0)
    shared = CostModel(load_calibration("measured"))

    def go(cost):
        return Simulation(trace, llama7b, one_instance(h100, count=2), cost_model=cost,
                          router="least_outstanding_tokens").run()
    first, second = go(shared), go(shared)
    fresh = go(CostModel(load_calibration("measured")))
    _frames_equal(first, second)
    _frames_equal(first, fresh)
    assert shared.timer(llama7b, Layout.uniform(h100)) is shared.timer(
        llama7b, Layout.uniform(load_device("H100-SXM")))


def test_small_chunks_and_windows_change_nothing(h100, llama7b, monkeypatch):
    """Timeline compaction, the arrival window and request-log chunks at tiny sizes."""
    trace = _poisson(400, 6.0, seed=2)
    base = Simulation(trace, llama7b, one_instance(h100, count=3), cost_model=CostModel(),
                      router="least_outstanding_tokens").run()
    monkeypatch.setattr(instance_mod, "CHUNK_ROWS", 7)
    monkeypatch.setattr(simulation_mod, "ARRIVAL_WINDOW", 5)
    sim = Simulation(trace, llama7b, one_instance(h100, count=3), cost_model=CostModel(),
                     router="least_outstanding_tokens")
    sim.log.chunk_rows = 11
    small = sim.run()
    assert any(inst.timeline.chunks for inst in sim.cluster.instances)
    _frames_equal(base, small)
    assert sim.results() is small


def test_streaming_to_parquet_gives_the_same_frames(h100, llama7b, tmp_path):
    pytest.importorskip("pyarrow")
    prompts = np.full(120, 800)
    prompts[5] = 9000                        # rejected (max_model_len): a reason to stream
    trace = make_trace(np.linspace(0, 20, 120), prompts, np.full(120, 60))
    def sim():
        return Simulation(trace, llama7b, one_instance(h100, count=2), cost_model=CostModel(),
                          router="least_outstanding_tokens")
    mem = sim().run()
    streamed = sim()
    streamed.log.chunk_rows = 13
    res = streamed.run(stream_to=tmp_path)
    assert (tmp_path / "requests.parquet").exists() and (tmp_path / "timeline.parquet").exists()
    assert not streamed.log.chunks                      # nothing kept in memory
    assert res.requests.rejected.sum() == 1 and "max_model_len" in res.requests.reason[5]
    _frames_equal(mem, res)
    assert res.summary() == mem.summary()


@pytest.mark.parametrize("router", ["least_outstanding_tokens", "round_robin"])
def test_routing_fast_paths_choose_the_same_replicas(h100, llama7b, router):
    """The LOT index over a large pool (and round robin's every-candidate path) route each
    request to the replica the plain scan picks."""
    trace = _poisson(1500, 40.0, seed=5)
    cost = CostModel()
    slow_params = {"index_from": 10 ** 9} if router == "least_outstanding_tokens" else {}

    def go(params):
        return Simulation(trace, llama7b, one_instance(h100, count=33), cost_model=cost,
                          router=router, router_params=params).run()
    fast = go({})
    if router == "least_outstanding_tokens":
        _frames_equal(fast, go(slow_params))
        _frames_equal(fast, go({"index_from": 8, "table": False}))
    assert fast.requests.instance.nunique() == 33


def test_events_per_request_stay_few(h100, llama7b):
    """Events are iterations, never tokens: a Poisson trace costs under five SimPy events
    per request on one replica (arrival, cut of the decode run, prefill end, run end), with
    outputs 1x and 16x as long."""
    for scale in (1, 16):
        trace = _poisson(400, 3.0 / scale, seed=1, out_scale=scale)
        sim = Simulation(trace, llama7b, one_instance(h100, max_model_len=65536),
                         cost_model=CostModel())
        sim.run()
        assert next(sim.env._eid) / len(trace) < 5.0


def _states():
    joined = st.sampled_from([True, True, True, True, False])
    return st.lists(st.tuples(st.integers(1, 400), st.integers(1, 60), joined),
                    min_size=0, max_size=12)


STEADY_SEEN = []


@settings(max_examples=60, deadline=None)
@given(_states(), st.sampled_from([0, 0, 0, 1, 3]), st.sampled_from(sorted(BATCHERS)),
       st.sampled_from([0.001, 0.25, 0.9]), st.booleans())
def test_steady_decode_agrees_with_schedule(decoding, waiting, name, mem, chunked):
    """Every batching policy that answers ``steady_decode`` says True only when schedule()
    would decode every running request and do nothing else (KV pressure included: the
    smallest memory setting leaves a few blocks)."""
    from simcluster.cluster import Cluster
    import simpy
    dev, model = load_device("H100-SXM"), model_preset("llama-2-7b")
    specs = one_instance(dev, memory_utilization=mem, chunked_prefill=chunked,
                         max_num_seqs=8, max_batched_tokens=2048)
    specs = [type(specs[0])(specs[0].layout, specs[0].config, batching=name)]
    env = simpy.Environment()
    cl = Cluster(env, model, specs, cost_model=CostModel())
    inst = cl.instances[0]
    inst._busy = True                          # hold the loop: we set the state by hand
    from simcluster.serving.request import Request
    bs = inst.config.block_size
    for rid, (kv, gen, join) in enumerate(decoding):
        req = Request(rid, 0.0, kv, gen + 5)
        req._kv, req._gen = kv, gen
        need = -(-kv // bs)
        if need > inst.kv.free_blocks:
            break
        inst.kv.alloc(need)
        req._blocks = need
        req.admit_seq = rid
        inst.running.append(req)
        if join:
            inst.group.join(req)
    for w in range(waiting):
        inst.waiting.append(Request(100 + w, 0.0, 50, 5))
    steady = getattr(inst.batcher, "steady_decode", None)
    if steady is None or not steady(0.0):
        return
    STEADY_SEEN.append(name)
    plan = inst.batcher.schedule(0.0)
    assert not (plan.prefill or plan.preempt or plan.admit)
    assert plan.decode == inst.running


def test_steady_decode_is_answered_in_the_common_case(h100, llama7b):
    """Not vacuous: with every running request decoding and nothing waiting, the policies
    that have the shortcut take it, and the hypothesis test above reached that case."""
    import simpy
    from simcluster.cluster import Cluster
    from simcluster.serving.request import Request
    for name in ("vllm", "hf_cb", "bucketed"):
        specs = one_instance(h100)
        specs = [type(specs[0])(specs[0].layout, specs[0].config, batching=name)]
        inst = Cluster(simpy.Environment(), llama7b, specs, cost_model=CostModel()).instances[0]
        req = Request(0, 0.0, 100, 10)
        req._kv, req._gen, req._blocks, req.admit_seq = 100, 1, 7, 0
        inst.kv.alloc(7)
        inst.running.append(req)
        inst.group.join(req)
        assert inst.batcher.steady_decode(0.0)
    test_steady_decode_agrees_with_schedule()
    assert {"vllm", "hf_cb", "bucketed"} <= set(STEADY_SEEN)
