"""Slow scenarios (``pytest -m slow``): whole traces through bundled experiments.

Each runs a full experiment and checks the invariants every simulation must keep: every
request finished or rejected with a reason, tokens conserved, KV blocks within capacity,
and each instance's load signal drained to zero.
"""

from pathlib import Path

import pytest

from simcluster.experiment import load_experiment

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

pytestmark = pytest.mark.slow


def _check(sim, res):
    r = res.requests
    assert (r.rejected == (r.reason != "")).all()
    done = r[~r.rejected]
    assert done.finish_s.notna().all() and (done.finish_s >= done.arrival_s).all()
    tl = res.timeline
    sampled = (tl.decode_seqs * tl.iterations).sum() + tl.prefill_done.sum()
    # requests decoded on a second pool sample their first token on the first
    assert sampled == done.output_tokens.sum()
    cap = res.instances.set_index("instance").kv_blocks_total
    assert (tl.kv_blocks_used <= cap[tl.instance].values).all()
    assert all(inst.outstanding_tokens == 0 for inst in sim.cluster.instances)


@pytest.mark.parametrize("name", ["default.toml", "hllm_azure_conv.toml",
                                  "hllm_azure_conv_oblivious.toml", "hels_opt30b.toml",
                                  "llmshare_h100.toml", "llmshare_design.toml"])
def test_bundled_experiment_end_to_end(name):
    sim = load_experiment(EXPERIMENTS / name).simulation()
    res = sim.run()
    _check(sim, res)
    assert res.summary()["finished"] > 0.95 * len(res.requests)


@pytest.mark.parametrize("name", ["llmshare_h100.toml", "llmshare_design.toml"])
def test_phase_pools_conserve_servers_and_ship_every_handoff(name):
    sim = load_experiment(EXPERIMENTS / name).simulation()
    res = sim.run()
    assert sum(sim.cluster.role_counts().values()) == len(sim.cluster.instances)
    r = res.requests
    moved = r[r.handoff_bytes > 0]
    assert len(moved) == len(res.transfers) > 0.9 * len(r)
    assert (moved.handoff_end_s >= moved.handoff_start_s).all()
    assert (moved.first_token_s <= moved.handoff_end_s).all()
