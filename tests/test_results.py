"""Results that mean what they say: offered rate, throughput over the arrival window and the
drain apart, model FLOPs and bytes equal to the cost model's operator counts, MFU and MBU,
provenance, and a run that serves nothing failing with its reason."""

import json

import numpy as np
import pytest

from _tiny import write_tiny
from conftest import make_trace, one_instance
from simcluster.calibration import load_calibration
from simcluster.cli import main
from simcluster.cost import Batch, CostModel, Layout
from simcluster.experiment import load_experiment
from simcluster.simulation import Simulation
from simcluster.simulation import results as R
from simcluster.simulation.work import WorkCoefficients, row_work


@pytest.fixture(scope="module")
def measured():
    return CostModel(load_calibration("measured"))


def _run(trace, device, model, cost, **cfg):
    return Simulation(trace, model, one_instance(device, **cfg), cost_model=cost).run()


def test_offered_rate_and_throughput_over_the_window_not_the_drain(h100, llama7b, measured):
    # 40 requests in 4 s, each with a long output: the drain after the last arrival is long
    n = 40
    trace = make_trace(np.linspace(0, 3.9, n), [200] * n, [400] * n)
    s = _run(trace, h100, llama7b, measured).summary()
    assert s["offered_rate_per_s"] == pytest.approx(n / 3.9)
    assert s["arrival_window_s"] == pytest.approx(3.9)
    assert s["drain_s"] == pytest.approx(s["span_s"] - 3.9)
    assert s["drain_s"] > 1.0
    # throughput counts completions inside the window only, per second of it
    req = _run(trace, h100, llama7b, measured).requests
    inside = int((req.finish_s <= 3.9).sum())
    assert s["request_throughput_per_s"] == pytest.approx(inside / 3.9)
    # the old figure, finished / span, mixes in the drain
    assert s["finished"] / s["span_s"] < s["offered_rate_per_s"]


def test_overload_reads_capacity_and_steady_load_reads_the_offered_rate(h100, llama7b,
                                                                        measured):
    rng = np.random.default_rng(0)
    for rate, overloaded in ((2.0, False), (400.0, True)):
        n = 600
        arrivals = np.cumsum(rng.exponential(1 / rate, n))
        trace = make_trace(arrivals, [500] * n, [100] * n)
        s = _run(trace, h100, llama7b, measured, max_num_seqs=32).summary()
        ratio = s["request_throughput_per_s"] / s["offered_rate_per_s"]
        if overloaded:
            assert ratio < 0.5 and s["drain_s"] > s["arrival_window_s"]
        else:
            assert ratio > 0.95 and s["drain_s"] < 5


def _decode_batch(n, ctx_sum):
    base = ctx_sum // n
    ctx = [base] * n
    ctx[0] += ctx_sum - base * n
    return Batch(decode_context=tuple(ctx))


def test_row_work_equals_the_cost_models_operator_counts(h100, llama7b, measured):
    """Every single-iteration row's FLOPs and bytes are the device operators' of that batch
    (whole model: tp = 1), and a decode run's are the sum of its steps'."""
    rng = np.random.default_rng(1)
    n = 60
    trace = make_trace(np.cumsum(rng.exponential(0.05, n)), rng.integers(20, 800, n),
                       rng.integers(2, 120, n))
    res = _run(trace, h100, llama7b, measured, chunked_prefill=True, max_batched_tokens=512)
    tl = res.timeline
    timer = measured.timer(llama7b, Layout.uniform(h100))

    def counted(batch):
        rows = [r for r in timer.breakdown(batch) if r["rank"] >= 0]
        return sum(r["flops"] for r in rows), sum(r["bytes"] for r in rows)

    single = tl[(tl.iterations == 1) & (tl.prefill_seqs <= 1)]
    assert len(single) > 20
    for r in single.itertuples():
        if r.prefill_seqs:
            dec = (_decode_batch(r.decode_seqs, r.decode_context).decode_context
                   if r.decode_seqs else ())
            batch = Batch(prefill_tokens=(r.prefill_tokens,), prefill_context=(r.prefill_context,),
                          decode_context=dec, prefill_samples=r.prefill_done)
        else:
            batch = _decode_batch(r.decode_seqs, r.decode_context)
        f, b = counted(batch)
        assert r.flops == pytest.approx(f, rel=1e-9) and r.bytes == pytest.approx(b, rel=1e-9)
    runs = tl[tl.iterations > 1]
    assert len(runs)
    r = runs.iloc[0]
    steps = [counted(_decode_batch(int(r.decode_seqs), int(r.decode_context + j * r.decode_seqs)))
             for j in range(int(r.iterations))]
    assert r.flops == pytest.approx(sum(s[0] for s in steps), rel=1e-9)
    assert r.bytes == pytest.approx(sum(s[1] for s in steps), rel=1e-9)


def test_mfu_and_mbu_are_work_over_peak_times_span(h100, llama7b, measured):
    n = 50
    trace = make_trace(np.linspace(0, 10, n), [300] * n, [50] * n)
    res = _run(trace, h100, llama7b, measured)
    u = res.utilisation().iloc[0]
    s = res.summary()
    span = s["span_s"]
    assert u.flops == pytest.approx(res.timeline.flops.sum())
    assert u.mfu == pytest.approx(u.flops / span / h100.peak_flops_for("fp16"))
    assert u.mbu == pytest.approx(u.bytes / span / h100.mem_bw_bytes_per_s)
    assert 0 < u.mfu < 0.2 and 0 < u.mbu < 1 and 0 < u.nonidle_fraction <= 1
    # the achieved rate never beats the peak while an iteration runs
    busy = (res.timeline.end_s - res.timeline.start_s).sum()
    assert u.flops / busy < h100.peak_flops_for("fp16")
    assert u.bytes / busy < h100.mem_bw_bytes_per_s
    assert s["mfu_mean"] == pytest.approx(u.mfu) and "busy_fraction_mean" not in s


def test_summary_is_built_from_groups(monkeypatch, h100, llama7b, measured):
    trace = make_trace([0.0, 0.5, 1.0], [100] * 3, [10] * 3)
    res = _run(trace, h100, llama7b, measured)
    names = [n for n, _ in R.SUMMARY_GROUPS]
    assert names == ["counts", "latency", "throughput", "slo", "cost", "utilisation", "energy",
                     "prefix_cache"]
    monkeypatch.setattr(R, "SUMMARY_GROUPS", R.SUMMARY_GROUPS + [
        ("example", lambda f: {"tokens_per_request": float(f.done.output_tokens.mean())})])
    assert res.summary()["tokens_per_request"] == 10.0


def test_provenance_names_calibration_engine_and_borrowed_curves(tmp_path, capsys):
    exp = write_tiny(tmp_path, """
[trace.synthetic]
n = 20
rate_per_s = 2.0
prompt = {dist = "fixed", tokens = 100}
output = {dist = "fixed", tokens = 20}
[model]
name = "llama-2-7b"
[[instances]]
device = "L40S"
[[instances]]
device = "H100-SXM"
[cost]
engine = "hf-cb-h100"
""")
    out = tmp_path / "out"
    assert main(["run", str(exp), "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "calibration measured" in text and "engine model hf-cb-h100" in text
    assert "L40S: measured: L40S" in text and "borrowed cross-family from" in text
    summary = json.loads((out / "summary.json").read_text())
    prov = summary["provenance"]
    assert prov["calibration"] == "measured" and prov["engine"] == "hf-cb-h100"
    assert "borrowed" in prov["devices"]["L40S"] and "own tables" in prov["devices"]["H100-SXM"]
    assert {"offered_rate_per_s", "drain_s", "mfu_mean", "mbu_mean"} <= set(summary)
    inst = (out / "instances.csv").read_text().splitlines()[0]
    assert "mfu" in inst and "peak_flops_per_s" in inst


def test_a_model_that_does_not_fit_exits_non_zero_with_the_reason(tmp_path, capsys):
    exp = write_tiny(tmp_path, """
[trace.synthetic]
n = 5
rate_per_s = 2.0
prompt = {dist = "fixed", tokens = 100}
output = {dist = "fixed", tokens = 20}
[model]
name = "llama-2-70b"
[[instances]]
device = "L4"
""")
    assert main(["run", str(exp), "--quiet"]) == 2    # serves nothing: bad input (cli docstring)
    cap = capsys.readouterr()
    assert "the model does not fit" in cap.out
    assert "served nothing" in cap.err and "instance OOM" in cap.err
    assert "ttft_p50_s" not in cap.out          # no summary of NaNs


def test_every_request_rejected_exits_non_zero(tmp_path, capsys):
    exp = write_tiny(tmp_path, """
[trace.synthetic]
n = 5
rate_per_s = 2.0
prompt = {dist = "fixed", tokens = 3000}
output = {dist = "fixed", tokens = 20}
[model]
name = "llama-2-7b"
[[instances]]
device = "H100-SXM"
[instances.scheduler]
max_batched_tokens = 1024
""")
    assert main(["run", str(exp), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "every request was rejected (5): 5 x max_batched_tokens" in err
    assert load_experiment(exp).run().failure().startswith("every request was rejected")


def test_progress_bar_over_arrivals(h100, llama7b, measured, capsys):
    from simcluster.simulation.progress import arrivals_bar
    trace = make_trace(np.linspace(0, 5, 30), [100] * 30, [20] * 30)
    a = Simulation(trace, llama7b, one_instance(h100), cost_model=measured).run(progress=True)
    b = Simulation(trace, llama7b, one_instance(h100), cost_model=measured).run()
    assert a.summary() == b.summary()
    bar = arrivals_bar(10, "x", delay_s=0)
    bar(4, 10)
    bar(10, 10)
    assert bar.bar.n == 10
    bar.close()
    assert "10/10" in capsys.readouterr().err


def test_moe_and_latent_attention_work_follows_the_models_counts(h100):
    from simcluster.models import model_preset
    for name in ("Mixtral-8x7B", "DeepSeek-V3", "Qwen3-30B-A3B"):
        m = model_preset(name)
        c = WorkCoefficients.of(m)
        assert c.flops_per_token + c.flops_per_sample == m.linear_flops_per_token
        # one token reaches exactly its k experts per MoE layer; a crowd reaches them all
        assert c.experts_touched(np.array([1.0]))[0] == pytest.approx(m.moe.experts_per_token)
        assert c.experts_touched(np.array([1e5]))[0] == pytest.approx(m.moe.num_experts)
        all_weights = c.bytes_per_iteration + c.moe_layers * c.experts * c.bytes_per_expert
        assert all_weights < m.weight_bytes < all_weights * 1.05   # + embeddings, LM head, norms
    m = model_preset("Qwen3-30B-A3B")
    n = 40
    trace = make_trace(np.linspace(0, 4, n), [300] * n, [30] * n)
    res = Simulation(trace, m, one_instance(h100),
                     cost_model=CostModel(load_calibration("measured"))).run()
    u = res.utilisation().iloc[0]
    assert 0 < u.mfu < u.mbu < 1
    tl = res.timeline
    f, _ = row_work(tl, WorkCoefficients.of(m))
    assert (f > 0).all() and np.allclose(f, tl.flops)


def test_rejections_count_kinds_of_reason_commonest_first():
    import pandas as pd
    from simcluster.simulation.results import rejections
    reasons = ["kv_capacity: needs 9 KV blocks", "max_model_len: 5000 tokens > 4096", "",
               "max_model_len: 6000 tokens > 4096", "scheduler could not admit it", ""]
    df = pd.DataFrame({"rejected": [bool(r) for r in reasons], "reason": reasons})
    out = rejections(df)
    assert out.kind.tolist() == ["max_model_len", "kv_capacity", "scheduler could not admit it"]
    assert out.requests.tolist() == [2, 1, 1]
    assert out.example[0] == "max_model_len: 5000 tokens > 4096"
    none = rejections(df[~df.rejected])
    assert len(none) == 0 and none.columns.tolist() == ["kind", "requests", "example"]


def test_rejected_because_is_the_commonest_kind_in_one_line():
    import pandas as pd
    from simcluster.simulation.results import rejected_because
    reasons = ["kv_capacity: needs 9 KV blocks", "max_model_len: 5000 tokens > 4096", "",
               "max_model_len: 6000 tokens > 4096", "scheduler could not admit it"]
    df = pd.DataFrame({"rejected": [bool(r) for r in reasons], "reason": reasons})
    assert rejected_because(df) == ("2 x max_model_len (e.g. max_model_len: 5000 tokens > 4096)"
                                     "; and 2 of 2 other kinds")
    assert rejected_because(df.iloc[1:4]) == \
        "2 x max_model_len (e.g. max_model_len: 5000 tokens > 4096)"
    assert rejected_because(df.iloc[[0, 1]]).endswith("; and 1 of 1 other kind")
    assert rejected_because(df[~df.rejected]) == ""


def test_save_writes_one_runs_folder(h100, llama7b, measured, tmp_path):
    """A transfers.csv an earlier (disaggregated) run left in the folder read as this run's;
    a file's path raised '[Errno 17] File exists'."""
    res = _run(make_trace([0.0, 0.1], [100, 100], [8, 8]), h100, llama7b, measured)
    out = tmp_path / "run"
    out.mkdir()
    (out / "transfers.csv").write_text("stale\n")
    (out / "activity.csv").write_text("stale\n")
    res.save(out)
    assert sorted(p.name for p in out.iterdir()) == ["instances.csv", "requests.csv",
                                                     "summary.json", "timeline.csv"]
    (tmp_path / "a.csv").write_text("x\n")
    with pytest.raises(NotADirectoryError, match="a.csv' is a file; Results.save writes a "
                                                 "folder"):
        res.save(tmp_path / "a.csv")



def _prefix_run():
    """A run of a trace with block hashes (its summary has the prefix-cache fields)."""
    import simcluster as sc
    trace = sc.shared_prefix_trace(60, arrivals=4.0, system_tokens=1024, user=64, output=16,
                                   rng=np.random.default_rng(0), system_prompts=2)
    spec = sc.InstanceSpec(sc.Layout.uniform("H100-SXM"))
    return sc.Simulation(trace, "llama-2-7b", spec, ttft_slo_s=0.5, name="prefix").run()


@pytest.mark.parametrize("run", [
    lambda: load_experiment("default", {"trace.first_n": 60}).run(),
    lambda: load_experiment("llmshare_h100", {"trace.first_n": 60}).run(),   # transfers
    lambda: load_experiment("hllm_azure_conv", {"trace.first_n": 60}).run(),  # activity
    _prefix_run])
def test_load_gives_back_the_run_that_save_wrote(tmp_path, run):
    """Results.load(res.save(DIR)): the same frames, SLOs, name and provenance, so that its
    summary (prefix-cache fields included), utilisation and figures are the run's."""
    import pandas as pd
    from simcluster.simulation import Results
    res = run()
    back = Results.load(res.save(tmp_path / "run"))
    for part in ("requests", "timeline", "instances", "transfers", "activity"):
        if len(getattr(res, part)):
            pd.testing.assert_frame_equal(getattr(back, part), getattr(res, part))
        else:
            assert not len(getattr(back, part))
    a, b = res.summary(), back.summary()
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)
    assert (back.name, back.ttft_slo_s, back.tpot_slo_s, back.provenance) == \
        (res.name, res.ttft_slo_s, res.tpot_slo_s, res.provenance)
    assert back.utilisation().equals(res.utilisation())


def test_load_names_what_is_missing(tmp_path):
    from simcluster.errors import InputError
    from simcluster.simulation import Results
    with pytest.raises(InputError, match="nowhere: expected a folder that Results.save"):
        Results.load(tmp_path / "nowhere")
    res = load_experiment("default", {"trace.first_n": 20}).run()
    out = res.save(tmp_path / "run")
    (out / "timeline.csv").unlink()
    with pytest.raises(InputError, match="run: no timeline.csv here"):
        Results.load(out)
    res.save(out)
    (out / "requests.csv").write_text("request_id,arrival_s\n0,0.0\n")
    with pytest.raises(InputError, match="requests.csv: missing column.*prompt_tokens"):
        Results.load(out)
    res.save(out)
    (out / "summary.json").write_text("{")
    with pytest.raises(InputError, match="summary.json: not valid JSON"):
        Results.load(out)


def test_requests_keep_the_traces_own_columns(tmp_path, h100):
    """A trace's request ids (renumbered in arrival order) and other columns (a tenant) were
    dropped from the results: a user could not join a request's latency back to their own
    records. They follow the result columns, in memory, streamed and through save/load; a
    name a result column has is prefixed ``trace.``; hash_ids (lists) are left out."""
    import pandas as pd
    from simcluster.simulation import Results
    from simcluster.workload import load_trace
    path = tmp_path / "t.csv"
    path.write_text("request_id,arrival_s,prompt_tokens,output_tokens,tenant,instance\n"
                    "7,0.0,10,5,a,x\n9,0.5,10,5,b,y\n")
    trace = load_trace(path)
    spec = one_instance(h100)
    res = Simulation(trace, "llama-2-7b", spec).run()
    r = res.requests
    assert list(r.columns[-3:]) == ["source_request_id", "tenant", "trace.instance"]
    assert r.source_request_id.tolist() == [7, 9] and r.tenant.tolist() == ["a", "b"]
    assert r.request_id.tolist() == [0, 1] and r.instance.tolist() == [0, 0]
    back = Results.load(res.save(tmp_path / "run")).requests
    assert back.source_request_id.tolist() == [7, 9] and back.tenant.tolist() == ["a", "b"]
    pytest.importorskip("pyarrow")
    streamed = Simulation(trace, "llama-2-7b", spec).run(stream_to=tmp_path / "s").requests
    pd.testing.assert_frame_equal(streamed[r.columns[-3:]], r[r.columns[-3:]])
