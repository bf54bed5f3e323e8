"""A result never depends on how many decode steps one event advances (issue 10, defect 3).

Instances advance a run of identical decode steps in one event (``max_steady_steps``, a speed
optimisation). Every bundled experiment is run twice on the first requests of its trace —
as configured and with decode runs capped at one step per event (the slow, obviously correct
schedule) — and must route every request to the same instance at the same times, and its
controller must take the same decisions. The M/M/c controller's online mu (busy time read from
the timelines, whose decode-run rows grow in place as a sync applies more steps) is checked on
its own: it used to miss the growth and overestimate mu by 6-17%.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from simcluster import workload as wl
from simcluster.experiment import load_experiment

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.toml"))


def _capped(exp, steps: int, n: int | None, **controller):
    if n is not None:
        exp = dataclasses.replace(exp, trace=wl.first_n(exp.trace, min(n, len(exp.trace))))
    specs = tuple(dataclasses.replace(s, config=dataclasses.replace(s.config,
                                                                    max_steady_steps=steps))
                  for s in exp.instances)
    dis = exp.disaggregation
    if controller and dis is not None:
        dis = {**dis, "controller_params": {**dis["controller_params"], **controller}}
    return dataclasses.replace(exp, instances=specs, disaggregation=dis)


def _compare(path, n, **controller):
    exp = load_experiment(path)
    runs = []
    for steps in (1_000_000, 1):
        sim = _capped(exp, steps, n, **controller).simulation()
        runs.append((sim, sim.run()))
    (fast_sim, fast), (slow_sim, slow) = runs
    assert (slow.timeline.iterations == 1).all()
    a, b = fast.requests, slow.requests
    assert (a.instance.values == b.instance.values).all(), \
        f"{int((a.instance.values != b.instance.values).sum())} requests routed differently"
    assert (a.rejected.values == b.rejected.values).all()
    for col in ("first_token_s", "finish_s"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-9)
    ctl_a = getattr(fast_sim.cluster, "controller", None)
    if ctl_a is not None:
        da, db = ctl_a.decisions, slow_sim.cluster.controller.decisions
        assert len(da) == len(db)
        assert (da.active.values == db.active.values).all()
        np.testing.assert_allclose(da.mu_per_s, db.mu_per_s, rtol=1e-9)
        np.testing.assert_allclose(da.lambda_per_s, db.lambda_per_s, rtol=1e-12)
    return fast_sim


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_bundled_experiment_is_independent_of_decode_run_length(path):
    _compare(path, 250)


def test_online_mu_is_independent_of_decode_run_length():
    sim = _compare(EXPERIMENTS[0].parent / "hllm_azure_conv.toml", 600, mu_source="online")
    d = sim.cluster.controller.decisions
    assert (d.mu_source == "online").sum() >= 5


@pytest.mark.slow
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_first_3000_requests_are_independent_of_decode_run_length(path):
    _compare(path, 3000)      # (about the first 10 minutes of the Azure traces: run by CI)


@pytest.mark.slow
@pytest.mark.exhaustive       # (~5 CPU minutes: CI leaves it out, see .ci/run)
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_whole_bundled_experiment_is_independent_of_decode_run_length(path):
    _compare(path, None)
