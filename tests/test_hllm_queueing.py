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
