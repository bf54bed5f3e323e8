"""The design search with the simulator in the loop: design rows -> evaluate_design, the
search TOML's checks, the cached evaluator's runners, and ``simcluster search`` on a tiny
space (seconds: a 30-request trace, 32 designs)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from simcluster.cli import main
from simcluster.errors import InputError
from simcluster.experiment.search_spec import load_search
from simcluster.hardware.parametric import H100_DECODE_ROW, H100_PREFILL_ROW, parse_row
from simcluster.search.design import CachedEvaluator, llmshare_space
from simcluster.search.design.evaluate import make_runner
from simcluster.search.runners import LocalRunner, SerialRunner
from simcluster.search.design.serving import (METRICS, ServingEvaluator, design_row,
                                              evaluation_row, serving_design)
from simcluster.search.design.surrogates import FeasibilityClassifier
from simcluster.workload import synthetic_trace

POOL = """
[space.{pool}]
servers = [1, 2]
devices_per_server = [8]
links_per_device = [18]
memory_gb = [40, 80]
global_buffer_mb = [50]
cores = {cores}
local_buffer_kb = [256]
lanes = [4]
array_height = [16]
vector_width = [32]
"""
TINY = ('name = "tiny"\nseed = 1\nobjectives = ["serving_time_s", "capex_usd"]\n'
        + POOL.format(pool="prefill", cores="[72, 132]")
        + POOL.format(pool="decode", cores="{ min = 132, max = 132 }") + """
[trace.synthetic]
n = 30
rate_per_s = 5.0
prompt = { dist = "fixed", tokens = 400 }
output = { dist = "fixed", tokens = 24 }
[model]
name = "llama-2-7b"
[slo]
ttft_s = 2.0
tpot_s = 0.2
[budget]
initial = 4
iterations = 2
batch_size = 2
[search]
method = "{method}"
""")


def _tiny(tmp_path, method="random", extra="", **replace):
    text = TINY.replace("{method}", method) + extra
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


def _trace(n=20):
    return synthetic_trace(n, arrivals=np.arange(n) * 0.2, prompt=300,
                           output=16, rng=np.random.default_rng(0))


# ---- design rows and the evaluator ------------------------------------------------------

def test_a_design_row_becomes_the_serving_system_and_back():
    d = {**{f"prefill_{k}": v for k, v in zip(
        ("servers", "devices_per_server", "links_per_device", "memory_gb", "global_buffer_mb",
         "cores", "local_buffer_kb", "lanes", "array_height", "vector_width"),
        map(int, H100_PREFILL_ROW.split(",")))}}
    d.update({k.replace("prefill_", "decode_"): v for k, v in d.items()})
    d["decode_servers"] = 6
    design = serving_design(d)
    assert design.prefill == parse_row(H100_PREFILL_ROW)
    assert design.decode == parse_row(H100_DECODE_ROW)
    assert design_row(design) == d
    with pytest.raises(InputError, match="decode_cores"):
        serving_design({**d, "decode_cores": "many"})
    with pytest.raises(InputError, match="lacks"):
        serving_design({k: v for k, v in d.items() if k != "prefill_lanes"})
    with pytest.raises(InputError, match="prefill_lanes"):
        serving_design({**d, "prefill_lanes": 0})


def test_evaluator_serves_a_trace_and_explains_an_infeasible_design():
    from simcluster.models import model_preset
    ev = ServingEvaluator(_trace(), model_preset("gpt-3-175b"), 2.0, 0.2)
    ev = pickle.loads(pickle.dumps(ev))            # travels to worker processes
    space = llmshare_space({"prefill_memory_gb": (80,), "decode_memory_gb": (40,)})
    row = space.sample(1, np.random.default_rng(0)).iloc[0].to_dict()
    row.update(prefill_devices_per_server=8, decode_devices_per_server=4, prefill_cores=72,
               decode_cores=72, prefill_lanes=1, decode_lanes=1, prefill_array_height=16,
               decode_array_height=16)
    bad = ev(row)                                  # 4 x 40 GB cannot hold 350 GB of weights
    assert "decode" in bad["reason"] and "short by" in bad["reason"]
    assert np.isnan(bad["serving_time_s"]) and bad["capex_usd"] > 0
    good = ev({**row, "decode_memory_gb": 80, "decode_devices_per_server": 8})
    assert good["reason"] == "" and set(METRICS) <= set(good)
    assert good["finished"] == 20 and 3.8 < good["serving_time_s"] < 60
    assert good["ttft_p50_s"] <= good["ttft_p90_s"] <= good["ttft_p99_s"]
    with pytest.raises(InputError, match="unknown evaluation options"):
        ServingEvaluator(_trace(), None, options={"routng": "splitwise"})
    with pytest.raises(InputError, match="stated"):
        ServingEvaluator(_trace(), None, stated={"cores": 8})


def test_a_design_that_rejects_requests_is_infeasible():
    from simcluster.simulation.design import DesignEvaluation
    ev = DesignEvaluation(True, "", 100.0, 10, 8, 2, 0.08, 1e6, 10.0, 0.3, 1.0, 0.1, 0.01, 0.8,
                          (500.0, 500.0), True, 0, {"ttft_p90_s": 0.1})
    row = evaluation_row(ev)
    assert row["reason"] == "rejected 2 of 10 requests"
    assert np.isnan(row["serving_time_s"]) and row["capex_usd"] == 1e6


# ---- the cached evaluator's runners -----------------------------------------------------

def _square(d):
    if d["x"] == 3:
        raise InputError("three is not a design", field="x")
    return {"y": float(d["x"]) ** 2, "note": f"x={d['x']}", "ok": True}


def test_cached_evaluator_keeps_figures_resumes_and_records_bad_designs(tmp_path):
    designs = pd.DataFrame({"x": [1, 2, 3, 4, 2]})
    path = tmp_path / "c.parquet"
    with CachedEvaluator(_square, ["y"], cache_path=path) as ev:
        out = ev(designs.iloc[:2])
        assert list(out.y) == [1.0, 4.0] and list(out.note) == ["x=1", "x=2"]
    with CachedEvaluator(_square, ["y"], workers=2, cache_path=path) as ev:
        assert isinstance(ev.runner, LocalRunner) and ev.runner.start_method == "spawn"
        out = ev(designs)
        assert ev.calls == 2                       # 1 and 2 came from the file
        assert np.isnan(out.y.iloc[2]) and "three is not a design" in out.reason.iloc[2]
        assert list(out.y.iloc[[0, 1, 3, 4]]) == [1.0, 4.0, 16.0, 4.0]
        frame = ev.frame()
    assert set(frame.columns) >= {"design_hash", "x", "y", "note", "reason"}
    assert len(pd.read_parquet(path)) == 4
    path.write_text("not parquet")
    with pytest.raises(InputError, match="cannot read the evaluation cache"):
        CachedEvaluator(_square, ["y"], cache_path=path)
    with pytest.raises(InputError, match="expected a mapping"):
        CachedEvaluator(lambda d: 3.0, ["y"])(designs.iloc[:1])
    assert isinstance(make_runner(1), SerialRunner)
    with pytest.raises(InputError, match="workers"):
        make_runner(0)


def test_cached_figures_of_another_context_are_not_reused_but_kept(tmp_path):
    designs = pd.DataFrame({"x": [1, 2]})
    path = tmp_path / "c.parquet"
    with CachedEvaluator(_square, ["y"], cache_path=path, context="trace A") as ev:
        ev(designs)
    with CachedEvaluator(_double, ["y"], cache_path=path, context="trace B") as ev:
        assert ev.stale == 2 and list(ev(designs).y) == [2.0, 4.0] and ev.calls == 2
    with CachedEvaluator(_square, ["y"], cache_path=path, context="trace A") as ev:
        assert ev.stale == 2 and list(ev(designs).y) == [1.0, 4.0] and ev.calls == 0
    assert sorted(pd.read_parquet(path).context) == ["trace A"] * 2 + ["trace B"] * 2


def _double(d):
    return {"y": 2.0 * d["x"]}


def test_an_evaluators_fingerprint_follows_its_trace_slos_and_options():
    from simcluster.models import model_preset
    from simcluster.paths import code_digest
    from simcluster.search.design.serving import ServingEvaluator
    from simcluster.workload import load_trace
    from simcluster.workload.transforms import first_n
    trace = first_n(load_trace("azure-conv"), 50)
    model = model_preset("gpt-3-175b")
    base = ServingEvaluator(trace, model, 2.0, 0.1)
    same = ServingEvaluator(trace, model, 2.0, 0.1)
    assert base.fingerprint() == same.fingerprint()
    assert ServingEvaluator(trace, model, 1.0, 0.1).fingerprint() != base.fingerprint()
    assert ServingEvaluator(first_n(trace, 49), model, 2.0, 0.1).fingerprint() \
        != base.fingerprint()
    assert ServingEvaluator(trace, model, 2.0, 0.1, options={"reload_s": 1.0}).fingerprint() \
        != base.fingerprint()
    assert len(code_digest()) == 16 and code_digest() == code_digest()


@pytest.mark.slow
def test_cached_evaluator_on_ray():
    pytest.importorskip("ray")
    from simcluster.search.design.synthetic import synthetic_evaluate_one, synthetic_objectives
    designs = llmshare_space().sample(4, np.random.default_rng(1))
    with CachedEvaluator(synthetic_evaluate_one, ["serving_time_s", "cost_usd"],
                         ray="local") as ev:
        assert ev.workers >= 1
        out = ev(designs)
    want = synthetic_objectives(designs)
    assert np.allclose(out.cost_usd, want.cost_usd, equal_nan=True)


def test_feasibility_classifier_learns_a_log_linear_limit():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    x = rng.random((40, 3))
    ok = x[:, 0] + x[:, 1] > 0.9                   # e.g. log devices + log memory
    clf = FeasibilityClassifier().fit(x, ok)
    test = rng.random((400, 3))
    assert np.mean((clf.predict(test) > 0.5) == (test[:, 0] + test[:, 1] > 0.9)) > 0.85
    assert np.all(FeasibilityClassifier().fit(x, np.ones(40, bool)).predict(test) == 1.0)


# ---- the search TOML --------------------------------------------------------------------

def test_search_toml_loads_with_lists_and_ranges(tmp_path):
    spec = load_search(_tiny(tmp_path))
    assert spec.space.size == 32 and spec.objectives == ("serving_time_s", "capex_usd")
    assert dict(zip(spec.space.names, [p.values for p in spec.space.parameters])
                )["decode_cores"] == (132.0,)
    assert (spec.n_init, spec.n_iter, spec.batch_size, spec.method) == (4, 2, 2, "random")
    assert len(spec.candidate_table()) == 32
    assert spec.baseline[1] == H100_PREFILL_ROW
    bundled = load_search("experiments/search/llmshare_search.toml")
    assert bundled.space.size > 1e14 and len(bundled.evaluator.trace) == 2454
    assert bundled.method == "llmshare" and bundled.candidates == 5000


def test_a_bundled_search_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    """``simcluster search tiny`` as ``simcluster run hels_opt30b``: from a folder that holds
    no experiments/ (an installed package's user), a name, a name.toml and search/NAME.toml
    find the bundled file; a path is a path; anything else lists the bundled searches."""
    from simcluster.experiment import experiments_dir
    from simcluster.experiment.search_spec import search_path
    monkeypatch.chdir(tmp_path)
    bundled = experiments_dir() / "search" / "tiny.toml"
    for name in ("tiny", "tiny.toml", "search/tiny.toml", str(bundled)):
        assert search_path(name).resolve() == bundled.resolve()
    mine = _tiny(tmp_path)
    assert search_path(mine) == mine
    with pytest.raises(InputError, match=r"did you mean 'tiny'.*known: llmshare_search, "
                                         r"llmshare_table, tiny"):
        search_path("tinyy")
    with pytest.raises(InputError, match="no such search file"):
        search_path("experiments/search/tiny.toml")     # (relative to a repository checkout)


@pytest.mark.parametrize("edit, field", [
    ({'name = "tiny"': 'name = "tiny"\nbudgte = 3'}, "budgte"),
    ({"cores = [72, 132]": "cores = [72, 13.5]"}, "space.prefill.cores"),
    ({"cores = [72, 132]": "cores = [72, 72]"}, "space.prefill.cores"),
    ({"cores = [72, 132]": "cores = { min = 132, max = 72 }"}, "space.prefill.cores"),
    ({"cores = [72, 132]": "cores = { min = 72, max = 132, stride = 2 }"},
     "space.prefill.cores.stride"),
    ({"lanes = [4]\narray_height = [16]\nvector_width = [32]\n\n[space.decode]":
      "lanes = [4]\narray_height = [16]\nvector_width = [32]\nwidth = [3]\n\n[space.decode]"},
     "space.prefill.width"),
    ({'"serving_time_s", "capex_usd"': '"serving_time_s", "price"'}, "objectives"),
    ({"method = \"random\"": "method = \"bayes\""}, "search.method"),
    ({"initial = 4": "initial = 30"}, "budget"),
    ({"batch_size = 2": "batch_size = 0"}, "budget.batch_size"),
    ({"[search]": "[search]\nref_point = [1.0]"}, "search.ref_point"),
    ({"[search]": "[search]\ntable = \"nope.csv\""}, "search.table"),
    ({"[search]": "[baseline]\nprefill = \"1,2,3\"\n[search]"}, "baseline.prefill"),
    ({"[search]": "[pools]\nnetwork_link = \"carrier pigeon\"\n[search]"},
     "pools.network_link"),
])
def test_search_toml_errors_name_the_file_and_key(tmp_path, edit, field):
    path = _tiny(tmp_path, **edit)
    with pytest.raises(InputError) as err:
        load_search(path)
    assert str(path) in str(err.value) and err.value.field == field


def test_search_cli_mistakes_print_no_traceback(tmp_path, capsys):
    assert main(["search", str(tmp_path / "none.toml")]) == 2
    assert "no such search file" in capsys.readouterr().err
    path = _tiny(tmp_path, **{"initial = 4": "initial = \"one\""})
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err
    assert "budget.initial" in err and "Traceback" not in err
    assert main(["search", str(_tiny(tmp_path)), "--method", "nope"]) == 2
    assert "search.method" in capsys.readouterr().err


# ---- simcluster search on a tiny space --------------------------------------------------

def test_search_command_on_a_tiny_space(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["search", str(_tiny(tmp_path)), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "Pareto front" in text and "H100 cluster" in text
    designs = pd.read_parquet(out / "designs.parquet")
    assert len(designs) == 8 and designs.design_hash.is_unique
    assert {"serving_time_s", "capex_usd", "ttft_p90_s", "energy_kwh", "feasible",
            "reason", "iteration", "prefill_cores"} <= set(designs.columns)
    bad = designs[~designs.feasible]
    assert (bad.reason != "").all()
    front = pd.read_csv(out / "front.csv")
    ok = designs[designs.feasible]
    assert len(front) >= 1 and front.serving_time_s.min() == ok.serving_time_s.min()
    assert front.capex_usd.min() == ok.capex_usd.min()
    comparison = pd.read_csv(out / "comparison.csv")
    assert comparison.design.iloc[0] == "H100 cluster"
    assert comparison["capex_usd / baseline"].iloc[0] == pytest.approx(1.0)
    hv = pd.read_csv(out / "hypervolume.csv")
    assert list(hv.iteration) == [0, 1, 2] and hv.hypervolume.is_monotonic_increasing
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluated"] == 8 and summary["simulated"] == 8
    assert (out / "search.png").stat().st_size > 20_000
    # a rerun simulates nothing: every design is in OUT/evaluations.parquet
    assert main(["search", str(_tiny(tmp_path)), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["simulated"] == 0


def test_search_command_answers_from_an_evaluated_table(tmp_path, capsys):
    pytest.importorskip("sklearn")
    spec_path = _tiny(tmp_path)
    spec = load_search(spec_path)
    table = spec.candidate_table()
    rng = np.random.default_rng(0)
    table["serving_time_s"] = 100 / table.prefill_servers + 50 / table.decode_servers \
        + rng.random(len(table))
    table["capex_usd"] = 1e5 * (table.prefill_servers + table.decode_servers
                                + table.prefill_cores / 100 + table.decode_memory_gb / 40)
    table.loc[0, ["serving_time_s"]] = np.nan
    table["reason"] = ["too small"] + [""] * (len(table) - 1)
    table.to_csv(tmp_path / "designs.csv", index=False)
    path = _tiny(tmp_path, "svr", extra='table = "designs.csv"\n')
    path.write_text(path.read_text() + "[baseline]\nskip = true\n")
    out = tmp_path / "out"
    assert main(["search", str(path), "--out", str(out), "--quiet", "--seed", "3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 3 and summary["candidates"] == 32 and summary["simulated"] == 0
    assert summary["true_front"] >= 1 and 0 <= summary["adrs"] < 1
    assert "ADRS" in capsys.readouterr().out


def test_a_design_search_outcome_shows_one_line():
    import dataclasses
    from simcluster.search.design.session import run_design_search
    spec = dataclasses.replace(load_search("llmshare_table"), method="random", n_iter=2)
    o = run_design_search(spec, None)
    text = repr(o)
    assert text.startswith("<DesignSearchOutcome 'llmshare-gpt3-table': random (seed 0): "
                           f"{len(o.result.history)} designs evaluated, ")
    assert "0 simulated" in text and "\n" not in text


def test_search_help_lists_every_method():
    """--method's help names the methods (the list is the CLI's own, kept off the registry
    import that -h would otherwise pay for): the same names as the registry, in its order."""
    from simcluster.cli.design import METHOD_NAMES
    from simcluster.search.design.methods import METHODS
    assert METHOD_NAMES == tuple(METHODS)
