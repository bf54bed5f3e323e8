"""Engine models: the timer's vector form, the fit, the stored spec, the CSV format, the CLI."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simcluster.cli import main
from simcluster.cost import CostModel, Layout
from simcluster.serving import InstanceConfig
from simcluster.cost.model import Batch
from simcluster.engines import (BASE_TERMS, EngineTerms, engine_toml, list_engines, load_engine)
from simcluster.engines.calibrate import calibrate, write_spec
from simcluster.engines.model import EngineCostModel, term_counts
from simcluster.engines.profile import read_iterations
from simcluster.errors import InputError
from simcluster.experiment import load_experiment

REPO = Path(__file__).resolve().parents[1]
HF = REPO / "hwspecs" / "engines" / "hf-cb-h100"


@pytest.fixture(scope="module")
def timer(h100, llama7b):
    return CostModel().timer(llama7b, Layout.uniform(h100))


TERMS_A = EngineTerms(decode_iteration=0.05, decode_kv_token=1.2e-6, decode_attn_pair=3e-9,
                      decode_sample=1e-5, prefill_iteration=0.04, prefill_kv_token=2e-6,
                      prefill_attn_pair=5e-10, prefill_token=1e-6, prefill_sequence=2e-4)


def test_decode_steps_equal_single_steps(timer):
    t = EngineCostModel(TERMS_A, "datasheet").timer(timer.model, timer.layout)
    n, ctx, k = 7, 7 * 900, 12
    vec = t.decode_steps(n, ctx, k)
    one = [t.time(np.zeros(0, int), np.zeros(0, int), n, ctx + n * j, n) for j in range(k)]
    assert np.allclose(vec, one, rtol=1e-12)


def test_counts_go_to_the_iteration_kind():
    dec = term_counts(np.zeros(0, int), np.zeros(0, int), 4, 4000, 4)
    pre = term_counts(np.array([100]), np.array([0]), 4, 4000, 5)
    k = len(BASE_TERMS)
    assert dec[k:].sum() == 0 and pre[:k].sum() == 0
    assert dec[:k].tolist() == [1, 4, 4, 4000, 16000, 4]
    assert pre[k:].tolist() == [1, 5, 104, 4100, 104 * 4100, 5]


def test_engine_time_is_device_time_plus_overheads(timer):
    t = EngineCostModel(TERMS_A, "datasheet").timer(timer.model, timer.layout)
    chunks, ctx = np.array([512, 64]), np.array([0, 256])
    dev = timer.time(chunks, ctx, 3, 3000, 5)
    extra = term_counts(chunks, ctx, 3, 3000, 5) @ TERMS_A.vector()
    assert t.time(chunks, ctx, 3, 3000, 5) == pytest.approx(dev + extra)
    rows = t.breakdown(Batch(prefill_tokens=(512, 64), prefill_context=(0, 256),
                             decode_context=(1000,) * 3))
    assert sum(r["time_s"] for r in rows) == pytest.approx(
        t.time(chunks, ctx, 3, 3000, 5), rel=1e-9)


def test_negative_terms_are_refused():
    with pytest.raises(ValueError, match="decode_iteration"):
        EngineTerms(decode_iteration=-1.0)


def _synthetic_log(path, timer, terms, n=300, seed=0, noise=0.01, header=True):
    """A BYO per-iteration CSV whose times follow ``terms`` exactly (plus noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        nd = int(rng.integers(0, 64))
        ctx = int(nd * rng.integers(100, 2000))
        pre = int(rng.integers(1, 2048)) if (i % 3 == 0 or nd == 0) else 0
        chunks = np.array([pre]) if pre else np.zeros(0, int)
        pctx = np.array([int(rng.integers(0, 2000))]) if pre else np.zeros(0, int)
        samples = nd + (1 if pre else 0)
        t = timer.time(chunks, pctx, nd, ctx, samples) + \
            term_counts(chunks, pctx, nd, ctx, samples) @ terms.vector()
        rows.append({"iteration_s": t * (1 + noise * rng.standard_normal()),
                     "prefill_tokens": pre, "prefill_seqs": int(pre > 0),
                     "prefill_context_tokens": int(pctx.sum()), "decode_seqs": nd,
                     "decode_context_tokens": ctx, "samples": samples})
    with open(path, "w") as f:
        if header:
            f.write("# engine: synthetic\n# device_name: H100-SXM\n")
        pd.DataFrame(rows).to_csv(f, index=False)
    return path


def test_fit_recovers_the_terms_and_drops_the_rest(tmp_path, timer):
    truth = EngineTerms(decode_iteration=0.03, decode_kv_token=1e-6, prefill_iteration=0.02,
                        prefill_kv_token=2e-6)
    path = _synthetic_log(tmp_path / "log.csv", timer, truth)
    spec, res = calibrate(path, "H100-SXM", "llama-2-7b", "synthetic", calibration="datasheet")
    for name in ("decode_iteration", "decode_kv_token", "prefill_iteration",
                 "prefill_kv_token"):
        assert getattr(spec.terms, name) == pytest.approx(getattr(truth, name), rel=0.05)
        assert name in res.kept
    assert res.rel_err_median < 0.02
    # a term with no effect is dropped (or fitted negligibly small)
    assert spec.terms.decode_sample * 64 < 0.002 * 0.03
    assert spec.batching == "vllm"              # not a transformers log: default policy


def test_spec_round_trips_through_toml(tmp_path, timer):
    path = _synthetic_log(tmp_path / "log.csv", timer, TERMS_A, n=120)
    spec, _ = calibrate(path, "H100-SXM", "llama-2-7b", "rt", calibration="datasheet",
                        batching="hf_cb", batching_params={"num_blocks": 64},
                        scheduler={"block_size": 32, "chunked_prefill": True})
    back = load_engine(write_spec(spec, tmp_path / "rt.toml"))
    assert back.terms == spec.terms
    assert back.batching == "hf_cb" and back.batching_params == {"num_blocks": 64}
    assert InstanceConfig(**back.scheduler).block_size == 32
    assert back.meta["engine"] == "synthetic"
    assert "[terms.decode]" in engine_toml(spec)


def test_shipped_engine_loads_and_mirrors_its_settings():
    assert "hf-cb-h100" in list_engines()
    spec = load_engine("hf-cb-h100")
    assert spec.device == "H100-SXM" and spec.batching == "hf_cb"
    assert spec.batching_params["num_blocks"] == 256
    cfg = InstanceConfig(**spec.scheduler)
    assert (cfg.block_size, cfg.max_batched_tokens, cfg.chunked_prefill) == (256, 2048, True)
    assert spec.terms.decode_iteration > 0.01       # host overhead dominates decode steps
    with pytest.raises(KeyError, match="hf-cb-h100"):
        load_engine("no-such-engine")


def test_reader_names_missing_and_bad_columns(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("iteration_s,prefill_tokens\n0.1,10\n")
    with pytest.raises(InputError, match="decode_seqs"):
        read_iterations(p)
    p.write_text("iteration_s,prefill_tokens,decode_seqs\n0.1,0,4\n")
    with pytest.raises(InputError, match="decode_context_tokens"):
        read_iterations(p)
    p.write_text("iteration_s,prefill_tokens,decode_seqs,decode_context_tokens\n"
                 "0.1,10,0,0\n-1,0,2,100\n")
    with pytest.raises(InputError, match=r"bad.csv:3: field 'iteration_s': expected a time > 0 s"):
        read_iterations(p)
    p.write_text("# device: x\niteration_s,prefill_tokens,decode_seqs,decode_context_tokens\n"
                 "0.1,300,2,100\n")
    log = read_iterations(p)
    assert log.meta == {"device": "x"}
    sizes, ctx = log.chunks(0)
    assert sizes.tolist() == [300] and ctx.tolist() == [0]


@pytest.mark.parametrize("row, match", [
    ("0.1,2.5,1,0,0,1,2.5/0", r":3: field 'prefill_tokens': expected a whole number >= 0, "
     r"found 2.5"),
    ("0.1,0,1,1,10,1,", r":3: field 'prefill_seqs': prefill_seqs and prefill_tokens must be "
     r"both"),
    ("0.1,64,1,4,2,5,64/0", r":3: field 'decode_context_tokens': fewer KV tokens than "
     r"decoding"),
    ("0.1,64,1,0,0,500,64/0", r":3: field 'samples': more tokens sampled than"),
    ("0.1,64,1,0,0,1,64-0", r":3: field 'prefill_detail': expected 'tokens/context' pairs"),
    ("0.1,64,2,0,0,2,32/0;30/0", r":3: field 'prefill_detail': 2 chunks of 62 tokens after 0 "
     r"cached, where the row says prefill_seqs 2, prefill_tokens 64"),
])
def test_reader_checks_each_cell_and_the_counts_together(tmp_path, row, match):
    p = tmp_path / "log.csv"
    p.write_text("iteration_s,prefill_tokens,prefill_seqs,decode_seqs,decode_context_tokens,"
                 f"samples,prefill_detail\n0.1,10,1,0,0,1,10/0\n{row}\n")
    with pytest.raises(InputError, match="log.csv" + match):
        read_iterations(p)


def test_measured_profile_reads_with_exact_chunks():
    log = read_iterations(HF / "profile-serving.csv")
    assert log.meta["engine"] == "hf-transformers-cb"
    i = int(np.flatnonzero(log.frame.prefill_seqs.to_numpy() >= 2)[0])
    sizes, ctx = log.chunks(i)
    assert sizes.sum() == log.frame.prefill_tokens[i]
    assert ctx.sum() == log.frame.prefill_context_tokens[i]


def test_experiment_selects_an_engine(tmp_path):
    exp = tmp_path / "e.toml"
    body = """
[trace]
source = "azure-conv"
first_n = 20
rate_per_s = 0.5
[model]
name = "llama-2-7b"
[[instances]]
device = "H100-SXM"
batching = "hf_cb"
batching_params = {{ num_blocks = 256 }}
[instances.scheduler]
block_size = 256
max_batched_tokens = 2048
chunked_prefill = true
[cost]
engine = "{engine}"
"""
    exp.write_text(body.format(engine="hf-cb-h100"))
    e = load_experiment(exp)
    assert isinstance(e.cost_model, EngineCostModel) and e.cost_model.name == "hf-cb-h100"
    res = e.run()
    assert res.requests.finish_s.notna().sum() >= 15
    exp.write_text(body.format(engine="nope"))
    with pytest.raises(InputError, match="cost.engine"):
        load_experiment(exp)


def test_validate_e2e_compares_every_statistic(capsys):
    rc = main(["validate-e2e", str(HF / "replay-moderate.csv"), "--engine", "hf-cb-h100"])
    out = capsys.readouterr().out
    assert rc == 0
    for key in ("ttft_p50", "ttft_p99", "tpot_p90", "e2e_p50", "throughput_tok_s"):
        assert key in out
    assert "92 finished measured, 92 simulated" in out


def test_calibrate_engine_cli_writes_the_spec(tmp_path, timer, capsys):
    log = _synthetic_log(tmp_path / "log.csv", timer, TERMS_A, n=100)
    out = tmp_path / "mine.toml"
    rc = main(["calibrate-engine", str(log), "--device", "H100-SXM", "--model", "llama-2-7b",
               "--name", "mine", "--out", str(out), "--calibration", "datasheet",
               "--block-size", "16", "--max-batched-tokens", "4096", "--chunked-prefill"])
    assert rc == 0 and out.exists()
    spec = load_engine(out)
    assert spec.name == "mine" and InstanceConfig(**spec.scheduler).max_batched_tokens == 4096
    assert "decode_iteration" in capsys.readouterr().out


def test_profiler_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
            "from engine_profile.hf_cb import EngineSettings\n"
            "from engine_profile.sweeps import serving_sweep, sweep\n"
            "s = EngineSettings(); g = sweep(s) + serving_sweep(s)\n"
            "assert len(g) > 20 and all(x.subs for x in g)\n")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=REPO / "simcluster" / "harness")
