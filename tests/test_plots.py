"""Figures: every plotting function returns a Figure with labelled axes (units) and a legend;
timelines are resampled to a bounded number of points; PNGs are written."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from _tiny import write_tiny
from simcluster.analysis import plots
from simcluster.errors import InputError
from simcluster.experiment import load_experiment
from simcluster.experiment.study import capacity, sweep


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("plots"))


@pytest.fixture(scope="module")
def res(tiny_path):
    return load_experiment(tiny_path).run()


def _check(fig, legend=True):
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.has_data()]
    assert axes
    for ax in axes:
        assert ax.get_ylabel()
        if ax.get_xlabel() == "" and ax.get_shared_x_axes().get_siblings(ax):
            continue                              # shared x: the bottom axis carries it
        assert ax.get_xlabel()
    if legend:
        assert fig.legends or any(ax.get_legend() is not None for ax in fig.axes)
    labels = " ".join(ax.get_xlabel() + ax.get_ylabel() for ax in fig.axes)
    return labels


def test_run_figures(res, tmp_path):
    figs = plots.run_figures(res, bins=50)
    assert set(figs) == {"latency_cdf", "instance_timeline", "queue_lengths"}
    assert "(ms)" in _check(figs["latency_cdf"])
    assert "(s)" in _check(figs["instance_timeline"])
    assert "requests waiting" in _check(figs["queue_lengths"])
    paths = plots.save(figs, tmp_path)
    assert all(p.stat().st_size > 5000 for p in paths)


def test_latency_cdf_legend_is_below_the_panels(res):
    """The legend sat inside the TTFT panel: a comparison of six variants covered its whole
    curve. It is the figure's, below the panels, runs and each panel's SLO named once."""
    fig = plots.latency_cdf({f"variant {i}": res for i in range(6)})
    assert not any(ax.get_legend() for ax in fig.axes) and len(fig.legends) == 1
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    slos = [t for t in texts if "SLO" in t]
    assert texts[:6] == [f"variant {i}" for i in range(6)] and len(texts) == 6 + len(slos)
    assert slos and all(t.split()[0] in ("TTFT", "TPOT", "end-to-end") for t in slos)


@pytest.mark.parametrize("fn", [plots.latency_cdf, plots.instance_timeline,
                                plots.queue_lengths, plots.run_figures])
def test_a_frame_where_a_run_goes_is_named_not_an_attribute_error(res, fn):
    """latency_cdf(res.requests) raised pandas' AttributeError 'DataFrame' object has no
    attribute 'requests': the run's figures say they take its Results, and where a frame
    goes instead."""
    with pytest.raises(TypeError, match=r"expected a run's Results.*got DataFrame.*"
                                        r"slo_attainment"):
        fn(res.requests)
    with pytest.raises(TypeError, match="got DataFrame for 'b'" if fn is plots.latency_cdf
                       else "shows one run"):
        fn({"a": res, "b": res.requests})


def test_timelines_are_resampled_to_the_bins(res):
    fig = plots.instance_timeline(res, bins=40)
    for ax in fig.axes:
        for line in ax.get_lines():
            assert len(line.get_xdata()) == 40


def test_resample_is_a_time_weighted_mean():
    import pandas as pd
    tl = pd.DataFrame({"instance": [0, 0], "start_s": [0.0, 2.0], "end_s": [1.0, 4.0]})
    values = pd.Series([10.0, 4.0])
    out = plots.resample(tl, values, np.array([0.0, 2.0, 4.0]))
    assert out[0].tolist() == [5.0, 4.0]           # 10 for 1 s of 2, then 4 throughout
    held = plots.resample(tl, values, np.array([0.0, 2.0, 4.0]), sampled=True)
    assert held[0].tolist() == [5.0, 10.0]          # 10 from its sample at 1 s to the next


def test_queued_counts_arrived_requests_not_yet_prefilling():
    import pandas as pd
    req = pd.DataFrame({"arrival_s": [0.0, 1.0], "prefill_start_s": [2.0, 3.0],
                        "finish_s": [5.0, 5.0]})
    assert plots.queued(req, np.array([0.0, 1.0, 2.0, 3.0])).tolist() == [1.0, 2.0, 1.0]


def test_active_instances_of_a_controller():
    exp = load_experiment("hllm_azure_conv.toml", {"trace.window_s": [0, 60]})
    res = exp.run()
    assert len(res.activity)
    fig = plots.active_instances(res)
    _check(fig)
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "active CPU sockets"
    assert "no controller" in plots.active_instances(
        load_experiment("default.toml", {"trace.first_n": 20}).run()).axes[0].texts[0].get_text()


def test_sweep_and_search_figures(tiny_path):
    df = sweep(tiny_path, {"trace.rate_per_s": [2.0, 8.0], "instances.0.count": [1, 2]},
               jobs=1, progress=False).frame
    for fig in (plots.latency_percentiles(df, hue="instances.0.count"),
                plots.slo_attainment(df, target=0.9, hue="instances.0.count"),
                plots.throughput_latency(df, hue="instances.0.count")):
        text = _check(fig)
        assert "req/s" in text
    _check(plots.cost_per_m_tokens(df.assign(label=df.point.astype(str))))
    # a wrong column is named as the argument that gave it (pandas' KeyError named only the
    # column), with the closest one or the keys the sweep varied; a hue typo is not ignored
    for call, says in [
            (lambda: plots.slo_attainment(df, hue="instances.0.cuont"),
             "hue='instances.0.cuont': not a column of the frame (did you mean "
             "'instances.0.count'?)"),
            (lambda: plots.slo_attainment(df, x="seed"),
             "x='seed': not a column of the frame; the keys it varies: trace.rate_per_s, "
             "instances.0.count"),
            (lambda: plots.latency_percentiles(df, metric="ttf"),
             "metric, percentiles='ttf_p50_s': not a column of the frame (did you mean "
             "'ttft_p50_s'?)"),
            (lambda: plots.throughput_latency(df, latency="ttft_p95_s"), "latency='ttft_p95_s'"),
            (lambda: plots.slo_attainment(df.drop(columns="slo_attainment")), "had no SLO"),
            # each of these drew a figure: a line at 9,000%, an empty plot, bars by index
            (lambda: plots.slo_attainment(df, target=90), "target: expected a share of "
                                                          "requests in (0, 1]"),
            (lambda: plots.slo_attainment(df.iloc[:0]), "the frame has no rows"),
            (lambda: plots.cost_per_m_tokens(df, label="config"), "label='config': not a "
                                                                   "column of the frame")]:
        with pytest.raises(ValueError) as err:
            call()
        assert says in str(err.value), err.value
    # a list for the frame was "the frame has no slo_attainment"; a frame for capacity()'s
    # result an AttributeError ('points'); a list for save()'s figures one too ('items')
    for call, says in [(lambda: plots.slo_attainment([1, 2]), "expected a sweep's or "
                                                               "comparison's frame"),
                       (lambda: plots.capacity_curve(df), "expected what capacity() returns, "
                                                          "got DataFrame"),
                       (lambda: plots.cheapest_candidates(df), "expected what cheapest()"),
                       (lambda: plots.save([1], "figs"), "figures: expected a mapping")]:
        with pytest.raises(TypeError) as err:
            call()
        assert says in str(err.value), err.value
    cap = capacity(tiny_path, set={"instances.0.count": 1, "trace.synthetic.n": 60},
                   rel_tol=0.2, progress=False)
    assert "capacity" in " ".join(t.get_text() for t in
                                  plots.capacity_curve(cap).axes[0].get_legend().get_texts())


def test_run_figures_name_a_wrong_metric_or_bin_count(res):
    with pytest.raises(ValueError, match=r"metrics='ttft': not a column of the run's requests "
                                         r"\(did you mean 'ttft_s'\?\)"):
        plots.latency_cdf(res, metrics=("ttft",))
    for bins in (0, 2.5):
        with pytest.raises(ValueError, match="bins: expected a whole number >= 1"):
            plots.instance_timeline(res, bins=bins)
    # max_instances=0 was numpy's "number sections must be larger than 0."
    with pytest.raises(ValueError, match="max_instances: expected a whole number >= 1, got 0"):
        plots.instance_timeline(res, max_instances=0)


def test_save_checks_its_folder_before_writing(res, tmp_path):
    """A file for the folder was a FileExistsError from mkdir."""
    (tmp_path / "taken").write_text("keep me")
    with pytest.raises(InputError, match="field 'directory': '.*taken' is a file"):
        plots.save(plots.run_figures(res), tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "keep me"


def test_dir_lists_the_figures_not_the_imports():
    """``dir(sc.plots)`` (a notebook's completion) lists what the module defines for users,
    every one of them, and none of numpy's, pandas' or matplotlib's names it imports."""
    import simcluster as sc
    from simcluster.analysis import plots as mod
    defined = {n for n, v in vars(mod).items() if not n.startswith("_") and callable(v)
               and getattr(v, "__module__", None) == mod.__name__}
    assert set(mod.__all__) == defined
    assert sorted(dir(mod)) == sorted(mod.__all__)
    assert "np" not in dir(sc.plots) and "Figure" not in dir(sc.plots)
