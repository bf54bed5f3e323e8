"""Golden event logs on tiny traces, and the instance's invariants under hypothesis."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcluster.cost import CostModel
from simcluster.cost.analytic import PolynomialCostModel
from simcluster.simulation import Simulation

from conftest import make_trace, one_instance


def run(trace, device, model, cost=None, count=1, router="round_robin", **cfg):
    sim = Simulation(trace, model, one_instance(device, count=count, **cfg), router=router,
                     cost_model=cost or PolynomialCostModel(prefill=(0.010, 0, 0),
                                                            decode=(0.001, 0, 0)))
    return sim.run()


def test_golden_two_requests(h100, llama7b):
    """Prefill 10 ms, decode step 1 ms; vLLM v0 runs a prefill-only iteration on arrival."""
    res = run(make_trace([0.0, 0.0035], [100, 50], [3, 2]), h100, llama7b)
    r = res.requests
    # req0: prefill [0, .010) -> token 1 at .010; req1 arrived at .0035, prefilled
    # [.010, .020) -> its token 1 at .020; then both decode: step [.020, .021) gives req0
    # token 2 and req1 token 2 (req1 done); req0's token 3 at .022.
    assert r.first_token_s.tolist() == pytest.approx([0.010, 0.020])
    assert r.finish_s.tolist() == pytest.approx([0.022, 0.021])
    assert r.prefill_start_s.tolist() == pytest.approx([0.0, 0.010])
    tl = res.timeline
    got = tl[["start_s", "end_s", "iterations", "prefill_tokens", "decode_seqs"]].to_numpy(float)
    np.testing.assert_allclose(got, [[0.0, 0.010, 1, 100, 0], [0.010, 0.020, 1, 50, 0],
                                     [0.020, 0.021, 1, 0, 2], [0.021, 0.022, 1, 0, 1]],
                               atol=1e-12)


def test_decode_stretch_is_interrupted_by_arrival(h100, llama7b):
    """A 100-token decode advances as one event until a second request arrives mid-step."""
    res = run(make_trace([0.0, 0.0305], [10, 10], [100, 1]), h100, llama7b)
    tl = res.timeline
    # req0: prefill to .010, decode steps of 1 ms; the arrival at .0305 lands in the step
    # [.030, .031) which finishes; then req1's prefill [.031, .041); req0 resumes.
    assert tl.iloc[1][["start_s", "end_s", "iterations"]].tolist() == pytest.approx([0.010, 0.031, 21])
    assert tl.iloc[2][["start_s", "end_s", "prefill_tokens"]].tolist() == pytest.approx([0.031, 0.041, 10])
    r = res.requests
    assert r.finish_s[1] == pytest.approx(0.041)
    # 1 (prefill) + 21 + 78 decode tokens = 100 tokens; last 78 steps from .041
    assert r.finish_s[0] == pytest.approx(0.041 + 0.078)


def test_rejects_with_reason(h100, llama7b):
    res = run(make_trace([0.0, 1.0], [100, 5000], [10, 10]), h100, llama7b)
    r = res.requests
    assert r.rejected.tolist() == [False, True]
    assert "max_model_len" in r.reason[1]


def test_preemption_by_recompute_when_blocks_run_out(h100, llama7b):
    """Squeeze the KV cache so decodes must preempt; every request still finishes."""
    n = 12
    trace = make_trace(np.zeros(n), np.full(n, 500), np.full(n, 400))
    res = run(trace, h100, llama7b, memory_utilization=0.178)
    r = res.requests
    assert not r.rejected.any()
    assert r.preemptions.sum() > 0
    assert (r.finish_s > r.first_token_s).all()
    total_blocks = res.instances.kv_blocks_total[0]
    assert (res.timeline.kv_blocks_used <= total_blocks).all()


def _check_invariants(res, trace):
    r = res.requests
    assert len(r) == len(trace)
    done = r[~r.rejected]
    assert (r.rejected == (r.reason != "")).all()
    assert done.finish_s.notna().all()
    assert (done.finish_s >= done.arrival_s).all()
    assert (done.first_token_s >= done.prefill_start_s).all()
    assert (done.prefill_start_s >= done.arrival_s).all()
    assert (done.finish_s >= done.first_token_s).all()
    total = res.instances.set_index("instance").kv_blocks_total
    assert (res.timeline.kv_blocks_used <= total[res.timeline.instance].values).all()
    # tokens conserved: every output token was sampled once, by a prefill or a decode step
    tl = res.timeline
    sampled = (tl.decode_seqs * tl.iterations).sum() + tl.prefill_done.sum()
    assert sampled == done.output_tokens.sum()
    if r.preemptions.sum() == 0:
        assert tl.prefill_tokens.sum() == done.prompt_tokens.sum()
    else:
        assert tl.prefill_tokens.sum() > done.prompt_tokens.sum()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 3000), st.integers(1, 300)),
                min_size=1, max_size=40),
       st.booleans(), st.sampled_from([0.2, 0.9]), st.integers(1, 3))
def test_invariants(reqs, chunked, mem, count):
    from simcluster.hardware import load_device
    from simcluster.models import model_preset
    reqs.sort()
    trace = make_trace([a for a, _, _ in reqs], [p for _, p, _ in reqs],
                       [o for _, _, o in reqs])
    dev, model = load_device("H100-SXM"), model_preset("llama-2-7b")
    kw = dict(chunked_prefill=chunked, memory_utilization=mem, max_batched_tokens=2048,
              max_num_seqs=16)
    res = run(trace, dev, model, cost=CostModel(), count=count,
              router="least_outstanding_tokens", **kw)
    _check_invariants(res, trace)
    again = run(trace, dev, model, cost=CostModel(), count=count,
                router="least_outstanding_tokens", **kw)
    assert res.requests.equals(again.requests)


def test_stretch_equals_stepping(h100, llama7b):
    """Advancing decode runs in one event gives the same times as one step per event."""
    rng = np.random.default_rng(3)
    n = 200
    trace = make_trace(np.sort(rng.uniform(0, 20, n)), rng.integers(10, 2000, n),
                       rng.integers(1, 400, n))
    fast = run(trace, h100, llama7b, cost=CostModel())
    slow = run(trace, h100, llama7b, cost=CostModel(), max_steady_steps=1)
    assert (slow.timeline.iterations == 1).all()
    assert len(fast.timeline) < len(slow.timeline) / 5
    np.testing.assert_allclose(fast.requests.finish_s, slow.requests.finish_s, rtol=1e-9)
    np.testing.assert_allclose(fast.requests.first_token_s, slow.requests.first_token_s,
                               rtol=1e-9)
    assert math.isclose(fast.summary()["tpot_p50_s"], slow.summary()["tpot_p50_s"],
                        rel_tol=1e-9)


@pytest.mark.parametrize("chunked", [False, True])
def test_outstanding_tokens_return_to_zero(h100, llama7b, chunked):
    """The routers' load signal drains exactly: preemptions and chunks included."""
    from simcluster.simulation import Simulation
    rng = np.random.default_rng(7)
    n = 60
    trace = make_trace(np.sort(rng.uniform(0, 2, n)), rng.integers(10, 3000, n),
                       rng.integers(1, 300, n))
    sim = Simulation(trace, llama7b, one_instance(h100, count=2, chunked_prefill=chunked,
                                                  memory_utilization=0.2,
                                                  max_batched_tokens=4096),
                     router="least_outstanding_tokens", cost_model=CostModel())
    res = sim.run()
    assert res.requests.preemptions.sum() > 0
    assert [inst.outstanding_tokens for inst in sim.cluster.instances] == [0, 0]


@pytest.mark.parametrize("router", ["least_outstanding_tokens", "join_shortest_queue"])
def test_multi_instance_runs_equal_stepping(h100, llama7b, router):
    """With load-aware routers over several instances, decode runs give exactly the results of
    one step per event: before routing, every instance is synced to the present."""
    from simcluster.simulation import Simulation
    rng = np.random.default_rng(11)
    n = 300
    trace = make_trace(np.sort(rng.uniform(0, 15, n)), rng.integers(10, 2000, n),
                       rng.integers(1, 300, n))

    def go(steps):
        return Simulation(trace, llama7b, one_instance(h100, count=3, max_steady_steps=steps),
                          router=router, cost_model=CostModel()).run()
    fast, slow = go(1_000_000), go(1)
    assert len(fast.timeline) < len(slow.timeline) / 5
    assert (fast.requests.instance == slow.requests.instance).all()
    np.testing.assert_allclose(fast.requests.finish_s, slow.requests.finish_s, rtol=1e-9)
    np.testing.assert_allclose(fast.requests.first_token_s, slow.requests.first_token_s,
                               rtol=1e-9)
    tl_f, tl_s = fast.timeline, slow.timeline
    assert (tl_f.decode_seqs * tl_f.iterations).sum() == (tl_s.decode_seqs * tl_s.iterations).sum()


def test_sync_at_the_end_of_a_decode_run_finishes_once(h100, llama7b):
    """Issue 10, defect 2: a policy syncing an instance exactly when its decode run ends (before
    the run's own wake-up at that time) used to finish its requests a second time."""
    trace = make_trace([0.0], [100], [4])
    first = run(trace, h100, llama7b)
    end = float(first.timeline.end_s.max())          # the decode run's end, as the run sums it
    # (10 ms + 3 x 1 ms: end - start rounds up to the run's last step offset, so a sync at
    # ``end`` applies every step of the run before the run itself wakes up)
    start = float(first.timeline.start_s.max())
    assert end - start >= 0.003
    sim = Simulation(trace, llama7b, one_instance(h100),
                     cost_model=PolynomialCostModel(prefill=(0.010, 0, 0), decode=(0.001, 0, 0)))
    inst = sim.cluster.instances[0]
    synced = []

    def syncer():                     # scheduled before the run's wake-up at the same time
        yield sim.env.timeout(end)
        assert inst._live is not None, "the decode run is still in flight at its end time"
        inst.sync(sim.env.now)
        synced.append(sim.env.now)
    sim.env.process(syncer())
    res = sim.run()
    assert synced == [end]
    assert res.requests.finish_s.tolist() == first.requests.finish_s.tolist()
    assert sim.cluster.finished_count == 1 and inst.outstanding_tokens == 0
