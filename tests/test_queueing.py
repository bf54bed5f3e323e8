"""Analytic anchors: one server, one request at a time, constant or exponential service.

With ``max_num_seqs = 1`` and one output token per request, an instance is a single FCFS
server whose service time is one prefill iteration; the cost model then sets the service-time
distribution. Mean waits must match M/D/1 and M/M/1 within sampling error.
"""

import numpy as np
import pytest

from simcluster.cost.analytic import PolynomialCostModel
from simcluster.simulation import Simulation

from conftest import make_trace, one_instance


def _mean_wait(trace, cost, device, model):
    sim = Simulation(trace, model, one_instance(device, max_num_seqs=1,
                                                max_batched_tokens=20_000,
                                                max_model_len=20_000),
                     cost_model=cost)
    req = sim.run().requests
    assert not req.rejected.any()
    return req.queueing_s.mean()


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_mean_wait(rho, h100, llama7b):
    rng = np.random.default_rng(1)
    n, service = 60_000, 0.01
    lam = rho / service
    arrivals = np.cumsum(rng.exponential(1 / lam, n))
    trace = make_trace(arrivals, np.full(n, 100), np.ones(n, dtype=int))
    got = _mean_wait(trace, PolynomialCostModel.constant(service), h100, llama7b)
    want = rho * service / (2 * (1 - rho))        # Pollaczek-Khinchine, deterministic service
    assert got == pytest.approx(want, rel=0.08 if rho < 0.7 else 0.15)


def test_mm1_mean_wait(h100, llama7b):
    rng = np.random.default_rng(2)
    n, mean_service, rho = 60_000, 0.01, 0.6
    per_token = 1e-5                     # service = prompt tokens x 10 us: exponential lengths
    prompts = np.maximum(1, np.rint(rng.exponential(mean_service / per_token, n))).astype(int)
    arrivals = np.cumsum(rng.exponential(mean_service / rho, n))
    trace = make_trace(arrivals, prompts, np.ones(n, dtype=int))
    cost = PolynomialCostModel(prefill=(0.0, per_token, 0.0))
    got = _mean_wait(trace, cost, h100, llama7b)
    mu, lam = 1 / mean_service, rho / mean_service
    assert got == pytest.approx(lam / (mu * (mu - lam)), rel=0.1)
