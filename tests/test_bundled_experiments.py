"""Every bundled experiment's contract: each ``experiments/*.toml`` loads, every policy it
names is registered and every params table fits the policy's signature (checked here from the
raw TOML, independently of the loader), and its simulation builds.

(That every bundled experiment's results are independent of the decode-run shortcut,
``max_steady_steps``, is tests/test_step_invariance.py.)
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from simcluster.errors import InputError, UnknownNameError
from simcluster.experiment import load_experiment
from simcluster.policies.registry import (BATCHERS, CONTROLLERS, NUMA_PLACEMENTS, OFFLOADS,
                                          PARTITIONS, ROUTERS)

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.toml"))
IDS = [p.stem for p in EXPERIMENTS]


def _policies(raw: dict):
    """(registry, name, params, where) of every policy an experiment file names."""
    router = raw.get("router", {})
    yield ROUTERS, router.get("policy", "round_robin"), router.get("params", {}), "router"
    for i, inst in enumerate(raw["instances"]):
        yield (BATCHERS, inst.get("batching", "vllm"), inst.get("batching_params", {}),
               f"instances[{i}]")
        if "partition" in inst:
            extra = {k: v for k, v in inst.get("partition_params", {}).items()
                     if k not in ("batch_size", "context_tokens", "max_context_tokens")}
            yield PARTITIONS, inst["partition"], extra, f"instances[{i}]"
    d = raw.get("disaggregation")
    if d is not None:
        for key, reg, default in (("decode_router", ROUTERS, "least_outstanding_tokens"),
                                  ("offload", OFFLOADS, "all"), ("controller", CONTROLLERS, None),
                                  ("numa", NUMA_PLACEMENTS, None)):
            if d.get(key, default) is not None:
                yield reg, d.get(key, default), d.get(f"{key}_params", {}), "disaggregation"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=IDS)
def test_bundled_experiment_contract(path):
    raw = tomllib.loads(path.read_text())
    checked = 0
    for registry, name, params, where in _policies(raw):
        assert name in registry, f"{path.name} {where}: unknown {registry.kind} {name!r}"
        registry.check(name, params)
        registry.create(name, **params)
        checked += 1
    exp = load_experiment(path)
    assert len(exp.trace) > 0 and exp.instances and checked >= 1 + len(exp.instances)
    sim = exp.simulation()
    assert len(sim.cluster.instances) == sum(s.count for s in exp.instances)


def test_contract_catches_an_unknown_policy_and_a_bad_params_table(tmp_path):
    text = (EXPERIMENTS[0].parent / "hllm_azure_conv.toml").read_text()
    for edit, field in [(('decode_router = "numa_minibatch"', 'decode_router = "numa_minibach"'),
                         "disaggregation.decode_router"),
                        (("mini_batch = 4", "mini_batches = 4"),
                         "disaggregation.decode_router_params.mini_batches"),
                        (('policy = "length_buckets"', 'policy = "fastest"'), "router.policy"),
                        (("max_batch = 64", 'max_batch = "64"'), "router.params.max_batch")]:
        path = tmp_path / "bad.toml"
        path.write_text(text.replace(*edit))
        with pytest.raises(InputError) as info:
            load_experiment(path)
        assert info.value.field == field and info.value.file == str(path)
    path.write_text(text.replace('decode_router = "numa_minibatch"',
                                 'decode_router = "numa_minibach"'))
    with pytest.raises(UnknownNameError, match="did you mean 'numa_minibatch'"):
        load_experiment(path)
