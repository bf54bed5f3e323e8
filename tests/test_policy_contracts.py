"""One contract test per registry, parametrised over every registered policy.

Every router and every batching policy, dropped into the same small cluster, must serve a
bursty trace to completion: each request finished or rejected with a reason, tokens conserved,
KV blocks within capacity, and the same seed giving the same results.
"""

import numpy as np
import pytest

import simcluster.policies  # noqa: F401  (fills the registries)
from simcluster.cluster import InstanceSpec
from simcluster.cost import CostModel, Layout
from simcluster.hardware import load_device
from simcluster.serving.config import InstanceConfig
from simcluster.models import model_preset
from simcluster.policies import BATCHERS, ROUTERS
from simcluster.simulation import Simulation

from conftest import make_trace


def _trace(seed=0, n=80):
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(0.02, n))
    return make_trace(arrivals, rng.integers(16, 3000, n), rng.integers(1, 200, n))


def _run(router="round_robin", batching="vllm", count=3):
    spec = InstanceSpec(Layout.uniform(load_device("H100-SXM")),
                        InstanceConfig(max_num_seqs=32, memory_utilization=0.25,
                                       max_batched_tokens=4096),
                        count=count, batching=batching)
    sim = Simulation(_trace(), model_preset("llama-2-7b"), [spec], router=router,
                     cost_model=CostModel())
    return sim.run()


def _check(res):
    r = res.requests
    assert (r.rejected == (r.reason != "")).all()
    done = r[~r.rejected]
    assert done.finish_s.notna().all() and (done.finish_s >= done.arrival_s).all()
    tl = res.timeline
    assert (tl.decode_seqs * tl.iterations).sum() + tl.prefill_done.sum() == \
        done.output_tokens.sum()
    cap = res.instances.set_index("instance").kv_blocks_total
    assert (tl.kv_blocks_used <= cap[tl.instance].values).all()


def test_registries_reject_unknown_names_listing_known():
    with pytest.raises(KeyError, match="round_robin"):
        ROUTERS.create("nope")
    with pytest.raises(KeyError, match="vllm"):
        BATCHERS.create("nope")


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_every_router_serves_the_trace(router):
    res = _run(router=router)
    _check(res)
    again = _run(router=router)
    assert res.requests.equals(again.requests)


@pytest.mark.parametrize("batching", sorted(BATCHERS))
def test_every_batching_policy_serves_the_trace(batching):
    res = _run(batching=batching, count=1)
    _check(res)
    assert not res.requests.rejected.any()


def _every_policy():
    from simcluster.policies import (CONTROLLERS, NUMA_PLACEMENTS, OFFLOADS, PARTITIONS)
    regs = {"routers": ROUTERS, "batching": BATCHERS, "controllers": CONTROLLERS,
            "partitions": PARTITIONS, "offloads": OFFLOADS, "numa": NUMA_PLACEMENTS}
    return [(what, reg, name) for what, reg in regs.items() for name in sorted(reg)
            if reg[name].__module__.startswith("simcluster.")]


@pytest.mark.parametrize("what, registry, name", _every_policy(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_every_policy_is_listed_with_its_params_and_what_it_does(what, registry, name, capsys):
    from simcluster.cli import main
    line = registry.describe(name)
    params = registry.parameters(name)
    assert line.startswith("(") and all(f"{p}" in line for p in params or ())
    own = registry[name].__dict__.get("__doc__") or ""      # its own, not a base class's
    assert own.strip(), f"{what} policy {name!r} has no docstring to list"
    assert line.rstrip().endswith(".")
    assert main(["list", what]) == 0
    assert f"{name}  " in capsys.readouterr().out


def test_describe_takes_any_keyword_and_no_docstring():
    from simcluster.policies.registry import Registry
    reg = Registry("test")

    @reg.register("bare")
    def bare(**kw):
        return object()

    @reg.register("plain")
    class Plain:
        def __init__(self, a, b: int = 2):
            pass

    assert reg.describe("bare") == "(**params)"
    assert reg.describe("plain") == "(a, b=2)"
