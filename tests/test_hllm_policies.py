"""hLLM's policies: the M/M/c controller, length buckets and padding, NUMA placement."""

from functools import partial

import numpy as np
import pytest

from simcluster.cluster import InstanceSpec
from simcluster.cost import CostModel, Layout
from simcluster.cost.analytic import PolynomialCostModel
from simcluster.cluster.pools import DisaggregatedCluster
from simcluster.hardware import load_device, load_link
from simcluster.serving.config import InstanceConfig
import dataclasses

from simcluster.cost.numa import (NumaTimer, RemoteMemory, memory_throughput,
                                  remote_penalty)
from simcluster.policies import BATCHERS, CONTROLLERS, ROUTERS
from simcluster.policies.bucketed import PaddedPrefillTimer, bucket_of
from simcluster.policies.queueing import min_servers
from simcluster.serving.request import Request
from simcluster.simulation import Simulation

from conftest import make_trace

EMPTY = np.zeros(0, dtype=np.int64)


@pytest.fixture(scope="module")
def a100():
    return load_device("A100-80GB-PCIe")


@pytest.fixture(scope="module")
def xeon():
    return load_device("Xeon-Gold-6148")


def _offload_sim(trace, model, gpu, sock, sockets, cost, **kw):
    cfg = kw.pop("socket_config", InstanceConfig(max_num_seqs=1, max_model_len=100_000))
    specs = [InstanceSpec(Layout.uniform(gpu), pool="prefill"),
             InstanceSpec(Layout.uniform(sock), cfg, count=sockets, pool="decode")]
    factory = partial(DisaggregatedCluster, kv_link=load_link("PCIe3"), **kw)
    return Simulation(trace, model, specs, cost_model=cost, cluster_factory=factory)


# -- the M/M/c controller -----------------------------------------------------------------------
def test_mmc_controller_follows_a_burst(llama7b, a100, xeon):
    rng = np.random.default_rng(3)
    quiet1 = np.cumsum(rng.exponential(1 / 0.5, 60))
    burst = quiet1[-1] + np.cumsum(rng.exponential(1 / 6.0, 900))
    quiet2 = burst[-1] + np.cumsum(rng.exponential(1 / 0.5, 60))
    arrivals = np.concatenate([quiet1, burst, quiet2])
    n = len(arrivals)
    step, mean_out = 0.01, 100
    outputs = 1 + rng.geometric(1 / mean_out, n)
    cost = PolynomialCostModel(prefill=(1e-4, 0, 0), decode=(step, 0, 0))
    sim = _offload_sim(make_trace(arrivals, np.full(n, 32), outputs), llama7b, a100, xeon, 12,
                       cost, decode_router="pool_fcfs", controller="mmc",
                       controller_params={"max_wait_s": 0.5, "window_s": 20.0,
                                          "interval_s": 5.0, "initial_active": 1})
    req = sim.run().requests
    assert not req.rejected.any() and req.finish_s.notna().all()
    ctl = sim.cluster.controller
    d = ctl.decisions
    # each decision is Erlang C's smallest c for the measured lambda and mu
    for row in d.itertuples():
        assert row.active == min_servers(row.lambda_per_s, row.mu_per_s, 0.5, c_max=12)
    in_burst = d[(d.time_s > burst[0] + 25) & (d.time_s < burst[-1])]
    # mu from the cost model: one request of ~100 decode steps of 10 ms at a time
    assert in_burst.mu_per_s.median() == pytest.approx(1 / (step * mean_out), rel=0.15)
    after = d[d.time_s > burst[-1] + 40]
    assert in_burst.active.min() >= 6 > after.active.max()
    active = ctl.active_over_time()
    assert active.active.max() >= 6 and active.active.iloc[0] == 1
    use = ctl.usage()
    assert len(use) == 12 and use.idle_fraction.dropna().between(0, 1).all()
    assert use.active_s.iloc[0] > use.active_s.iloc[-1] >= 0
    assert 0 < ctl.idle_fraction() < 1


def test_mmc_online_mu_measures_the_service_rate(llama7b, a100, xeon):
    rng = np.random.default_rng(4)
    n, step, mean_out = 3000, 0.01, 50
    arrivals = np.cumsum(rng.exponential(1 / 4.0, n))
    outputs = 1 + rng.geometric(1 / mean_out, n)
    cost = PolynomialCostModel(prefill=(1e-4, 0, 0), decode=(step, 0, 0))
    sim = _offload_sim(make_trace(arrivals, np.full(n, 32), outputs), llama7b, a100, xeon, 8,
                       cost, decode_router="pool_fcfs", controller="mmc",
                       controller_params={"mu_source": "online", "window_s": 100.0,
                                          "interval_s": 50.0})
    sim.run()
    d = sim.cluster.controller.decisions
    online = d[d.mu_source == "online"]
    assert len(online) >= 5
    assert online.mu_per_s.median() == pytest.approx(1 / (step * mean_out), rel=0.15)


def test_controller_registry_and_parameters():
    assert "mmc" in CONTROLLERS
    with pytest.raises(ValueError, match="mu_source"):
        CONTROLLERS.create("mmc", mu_source="magic")


# -- length buckets and padding -----------------------------------------------------------------
def test_bucket_of():
    assert [bucket_of(t, (128, 512)) for t in (1, 128, 129, 512, 513, 10_000)] == [0, 0, 1, 1,
                                                                                  2, 2]


def test_padded_timer_pads_prefill_to_the_longest(llama7b, a100):
    timer = CostModel().timer(llama7b, Layout.uniform(a100))
    padded = PaddedPrefillTimer(timer)
    chunks, ctx = np.array([100, 800, 300]), np.zeros(3, dtype=np.int64)
    assert padded.time(chunks, ctx, 0, 0, 3) == pytest.approx(
        timer.time(np.full(3, 800), ctx, 0, 0, 3))
    assert padded.time(np.array([700]), ctx[:1], 0, 0, 1) == timer.time(np.array([700]),
                                                                         ctx[:1], 0, 0, 1)
    assert padded.decode_steps(4, 4000, 3) == pytest.approx(timer.decode_steps(4, 4000, 3))


class _FakeInstance:
    def __init__(self, waiting):
        from collections import deque
        self.running, self.waiting = [], deque(waiting)
        self.config = InstanceConfig(max_batched_tokens=100_000)
        self.kv = type("KV", (), {"free_blocks": 100_000})()


def test_bucketed_batcher_admits_one_bucket_prefix():
    reqs = [Request(i, 0.0, p, 4) for i, p in enumerate([100, 120, 900, 110, 130])]
    b = BATCHERS.create("bucketed", buckets=[128, 1024]).bind(_FakeInstance(reqs))
    plan = b.schedule(0.0)
    assert [r.id for r in plan.admit] == [0, 1]           # stops at the 900-token prompt
    assert [r.id for r, _ in plan.prefill] == [0, 1]
    b = BATCHERS.create("bucketed", buckets=[2048], max_batch=3).bind(_FakeInstance(reqs))
    assert [r.id for r in b.schedule(0.0).admit] == [0, 1, 2]


def _prefill_qps(trace, model, gpu, router, batching, params, router_params):
    cfg = InstanceConfig(max_num_seqs=8, max_batched_tokens=65_536)
    spec = InstanceSpec(Layout.uniform(gpu), cfg, batching=batching, batching_params=params)
    sim = Simulation(trace, model, [spec], router=router, router_params=router_params)
    res = sim.run()
    req = res.requests
    return len(req) / (req.finish_s.max() - req.arrival_s.min()), res


def test_length_buckets_beat_random_batches_when_padded(llama7b, a100):
    rng = np.random.default_rng(0)
    n = 400
    prompts = np.clip(rng.lognormal(np.log(600), 0.9, n), 16, 4000).astype(int)
    trace = make_trace(np.zeros(n), prompts, np.ones(n, dtype=int))
    buckets = [256, 512, 1024, 2048]
    padded = {"buckets": [10**6], "padded": True}
    fcfs, _ = _prefill_qps(trace, llama7b, a100, "round_robin", "bucketed", padded, {})
    grouped, res = _prefill_qps(trace, llama7b, a100, "length_buckets", "bucketed",
                                {"buckets": buckets, "padded": True}, {"buckets": buckets})
    unpadded, _ = _prefill_qps(trace, llama7b, a100, "round_robin", "vllm", {}, {})
    assert grouped > 1.3 * fcfs
    assert unpadded >= grouped * 0.95          # varlen kernels: mixing costs ~nothing
    # batches of the bucketed run hold one bucket each
    starts = {}
    for r in res.requests.itertuples():
        starts.setdefault(r.prefill_start_s, set()).add(bucket_of(r.prompt_tokens, buckets))
    assert all(len(b) == 1 for b in starts.values())


# -- NUMA -------------------------------------------------------------------------------------
def test_remote_memory_slows_memory_bound_cpu_decode(llama7b, xeon, a100):
    local = CostModel().timer(llama7b, Layout.uniform(xeon))
    remote = CostModel(RemoteMemory(CostModel().calibration)).timer(llama7b, Layout.uniform(xeon))
    t_l = local.time(EMPTY, EMPTY, 1, 1000, 1)
    t_r = remote.time(EMPTY, EMPTY, 1, 1000, 1)
    assert t_r / t_l == pytest.approx(remote_penalty(xeon), rel=0.02)
    # 20 cores keep ~197 lines in flight: both loops bandwidth-bound, ~ the bandwidth ratio
    assert remote_penalty(xeon) == pytest.approx(
        xeon.mem_bw_bytes_per_s / xeon.remote_mem_bw_bytes_per_s, rel=0.02)
    gpu_l = CostModel().timer(llama7b, Layout.uniform(a100)).time(EMPTY, EMPTY, 1, 1000, 1)
    gpu_r = CostModel(RemoteMemory(CostModel().calibration)).timer(
        llama7b, Layout.uniform(a100)).time(EMPTY, EMPTY, 1, 1000, 1)
    assert gpu_l == gpu_r                                   # GPUs have no NUMA
    # the blend: weights local, KV remote sits between all-local and all-remote
    mixed = NumaTimer(local, remote, 0.0, 1.0)
    t_m = mixed.time(EMPTY, EMPTY, 8, 8 * 4000, 8)
    assert local.time(EMPTY, EMPTY, 8, 32000, 8) < t_m < remote.time(EMPTY, EMPTY, 8, 32000, 8)
    steps = mixed.decode_steps(8, 32000, 5)
    assert steps[0] == pytest.approx(t_m)
    assert np.all(np.diff(steps) > 0)


@pytest.mark.parametrize("placement,slow", [("aware", [False, False, False, False]),
                                            ("oblivious", [False, True, False, True]),
                                            ("interleave", [True, True, True, True])])
def test_numa_placements(placement, slow, llama7b, a100, xeon):
    n = 8
    trace = make_trace(np.arange(n) * 0.01, np.full(n, 500), np.full(n, 40))
    cfg = InstanceConfig(max_num_seqs=4)
    sim = _offload_sim(trace, llama7b, a100, xeon, 4, CostModel(), socket_config=cfg,
                       numa=placement, decode_router="round_robin")
    pool = sim.cluster.decode_pool
    base = CostModel().timer(llama7b, Layout.uniform(xeon)).time(EMPTY, EMPTY, 2, 2000, 2)
    got = [inst.timer.time(EMPTY, EMPTY, 2, 2000, 2) > base * 1.01 for inst in pool]
    assert got == slow
    assert [p[1:3] for p in sim.cluster.numa.placed] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    req = sim.run().requests
    assert req.finish_s.notna().all()


def test_minibatch_dispatcher_groups_consecutive_handoffs(llama7b, a100, xeon):
    n = 12
    trace = make_trace(np.zeros(n), np.full(n, 200), np.full(n, 30))
    sim = _offload_sim(trace, llama7b, a100, xeon, 2, CostModel(),
                       socket_config=InstanceConfig(max_num_seqs=16), numa="aware",
                       decode_router="numa_minibatch", decode_router_params={"mini_batch": 3})
    req = sim.run().requests
    order = sorted(sim.cluster.transfers, key=lambda t: t[3])
    socket = [int(req.instance[req.request_id == rid].iloc[0]) for rid, *_ in order]
    assert [len(set(socket[k:k + 3])) for k in range(0, n, 3)] == [1, 1, 1, 1]
    assert socket[0] != socket[3]
    assert "numa_minibatch" in ROUTERS


def test_memory_throughput_is_littles_law_between_its_bounds():
    bw, lat = 100e9, 100e-9
    assert memory_throughput(lat, bw, 1) == pytest.approx(64 / (lat + 64 / bw))
    assert memory_throughput(lat, bw, 100_000) == pytest.approx(bw, rel=1e-3)
    for n in (4, 40, 400):       # never above either bound
        x = memory_throughput(lat, bw, n)
        assert x <= min(bw, n * 64 / lat) * (1 + 1e-12)


def test_numa_latency_term_scales_with_the_latency_field(xeon):
    """With few lines in flight (2 cores) the remote loop is latency-bound: the penalty grows
    in proportion to the remote latency; with all 20 cores the UPI bandwidth binds until the
    latency grows past what ~197 lines in flight cover."""
    small = dataclasses.replace(xeon, compute_units=2)
    base = remote_penalty(small)
    for k in (2.0, 4.0):
        far = dataclasses.replace(small, remote_mem_latency_s=k * xeon.remote_mem_latency_s)
        assert remote_penalty(far) == pytest.approx(k * base, rel=0.1)
    lat_only = dataclasses.replace(small, remote_mem_bw_bytes_per_s=small.mem_bw_bytes_per_s)
    assert remote_penalty(lat_only) == pytest.approx(
        xeon.remote_mem_latency_s / xeon.local_mem_latency_s, rel=0.05)
    # the 6148 at its measured latency is UPI-bound; at twice the latency, latency-bound
    slower = dataclasses.replace(xeon, remote_mem_latency_s=2 * xeon.remote_mem_latency_s)
    assert remote_penalty(slower) > 1.15 * remote_penalty(xeon)


def test_remote_penalty_what_if(llama7b, xeon):
    local = CostModel().timer(llama7b, Layout.uniform(xeon))
    for penalty in (1.3, 7.0):
        remote = CostModel(RemoteMemory(CostModel().calibration, penalty)).timer(
            llama7b, Layout.uniform(xeon))
        assert remote.time(EMPTY, EMPTY, 1, 1000, 1) / local.time(EMPTY, EMPTY, 1, 1000, 1) \
            == pytest.approx(penalty, rel=0.02)
    with pytest.raises(ValueError, match="remote"):
        RemoteMemory(CostModel().calibration, 0.5)


def _short_socket_pool(llama7b, a100, xeon, placement, **params):
    """One-GPU host with 2-socket servers whose sockets hold only 24 GiB: the 7B model's
    weights leave ~7 GiB for KV."""
    small = dataclasses.replace(xeon, mem_bytes=24 * 2**30)
    trace = make_trace(np.zeros(4), np.full(4, 100), np.full(4, 10))
    return _offload_sim(trace, llama7b, a100, small, 2, CostModel(),
                        socket_config=InstanceConfig(max_num_seqs=64), numa=placement,
                        numa_params=params)


def test_weights_first_spills_kv_to_the_idle_socket(llama7b, a100, xeon):
    sim = _short_socket_pool(llama7b, a100, xeon, "aware", kv_tokens=30_000,
                             decode_sockets=[0])
    pool = sim.cluster.decode_pool
    placed = sim.cluster.numa.placed
    assert [p[1:3] for p in placed] == [(0, 0), (1, 0)]     # one decoding socket per host
    local = pool[0].memory.kv_capacity_tokens
    assert local < 30_000
    inst, (_, _, _, fw, fk, kv_local, cap) = pool[0], placed[0]
    assert fw == 0.0 and fk is None and kv_local == pytest.approx(local, abs=16)
    assert cap == pytest.approx(30_000, abs=16) and inst.kv.total_blocks * 16 == cap
    plain = CostModel().timer(llama7b, Layout.uniform(inst.layout.devices[0]))
    below, above = 0.5 * local, 0.5 * (local + 30_000)
    assert inst.timer.time(EMPTY, EMPTY, 8, int(below), 8) == pytest.approx(
        plain.time(EMPTY, EMPTY, 8, int(below), 8))           # local blocks first
    assert inst.timer.time(EMPTY, EMPTY, 8, int(above), 8) > 1.05 * plain.time(
        EMPTY, EMPTY, 8, int(above), 8)
    steps = inst.timer.decode_steps(8, int(local) - 8 * 20, 40)
    assert steps[0] == pytest.approx(plain.time(EMPTY, EMPTY, 8, int(local) - 8 * 20, 8))
    assert np.all(np.diff(steps) > 0)
    assert sim.run().requests.finish_s.notna().all()


def test_weights_first_beats_kv_first_until_the_kv_is_remote_too(llama7b, a100, xeon):
    aware = _short_socket_pool(llama7b, a100, xeon, "aware", kv_tokens=30_000,
                               decode_sockets=[0]).cluster
    kvf = _short_socket_pool(llama7b, a100, xeon, "kv_first", kv_tokens=30_000,
                             decode_sockets=[0]).cluster
    a, k = aware.decode_pool[0], kvf.decode_pool[0]
    assert kvf.numa.placed[0][3] > 0.1                       # kv_first reads weights remotely
    assert k.kv.total_blocks == a.kv.total_blocks            # the same KV room either way
    for ctx in (2_000, 10_000):
        assert a.timer.time(EMPTY, EMPTY, 8, ctx, 8) < k.timer.time(EMPTY, EMPTY, 8, ctx, 8)


def test_no_spill_when_every_socket_is_short(llama7b, a100, xeon):
    sim = _short_socket_pool(llama7b, a100, xeon, "aware", kv_tokens=30_000)
    for inst, p in zip(sim.cluster.decode_pool, sim.cluster.numa.placed):
        assert p[5] is None and p[6] == pytest.approx(inst.memory.kv_capacity_tokens, abs=16)
