"""Every bundled experiment: its contract, and results independent of the decode-run shortcut.

- Contract: each ``experiments/*.toml`` loads, every policy it names is registered and every
  params table fits the policy's signature (checked here from the raw TOML, independently of
  the loader), and its simulation builds.
- Decode runs: an instance advances a run of identical decode steps in one event
  (``InstanceConfig.max_steady_steps``); capped at one step per event, every experiment must
  give the same requests (instance, rejection, times), the same work per instance and the
  same controller decisions. The default run compares the first 30 s of each experiment's
  trace, ``-m slow`` (run by CI) the first 10 minutes, and ``-m slow`` or ``-m exhaustive``
  the whole traces (about 5 CPU minutes stepping the default experiment's 19,366 requests one
  decode step at a time: CI leaves it out, ``.ci/run`` says how to run it).
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import numpy as np
import pytest

from simcluster.errors import InputError, UnknownNameError
from simcluster.experiment import load_experiment
from simcluster.policies.registry import (BATCHERS, CONTROLLERS, NUMA_PLACEMENTS, OFFLOADS,
                                          PARTITIONS, ROUTERS)
from simcluster.workload import time_window

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


# ----------------------------------------------------------------------------- decode runs
def _capped(exp, steps: int, window_s: float | None):
    trace = exp.trace if window_s is None else time_window(exp.trace, 0.0, window_s)
    specs = tuple(dataclasses.replace(s, config=dataclasses.replace(s.config,
                                                                    max_steady_steps=steps))
                  for s in exp.instances)
    return dataclasses.replace(exp, trace=trace, instances=specs)


def _work(res):
    tl = res.timeline.assign(decoded=lambda d: d.decode_seqs * d.iterations)
    return tl.groupby("instance")[["iterations", "prefill_tokens", "prefill_done",
                                   "decoded"]].sum()


def _compare(path, window_s):
    exp = load_experiment(path)
    fast_sim = _capped(exp, 1_000_000, window_s).simulation()
    fast = fast_sim.run()
    slow_sim = _capped(exp, 1, window_s).simulation()
    slow = slow_sim.run()
    assert (slow.timeline.iterations == 1).all()
    a, b = fast.requests, slow.requests
    assert a.instance.tolist() == b.instance.tolist(), "requests routed differently"
    assert a.reason.tolist() == b.reason.tolist()
    for col in ("prefill_start_s", "first_token_s", "finish_s"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-9, err_msg=col)
    assert _work(fast).equals(_work(slow))
    ca, cb = fast_sim.cluster, slow_sim.cluster
    if getattr(ca, "controller", None) is not None:
        da, db = ca.controller.decisions, cb.controller.decisions
        assert da.active.tolist() == db.active.tolist(), "controller decided differently"
    return len(a)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=IDS)
def test_results_do_not_depend_on_decode_runs_first_30s(path):
    assert _compare(path, 30.0) > 0


@pytest.mark.slow
@pytest.mark.parametrize("path", EXPERIMENTS, ids=IDS)
def test_results_do_not_depend_on_decode_runs_first_10_minutes(path):
    assert _compare(path, 600.0) > 0


@pytest.mark.slow
@pytest.mark.exhaustive
@pytest.mark.parametrize("path", EXPERIMENTS, ids=IDS)
def test_results_do_not_depend_on_decode_runs_whole_trace(path):
    assert _compare(path, None) > 0
