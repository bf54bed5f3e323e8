"""Issue 13: importers of published profiles, execution modes and launch costs, kernel
accounting, engine envelopes, padding and transfer, validate-e2e's settings checks."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simcluster.calibration import NEUTRAL, load_calibration
from simcluster.calibration.fitted import MeasuredCalibration
from simcluster.calibration.importers import import_vidur, write_tables
from simcluster.calibration.launch import fit_launch
from simcluster.cost import Batch, CostModel, Layout
from simcluster.cost.accounting import ExecutionMode, load_accounting
from simcluster.engines import EngineTerms, load_engine
from simcluster.engines.envelope import Envelope, EnvelopeWarning, report_text
from simcluster.engines.importers import splitwise_rows
from simcluster.engines.model import EngineCostModel, Padding, term_counts, transfer_scales
from simcluster.errors import InputError
from simcluster.hardware import load_device
from simcluster.models import load_model

H200 = load_device("H200")


@pytest.fixture(scope="module")
def measured():
    return load_calibration("measured")


# --------------------------------------------------------------------------- Vidur importer

def _vidur_mlp(path, rows):
    ops = ["emb", "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
           "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add"]
    cols = [f"time_stats.{op}.{s}" for op in ops for s in ("min", "max", "mean", "median",
                                                             "std")]
    keys = ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp",
            "num_tokens", "num_tensor_parallel_workers"]
    lines = [",".join(cols + keys)]
    for tokens, tp, ms in rows:
        vals = [str(ms)] * len(cols)
        lines.append(",".join(vals + ["32", "8", "4096", "14336", "128256", "True",
                                      str(tokens), str(tp)]))
    path.write_text("\n".join(lines) + "\n")


def _vidur_attention(path, rows):
    cols = [f"time_stats.{op}.{s}" for op in ("attn_input_reshape", "attn_decode",
                                              "attn_output_reshape", "attn_prefill")
            for s in ("min", "max", "mean", "median", "std")]
    keys = ["n_embd", "n_q_head", "n_kv_head", "block_size", "num_tensor_parallel_workers",
            "max_model_len", "batch_size", "prefill_chunk_size", "kv_cache_size", "is_prefill",
            "attention_backend", "profile_method"]
    lines = [",".join(cols + keys)]
    for batch, chunk, ctx, prefill, ms in rows:
        dec = [""] * 5 if prefill else [str(ms)] * 5
        pre = [str(ms)] * 5 if prefill else [""] * 5
        vals = ["0.0"] * 5 + dec + ["0.0"] * 5 + pre
        lines.append(",".join(vals + ["4096", "32", "8", "16", "1", "4096", str(batch),
                                      str(chunk), str(ctx), str(prefill),
                                      "AttentionBackend.FLASH_ATTENTION",
                                      "ProfileMethod.KINETO"]))
    path.write_text("\n".join(lines) + "\n")


def test_vidur_profiles_become_calibration_tables(tmp_path):
    _vidur_mlp(tmp_path / "mlp.csv", [(1, 1, 0.05), (64, 1, 0.06), (4096, 2, 1.5)])
    _vidur_attention(tmp_path / "attention.csv",
                     [(1, 0, 512, False, 0.02), (8, 0, 2048, False, 0.05),
                      (1, 1024, 0, True, 0.3), (1, 1024, 1024, True, 0.5)])
    tables = import_vidur([tmp_path / "mlp.csv", tmp_path / "attention.csv"], "Test-GPU")
    gemm = tables["gemm"][1]
    # Llama-3-8B at TP 2: qkv n = (32 + 16) * 128 / 2, up n = 2 * 14336 / 2, down k = 7168
    tp2 = gemm[gemm.sources.str.endswith("tp2")]
    assert set(zip(tp2.k, tp2.n)) == {(4096, 3072), (2048, 4096), (4096, 14336), (7168, 4096)}
    assert gemm[gemm.m == 64].time_s.iloc[0] == pytest.approx(0.06e-3)      # ms -> s
    assert set(tables["elementwise"][1].op) == {"rmsnorm", "silu_mul", "residual_add"}
    pre = tables["attn_prefill"][1]
    assert list(pre.context) == [0, 1024] and (pre.num_kv_heads == 8).all()
    dec = tables["attn_decode"][1]
    assert list(dec.kv_len) == [512, 2048] and list(dec.batch) == [1, 8]
    assert "Vidur" in tables["gemm"][0]["source"]
    written = write_tables(tables, tmp_path / "out")
    assert {p.name for p in written} == {"gemm.csv", "elementwise.csv", "attn_prefill.csv",
                                         "attn_decode.csv"}
    # the tables calibrate a device, and its provenance says where they came from
    from simcluster.calibration.fitted import fit_curves
    from simcluster.calibration.tables import load_tables
    loaded = load_tables(tmp_path / "out")
    a100 = load_device("A100-80GB")
    cal = MeasuredCalibration({"A100-80GB": fit_curves(loaded, a100)}, {"A100-80GB": a100})
    t = CostModel(cal).predict_op("gemm", a100, m=64, n=14336, k=4096)["time_s"]
    assert t > 0


def test_vidur_importer_names_bad_input(tmp_path):
    bad = tmp_path / "mlp.csv"
    bad.write_text("num_tokens,time_stats.add.median\n1,0.1\n")
    with pytest.raises(InputError, match="missing columns") as err:
        import_vidur([bad], "X")
    assert "mlp.csv" in str(err.value)
    _vidur_mlp(tmp_path / "neg.csv", [(8, 1, -0.5)])
    with pytest.raises(InputError, match="must be a number > 0") as err:
        import_vidur([tmp_path / "neg.csv"], "X")
    assert err.value.line == 2
    with pytest.raises(InputError, match="no such Vidur profile"):
        import_vidur([tmp_path / "missing.csv"], "X")


@pytest.mark.parametrize("old, new, match", [
    (",True,", ",maybe,", r"use_gated_mlp.*expected true or false, got 'maybe'"),
    ("32,8,4096,", "30,8,4096,", r"n_embd.*head size n_embd / n_head \(4096 / 30\) is not "
     "whole"),
])
def test_vidur_mlp_cells_are_not_guessed(tmp_path, old, new, match):
    _vidur_mlp(tmp_path / "mlp.csv", [(8, 1, 0.05)])
    p = tmp_path / "mlp.csv"
    p.write_text(p.read_text().replace(old, new))
    with pytest.raises(InputError, match=match) as err:
        import_vidur([p], "X")
    assert err.value.line == 2


@pytest.mark.parametrize("row, match", [
    ((1, 1024, 0, "yes", 0.3), "is_prefill.*expected true or false, got 'yes'"),
    ((0, 0, 512, False, 0.02), "batch_size.*expected batch_size >= 1, got 0"),
])
def test_vidur_attention_cells_are_not_guessed(tmp_path, row, match):
    _vidur_attention(tmp_path / "attention.csv", [row])
    with pytest.raises(InputError, match=match):
        import_vidur([tmp_path / "attention.csv"], "X")


def test_bundled_a100_tables_are_imported_and_named(measured):
    prov = measured.provenance(load_device("A100-80GB"))
    assert "imported from Vidur" in prov
    # A100 attention no longer borrows Hopper's efficiency
    assert measured.source_of(load_device("A100-80GB"), "attn_prefill")[0] == "A100-80GB"


# --------------------------------------------------------------------------- SplitwiseSim

def _perf_model(path):
    rows = ["model,hardware,prompt_size,batch_size,token_size,peak_power,average_power,"
            "prompt_time,token_time,e2e_time,tensor_parallel"]
    for b in (1, 4, 16):
        for p in (512, 2048):
            for rep in range(2):
                rows.append(f"llama2-70b,a100-80gb,{p},{b},128,1,0.7,{20 + b * p / 100 + rep},"
                            f"{40 + b * 0.2},{999},2")
    path.write_text("\n".join(rows) + "\n")


def test_splitwise_perf_model_becomes_an_engine_log(tmp_path):
    _perf_model(tmp_path / "perf.csv")
    df = splitwise_rows(tmp_path / "perf.csv", "llama2-70b", "a100-80gb", 2)
    assert len(df) == 12                     # 6 configurations x (prefill, decode)
    pre = df[df.prefill_tokens > 0]
    assert set(pre.prefill_tokens) == {b * p for b in (1, 4, 16) for p in (512, 2048)}
    assert pre.iteration_s.min() == pytest.approx((20 + 512 / 100 + 0.5) / 1e3)  # median
    dec = df[df.decode_seqs > 0]
    assert (dec.decode_context_tokens == dec.decode_seqs * (dec.phase.str.extract(
        r"-p(\d+)-")[0].astype(int) + 65)).all()
    with pytest.raises(InputError, match="present"):
        splitwise_rows(tmp_path / "perf.csv", "llama2-70b", "h100-80gb", 2)


@pytest.mark.parametrize("cell, value, match", [
    (3, "4.5", r"perf.csv:4: field 'batch_size': expected a whole number >= 1, found 4.5"),
    (8, "0", r"perf.csv:4: field 'token_time': expected a time > 0 ms, found 0"),
])
def test_splitwise_cells_are_checked_at_their_line(tmp_path, cell, value, match):
    _perf_model(tmp_path / "perf.csv")
    lines = (tmp_path / "perf.csv").read_text().splitlines()
    cells = lines[3].split(",")
    cells[cell] = value
    lines[3] = ",".join(cells)
    (tmp_path / "perf.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=match):
        splitwise_rows(tmp_path / "perf.csv", "llama2-70b", "a100-80gb", 2)


def test_splitwise_log_fits_an_engine(tmp_path):
    from simcluster.engines.calibrate import calibrate
    from simcluster.engines.importers import splitwise_log
    _perf_model(tmp_path / "perf.csv")
    splitwise_log(tmp_path / "perf.csv", "llama2-70b", "a100-80gb", 2, tmp_path / "log.csv")
    spec, res = calibrate(tmp_path / "log.csv", "A100-80GB", "llama-2-70b", "sw", tp=2,
                          link="NVLink3")
    assert spec.meta["tp"] == 2 and res.n_fit > 0 and spec.kernels == "fused"


# --------------------------------------------------------------------------- modes, accounting

def test_launch_costs_are_measured_or_borrowed(measured):
    own = measured.launch_costs(H200)
    assert 5e-6 < own.per_launch("elementwise") < own.per_launch("sdpa") < 50e-6
    h100 = measured.launch_costs(load_device("H100-SXM"))
    assert "borrowed from H200" in h100.source
    assert measured.launch_costs(load_device("Xeon-Gold-6148")).per_launch("linear") == 0
    assert NEUTRAL.launch_costs(H200).per_launch("linear") == 0


def test_launch_table_needs_every_class():
    df = pd.DataFrame({"op": ["add"], "mode": ["graph"], "time_s": [1e-6],
                       "host_dispatch_s": [8e-6]})
    with pytest.raises(InputError, match="launch class"):
        fit_launch({}, df, "X")


@pytest.mark.parametrize("mode", ["eager", "isolated"])
def test_standalone_op_modes(measured, mode):
    cost = CostModel(measured)
    graph = cost.predict_op("gemm", H200, m=1, n=4096, k=4096)["time_s"]
    other = cost.predict_op("gemm", H200, mode=mode, m=1, n=4096, k=4096)["time_s"]
    assert other > graph                     # a tiny GEMM is dispatch-bound eagerly
    big = dict(m=8192, n=8192, k=8192)
    assert cost.predict_op("gemm", H200, mode="eager", **big)["time_s"] == pytest.approx(
        cost.predict_op("gemm", H200, **big)["time_s"])
    with pytest.raises(ValueError, match="timing mode"):
        cost.predict_op("gemm", H200, mode="warp", **big)


def test_eager_iterations_pay_host_dispatch(measured):
    model, lay = load_model("llama-2-7b"), Layout.uniform(H200)
    b = Batch(decode_context=(513,))
    eager = CostModel(measured, kernels="hf-eager", execution="eager").iteration(model, lay, b)
    graphs = CostModel(measured, kernels="hf-eager").iteration(model, lay, b)
    assert eager.time_s > 2 * graphs.time_s          # one sequence: host-bound
    assert "host" in set(eager.ops.op) and "host" not in set(graphs.ops.op)
    assert eager.ops.time_s.sum() == pytest.approx(eager.time_s, rel=1e-6)
    # with the datasheet there is no host cost: eager is the graph time
    e0 = CostModel(NEUTRAL, kernels="hf-eager", execution="eager").iteration(model, lay, b)
    g0 = CostModel(NEUTRAL, kernels="hf-eager").iteration(model, lay, b)
    assert e0.time_s == pytest.approx(g0.time_s)
    # decode_steps agrees with time() in every mode
    for ex in ("eager", "piecewise", {"prefill": "eager", "decode": "graphs"}):
        timer = CostModel(measured, kernels="hf-eager", execution=ex).timer(model, lay)
        steps = timer.decode_steps(4, 4 * 600, 3)
        one = timer.time(np.array([]), np.array([]), 4, 4 * 600 + 4, 4)
        assert steps[1] == pytest.approx(one)


def test_kernel_accountings_and_their_launches():
    fused, hf = load_accounting("fused"), load_accounting("hf-eager")
    cb = load_accounting("hf-cb")
    assert cb.norm == hf.norm == "rmsnorm_hf" and cb.kv_cache == "write" != hf.kv_cache
    from simcluster.models.operators import RankShape
    rs = RankShape.of(load_model("llama-3.1-8b"), 1, 1, 1, True)
    assert [g[0] for g in fused.gemms(rs, 1)] == ["qkv", "attn_out", "ffn_up", "ffn_down"]
    assert len(hf.gemms(rs, 1)) == 7
    n = hf.layer_launches(rs, prefill=False, decode=True)
    assert n["linear"] == 7 and n["sdpa"] == 1 and n["cat"] == 4     # rotary 2, KV 2
    assert sum(n.values()) == 7 + 1 + 4 + 1 + 2 * 8 + 2 + 2 + 8       # ~41 a layer
    with pytest.raises(InputError, match="unknown kernel accounting"):
        load_accounting("no-such")
    with pytest.raises(InputError, match="norm"):
        load_accounting({"norm": "layernorm"})
    with pytest.raises(InputError, match="execution mode"):
        ExecutionMode("graphs", "warp")


@pytest.mark.parametrize("line, field", [
    ('fuse_qkv = "no"', "kernels.fuse_qkv"),                  # (read as true: fused)
    ("norm_launches = -8", "kernels.norm_launches"),
    ("sampling_launches = 2.5", "kernels.sampling_launches"),
    ("host_overhead_per_layer_s = -1.0", "kernels.host_overhead_per_layer_s"),
    ('elementwise = "banana"', "kernels.elementwise"),
])
def test_an_accounting_files_values_are_checked_naming_the_file(tmp_path, line, field):
    p = tmp_path / "mine.toml"
    p.write_text(f'base = "hf-eager"\n{line}\n')
    with pytest.raises(InputError) as err:
        load_accounting(p)
    assert err.value.file == str(p) and err.value.field == field


def test_an_accounting_base_cycle_is_named(tmp_path):
    """A file whose base was itself recursed until RecursionError."""
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text(f'base = "{b}"\n')
    b.write_text(f'base = "{a}"\n')
    with pytest.raises(InputError, match="leads back to this file: a cycle"):
        load_accounting(a)


def test_gemm_layouts_and_misaligned_pairs(measured):
    cost = CostModel(measured)
    nt = cost.predict_op("gemm", H200, m=128, n=11008, k=4096)["time_s"]
    nn = cost.predict_op("gemm", H200, m=128, n=11008, k=4096, layout="nn")["time_s"]
    assert nn != nt                                   # its own measured curve
    h100 = load_device("H100-SXM")                    # no nn table: the nt curve
    assert cost.predict_op("gemm", h100, m=128, n=11008, k=4096, layout="nn")["time_s"] == \
        cost.predict_op("gemm", h100, m=128, n=11008, k=4096)["time_s"]
    # an aligned shape near the misaligned n = 6284 is not pulled up by it
    t = cost.predict_op("gemm", H200, m=732, n=6144, k=5120)["time_s"]
    assert t < 1.5 * cost.predict_op("gemm", H200, m=768, n=5120, k=5120)["time_s"]


def test_datasheet_only_devices(measured):
    cal = MeasuredCalibration(measured.curves, measured.specs,
                              borrowing={"L4": {"datasheet_only": True}},
                              launch=measured.launch)
    l4 = load_device("L4")
    assert "datasheet only" in cal.provenance(l4)
    assert cal.launch_costs(l4).per_launch("linear") == 0
    t = CostModel(cal).predict_op("gemm", l4, m=64, n=4096, k=4096)["time_s"]
    assert t == pytest.approx(CostModel(NEUTRAL).predict_op("gemm", l4, m=64, n=4096,
                                                            k=4096)["time_s"])


def test_borrowing_file_is_checked(tmp_path):
    from simcluster.calibration.borrowing import load_borrowing
    p = tmp_path / "b.toml"
    p.write_text('[devices."L4"]\nfrom = 3\n')
    with pytest.raises(InputError, match="from must be a str"):
        load_borrowing(p)
    p.write_text('[devices."L4"]\nfrom_ = "H200"\n')
    with pytest.raises(InputError, match="unknown key"):
        load_borrowing(p)
    assert load_borrowing(tmp_path / "none.toml") == {}


# --------------------------------------------------------------------------- engine models

def test_padding_counts_and_device_time(measured):
    pad = Padding(q=256, kv=16384, q_max=8192, kv_max=65536, samples_max=256)
    c = term_counts(np.array([]), np.array([]), 10, 10 * 1000, 10, pad)
    assert c[2] == 256 and c[3] == 16384 + 256 and c[4] == 256 * (16384 + 256)
    c2 = term_counts(np.array([]), np.array([]), 10, 10 * 2000, 10, pad)
    assert c2[3] == 2 * 16384 + 256            # crossed a padding step
    terms = EngineTerms(decode_iteration=0.01, decode_kv_token=1e-6)
    cm = EngineCostModel(terms, measured, pad=pad, kernels="hf-cb")
    timer = cm.timer(load_model("llama-2-7b"), Layout.uniform(H200))
    steps = timer.decode_steps(10, 10 * 1000, 2)
    assert steps[0] == pytest.approx(timer.time(np.array([]), np.array([]), 10, 10 * 1000, 10))


def test_transfer_scales_follow_the_rules():
    m7, m8 = load_model("llama-2-7b"), load_model("llama-3.1-8b")
    s = transfer_scales(m8, m7)
    assert s["kv_token"] == pytest.approx(0.25) and s["attn_pair"] == pytest.approx(1.0)
    assert transfer_scales(m8, m7, {"kv_token": "none"})["kv_token"] == 1.0
    with pytest.raises(ValueError, match="transfer rule"):
        transfer_scales(m8, m7, {"kv_token": "bytes"})


def test_engine_specs_bundled_for_both_regimes():
    eager, graphs = load_engine("hf-cb-h200-eager-7b"), load_engine("hf-cb-h200-graphs-8b")
    assert eager.execution.decode == "eager" and graphs.execution.prefill == "graphs"
    assert graphs.padding == {"q_tokens": 256, "kv_tokens": 16384}
    assert graphs.padding_caps.q_max == 8192 and graphs.padding_caps.kv_max == 65536
    assert eager.kernels == graphs.kernels == "hf-cb" and eager.envelope.max_context > 3000
    assert graphs.transfer == {"kv_token": "none", "attn_pair": "none"}
    for spec in (eager, graphs):    # the terms physics needs are kept or their rejection said
        kept = spec.fit["terms_kept"] + spec.fit["physical_terms_rejected_by_data"]
        assert {"decode_kv_token", "prefill_attn_pair"} <= set(kept)


def test_fit_keeps_the_physical_terms_unless_rejected():
    from simcluster.engines.fit import fit_terms
    rng = np.random.default_rng(0)
    n = 200
    X = np.zeros((n, 12))
    X[:, 0] = 1.0
    X[:, 3] = rng.uniform(1e3, 4e4, n)                   # kv tokens
    X[:, 4] = X[:, 3] * rng.integers(1, 64, n)           # pairs
    y = 0.05 + 2e-9 * X[:, 4] + rng.normal(0, 1e-4, n)   # attention pairs matter, kv does not
    res = fit_terms(X, np.zeros(n), y, loss="linear")
    assert "decode_attn_pair" in res.kept and "decode_iteration" in res.kept
    assert "decode_kv_token" in res.kept or "decode_kv_token" in res.rejected
    assert "decode_sequence" not in res.kept            # no physics: dropped


def _envelope_engine():
    spec = load_engine("hf-cb-h200-graphs-7b")
    env = Envelope(max_new_tokens=64, max_seqs=4, max_kv_tokens=3000, max_context=1500)
    return dataclasses.replace(spec, envelope=env)


def test_simulation_warns_outside_the_envelope():
    from simcluster.cluster import InstanceSpec
    from simcluster.serving import InstanceConfig
    from simcluster.simulation import Simulation
    from simcluster.workload import Trace
    spec = _envelope_engine()
    trace = Trace(np.array([0.0, 0.1, 0.2, 0.3]), np.array([100, 900, 200, 2000]),
                  np.array([20, 20, 20, 20]))
    inst = InstanceSpec(Layout.uniform(H200), InstanceConfig(**spec.scheduler),
                        batching=spec.batching, batching_params=spec.batching_params)
    sim = Simulation(trace, load_model("llama-2-7b"), [inst], cost_model=spec.cost_model())
    with pytest.warns(EnvelopeWarning, match="outside its profiled envelope"):
        res = sim.run()
    counter = next(iter(res.envelope.values()))
    assert counter.iterations > 10 and 0 < counter.outside_any <= counter.iterations
    assert counter.outside["max_new_tokens"] > 0
    assert "new_tokens" in report_text("x", counter)


def test_envelope_from_logs_and_decode_counting():
    from simcluster.engines.profile import read_iterations
    from simcluster.engines import engines_dir
    log = read_iterations(engines_dir() / "hf-cb-h200-eager-7b" /
                          "profile-serving-llama-2-7b-eager-b8192.csv")
    env = Envelope.from_logs([log])
    assert env.max_new_tokens >= 3686 and env.max_seqs >= 16
    c = env.counter()
    c.count_decode(8, 8 * 100, 5)
    assert c.iterations == 5 and c.outside_any == 0
    c.count_decode(1, int(env.max_context) - 2, 5)        # crosses the context limit
    assert 0 < c.outside["max_context"] < 5


# --------------------------------------------------------------------------- validate-e2e

def _replay(tmp_path, settings: str, unfinished: bool = False):
    rows = ["arrival_s,prompt_tokens,output_tokens,ttft_s,tpot_s,e2e_s"]
    for i in range(6):
        e2e = "nan" if unfinished and i == 5 else f"{1.0 + 0.1 * i}"
        rows.append(f"{0.2 * i},{200 + 50 * i},{8},0.1,0.05,{e2e}")
    p = tmp_path / "replay.csv"
    p.write_text(f"# kind: trace replay t\n# settings: {settings}\n" + "\n".join(rows) + "\n")
    return p


@pytest.mark.parametrize("column, value, expected", [
    ("prompt_tokens", "250.5", "whole number of tokens >= 1, found 250.5"),
    ("output_tokens", "0", "whole number of tokens >= 1 (at most 2**53), found 0"),
    ("arrival_s", "soon", "a time >= 0 s, found 'soon'"),
    ("ttft_s", "-0.1", "a latency >= 0 s (or an empty cell: the request did not finish), "
     "found -0.1"),
    ("e2e_s", "inf", "found inf"),
])
def test_replay_cells_are_checked_at_their_line(tmp_path, column, value, expected):
    from simcluster.analysis.engine_validation import read_replay
    p = _replay(tmp_path, "block_size=256")
    lines = p.read_text().splitlines()
    header = lines[2].split(",")
    cells = lines[5].split(",")         # the file's sixth line: its fourth request
    cells[header.index(column)] = value
    lines[5] = ",".join(cells)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        read_replay(p)
    assert str(err.value).startswith(f"{p}:6: field '{column}': expected ")
    assert expected in str(err.value)


def test_validate_e2e_uses_and_reports_the_replays_settings(tmp_path):
    from simcluster.analysis.engine_validation import effective_settings, validate_replay
    spec = load_engine("hf-cb-h200-eager-7b")
    settings = ("block_size=256, num_blocks=128, max_batch_tokens=2048, "
                "max_requests_per_batch=256, safety_margin=0.15, use_cuda_graph=True, "
                "model_name=llama-3-8b")
    params, sched, model, _, warns = effective_settings(spec, {"settings": settings})
    assert params["num_blocks"] == 128 and sched["max_batched_tokens"] == 2048
    assert model == "llama-3.1-8b"
    text = " ".join(warns)
    assert "num_blocks: the replay ran 128, the engine file says 256" in text
    assert "max_batch_tokens" in text and "CUDA graphs" in text and "model" in text
    params, sched, *_ = effective_settings(spec, {"settings": settings},
                                           {"num_blocks": "512", "max_batch_tokens": "4096"})
    assert params["num_blocks"] == 512 and sched["max_batched_tokens"] == 4096
    with pytest.raises(InputError, match="unknown override"):
        effective_settings(spec, {}, {"colour": "red"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmp_ = validate_replay(_replay(tmp_path, settings, unfinished=True), spec)
    assert any("censored" in w for w in cmp_.warnings)
    assert any("num_blocks" in w for w in cmp_.warnings)
    assert np.isfinite(cmp_.error("e2e_p50"))


@pytest.mark.parametrize("old, new, field", [
    ("block_size = 256", "block_size = 0", "scheduler.block_size"),        # (the replay's 256
    ("safety_margin = 0.15,", "safety_margin = 7.0,", "batching.params"),  # would replace it)
    ("max_num_seqs = 256", "max_num_seqs = 2.5", "scheduler.max_num_seqs"),
    ("max_num_seqs = 256", "max_seqs = 256", "scheduler.max_seqs"),
    ('policy = "hf_cb"', 'policy = "hf"', "batching.policy"),
    ('device = "H100-SXM"', 'device = "H10"', "engine.device"),
    ("[terms]    #", "[termz]    #", "termz"),
])
def test_an_engine_files_own_settings_are_checked(tmp_path, old, new, field):
    from simcluster.analysis.engine_validation import validate_replay
    text = (Path(__file__).parents[1] / "hwspecs/engines/hf-cb-h100.toml").read_text()
    assert old in text
    spec = tmp_path / "mine.toml"
    spec.write_text(text.replace(old, new, 1))
    replay = _replay(tmp_path, "block_size=256, num_blocks=256, max_batch_tokens=2048, "
                               "max_requests_per_batch=256, safety_margin=0.15")
    with pytest.raises(InputError) as err:
        validate_replay(replay, str(spec))
    assert err.value.file == str(spec) and err.value.field == field


def test_validate_e2e_cli_mismatch_and_overrides(tmp_path, capsys):
    from simcluster.cli import main
    p = _replay(tmp_path, "block_size=256, num_blocks=64, max_batch_tokens=8192, "
                          "max_requests_per_batch=256, safety_margin=0.15")
    assert main(["validate-e2e", str(p), "--engine", "hf-cb-h200-eager-7b",
                 "--set", "max_batch_tokens=4096"]) == 0
    out = capsys.readouterr().out
    assert "warning: num_blocks: the replay ran 64" in out
    assert main(["validate-e2e", str(p), "--engine", "hf-cb-h200-eager-7b",
                 "--set", "oops"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


# --------------------------------------------------------------------------- the harness (no GPU)

def test_outliers_are_found_against_their_neighbours():
    from simcluster.harness.kernels.gpu import neighbour_outliers
    ms = [1, 2, 4, 8, 16, 32]
    ts = [1.0, 1.0, 1.5, 1.0, 1.1, 2.0]         # m=4 slower than m=8 and its interpolation
    assert neighbour_outliers(ms, ts) == [2]
    assert neighbour_outliers(ms, [1, 1.1, 1.2, 1.4, 2, 3]) == []
    assert neighbour_outliers([1, 2], [2.0, 1.0]) == [0]


def test_held_out_shapes_are_off_the_grid_and_seeded():
    from simcluster.harness.kernels import gpu
    from simcluster.harness.kernels.modes import log_grid, set_device
    from simcluster.harness.kernels.validation import validation_shapes
    a, b = validation_shapes(), validation_shapes()
    assert a == b and len(a) == 190
    gemm_m = {s["m"] for s in a if s["op"] == "gemm"}
    assert len(gemm_m - set(gpu.GEMM_M)) > 60           # mostly between grid points
    assert {s["num_kv_heads"] for s in a if s["op"].startswith("attn")} >= {4, 40}
    assert log_grid(1, 8, 1) == [1, 2, 4, 8]
    with pytest.raises(ValueError):
        set_device("tpu")


def test_engine_profiler_settings_and_sweeps(tmp_path):
    import json
    from simcluster.harness.engine_profile.hf_cb import EngineSettings, shape_from_hf_config
    from simcluster.harness.engine_profile.sweeps import injected_sizes, serving_sweep
    s = EngineSettings.for_model("llama-3-8b", max_batch_tokens=8192, use_cuda_graph=True)
    assert s.num_key_value_heads == 8 and s.regime == "cuda-graphs"
    sizes = injected_sizes(s, 8192)
    assert max(sizes) >= 7000 and 8192 not in sizes and 64 in sizes   # budget and context
    groups = serving_sweep(s, max_context=8192)
    longest = max(sub.prompt_tokens for g in groups for sub in g.subs)
    assert longest >= 7000 and len(groups) >= 8
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"hidden_size": 2048, "intermediate_size": 8192,
                               "num_hidden_layers": 16, "num_attention_heads": 32,
                               "vocab_size": 1000, "max_position_embeddings": 2048,
                               "rope_parameters": {"rope_theta": 5e5}}))
    shape = shape_from_hf_config(str(cfg))
    assert shape["num_key_value_heads"] == 32 and shape["rope_theta"] == 5e5
    with pytest.raises(ValueError, match="unknown model shape"):
        EngineSettings.for_model("gpt-5")
    from simcluster.harness.engine_profile.forward import forward_shapes
    assert ("prefill", 1, 8192, 0) not in forward_shapes(4096)


def test_engine_spec_rejects_unknown_transfer_rules(tmp_path):
    from simcluster.engines import engines_dir
    text = (engines_dir() / "hf-cb-h200-graphs-7b.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('kv_token = "none"', 'kv_token = "bytes"'))
    with pytest.raises(InputError, match="transfer rule") as err:
        load_engine(bad)
    assert "bad.toml" in str(err.value)
