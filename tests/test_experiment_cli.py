"""Experiment TOML loading and the command line."""

import json

import pytest

from simcluster.cli import main
from simcluster.errors import InputError
from simcluster.experiment import load_experiment

TINY = """
name = "tiny"
seed = 3
[trace.synthetic]
n = 60
rate_per_s = 4.0
cv = 2.0
prompt = {dist = "lognormal", median = 300, sigma = 0.8, max_tokens = 3000}
output = {dist = "lognormal", median = 60, sigma = 0.8, max_tokens = 500}
[model]
name = "llama-2-7b"
[[instances]]
device = "H100-SXM"
count = 2
[instances.scheduler]
chunked_prefill = true
max_batched_tokens = 1024
[router]
policy = "join_shortest_queue"
[slo]
ttft_s = 0.5
tpot_s = 0.05
"""


def test_default_experiment_loads():
    exp = load_experiment()
    assert len(exp.trace) == 19366 and exp.instances[0].count == 4


def test_tiny_experiment_runs_through_cli(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "ttft_p99_s" in text and "slo_attainment" in text
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["requests"] == 60 and summary["finished"] + summary["rejected"] == 60
    for f in ("requests.csv", "timeline.csv", "instances.csv"):
        assert (tmp_path / "out" / f).exists()


@pytest.mark.parametrize("edit, where", [
    (("count = 2", "cuont = 2"), "instances[0].cuont"),
    (("seed = 3", "seed = \"x\""), "seed"),
    (("policy = \"join_shortest_queue\"", "policy = 3"), "router.policy"),
    (("ttft_s = 0.5", "ttft_s = -1"), "slo.ttft_s"),
])
def test_bad_keys_name_file_and_field(tmp_path, edit, where):
    path = tmp_path / "bad.toml"
    path.write_text(TINY.replace(*edit))
    with pytest.raises(InputError) as err:
        load_experiment(path)
    assert "bad.toml" in str(err.value) and where in str(err.value)


def test_unknown_router_fails_at_load_listing_known(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(TINY.replace("join_shortest_queue", "join_shortest_queu"))
    with pytest.raises(KeyError, match="did you mean 'join_shortest_queue'.*round_robin"):
        load_experiment(path)


def test_trace_info_and_list_and_predict(capsys, tmp_path):
    assert main(["trace-info", "azure-code"]) == 0
    assert "8819" in capsys.readouterr().out.replace(",", "")
    assert main(["list", "devices"]) == 0
    assert "H100-SXM" in capsys.readouterr().out
    assert main(["predict", "--model", "llama-2-7b", "--device", "H100-SXM",
                 "--decode-seqs", "8", "--decode-context", "1000"]) == 0
    assert "iteration time" in capsys.readouterr().out
    shapes = tmp_path / "s.csv"
    shapes.write_text("op,device,m,n,k\ngemm,H100-SXM,128,4096,4096\n")
    out = tmp_path / "p.csv"
    assert main(["predict", "--in", str(shapes), "--out", str(out)]) == 0
    assert "pred_time_s" in out.read_text()
    bad = tmp_path / "b.csv"
    bad.write_text("op,device,m,n\ngemm,H100-SXM,128,4096\n")
    assert main(["predict", "--in", str(bad)]) == 2
    assert "b.csv:2" in capsys.readouterr().err


def test_predict_says_whether_the_iteration_fits_memory(capsys, tmp_path):
    # Llama-2-70B's 128 GiB of weights on one 48 GB L40S: a time, and that it cannot run
    assert main(["predict", "--model", "llama-2-70b", "--device", "L40S",
                 "--decode-seqs", "8", "--decode-context", "100"]) == 0
    out = capsys.readouterr().out
    assert "iteration time" in out
    assert "memory: does not fit 1 x L40S" in out and "weights 128.48 GiB" in out
    # Llama-2-7B on an H100: 0.5 MiB of KV a token, ~59 GiB beside the weights
    assert main(["predict", "--model", "llama-2-7b", "--device", "H100-SXM",
                 "--decode-seqs", "32", "--decode-context", "2048"]) == 0
    out = capsys.readouterr().out
    assert "memory: fits 1 x H100-SXM at 0.9 of memory: 65,536 KV tokens" in out
    shapes = tmp_path / "s.csv"
    shapes.write_text("op,model,device,tp,decode_seqs,decode_context,m,n,k\n"
                      "iteration,llama-2-7b,H100-SXM,1,64,4000,,,\n"      # 256,000 tokens
                      "iteration,llama-2-7b,H100-SXM,2,64,4000,,,\n"      # fits two
                      "gemm,,H100-SXM,,,,128,4096,4096\n")
    out = tmp_path / "p.csv"
    assert main(["predict", "--in", str(shapes), "--out", str(out)]) == 0
    import pandas as pd
    got = pd.read_csv(out)
    assert got["fits_memory"].tolist()[:2] == [False, True]
    assert got["fits_memory"].isna().tolist() == [False, False, True]
    assert "the batch's 256,000 KV tokens > 121,722 that fit" in got["memory"][0]
    assert got["memory"][1].startswith("fits 2 x H100-SXM")


@pytest.mark.parametrize("body, where", [
    ("op,device,m,n,k\ngemm,H100-SXM,128.5,4096,4096\n", "s.csv:2: field 'm': expected a "
     "whole number >= 1, found 128.5"),
    ("op,device,m,n,k\ngemm,H100-SXM,1,2,3\ngemm,H100-SXM,0,2,3\n", "s.csv:3: field 'm'"),
    ("op,device,tokens,context,num_heads,num_kv_heads,head_dim\n"
     "attn_prefill,H100-SXM,64,-1,32,8,128\n", "s.csv:2: field 'context': expected a whole "
     "number >= 0 (at most 2**53), found -1"),
    ("op,device,bytes\nelementwise,H100-SXM,0\n", "field 'bytes': expected a number of "
     "bytes >= 1 (at most 2**53), found 0"),
    ("op,model,device,decode_seqs,decode_context\niteration,llama-2-7b,H100-SXM,2.5,9\n",
     "s.csv:2: field 'decode_seqs': expected a whole number >= 0, found 2.5"),
    ("op,model,decode_seqs,decode_context\niteration,llama-2-7b,4,9\n",
     "s.csv:2: field 'device': iteration rows need a 'device'"),
    # a measured table's '# key: value' lines count: the bad row is the file's fourth line
    ("# table: mine\n# device: H100-SXM\nop,device,m,n,k,measured_time_s\n"
     "gemm,H100-SXM,1,2,x,1e-5\n", "s.csv:4: field 'k'"),
])
def test_shapes_csv_cells_are_checked_not_truncated(body, where, tmp_path, capsys):
    shapes = tmp_path / "s.csv"
    shapes.write_text(body)
    command = ["validate", str(shapes)] if body.startswith("#") else ["predict", "--in",
                                                                      str(shapes)]
    assert main(command) == 2
    assert where in capsys.readouterr().err


def test_missing_trace_file_is_an_error(tmp_path, capsys):
    path = tmp_path / "t.toml"
    path.write_text(TINY.split("[trace.synthetic]")[0] + '[trace]\nsource = "nope.csv"\n'
                    + "[model]" + TINY.split("[model]")[1])
    assert main(["run", str(path), "--quiet"]) == 2
    assert "nope.csv" in capsys.readouterr().err


MOE = """
name = "moe"
seed = 1
[trace.conversations]
n = 12
rate_per_s = 2.0
think_s = 1.0
system_tokens = 1024
turns = {dist = "fixed", tokens = 3}
user = {dist = "lognormal", median = 300, sigma = 0.5, max_tokens = 2000}
output = {dist = "fixed", tokens = 20}
[model]
name = "Qwen3-30B-A3B"
[[instances]]
device = "H200"
tp = 1
dp = 2
ep = 2
link = "NVLink4"
[instances.scheduler]
prefix_caching = true
[router]
policy = "prefix_aware"
[cost]
moe_popularity_cv = 0.5
"""


def test_moe_and_prefix_caching_experiment_runs(tmp_path, capsys):
    path = tmp_path / "moe.toml"
    path.write_text(MOE)
    exp = load_experiment(path)
    assert exp.trace.has_block_hashes and exp.instances[0].layout.ep == 2
    assert exp.cost_model.routing.popularity_cv == 0.5 and exp.cost_model.routing.seed == 1
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["finished"] == 36 and summary["prefix_hit_rate"] > 0.3
    shared = MOE.replace("[trace.conversations]\nn = 12\nrate_per_s = 2.0\nthink_s = 1.0\n"
                         "system_tokens = 1024\nturns = {dist = \"fixed\", tokens = 3}",
                         "[trace.shared_prefix]\nn = 20\nrate_per_s = 2.0\n"
                         "system_tokens = 1024\nsystem_prompts = 2")
    path.write_text(shared)
    assert len(load_experiment(path).trace) == 20


@pytest.mark.parametrize("edit, text", [
    (("ep = 2", "ep = 3"), "ep=3"),
    (("dp = 2\nep = 2", "dp = 2\nep = 1"), "dp=2"),
    (("moe_popularity_cv = 0.5", "moe_popularity_cv = -1"), "cost.moe_popularity_cv"),
])
def test_bad_parallel_layouts_name_the_degree(tmp_path, capsys, edit, text):
    path = tmp_path / "bad.toml"
    path.write_text(MOE.replace(*edit))
    with pytest.raises(InputError) as err:
        load_experiment(path)
    assert "bad.toml" in str(err.value) and text in str(err.value)
    assert main(["run", str(path), "--quiet"]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("what, names, check", [
    ("devices", "hardware.list_devices", ("H100-SXM", "80", "3.35", "989.4", "3.348")),
    ("links", "hardware.list_links", ("NVLink4",)),
    ("models", "models.list_models", ("Mixtral-8x7B", "46.7", "12.88", "8 experts, top-2")),
    ("nodes", "hardware.list_nodes", ("dgx-h100", "8x H100-SXM", "2x Xeon-Platinum-8480+",
                                      "NVLink4", "IB-NDR400", "PCIe5", "UPI-16")),
    # (the Azure conversation trace: 19,366 requests over 3,502 s, prompts 1,155 on average)
    ("traces", "workload.bundled_traces", ("azure-conv", "19366", "3502", "1155", "211", "no")),
    ("engines", "engines.list_engines", ("hf-cb-h100", "H100-SXM", "llama-2-7b", "hf_cb",
                                         "0.0415")),
    ("experiments", "experiment.bundled_experiments",
     ("hllm_azure_conv", "Llama-3.1-8B", "azure-conv", "19366", "prefill 1x A100-80GB-PCIe; "
      "decode 12x Xeon-Gold-6148", "length_buckets")),
    ("searches", "experiment.search_spec.bundled_searches",
     ("tiny", "llmshare", "serving_time_s x capex_usd", "384", "6 + 4 x 2",
      "simulating 300 requests")),
])
def test_list_specs_is_a_table_of_their_figures(capsys, what, names, check):
    import importlib
    assert main(["list", what]) == 0
    lines = capsys.readouterr().out.splitlines()
    module, fn = names.rsplit(".", 1)
    listed = getattr(importlib.import_module(f"simcluster.{module}"), fn)()
    listed = sorted(listed) if what == "traces" else listed
    assert lines[0].split()[0] == "name" and len(lines) == len(listed) + 1
    assert [line.split()[0] for line in lines[1:]] == list(listed)
    row = next(line for line in lines if line.startswith(check[0] + " "))
    assert all(c in row.split("  ") or c in row.split() for c in check[1:])


@pytest.mark.parametrize("key", ["kernels", "execution"])
def test_an_engines_experiment_refuses_its_own_kernels_or_execution(key):
    """With an engine model the [cost] kernels and execution did nothing: the engine file's
    [kernels] and [execution] decide."""
    value = "hf-eager" if key == "kernels" else "eager"
    with pytest.raises(InputError, match="does nothing with engine = 'hf-cb-h100'") as err:
        load_experiment("default", overrides={"cost.engine": "hf-cb-h100",
                                              f"cost.{key}": value}).simulation()
    assert err.value.field == f"cost.{key}"


@pytest.mark.parametrize("overrides, field", [
    ({"instances.0.link": "NVLink4"}, "instances[0].link"),              # tp = pp = 1
    ({"instances.0.stage_link": "NVLink4"}, "instances[0].stage_link"),  # pp = 1
    ({"instances.0.pp": 2, "instances.0.link": "NVLink4", "instances.0.stage_link": "PCIe5"},
     "instances[0].link"),                                                # stages' own link
])
def test_a_link_nothing_crosses_is_refused(overrides, field):
    """Each link was read and never used: nothing crossed it."""
    with pytest.raises(InputError, match="does nothing") as err:
        load_experiment("default", overrides={"trace.first_n": 10, **overrides}).simulation()
    assert err.value.field == field
