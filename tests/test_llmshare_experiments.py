"""LLMShare experiments: design rows and phase pools in TOML, fit_context, evaluate_design."""

import math

import numpy as np
import pytest

from simcluster.cluster import PhasePoolCluster
from simcluster.errors import InputError
from simcluster.experiment import experiments_dir, load_experiment
from simcluster.hardware.parametric import (H100_DECODE_ROW, H100_PREFILL_ROW, ServingDesign,
                                            parse_row)
from simcluster.models import model_preset
from simcluster.simulation.design import evaluate_design
from simcluster.workload import fit_context

from conftest import make_trace


def test_fit_context_cuts_prompts_and_keeps_what_it_cut():
    t = make_trace([0, 1, 2, 3], [100, 2000, 3000, 10], [10, 100, 2048, 5])
    f = fit_context(t, 2048)
    assert list(f.prompt_tokens) == [100, 1948, 3000, 10]
    assert list(f.extras["prompt_tokens_cut"]) == [0, 52, 0, 0]   # 2048 outputs cannot fit
    assert (f.prompt_tokens + f.output_tokens <= 2048)[[0, 1, 3]].all()
    with pytest.raises(ValueError, match="max_tokens"):
        fit_context(t, 1)


def test_fit_context_keeps_the_block_hashes_of_the_prompts_it_does_not_cut():
    """It dropped the block size for every request, so a hashed trace (Mooncake) lost prefix
    caching altogether without a word; a cut prompt starts inside what its hashes described,
    so it alone keeps none."""
    from simcluster.workload import Trace
    t = Trace(np.array([0.0, 1.0, 2.0]), np.array([1024, 1024, 3000]), np.array([8, 8, 8]),
              extras={"hash_ids": [(1, 2), (1, 3), (1, 4, 5, 6, 7, 8)]}, hash_block_tokens=512)
    f = fit_context(t, 2048)
    assert f.has_block_hashes and f.hash_block_tokens == 512
    assert list(f.extras["prompt_tokens_cut"]) == [0, 0, 960]
    assert [tuple(h) for h in f.extras["hash_ids"]] == [(1, 2), (1, 3), ()]
    from simcluster.cluster import InstanceSpec
    from simcluster.cost import Layout
    from simcluster.simulation import Simulation
    res = Simulation(f, "llama-2-7b", InstanceSpec(Layout.uniform("H100-SXM"))).run()
    assert res.summary()["prefix_cached_tokens"] == 512      # the second reuses block 1


def test_bundled_llmshare_experiment_loads_as_phase_pools():
    exp = load_experiment(experiments_dir() / "llmshare_h100.toml")
    assert len(exp.trace) == 2454
    assert exp.trace.arrival_s[-1] - exp.trace.arrival_s[0] == pytest.approx(120.0)
    assert int(np.sum(exp.trace.extras["prompt_tokens_cut"] > 0)) == 253
    assert (exp.trace.prompt_tokens + exp.trace.output_tokens <= 2048).all()
    pre, dec = exp.instances
    assert (pre.count, pre.layout.tp, pre.pool) == (7, 8, "prefill")
    assert (dec.count, dec.layout.tp, dec.pool) == (6, 8, "decode")
    assert pre.layout.devices[0].design.cores == 132
    sim = exp.simulation()
    assert isinstance(sim.cluster, PhasePoolCluster) and sim.cluster.rebalancer is not None
    assert sim.cluster.router.overlap


def test_each_requests_cut_prompt_tokens_are_in_its_results():
    """requests.csv of llmshare_h100 and llmshare_design gained this column (the run's digest
    changed; the other columns are byte for byte as before): how many prompt tokens
    fit_context cut from each request was on the trace and dropped from the results."""
    exp = load_experiment("llmshare_h100", {"trace.first_n": 200})
    cut = exp.run().requests.prompt_tokens_cut
    assert cut.tolist() == list(exp.trace.extras["prompt_tokens_cut"]) and (cut > 0).any()


def _toml(tmp_path, body):
    p = tmp_path / "exp.toml"
    p.write_text('name = "t"\n[trace.synthetic]\nn = 20\nrate_per_s = 5.0\n'
                 '[trace.synthetic.prompt]\ndist = "fixed"\ntokens = 300\n'
                 '[trace.synthetic.output]\ndist = "fixed"\ntokens = 20\n'
                 '[model]\nname = "llama-2-70b"\n' + body)
    return p


POOLS = ('[[instances]]\ndesign = "1,8,18,80,50,132,256,4,16,32"\npool = "prefill"\n'
         '[[instances]]\ndesign = "1,8,18,80,50,132,256,4,16,32"\npool = "decode"\n'
         '[pools]\nrouting = "splitwise"\n')


def test_a_small_design_experiment_runs(tmp_path):
    res = load_experiment(_toml(tmp_path, POOLS)).run()
    r = res.requests
    assert not r.rejected.any() and (r.handoff_bytes > 0).all()
    assert len(res.transfers) == 20 and res.summary()["energy_kwh"] > 0


@pytest.mark.parametrize("body, field", [
    (POOLS.replace('pool = "prefill"', 'pool = "prefill"\ncount = 2'), "count"),
    (POOLS.replace('"1,8,18', '"1,8,x'), "design"),
    (POOLS.replace('"1,8,18,80,50,132,256,4,16,32"\npool = "prefill"',
                   '"1,8,18,80,50,132,256,4,16,32"\npool = "prefill"\n'
                   '[instances.design_params]\nmemory_technology = "HBM9"'),
     "memory_technology"),
    (POOLS.replace('routing = "splitwise"', 'routing = "nope"'), "routing"),
    (POOLS + '[disaggregation]\nkv_link = "PCIe4"\n', "pools"),
])
def test_bad_design_experiments_name_the_field(tmp_path, body, field):
    with pytest.raises(InputError, match=field):
        load_experiment(_toml(tmp_path, body))


def test_evaluate_design_and_infeasible_designs():
    trace = make_trace(np.linspace(0, 2, 12), [600] * 12, [30] * 12)
    model = model_preset("gpt-3-175b")
    design = ServingDesign(parse_row(H100_PREFILL_ROW.replace("7,", "1,", 1)),
                           parse_row(H100_DECODE_ROW.replace("6,", "1,", 1)))
    ev = evaluate_design(design, trace, model, ttft_slo_s=5.0, tpot_slo_s=0.5)
    assert ev.feasible and ev.finished == 12 and ev.serving_time_s > 2.0
    assert ev.capex_usd == pytest.approx(2 * 246_237, rel=0.01)
    assert ev.run_cost_usd == pytest.approx(ev.usd_per_hour * ev.serving_time_s / 3600)
    assert ev.energy_kwh > 0 and ev.slo_attainment == 1.0 and ev.fits_reticle
    small = ServingDesign(parse_row("1,4,6,40,20,72,64,1,16,16"), design.decode)
    bad = evaluate_design(small, trace, model)
    assert not bad.feasible and "prefill" in bad.infeasible and math.isinf(bad.serving_time_s)
    huge = ServingDesign(parse_row("1,8,24,128,110,180,512,8,128,128"), design.decode)
    worse = evaluate_design(huge, trace, model)
    assert not worse.feasible and "plausible" in worse.infeasible
