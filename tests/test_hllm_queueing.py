"""Erlang C: the formulas, and a CPU-socket pool behind one FCFS queue reproducing them.

A pool of c socket instances with ``max_num_seqs = 1`` behind the ``pool_fcfs`` router is c
servers sharing one queue. Service times are exponential through the analytic cost model
(prefill time = prompt tokens x a constant, prompt lengths exponential), arrivals Poisson, so
the mean wait before service must match Erlang C's E[W] = P_W / (c mu - lambda) within sampling
error (a batch-means confidence interval).
"""

import math
from functools import partial

import numpy as np
import pytest

from simcluster.cluster import InstanceSpec
from simcluster.cost import Layout
from simcluster.cost.analytic import PolynomialCostModel
from simcluster.cluster.pools import DisaggregatedCluster
from simcluster.hardware import load_device, load_link
from simcluster.serving.config import InstanceConfig
from simcluster.policies.queueing import erlang_c, mean_queue_length, mean_wait, min_servers
from simcluster.simulation import Simulation

from conftest import make_trace


def test_erlang_c_known_values():
    # c = 1 is M/M/1: P_W = rho, E[W] = rho / (mu - lambda)
    assert erlang_c(0.6, 1.0, 1) == pytest.approx(0.6)
    assert mean_wait(0.6, 1.0, 1) == pytest.approx(0.6 / 0.4)
    # textbook value: a = 2 Erlangs on 3 servers, P_W = 4/9
    assert erlang_c(2.0, 1.0, 3) == pytest.approx(4 / 9)
    assert mean_wait(2.0, 1.0, 3) == pytest.approx(4 / 9 / (3 - 2))
    assert mean_queue_length(2.0, 1.0, 3) == pytest.approx(8 / 9)
    # the slides' form: P_W * 1/(1 - rho) * 1/(c mu)
    lam, mu, c = 7.3, 0.9, 10
    rho = lam / (c * mu)
    assert mean_wait(lam, mu, c) == pytest.approx(erlang_c(lam, mu, c) / (1 - rho) / (c * mu))
    assert math.isinf(mean_wait(3.0, 1.0, 3)) and erlang_c(3.0, 1.0, 3) == 1.0
    assert erlang_c(0.0, 1.0, 4) == 0.0
    # large pools stay finite and sensible (no factorial overflow)
    assert 0.0 < erlang_c(950.0, 1.0, 1000) < 1.0


def test_min_servers_is_the_smallest_meeting_the_threshold():
    lam, mu = 7.3, 0.9
    c = min_servers(lam, mu, 0.5)
    assert c > lam / mu and mean_wait(lam, mu, c) <= 0.5 < mean_wait(lam, mu, c - 1)
    assert min_servers(0.0, 1.0, 0.1, c_min=2) == 2
    assert min_servers(100.0, 1.0, 0.1, c_max=8) == 8          # pool too small: all of it
    with pytest.raises(ValueError):
        erlang_c(1.0, 0.0, 2)


def _batch_mean_ci(x, batches=20):
    """Mean and half-width (3 standard errors) of batch means, the warm-up batch dropped."""
    means = np.array([b.mean() for b in np.array_split(np.asarray(x), batches)][1:])
    return means.mean(), 3 * means.std(ddof=1) / math.sqrt(len(means))


def _socket_pool(c):
    cfg = InstanceConfig(max_num_seqs=1, max_batched_tokens=400_000, max_model_len=400_000)
    return [InstanceSpec(Layout.uniform(load_device("Xeon-Gold-6148")), cfg, count=c)]


@pytest.mark.parametrize("lam,mu,c", [(1.5, 1.0, 2), (3.2, 1.0, 4), (6.5, 2.0, 4),
                                      (6.0, 1.0, 8)])
def test_cpu_pool_matches_erlang_c(lam, mu, c, llama7b):
    rng = np.random.default_rng(11 + c)
    n, per_token = 16_000, 1e-4           # service = prompt tokens x 100 us
    prompts = np.maximum(1, np.rint(rng.exponential(1 / mu / per_token, n))).astype(int)
    arrivals = np.cumsum(rng.exponential(1 / lam, n))
    sim = Simulation(make_trace(arrivals, prompts, np.ones(n, dtype=int)), llama7b,
                     _socket_pool(c), router="pool_fcfs",
                     cost_model=PolynomialCostModel(prefill=(0.0, per_token, 0.0)))
    req = sim.run().requests
    assert not req.rejected.any()
    got, half = _batch_mean_ci(req.queueing_s)
    want = mean_wait(lam, mu, c)
    assert abs(got - want) <= half + 0.02 * want, (got, want, half)
    # every instance served: one queue, c servers
    assert req.instance.nunique() == c


def test_decode_pool_queue_is_mmc(llama7b):
    """Through the offload path: Poisson hand-offs (instant prefill and transfer) to a decode
    pool of c sockets, each decoding one request at a time for a geometric (~exponential)
    number of steps: the wait between hand-off and decode start matches Erlang C."""
    lam, c, step, mean_out = 3.0, 4, 0.01, 100          # mu = 1 / (100 x 10 ms) = 1 /s
    rng = np.random.default_rng(5)
    n = 8_000
    outputs = 1 + rng.geometric(1 / mean_out, n)         # decode steps after the first token
    arrivals = np.cumsum(rng.exponential(1 / lam, n))
    sock = load_device("Xeon-Gold-6148")
    cfg = InstanceConfig(max_num_seqs=1, max_model_len=100_000)
    specs = [InstanceSpec(Layout.uniform(load_device("A100-80GB-PCIe")), pool="prefill"),
             InstanceSpec(Layout.uniform(sock), cfg, count=c, pool="decode")]
    fast = load_link("NVLink4")
    factory = partial(DisaggregatedCluster, kv_link=fast, decode_router="pool_fcfs")
    sim = Simulation(make_trace(arrivals, np.full(n, 16), outputs), llama7b, specs,
                     cost_model=PolynomialCostModel(prefill=(1e-6, 0, 0), decode=(step, 0, 0)),
                     cluster_factory=factory)
    req = sim.run().requests
    arrive = np.array(sorted(e for _, _, _, e, _ in sim.cluster.transfers))
    assert len(arrive) == n
    ends = {rid: e for rid, _, _, e, _ in sim.cluster.transfers}
    handoff = req.request_id.map(ends)
    wait = req.finish_s - handoff - (req.output_tokens - 1) * step
    got, half = _batch_mean_ci(wait)
    want = mean_wait(lam, 1 / (mean_out * step), c)
    assert abs(got - want) <= half + 0.03 * want, (got, want, half)


def _batch_pool_sim(lam_b, b, c, step, mean_out, n_batches, seed, controller_params):
    """Poisson arrivals of b-request batches (one output length per batch, ~exponential);
    instant prefill and copy; c sockets each decoding one batch at a time behind one FCFS
    queue of whole batches (the dispatcher with mini_batch = None, hold = true)."""
    rng = np.random.default_rng(seed)
    starts = np.cumsum(rng.exponential(1 / lam_b, n_batches))
    outputs = np.repeat(1 + rng.geometric(1 / mean_out, n_batches), b)
    arrivals = np.repeat(starts, b)
    sock = load_device("Xeon-Gold-6148")
    specs = [InstanceSpec(Layout.uniform(load_device("A100-80GB-PCIe")),
                          InstanceConfig(max_num_seqs=256), pool="prefill"),
             InstanceSpec(Layout.uniform(sock), InstanceConfig(max_num_seqs=b,
                                                               max_model_len=100_000),
                          count=c, pool="decode")]
    factory = partial(DisaggregatedCluster, kv_link=load_link("NVLink4"),
                      decode_router="numa_minibatch",
                      decode_router_params={"mini_batch": None, "hold": True},
                      controller="mmc", controller_params=controller_params)
    sim = Simulation(make_trace(arrivals, np.full(len(arrivals), 16), outputs), llama_7b(),
                     specs, cost_model=PolynomialCostModel(prefill=(1e-6, 0, 0),
                                                           decode=(step, 0, 0)),
                     cluster_factory=factory)
    return sim, sim.run().requests


def llama_7b():
    from simcluster.models import model_preset
    return model_preset("llama-2-7b")


def test_batch_units_controller_reproduces_erlang_c_waits():
    """The slides' reading: customers are prefill batches, 1/mu one socket's decode latency
    of a batch. A pool of c sockets serving whole batches from one queue waits as Erlang C in
    batch units, and the controller measures that lambda and mu."""
    lam_b, b, c, step, mean_out = 2.5, 4, 4, 0.01, 100          # mu_b = 1 /s, rho = 0.625
    sim, req = _batch_pool_sim(lam_b, b, c, step, mean_out, 5_000, 21,
                               {"units": "batches", "max_wait_s": 0.0, "window_s": 200.0,
                                "interval_s": 100.0})
    assert not req.rejected.any()
    # held on the GPU until a socket is free, then copied: the wait ends when the copy starts
    starts = {rid: s for rid, _, s, _, _ in sim.cluster.transfers}
    wait = req.request_id.map(starts) - req.first_token_s
    per_batch = wait.groupby(req.first_token_s).agg(["min", "max", "size"])
    assert (per_batch["size"] == b).all()                     # one prefill batch per group
    assert np.allclose(per_batch["min"], per_batch["max"], atol=1e-9)   # served together
    got, half = _batch_mean_ci(per_batch["min"].to_numpy())
    want = mean_wait(lam_b, 1 / (mean_out * step), c)
    assert abs(got - want) <= half + 0.03 * want, (got, want, half)
    d = sim.cluster.controller.decisions
    steady = d[(d.time_s > d.time_s.iloc[0] + 200) & (d.time_s < req.arrival_s.max())]
    assert (steady.units == "batches").all() and (steady.mean_batch == b).all()
    assert steady.lambda_per_s.median() == pytest.approx(lam_b, rel=0.1)
    assert steady.mu_per_s.median() == pytest.approx(1 / (mean_out * step), rel=0.1)
    for row in steady.itertuples():
        assert row.expected_wait_s == pytest.approx(mean_wait(row.lambda_per_s, row.mu_per_s,
                                                              row.active))


def test_batch_and_request_units_size_the_same_load_differently():
    """The same load sized by each reading: in batch units lambda is b times smaller and 1/mu
    the decode latency of a batch, so a threshold in seconds buys a different c; every
    decision is Erlang C's smallest c for what it measured."""
    rows = {}
    for units in ("requests", "batches"):
        sim, req = _batch_pool_sim(2.0, 4, 8, 0.01, 100, 1_500, 3,
                                   {"units": units, "max_wait_s": 0.5, "window_s": 100.0,
                                    "interval_s": 50.0})
        d = sim.cluster.controller.decisions
        d = d[d.lambda_per_s > 0]
        for row in d.itertuples():
            assert row.active == min_servers(row.lambda_per_s, row.mu_per_s, 0.5, c_max=8)
        rows[units] = d.iloc[len(d) // 2]
    req_row, batch_row = rows["requests"], rows["batches"]
    assert req_row.lambda_per_s == pytest.approx(4 * batch_row.lambda_per_s, rel=0.2)
    assert batch_row.units == "batches" and req_row.units == "requests"
