"""Design search machinery without torch: metrics against brute force, EHVI against Monte
Carlo, samplers (MCI's per-bin counts), evaluators and the search loop's contract."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcluster.errors import InputError
from simcluster.search.design import (CachedEvaluator, DesignSpace, Parameter, TableEvaluator,
                                      TreeNode, adrs, adrs_minmax, design_hash,
                                      hypervolume_2d, llmshare_space, pareto_front,
                                      pareto_mask, run_search)
from simcluster.search.design.acquisition import (dominance_gap, ehvi_2d, ehvi_monte_carlo,
                                                  rank_scores)
from simcluster.search.design.metrics import hypervolume_improvement_2d
from simcluster.search.design.sampling import (cluster_ted, latin_hypercube, mci, mci_bins,
                                               random_sample, ted)
from simcluster.search.design.synthetic import synthetic_evaluate_one, synthetic_objectives

OBJ = ["serving_time_s", "cost_usd"]


# ---- brute-force references -------------------------------------------------------------

def brute_mask(y):
    n = len(y)
    return np.array([not any(np.all(y[j] <= y[i]) and np.any(y[j] < y[i])
                             for j in range(n) if j != i) for i in range(n)])


def brute_hv(y, ref):
    """The union of boxes [y, ref], cell by cell over the compressed coordinates."""
    y = np.asarray([p for p in y if np.all(p < ref)])
    if len(y) == 0:
        return 0.0
    xs, ys = np.unique(np.append(y[:, 0], ref[0])), np.unique(np.append(y[:, 1], ref[1]))
    area = 0.0
    for (x0, x1), (y0, y1) in itertools.product(zip(xs, xs[1:]), zip(ys, ys[1:])):
        if np.any((y[:, 0] <= x0) & (y[:, 1] <= y0)):
            area += (x1 - x0) * (y1 - y0)
    return area


points = st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(points)
def test_pareto_mask_and_hypervolume_match_brute_force(pts):
    y = np.asarray(pts, dtype=float)
    assert np.array_equal(pareto_mask(y), brute_mask(y))
    ref = np.array([10.0, 10.0])
    assert hypervolume_2d(y, ref) == pytest.approx(brute_hv(y, ref))
    front = pareto_front(y)
    assert np.all(np.diff(front[:, 0]) > 0) and np.all(np.diff(front[:, 1]) < 0)


def test_pareto_mask_in_three_objectives():
    y = np.random.default_rng(1).integers(0, 5, (40, 3)).astype(float)
    assert np.array_equal(pareto_mask(y), brute_mask(y))


def test_hypervolume_anchors():
    assert hypervolume_2d([[1, 1]], [3, 4]) == 6.0
    assert hypervolume_2d([[1, 3], [2, 2], [3, 1]], [4, 4]) == 6.0
    assert hypervolume_2d([[5, 5]], [4, 4]) == 0.0        # beyond the reference: nothing
    with pytest.raises(InputError, match="finite"):
        hypervolume_2d([[np.nan, 1]], [4, 4])


@settings(max_examples=30, deadline=None)
@given(points, st.lists(st.tuples(st.integers(0, 10), st.integers(0, 10)), min_size=1,
                        max_size=5))
def test_hypervolume_improvement_is_the_difference(front, new):
    ref = np.array([10.0, 10.0])
    got = hypervolume_improvement_2d(new, front, ref)
    base = hypervolume_2d(front, ref)
    want = [hypervolume_2d(np.vstack([front, p]), ref) - base for p in np.asarray(new, float)]
    assert got == pytest.approx(want)


def test_adrs_against_the_definition():
    rng = np.random.default_rng(3)
    g = pareto_front(rng.random((50, 2)) + 0.5)
    o = rng.random((8, 2)) + 0.5
    of = pareto_front(o)
    want = np.mean([min(max(abs(q[i] - p[i]) / p[i] for i in range(2)) for q in of) for p in g])
    assert adrs(g, o) == pytest.approx(want)
    everything = np.vstack([rng.random((50, 2)) + 0.5, o])
    assert adrs(pareto_front(everything), everything) == 0.0
    assert adrs(g, np.zeros((0, 2))) == float("inf")
    lo, hi = np.zeros(2), np.full(2, 2.0)
    want = np.mean([min(np.linalg.norm((q - p) / 2.0) for q in of) for p in g])
    assert adrs_minmax(g, o, lo, hi) == pytest.approx(want)
    with pytest.raises(InputError, match="zero"):
        adrs([[0.0, 1.0]], o)


# ---- EHVI -------------------------------------------------------------------------------

FRONT = np.array([[1.0, 4.0], [2.0, 2.5], [3.0, 1.5]])
REF = np.array([5.0, 5.0])


@pytest.mark.parametrize("lognormal", [False, True])
def test_ehvi_matches_monte_carlo(lognormal):
    rng = np.random.default_rng(0)
    if lognormal:
        mean = np.log([[1.5, 2.0], [2.5, 3.0], [4.0, 0.8], [6.0, 6.0]])
        std = np.array([[0.3, 0.2], [0.5, 0.5], [0.1, 0.4], [0.2, 0.2]])
    else:
        mean = np.array([[1.5, 2.0], [2.5, 3.0], [4.0, 0.8], [6.0, 6.0]])
        std = np.array([[0.5, 0.4], [1.0, 1.0], [0.2, 0.6], [0.5, 0.5]])
    exact = ehvi_2d(mean, std, FRONT, REF, lognormal=lognormal)
    mc = ehvi_monte_carlo(mean, std, FRONT, REF, samples=200_000, rng=rng,
                          lognormal=lognormal)
    assert exact == pytest.approx(mc, rel=0.02, abs=2e-3)
    assert exact[-1] < exact[0]


def test_ehvi_without_variance_is_the_improvement():
    mean = np.array([[1.5, 2.0], [4.0, 0.5], [3.5, 3.5]])
    got = ehvi_2d(mean, np.zeros_like(mean), FRONT, REF)
    assert got == pytest.approx(hypervolume_improvement_2d(mean, FRONT, REF))
    assert got[2] == 0.0
    empty = ehvi_2d(mean, np.zeros_like(mean), np.zeros((0, 2)), REF)
    assert empty == pytest.approx([hypervolume_2d([m], REF) for m in mean])


def test_ranking_prefers_improvement_then_nearness():
    mean = np.array([[9.0, 9.0], [3.5, 3.5], [1.5, 2.0]])
    acq = np.array([0.0, 0.0, 0.7])
    order = rank_scores(acq, mean, FRONT, np.ones(2))
    assert list(order) == [2, 1, 0]
    assert dominance_gap([[3.5, 3.5]], FRONT, np.ones(2))[0] == pytest.approx(1.0)


# ---- samplers ---------------------------------------------------------------------------

def _table(n=400, seed=0):
    space = llmshare_space()
    table = space.sample(n, np.random.default_rng(seed))
    return space, table, space.encode(table)


@pytest.mark.parametrize("t,u", [(10, 5), (10, 3), (7, 4), (12, 12)])
def test_mci_takes_the_requested_count_from_every_bin(t, u):
    space, table, x = _table()
    memory = space.total_memory(table)
    idx, bins = mci(x, memory, t, u)
    assert len(idx) == len(set(idx)) == t
    q, r = divmod(t, u)
    assert [b.requested for b in bins] == [q + 1 if j < r else q for j in range(u)]
    assert [b.selected for b in bins] == [b.requested for b in bins]
    edges, which, _ = mci_bins(memory, t, u)
    for j, b in enumerate(bins):              # each bin's designs came from that bin
        mine = idx[sum(c.selected for c in bins[:j]):][:b.selected]
        assert np.all(which[mine] == j)
        assert np.all((memory[mine] >= edges[j]) & (memory[mine] <= edges[j + 1]))


def test_mci_memory_is_the_slides_formula_and_carries_short_bins():
    space, table, x = _table(60)
    c = space.total_memory(table)
    row = table.iloc[0]
    assert c[0] == (row.prefill_servers * row.prefill_devices_per_server * row.prefill_memory_gb
                    + row.decode_servers * row.decode_devices_per_server * row.decode_memory_gb)
    memory = np.where(np.arange(60) < 50, 100.0, np.arange(60.0) + 200)   # many ties
    idx, bins = mci(x, memory, 10, 5, exclude=[0, 1])
    assert len(set(idx)) == 10 and not {0, 1} & set(idx)
    assert sum(b.selected for b in bins) == 10
    assert any(b.size < b.requested for b in bins)
    with pytest.raises(InputError, match="at least one group"):
        mci(x, memory, 4, 0)


def test_ted_random_and_lhs_pick_distinct_free_designs():
    _, _, x = _table(200)
    rng = np.random.default_rng(5)
    for pick in (ted(x, 12, exclude=[3]), random_sample(x, 12, rng, exclude=[3]),
                 latin_hypercube(x, 12, rng, exclude=[3]),
                 cluster_ted(x, 12, 4, rng, exclude=[3])):
        assert len(set(pick)) == 12 and 3 not in pick
    assert np.array_equal(ted(x, 6), ted(x, 6))              # deterministic
    with pytest.raises(InputError, match="only 200"):
        random_sample(x, 201, rng)


def test_ted_spreads_over_clusters():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(c, 0.01, (30, 2)) for c in ((0, 0), (1, 0), (0, 1))])
    groups = set(ted(x, 3) // 30)
    assert groups == {0, 1, 2}


# ---- space ------------------------------------------------------------------------------

def test_llmshare_space_and_hashes():
    space = llmshare_space()
    assert 8.6e14 < space.size < 8.8e14                      # "nearly 9 x 10^14"
    assert len(space.names) == 20
    assert design_hash({"a": 8, "b": 1.5}) == design_hash({"b": 1.5, "a": 8.0})
    assert design_hash({"a": 8}) != design_hash({"a": 16})
    table = space.sample(50, np.random.default_rng(0))
    x = space.encode(table)
    assert x.shape == (50, 20) and x.min() >= 0 and x.max() <= 1
    bad = table.copy()
    bad.loc[3, "decode_lanes"] = 3
    with pytest.raises(InputError, match="decode_lanes.*row 3"):
        space.validate(bad)
    with pytest.raises(InputError, match="missing parameter"):
        space.validate(table.drop(columns="prefill_cores"))
    with pytest.raises(InputError, match="unknown parameters"):
        llmshare_space({"prefill_nonsense": (1,)})
    with pytest.raises(InputError, match="enumerated"):
        space.enumerate()


def test_space_checks_its_parameters_and_tree():
    with pytest.raises(InputError, match="repeat"):
        Parameter("a", (1, 1))
    with pytest.raises(InputError, match="positive"):
        Parameter("a", (0, 1))
    a, b = Parameter("a", (1, 2)), Parameter("b", (1, 2, 4))
    with pytest.raises(InputError, match="exactly once"):
        DesignSpace((a, b), TreeNode("s", ("a",)))
    with pytest.raises(InputError, match="unknown parameters"):
        DesignSpace((a, b), TreeNode("s", ("a", "b", "c")))
    space = DesignSpace((a, b))
    assert len(space.enumerate()) == 6
    with pytest.raises(InputError, match="memory terms"):
        space.total_memory(space.enumerate())


# ---- evaluators -------------------------------------------------------------------------

def test_cached_evaluator_runs_each_design_once_in_a_pool(tmp_path):
    space = llmshare_space()
    designs = space.sample(6, np.random.default_rng(2))
    path = tmp_path / "cache.parquet"
    ev = CachedEvaluator(synthetic_evaluate_one, OBJ, workers=2, cache_path=path)
    first = ev(designs)
    again = ev(pd.concat([designs.iloc[:3], designs.iloc[:3]]))
    assert ev.calls == 6
    want = synthetic_objectives(designs)
    assert np.allclose(first[OBJ].to_numpy(), want[OBJ].to_numpy(), equal_nan=True)
    assert np.allclose(again[OBJ].to_numpy()[:3], want[OBJ].to_numpy()[:3], equal_nan=True)
    reread = CachedEvaluator(synthetic_evaluate_one, OBJ, cache_path=path)
    reread(designs)
    assert reread.calls == 0
    with pytest.raises(InputError, match="missing objectives"):
        CachedEvaluator(lambda d: {"serving_time_s": 1.0}, OBJ)(designs.iloc[:1])


def test_table_evaluator_refuses_a_design_it_does_not_hold():
    space = llmshare_space()
    designs = space.sample(5, np.random.default_rng(2))
    table = designs.iloc[:4].join(synthetic_objectives(designs.iloc[:4]))
    ev = TableEvaluator(table, space.names, OBJ)
    assert len(ev(designs.iloc[:2])) == 2 and ev.calls == 2
    with pytest.raises(InputError, match="not in the evaluated table"):
        ev(designs.iloc[4:])


def test_table_evaluator_checks_each_objective_and_each_design_once(tmp_path):
    """A negative time or an empty cost of a feasible design were ranked as given; text
    raised ValueError from numpy. An infeasible design (its reason says why) may be empty."""
    from simcluster.search.design.evaluate import read_table
    space = llmshare_space()
    designs = space.sample(4, np.random.default_rng(2))
    table = designs.join(synthetic_objectives(designs))
    table["reason"] = ["", "", "does not fit", ""]
    table.loc[table.index[2], "serving_time_s"] = np.nan
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    assert TableEvaluator(read_table(path), space.names, OBJ, source=str(path)).calls == 0
    for value, found in ((-5.0, "found -5.0"), (np.nan, "found an empty"), ("fast", "'fast'")):
        bad = table.astype({"cost_usd": object})
        bad.loc[bad.index[1], "cost_usd"] = value
        bad.to_csv(path, index=False)
        with pytest.raises(InputError, match=f"t.csv:3: field 'cost_usd': expected a number "
                                             f">= 0.*{found}"):
            TableEvaluator(read_table(path), space.names, OBJ, source=str(path))
    pd.concat([table, table.iloc[[1]]]).to_csv(path, index=False)
    with pytest.raises(InputError, match="t.csv:6: the design of line 3 appears again"):
        TableEvaluator(read_table(path), space.names, OBJ, source=str(path))


# ---- the loop (model-free methods; the GP ones are in test_design_gp.py) ------------------

def _bench(n=300, seed=0):
    space = llmshare_space()
    table = space.sample(n, np.random.default_rng(seed))
    evaluated = table.join(synthetic_objectives(table))
    return space, table, TableEvaluator(evaluated, space.names, OBJ)


@pytest.mark.parametrize("method", ["random", "lhs"])
def test_search_contract(method):
    space, table, ev = _bench()
    r = run_search(table, ev, space, method=method, n_init=5, n_iter=4, batch_size=3, seed=7)
    h = r.history
    assert len(h) == 17 and h.candidate.is_unique and list(h.order) == list(range(17))
    assert list(r.hypervolume.iteration) == list(range(5))
    assert np.all(np.diff(r.hypervolume.hypervolume) >= 0)
    again = run_search(table, ev, space, method=method, n_init=5, n_iter=4, batch_size=3, seed=7)
    assert list(again.history.candidate) == list(h.candidate)
    front = r.front()
    assert len(front) and front.feasible.all()
    assert r.adrs(front[OBJ].to_numpy()) == 0.0
    assert repr(r) == (f"<SearchResult {method} (seed 7): 17 designs evaluated, "
                       f"{int(h.feasible.sum())} feasible, {len(front)} on the front of "
                       f"{' x '.join(OBJ)}; .history, .front(), .hypervolume>")


def test_search_records_infeasible_designs_with_their_reason():
    space, table, ev = _bench(400)
    r = run_search(table, ev, space, method="random", n_init=10, n_iter=30, batch_size=5)
    bad = r.history[~r.history.feasible]
    assert len(bad) and (bad.reason == "a pool's memory cannot hold the model's weights").all()
    assert r.hypervolume.feasible.iloc[-1] == r.history.feasible.sum()


def test_search_rejects_bad_requests():
    space, table, ev = _bench(30)
    with pytest.raises(InputError, match="unknown search method"):
        run_search(table, ev, space, method="annealing")
    with pytest.raises(InputError, match="exceeds the 30 candidates"):
        run_search(table, ev, space, method="random", n_init=10, n_iter=30)
    with pytest.raises(InputError, match="n_init"):
        run_search(table, ev, space, method="random", n_init=1)
    with pytest.raises(InputError, match="repeats"):
        run_search(pd.concat([table, table.iloc[:1]]), ev, space, method="random", n_init=2,
                   n_iter=1)
    with pytest.raises(InputError, match="ref_point"):
        run_search(table, ev, space, method="random", n_init=4, n_iter=1, ref_point=[1.0])


@pytest.mark.parametrize("method", ["svr", "dac16"])
def test_point_predicting_baselines_search(method):
    pytest.importorskip("sklearn")
    space, table, ev = _bench(200)
    r = run_search(table, ev, space, method=method, n_init=6, n_iter=3, batch_size=2, seed=1)
    assert len(r.history) == 12 and r.history.candidate.is_unique
    assert r.timings.choose_s.iloc[1:].gt(0).all()
