"""Sweeps: one row per point whichever runner ran it, failures recorded, results cached by the
resolved configuration's hash; capacity agrees with a dense rate grid; cheapest is the
cheapest that meets."""

import json
import math

import pandas as pd
import pytest

from _tiny import write_tiny
from simcluster.errors import InputError
from simcluster.experiment.points import ExperimentPoint
from simcluster.experiment.study import capacity, cheapest, compare, expand, read_sweep, sweep
from simcluster.search import LocalRunner, SerialRunner, frame, run_points
from simcluster.search.capacity import _interior
from simcluster.search.cheapest import Family, _mixes, tp_link

GRID = {"trace.rate_per_s": [3.0, 12.0], "instances.0.count": [1, 2]}


@pytest.fixture
def tiny(tmp_path):
    return write_tiny(tmp_path)


def _det(df):
    """A frame without the one column that depends on the machine (wall time)."""
    return df.drop(columns=["wall_s"])


def test_sweep_is_one_row_per_point_with_every_varied_key(tiny):
    res = sweep(tiny, GRID, set={"seed": 1}, jobs=1, progress=False)
    df = res.frame
    assert len(df) == 4 and list(df.columns[:2]) == list(GRID)
    assert sorted(zip(df["trace.rate_per_s"], df["instances.0.count"])) == \
        [(3.0, 1), (3.0, 2), (12.0, 1), (12.0, 2)]
    assert (df.error == "").all() and df.config_hash.nunique() == 4
    assert df.offered_rate_per_s.round(6).tolist() == df["trace.rate_per_s"].tolist()
    # more replicas at the same rate: never worse TTFT p90
    for rate, g in df.groupby("trace.rate_per_s"):
        g = g.set_index("instances.0.count")
        assert g.ttft_p90_s[2] <= g.ttft_p90_s[1] * 1.05


def test_local_pool_and_serial_frames_are_equal(tiny):
    a = sweep(tiny, GRID, jobs=1, progress=False).frame
    b = sweep(tiny, GRID, jobs=2, progress=False).frame
    pd.testing.assert_frame_equal(_det(a), _det(b))


def test_ray_frames_equal_local_frames(tiny):
    pytest.importorskip("ray")
    a = sweep(tiny, GRID, jobs=2, progress=False).frame
    b = sweep(tiny, GRID, ray="local", progress=False).frame
    pd.testing.assert_frame_equal(_det(a), _det(b))


def test_a_failed_point_records_its_error_and_the_sweep_goes_on(tiny, tmp_path):
    res = sweep(tiny, {"instances.0.count": [1, 0, "x"]}, jobs=1, progress=False,
                out=tmp_path / "out")
    df = res.frame.set_index("point")
    assert df.error[0] == "" and df.finished[0] == 80
    assert "instances[0].count" in df.error[1] and "out of range" in df.error[1]
    assert "expected an integer" in df.error[2] and math.isnan(df.finished[2])
    assert "(at " not in df.error[1] + df.error[2]      # bad input: no source line, its key
    assert len(res.failed) == 2
    assert (tmp_path / "out" / "results.csv").exists()
    assert (tmp_path / "out" / "results.parquet").exists()
    assert len(list((tmp_path / "out" / "points").glob("*.json"))) == 1   # failures not cached


def test_a_point_failing_on_a_bug_says_where(tiny, monkeypatch):
    def broken(self, keep=False):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(ExperimentPoint, "evaluate", broken)
    res = sweep(tiny, {"seed": [1]}, jobs=1, progress=False)
    assert res.frame.error[0].startswith("ZeroDivisionError: division by zero (at test_search.py:")


def test_a_rerun_skips_points_on_disk(tiny, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = sweep(tiny, GRID, jobs=1, progress=False, out=out)
    calls = []
    orig = ExperimentPoint.evaluate
    monkeypatch.setattr(ExperimentPoint, "evaluate",
                        lambda self, keep=False: calls.append(self.key) or orig(self, keep))
    grid = dict(GRID, **{"trace.rate_per_s": [3.0, 12.0, 6.0]})
    second = sweep(tiny, grid, jobs=1, progress=False, out=out)
    assert len(calls) == 2                                  # only the two new points ran
    assert sum(o.cached for o in second.outcomes) == 4
    old = _det(first.frame).set_index("config_hash")
    new = _det(second.frame).set_index("config_hash").loc[old.index, old.columns]
    pd.testing.assert_frame_equal(old.drop(columns="point"), new.drop(columns="point"))
    sweep(tiny, GRID, jobs=1, progress=False, out=out, fresh=True)
    assert len(calls) == 6
    # a torn cache file is run again, not trusted
    victim = out / "points" / f"{first.frame.config_hash[0]}.json"
    victim.write_text("{not json")
    sweep(tiny, GRID, jobs=1, progress=False, out=out)
    assert len(calls) == 7 and json.loads(victim.read_text())["key"] == victim.stem


def test_a_rerun_runs_a_point_again_when_a_file_it_names_changed(tmp_path, monkeypatch):
    csv = tmp_path / "my.csv"
    csv.write_text("arrival_s,prompt_tokens,output_tokens\n0.0,100,10\n0.5,200,20\n")
    exp = write_tiny(tmp_path, TINY_CSV)
    out = tmp_path / "out"
    first = sweep(exp, {"instances.0.count": [1, 2]}, jobs=1, progress=False, out=out)
    assert not any(o.cached for o in first.outcomes)
    again = sweep(exp, {"instances.0.count": [1, 2]}, jobs=1, progress=False, out=out)
    assert all(o.cached for o in again.outcomes)            # same files: found on disk
    csv.write_text(csv.read_text() + "1.0,300,30\n")        # an edited trace runs again
    edited = sweep(exp, {"instances.0.count": [1, 2]}, jobs=1, progress=False, out=out)
    assert not any(o.cached for o in edited.outcomes)
    assert list(edited.frame.requests) == [3, 3] and list(first.frame.requests) == [2, 2]
    # a trace named by an override, relative to where it was given
    other = tmp_path / "sub"
    other.mkdir()
    (other / "my.csv").write_text(csv.read_text())
    monkeypatch.chdir(other)
    p = ExperimentPoint.from_file(exp, {"trace.source": "my.csv"})
    key = p.key
    (other / "my.csv").write_text(csv.read_text() + "2.0,10,5\n")
    assert ExperimentPoint.from_file(exp, {"trace.source": "my.csv"}).key != key


def test_a_points_key_follows_the_spec_files_of_simcluster_hwspecs(tiny, tmp_path,
                                                                   monkeypatch):
    specs = tmp_path / "specs" / "devices"
    specs.mkdir(parents=True)
    (specs / "mine.toml").write_text('name = "mine"\n')
    plain = ExperimentPoint.from_file(tiny).key
    monkeypatch.setenv("SIMCLUSTER_HWSPECS", str(tmp_path / "specs"))
    with_specs = ExperimentPoint.from_file(tiny).key
    (specs / "mine.toml").write_text('name = "mine"\n# edited\n')
    assert len({plain, with_specs, ExperimentPoint.from_file(tiny).key}) == 3


TINY_CSV = """
name = "tiny-csv"
seed = 3
[trace]
source = "my.csv"
[model]
name = "llama-2-7b"
[[instances]]
device = "H100-SXM"
count = 2
[slo]
ttft_s = 0.25
tpot_s = 0.03
"""


def test_keys_follow_the_resolved_configuration(tiny):
    base = ExperimentPoint.from_file(tiny)
    assert base.with_overrides({"instances.0.count": 2}).key == base.key   # the file says 2
    assert base.with_overrides({"instances.0.count": 3}).key != base.key
    assert base.with_overrides({"seed": 4}).key != base.key
    p = base.with_overrides({"trace.rate_per_s": 5})
    assert p.get("trace.rate_per_s") == 5 and p.get("instances.0.device") == "H100-SXM"
    assert p.get("nope.x", "d") == "d"
    import pickle
    q = pickle.loads(pickle.dumps(p))
    assert q.key == p.key and q.overrides == p.overrides


def test_equal_points_run_once(tiny):
    base = ExperimentPoint.from_file(tiny)
    pts = [base, base.with_overrides({"instances.0.count": 2}), base.with_overrides({"seed": 9})]
    outs = run_points(pts, SerialRunner(), progress=False)
    assert outs[0] is outs[1] and outs[2] is not outs[0]
    df = frame(pts, outs)
    assert list(df.columns[:2]) == ["instances.0.count", "seed"]


@pytest.mark.parametrize("collect", [True, False])
def test_a_long_point_frees_its_simulation_before_the_next(tiny, monkeypatch, collect):
    """A finished simulation is cyclic garbage; after a point that ran COLLECT_AFTER_S or
    longer, evaluate collects it (with the collector paused, so only that call can)."""
    import gc
    import weakref
    import simcluster.search.sweep as sw
    from simcluster.simulation.simulation import Simulation
    envs, real = [], Simulation.run

    def run(self, *a, **kw):
        envs.append(weakref.ref(self.env))
        return real(self, *a, **kw)
    monkeypatch.setattr(Simulation, "run", run)
    monkeypatch.setattr(sw, "COLLECT_AFTER_S", 0.0 if collect else math.inf)
    point = ExperimentPoint.from_file(tiny)
    gc.disable()
    try:
        outcome = sw.evaluate(point)
        assert outcome.ok and len(envs) == 1
        assert (envs[0]() is None) is collect
    finally:
        gc.enable()


def test_sweep_file_reads_nested_and_quoted_keys(tmp_path, tiny):
    f = tmp_path / "s.toml"
    f.write_text('experiment = "tiny.toml"\n[set]\nseed = 2\n[grid]\n'
                 '"instances.0.count" = [1, 2]\n[grid.trace]\nrate_per_s = [4, 8]\n'
                 '[[points]]\n"router.policy" = "round_robin"\n[[points]]\nrouter.policy = "jsq"\n')
    spec = read_sweep(f)
    assert spec["set"] == {"seed": 2} and spec["experiment"] == tiny
    combos = expand(spec["grid"], spec["points"])
    assert len(combos) == 8
    assert {"instances.0.count", "trace.rate_per_s", "router.policy"} == set(combos[0])
    with pytest.raises(InputError, match="grid.seed"):
        expand({"seed": 3})
    f.write_text('experiment = "tiny.toml"\n[grid]\nseed = []\n')
    with pytest.raises(InputError, match="non-empty list"):
        read_sweep(f)
    f.write_text('experimnet = "tiny.toml"\n')
    with pytest.raises(InputError, match="experimnet"):
        read_sweep(f)


@pytest.mark.parametrize("grid, points, fixed, field, what", [
    ({"seed": [1, 2, 1]}, None, None, "grid.seed", "1 is listed twice"),
    ({"trace.rate_per_s": [2, 2.0]}, None, None, "grid.trace.rate_per_s", "listed twice"),
    ({"seed": [0, 1]}, [{"seed": 3}], None, "points[0].seed", "the grid's values would "
     "replace the point's"),
    (None, [{"seed": 1}, {"seed": 1.0}], None, "points[1]", "would run twice"),
    ({"trace": {"rate_per_s": [2, 4]}}, None, {"trace.rate_per_s": 3}, "set.trace.rate_per_s",
     "set for every point (set) and varied (grid)"),
    (None, [{"seed": 1}], ["seed=2"], "set.seed", "varied (grid)"),
])
def test_a_point_that_would_run_twice_or_lose_a_value_is_refused(grid, points, fixed, field,
                                                                 what):
    with pytest.raises(InputError) as err:
        expand(grid, points, fixed=fixed)
    assert err.value.field == field and what in err.value.reason


def test_values_alike_only_when_they_are_the_same_setting():
    # 1 and true differ (an int and a bool); [1, 2] and (1, 2) are one list
    assert len(expand({"x": [1, True]})) == 2
    assert len(expand(None, [{"x": [1, 2]}, {"x": [1, 3]}])) == 2
    with pytest.raises(InputError, match="would run twice"):
        expand(None, [{"x": [1, 2]}, {"x": (1, 2)}])


def test_python_arguments_of_the_wrong_shape_are_named(tiny):
    """A dict where the list of points goes raised AttributeError 'str' object has no
    attribute 'items'; a number for the experiment 'expected str, bytes or os.PathLike
    object'; overrides=3 "'int' object is not iterable"; tp='1,2' "invalid literal for
    int()". Each names its argument now, and tp takes '1,2' as --tp does."""
    from simcluster.experiment import load_experiment
    for call, says in [
            (lambda: sweep(tiny, points={"seed": 1}, progress=False), "points: expected a list"),
            (lambda: sweep(tiny, grid=[("seed", [1])], progress=False), "grid: expected a "
                                                                          "mapping"),
            (lambda: compare(tiny, vary=[("seed", [1])], progress=False), "vary: expected a "
                                                                            "mapping"),
            (lambda: load_experiment(3), "experiment: expected an experiment TOML's path"),
            (lambda: load_experiment(tiny, overrides=3), "overrides: expected a mapping"),
            (lambda: load_experiment(tiny, overrides=[{"seed": 1}]), "got list")]:
        with pytest.raises(TypeError) as err:
            call()
        assert says in str(err.value), err.value
    with pytest.raises(InputError, match="field 'tp': expected TP degrees"):
        cheapest(tiny, rate_per_s=1, devices="H100-SXM", tp="1,x", progress=False)
    res = cheapest(tiny, rate_per_s=1, devices="H100-SXM", tp="1,2", max_count=1,
                   mixed=False, progress=False)
    assert list(res.candidates.config) == ["1x H100-SXM tp1", "1x H100-SXM tp2"]


def test_local_runner_rejects_bad_jobs():
    """Named as the Python argument (the command line's --jobs never gets here: argparse
    refuses it first)."""
    with pytest.raises(InputError, match="field 'jobs'"):
        LocalRunner(0)


@pytest.mark.parametrize("kw", [{"ttft_slo_s": -1}, {"tpot_slo_s": "0.05"},
                                {"ttft_slo_s": float("inf")}])
def test_searches_name_a_bad_slo_argument(tiny, kw):
    """capacity(ttft_slo_s=-1) ran, and the search said 'the configuration fails at the
    trace's own rate' around the loader's message; it is the caller's argument."""
    (name,) = kw
    with pytest.raises(InputError, match=f"field '{name}': expected None or a number of "
                                         "seconds > 0"):
        capacity(tiny, progress=False, **kw)
    with pytest.raises(InputError, match=f"field '{name}'"):
        cheapest(tiny, rate_per_s=1, devices=["H100-SXM"], progress=False, **kw)


def test_compare_keeps_each_runs_frames_and_groups_the_table(tiny):
    cmp_ = compare(tiny, vary={"router.policy": ["round_robin", "least_outstanding_tokens"]},
                   progress=False)
    assert list(cmp_.results) == ["router.policy=round_robin",
                                  "router.policy=least_outstanding_tokens"]
    groups = list(dict.fromkeys(cmp_.table.columns.get_level_values(0)))
    assert groups == ["latency", "throughput", "slo", "cost", "energy"]   # (no prefix cache)
    lat = cmp_.table[("latency", "ttft_p50_ms")]
    assert (lat == cmp_.frame.ttft_p50_s.to_numpy() * 1e3).all()
    assert (cmp_.table[("energy", "kwh")] == cmp_.frame.energy_kwh.to_numpy()).all()
    assert "[latency]" in str(cmp_) and "ttft_p99_ms" in str(cmp_) and "[energy]" in str(cmp_)


def test_compare_shows_prefix_cache_hits_where_runs_cache():
    from simcluster.analysis.compare import compare_table
    frame = pd.DataFrame({"label": ["a", "b"], "ttft_p50_s": [0.1, 0.2],
                          "prefix_hit_rate": [0.05, 0.08], "ttft_hit_p50_s": [0.09, 0.15]})
    table = compare_table(frame)
    assert table[("prefix_cache", "hit_rate")].tolist() == [0.05, 0.08]
    assert table[("prefix_cache", "ttft_hit_p50_ms")].tolist() == [90.0, 150.0]


def test_compare_text_names_a_failed_runs_error_kind_and_lists_the_messages():
    """A message is far wider than a column: the status row names the error's kind, the
    messages follow under [errors] (or not at all, for the command line, which prints them
    on stderr), and every column stays as wide as its heading."""
    from simcluster.analysis.compare import compare_table, format_compare
    err = "UnknownNameError: exp.toml: field 'router.policy': unknown router policy 'jsq'"
    frame = pd.DataFrame({"label": ["a", "jsq"], "ttft_p50_s": [0.1, float("nan")],
                          "error": ["", err]})
    text = format_compare(compare_table(frame))
    status = text.splitlines()[text.splitlines().index("[status]") + 1]
    assert status.split() == ["error", "ok", "UnknownNameError"]
    assert text.splitlines()[-2:] == ["[errors]", f"  jsq: {err}"]
    widths = {len(line) for line in text.splitlines() if line.startswith("  ")
              and not line.startswith("  jsq:")}
    assert len(widths) == 1
    assert "[errors]" not in format_compare(compare_table(frame), errors=False)


# -- capacity ---------------------------------------------------------------------------------

CAP = {"instances.0.count": 1, "trace.synthetic.n": 150, "slo.ttft_s": 0.1,
       "slo.tpot_s": 0.012}


def test_capacity_agrees_with_a_dense_rate_grid(tiny):
    """The bisection's answer is within one final bisection step of the highest rate of a
    dense grid before its first failure (grid spacing below that step)."""
    res = capacity(tiny, set=CAP, attainment=0.9, rel_tol=0.04, jobs=2, progress=False)
    assert res.rate_per_s > 0 and res.fails_at_per_s > res.rate_per_s
    assert res.tolerance_per_s <= 0.04 * res.rate_per_s + 1e-9
    step = res.tolerance_per_s
    lo, hi = res.rate_per_s * 0.7, res.fails_at_per_s * 1.3
    n = int((hi - lo) / (step / 2)) + 1
    rates = [lo + i * (hi - lo) / (n - 1) for i in range(n)]
    grid = sweep(tiny, {"trace.rate_per_s": rates}, set=CAP, jobs=2, progress=False).frame
    meets = (grid.slo_attainment >= 0.9).to_numpy()
    assert meets[0] and not meets[-1]
    first_fail = int(meets.argmin())
    dense = rates[first_fail - 1]
    assert abs(dense - res.rate_per_s) <= step + 1e-9, (dense, res)
    assert set(res.points.columns) >= {"rate_per_s", "meets", "slo_attainment"}
    assert res.points.meets.any() and not res.points.meets.all()


def test_a_capacity_the_replicas_only_absorb_as_a_burst_is_flagged(tiny):
    # 80 requests: compressed far enough, the whole trace is one burst worked off afterwards
    res = capacity(tiny, progress=False, jobs=2, rel_tol=0.05)
    at = res.points[res.points.rate_per_s == res.rate_per_s].iloc[0]
    assert res.burst and at.drain_s > at.arrival_window_s
    assert "a burst, not a sustained rate" in str(res) and "80 requests arrive within" in str(res)
    # ten times the requests: the same replicas' capacity is a steady state, and lower
    long = capacity(tiny, set={"trace.synthetic.n": 800}, progress=False, jobs=2, rel_tol=0.05)
    at = long.points[long.points.rate_per_s == long.rate_per_s].iloc[0]
    assert not long.burst and at.drain_s < at.arrival_window_s and "burst" not in str(long)
    assert 0 < long.rate_per_s < res.rate_per_s / 2
    # the cheapest configuration for such a rate says the same; for a sustained one, nothing
    ch = cheapest(tiny, rate_per_s=400.0, devices=["H100-SXM"], max_count=2, mixed=False,
                  progress=False)
    assert ch.best is not None and ch.burst and "a burst, not a sustained rate" in str(ch)
    ch = cheapest(tiny, rate_per_s=4.0, devices=["H100-SXM"], max_count=2, mixed=False,
                  progress=False)
    assert not ch.burst and "burst" not in str(ch)


def test_capacity_needs_an_slo_and_reports_when_nothing_meets(tiny):
    with pytest.raises(InputError, match="needs an SLO"):
        capacity(tiny, set={"slo": {}}, progress=False)
    res = capacity(tiny, set={"instances.0.count": 1, "slo.ttft_s": 1e-4, "slo.tpot_s": 1e-4},
                   progress=False, jobs=1)
    assert res.rate_per_s == 0 and "fails" in str(res)


def test_a_search_that_nothing_meets_names_the_rejections_no_rate_or_count_removes(tiny):
    # prompts past max_batched_tokens without chunked prefill: rejected at any rate or count
    short = {"instances.0.scheduler.max_batched_tokens": 400}
    rejected = ExperimentPoint.from_file(tiny, short).evaluate()[0]
    assert rejected["rejected"] > 0
    assert rejected["rejected_because"].startswith(f"{rejected['rejected']} x max_batched_tokens")
    res = capacity(tiny, set=short, progress=False, jobs=1)
    bound = (80 - rejected["rejected"]) / 80
    assert res.rate_per_s == 0 and "so attainment is at most" in res.note
    assert f"that run rejected {rejected['rejected']} of 80 requests" in str(res)
    assert f"at most {bound:.3g}: {rejected['rejected_because']}" in str(res)
    res = cheapest(tiny, rate_per_s=4.0, devices=["H100-SXM", "L40S"], max_count=2, set=short,
                   mixed=False, progress=False)
    assert res.best is None and "; the closest, " in res.note
    assert "x max_batched_tokens (e.g. max_batched_tokens: prompt of" in res.note
    ok = capacity(tiny, set={"instances.0.count": 1, "slo.ttft_s": 1e-4, "slo.tpot_s": 1e-4},
                  progress=False, jobs=1)
    assert "rejected" not in ok.note           # failing on latency alone: no rejection note


def test_interior_points_split_the_bracket_evenly():
    assert _interior(0.0, 3.0, 2) == [1.0, 2.0] and _interior(1.0, 2.0, 1) == [1.5]


# -- cheapest ---------------------------------------------------------------------------------

def test_cheapest_is_the_cheapest_homogeneous_answer_a_brute_force_finds(tiny):
    devices, top = ["H100-SXM", "L40S"], 4
    slo = {"slo.ttft_s": 0.5, "slo.tpot_s": 0.04}
    res = cheapest(tiny, rate_per_s=8.0, devices=devices, max_count=top, set=slo,
                   mixed=False, progress=False)
    brute = sweep(tiny, {"instances.0.device": devices,
                         "instances.0.count": list(range(1, top + 1))},
                  set={**slo, "trace.rate_per_s": 8.0}, jobs=1, progress=False).frame
    brute["usd"] = brute["cost_usd_per_hour"]
    ok = brute[brute.slo_attainment >= 0.9].sort_values("usd")
    assert res.best is not None
    assert res.best["usd_per_hour"] == pytest.approx(ok.usd.iloc[0])
    assert res.candidates.meets.iloc[0] and res.candidates.config.iloc[0] == res.best["config"]


class _Analytic:
    """A point whose replicas each serve a fixed rate (a device's capacity): it meets when
    their sum reaches the offered rate. Exercises the search without simulating."""

    CAPACITY = {"H100-SXM": 10.0, "L40S": 3.5}

    def __init__(self, overrides=None):
        self.overrides = dict(overrides or {})
        self.runs = 0

    @property
    def key(self):
        return json.dumps(self.overrides, sort_keys=True)

    def get(self, dotted, default=None):
        base = {"instances": [{"device": "H100-SXM"}], "slo.ttft_s": 1.0}
        return self.overrides.get(dotted, base.get(dotted, default))

    def with_overrides(self, more, folder=None):
        return _Analytic({**self.overrides, **more})

    def evaluate(self, keep=False):
        cap = sum(t["count"] * self.CAPACITY[t["device"]] for t in self.overrides["instances"])
        ok = cap >= self.overrides["trace.rate_per_s"]
        return {"slo_attainment": 1.0 if ok else 0.5, "cost_per_m_tokens_usd": 1.0}, None


def test_cheapest_finds_the_cheapest_mix_a_brute_force_finds():
    from simcluster.hardware import load_device
    from simcluster.search.cheapest import cheapest as search
    rate = 25.0
    res = search(_Analytic(), rate, ["H100-SXM", "L40S"], max_count=8, progress=False)
    price = {d: load_device(d).price_usd_per_hour for d in _Analytic.CAPACITY}
    best = min((a * price["H100-SXM"] + b * price["L40S"], a, b)
               for a in range(9) for b in range(9) if 0 < a + b <= 8
               and a * 10.0 + b * 3.5 >= rate)
    assert res.best["usd_per_hour"] == pytest.approx(best[0])
    assert res.best["config"] == f"{best[1]}x H100-SXM tp1 + {best[2]}x L40S tp1"
    assert res.best["kind"] == "mixed"
    homo = res.candidates[res.candidates.kind == "homogeneous"]
    assert {"3x H100-SXM tp1", "8x L40S tp1"} <= set(homo[homo.meets].config)


def test_mixes_are_cheaper_than_the_budget_and_could_reach_the_rate():
    x, y = Family("H100-SXM", 1), Family("L40S", 1)
    mixes = _mixes({x: 4, y: 6}, {"device": "H100-SXM"}, budget=4 * x.usd_per_hour, max_count=16)
    assert mixes and all(c[2] < 4 * x.usd_per_hour for c in mixes)
    for label, kind, usd, tables in mixes:
        a, b = tables[0]["count"], tables[1]["count"]
        assert a < 4 and b < 6 and a / 3 + b / 5 > 1 and kind == "mixed"
    assert [c[2] for c in mixes] == sorted(c[2] for c in mixes)
    assert _mixes({x: 1, y: 6}, {}, budget=100, max_count=16) == []   # x alone: 1 replica


def test_tp_groups_use_the_nodes_link():
    assert tp_link("H100-SXM") == "NVLink4"
    assert tp_link("L40S") == "PCIe4"            # no node spec: its own bus
    t = Family("H100-SXM", 2).table({"device": "A", "count": 9, "scheduler": {"x": 1}}, 3)
    assert t == {"device": "H100-SXM", "tp": 2, "count": 3, "name": "H100-SXM",
                 "link": "NVLink4", "scheduler": {"x": 1}}


def test_cheapest_of_listed_candidates(tiny, tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[[candidates]]\nname = "one H100"\ninstances = [{device = "H100-SXM"}]\n'
                 '[[candidates]]\nname = "three L4"\ninstances = [{device = "L4", count = 3}]\n')
    res = cheapest(tiny, rate_per_s=4.0, candidates=str(f), progress=False,
                   set={"slo.ttft_s": 0.5, "slo.tpot_s": 0.05})
    assert set(res.candidates.config) == {"one H100", "three L4"}
    assert res.candidates.usd_per_hour.notna().all() and res.best is not None
    with pytest.raises(InputError, match="colocated"):
        cheapest(tiny, rate_per_s=4.0, devices=["L4"], progress=False,
                 set={"instances.0.pool": "decode"})
    # two candidates of one name: the results are keyed by name, and one was lost
    f.write_text(f.read_text().replace('"three L4"', '"one H100"'))
    with pytest.raises(InputError, match=r"'one H100' names candidates\[0\] too") as err:
        cheapest(tiny, rate_per_s=4.0, candidates=str(f), progress=False)
    assert err.value.field == "candidates[1].name"
    # a search's arguments beside listed candidates did nothing
    for kw, field in (({"devices": ["L4"]}, "devices"), ({"tp": [1, 2]}, "tp"),
                      ({"max_count": 4}, "max_count"), ({"mixed": False}, "mixed")):
        with pytest.raises(InputError, match="does nothing with candidates=") as err:
            cheapest(tiny, rate_per_s=4.0, candidates=[("a", [{"device": "L4"}])],
                     progress=False, **kw)
        assert err.value.field == field
    with pytest.raises(InputError, match="rel_tol does nothing with abs_tol"):
        capacity(tiny, rel_tol=0.1, abs_tol=0.5, progress=False)


def test_a_bar_over_points_and_one_for_a_whole_search(tiny, capsys):
    from simcluster.search.sweep import points_bar
    base = ExperimentPoint.from_file(tiny)
    pts = [base.with_overrides({"seed": s}) for s in (1, 2)]
    run_points(pts, SerialRunner(), progress=True)
    bar = points_bar(0, "search", SerialRunner())
    run_points(pts, SerialRunner(), progress=bar)
    run_points([base.with_overrides({"seed": 5})], SerialRunner(), progress=bar)
    assert bar.total == 3 and bar.n == 3
    bar.close()


def test_a_point_failing_before_the_pool_starts_is_recorded(tiny):
    res = sweep(tiny, {"instances.0.count": [0, 1]}, jobs=2, progress=False)
    assert "out of range" in res.frame.error[0] and res.frame.error[1] == ""


def test_cheapest_reads_a_copied_relative_path_from_the_experiments_folder(tmp_path,
                                                                           monkeypatch):
    from _tiny import TINY, write_tiny
    from simcluster.paths import data_dir
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    link = (data_dir("hwspecs") / "links" / "nvlink4.toml").read_text()
    (exp_dir / "mylink.toml").write_text(link.replace('name = "NVLink4"', 'name = "MyLink"'))
    exp = write_tiny(exp_dir, TINY.replace('count = 2\n', 'count = 2\npp = 2\n'
                                           'stage_link = "mylink.toml"\n'))
    monkeypatch.chdir(tmp_path)              # (not the experiment's folder)
    res = cheapest(exp, rate_per_s=4.0, devices=["H100-SXM"], max_count=2, mixed=False,
                   set={"slo.ttft_s": 5.0, "slo.tpot_s": 1.0}, progress=False)
    assert res.best is not None and (res.candidates.error == "").all()


def test_results_of_a_run_and_of_each_question_show_a_line_not_their_frames(tiny):
    """A notebook cell ending in a result shows what it is, not pages of DataFrame repr."""
    from simcluster import load_experiment
    res = load_experiment(tiny).run()
    assert repr(res).startswith("<Results 'tiny': 80 requests (80 served, 0 rejected) on 2 "
                                "instances over ") and "\n" not in repr(res)
    sw = sweep(tiny, {"instances.0.count": [1, 2]}, jobs=1, progress=False)
    assert repr(sw) == ("<SweepResult: 2 points, 0 failed; varied instances.0.count; .frame, "
                        ".failed>")
    cmp = compare(tiny, vary={"instances.0.count": [1, 2]}, progress=False)
    assert repr(cmp) == str(cmp) and "[latency]" in repr(cmp)
    cap = capacity(tiny, set={"trace.synthetic.n": 40}, progress=False, jobs=1, rel_tol=0.1)
    assert repr(cap) == f"<CapacityResult: {cap}; .points>" and "\n" not in repr(cap)
    ch = cheapest(tiny, rate_per_s=4.0, devices=["H100-SXM"], max_count=2, progress=False)
    assert repr(ch) == f"<CheapestResult: {ch}; .best, .candidates>"


def test_cheapest_and_compare_name_a_wrong_argument(tiny):
    import numpy as np
    for kw, says in [({"rate_per_s": 0, "devices": ["L4"]}, "field 'rate_per_s'"),
                     ({"rate_per_s": "4", "devices": ["L4"]}, "request rate > 0"),
                     ({"rate_per_s": 4.0}, "cheapest needs the devices to consider"),
                     ({"rate_per_s": 4.0, "devices": ["L4"], "attainment": 90},
                      "field 'attainment'")]:
        with pytest.raises(InputError) as err:
            cheapest(tiny, progress=False, **kw)
        assert says in str(err.value), err.value
    # one string of names joined by commas, one TP degree, a numpy rate
    res = cheapest(tiny, rate_per_s=np.int64(4), devices="H100-SXM, L40S", tp=1, max_count=1,
                   mixed=False, progress=False)
    assert set(res.candidates.config) == {"1x H100-SXM tp1", "1x L40S tp1"}
    with pytest.raises(InputError, match="field 'vary.router.policy'"):
        compare(tiny, vary={"router.policy": "round_robin"}, progress=False)


def test_questions_name_a_wrong_argument_before_any_point_runs(tiny, tmp_path):
    """Each of these ran before: a rel_tol of 0 bisected until the floats met and NaN
    stopped at once ('tolerance nan'); tp=[0] and max_count=1.5 ended in 'no candidate
    serves'; mixed='no' was true; a list of candidates with a bare number raised "cannot
    unpack"; compare([]) raised "max() arg is an empty sequence"; an out that is a file was
    a NotADirectoryError after the runs; progress='no' an AttributeError; a sweep with
    nothing varied ran the experiment once."""
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    cases = [
        (lambda: capacity(tiny, rel_tol=0, progress=False), "field 'rel_tol': expected a "
                                                            "finite number > 0, got 0"),
        (lambda: capacity(tiny, rel_tol=math.nan, progress=False), "field 'rel_tol'"),
        (lambda: capacity(tiny, abs_tol=0, progress=False), "field 'abs_tol'"),
        (lambda: capacity(tiny, out=taken, progress=False), "field 'out': '.*taken' is a "
                                                            "file; expected a folder"),
        (lambda: cheapest(tiny, rate_per_s=4, devices=["L4"], tp=[0], progress=False),
         "field 'tp': expected a whole number >= 1, got 0"),
        (lambda: cheapest(tiny, rate_per_s=4, devices=["L4"], max_count=1.5, progress=False),
         "field 'max_count': expected a whole number >= 1, got 1.5"),
        (lambda: cheapest(tiny, rate_per_s=4, devices=["L4"], mixed="no", progress=False),
         "field 'mixed': expected true or false, got 'no'"),
        (lambda: cheapest(tiny, rate_per_s=4, candidates=[3], progress=False),
         r"field 'candidates\[0\]': expected \(name, \[instance tables\]\)"),
        (lambda: cheapest(tiny, rate_per_s=4, progress=False, candidates=[
            ("a", [{"device": "L4"}]), ("a", [{"device": "L40S"}])]),
         "'a' names two candidates"),
        (lambda: compare([], progress=False), "field 'experiments': expected an experiment"),
        (lambda: sweep(tiny, GRID, out=taken, progress=False), "field 'out'"),
        (lambda: sweep(tiny, GRID, progress="no"), "field 'progress': expected true or false"),
        (lambda: sweep(tiny, GRID, fresh="yes", progress=False), "field 'fresh'"),
        (lambda: sweep(tiny, {}, progress=False), "field 'grid': nothing to sweep"),
    ]
    for call, says in cases:
        with pytest.raises(InputError, match=says):
            call()
    # saving a result into a file was a FileExistsError
    res = sweep(tiny, {"seed": [1]}, progress=False)
    cmp_ = compare(tiny, progress=False)
    for save in (res.save, cmp_.save):
        with pytest.raises(InputError, match="field 'directory': '.*taken' is a file"):
            save(taken)
    assert taken.read_text() == "keep me"


def test_a_sweep_file_that_varies_nothing_is_named(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('experiment = "default"\n[grid]\n')
    with pytest.raises(InputError, match=r"s.toml: field 'grid': nothing to sweep"):
        read_sweep(path)


def test_compare_tells_two_experiments_of_one_name_apart_by_their_paths(tmp_path, monkeypatch):
    """a/exp.toml and b/exp.toml were refused ("the runs' labels must differ, got ['exp',
    'exp']"); the same file twice is named as such."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        write_tiny(tmp_path / d)
    monkeypatch.chdir(tmp_path)
    names = [str(p.relative_to(tmp_path)) for p in sorted(tmp_path.glob("*/*.toml"))]
    cmp_ = compare(names, progress=False)
    assert list(cmp_.frame.label) == names and len(names) == 2
    with pytest.raises(InputError, match="is listed twice; expected each experiment once"):
        compare([names[0], names[0]], progress=False)


def test_capacity_names_a_trace_whose_arrivals_have_no_rate(tmp_path):
    """It said 'give start_per_s', an argument neither the command line nor sc.capacity has
    (and a rate could not be set anyway: rescaling a trace of zero span is impossible)."""
    trace = tmp_path / "one.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,5\n0,20,5\n")
    with pytest.raises(InputError, match="the trace has no rate to rescale: .* arrive at one "
                                         "instant"):
        capacity(None, set={"trace.source": str(trace)}, progress=False)
