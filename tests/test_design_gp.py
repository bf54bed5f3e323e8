"""The GP surrogates (optional extra simcluster[search]): the deep tree kernel is PSD, the
exact EHVI agrees with BoTorch's, and a search on a tiny space finds its known front."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simcluster.search.design import (DesignSpace, Parameter, TreeNode, llmshare_space,
                                      pareto_front, run_search)
from simcluster.search.design.acquisition import ehvi_2d

torch = pytest.importorskip("torch")
pytest.importorskip("botorch")
pytest.importorskip("gpytorch")

from simcluster.search.design.gp import GPSurrogate, kernel_matrix  # noqa: E402


@pytest.mark.parametrize("kernel", ["dtk", "mlp", "matern"])
@pytest.mark.parametrize("seed", [0, 1])
def test_kernel_matrix_is_positive_semidefinite_on_random_designs(kernel, seed):
    space = llmshare_space()
    x = space.encode(space.sample(60, np.random.default_rng(seed)))
    k = kernel_matrix(space, x, kernel, seed=seed)
    assert np.allclose(k, k.T)
    assert np.linalg.eigvalsh(k).min() > -1e-8 * np.abs(k).max()


def test_dtk_reads_every_tree_node():
    space = llmshare_space()
    gp = GPSurrogate(space, "dtk")
    model = gp.build(np.random.default_rng(0).random((5, 20)), np.ones((5, 2)), 0)
    enc = model.covar_module.encoder
    nodes = enc.nodes                          # node -> (level, inputs, outputs)
    assert len(nodes) == 13                    # 6 nodes per pool, and the system
    assert nodes["prefill.compute"] == (0, 4, 3)
    assert nodes["decode.server"] == (2, 4 + 1, 4)     # the device's embedding + count
    assert nodes["system"] == (4, 2 * 4, 4)
    # each node reads only its own inputs: a change to one pool's parameters moves only
    # that pool's embeddings (the block-diagonal masks hold)
    import torch
    x = torch.rand(3, 20, dtype=torch.float64)
    x2 = x.clone()
    x2[:, space.names.index("decode_cores")] += 0.3
    h1, h2 = enc.level_outputs(x), enc.level_outputs(x2)
    assert torch.equal(h1["prefill.pool"], h2["prefill.pool"])
    assert not torch.equal(h1["decode.pool"], h2["decode.pool"])
    assert torch.equal(h1["decode.memory"], h2["decode.memory"])


def test_gp_fits_predicts_and_conditions():
    space = llmshare_space()
    rng = np.random.default_rng(0)
    x = space.encode(space.sample(12, rng))
    y = np.column_stack([x[:, 0] * 2 + 1, -x[:, 1] + 3])
    gp = GPSurrogate(space, "matern", maxiter=30).fit(x, y)
    mean, std = gp.predict(x)
    assert mean.shape == std.shape == (12, 2)
    assert np.abs(mean - y).max() < 0.2
    fantasy = gp.condition(x[:1] * 0 + 0.5, mean[:1])
    _, std2 = fantasy.predict(x[:1] * 0 + 0.5)
    assert std2[0, 0] <= gp.predict(x[:1] * 0 + 0.5)[1][0, 0]


def test_ehvi_agrees_with_botorch_analytic():
    from botorch.acquisition.multi_objective.analytic import ExpectedHypervolumeImprovement
    from botorch.models import SingleTaskGP
    from botorch.models.model_list_gp_regression import ModelListGP
    from botorch.utils.multi_objective.box_decompositions.non_dominated import (
        NondominatedPartitioning)
    rng = np.random.default_rng(2)
    tx = torch.as_tensor(rng.random((8, 2)), dtype=torch.float64)
    ty = torch.as_tensor(rng.random((8, 2)), dtype=torch.float64)
    model = ModelListGP(*[SingleTaskGP(tx, ty[:, i:i + 1]) for i in range(2)]).eval()
    front = ty.numpy()
    ref = np.array([1.2, 1.2])
    # BoTorch maximises: negate the objectives and the reference point
    part = NondominatedPartitioning(ref_point=torch.as_tensor(-ref), Y=-ty)
    cand = torch.as_tensor(rng.random((5, 1, 2)), dtype=torch.float64)
    neg = _Negated(model)
    theirs = ExpectedHypervolumeImprovement(neg, ref_point=(-ref).tolist(), partitioning=part)
    with torch.no_grad():
        want = theirs(cand).numpy()
        post = model.posterior(cand.squeeze(1))
        mean = post.mean.numpy()
        std = post.variance.sqrt().numpy()
    assert ehvi_2d(mean, std, front, ref) == pytest.approx(want, rel=1e-6, abs=1e-9)


class _Negated:
    """A model whose posterior is the negation of another's (for BoTorch's maximisation)."""

    def __init__(self, model):
        self.model = model
        self.num_outputs = 2

    def posterior(self, x, *args, **kwargs):
        from botorch.posteriors import GPyTorchPosterior
        post = self.model.posterior(x)
        mvn = post.distribution
        return GPyTorchPosterior(type(mvn)(-mvn.mean, mvn.lazy_covariance_matrix))

    def __getattr__(self, name):
        return getattr(self.model, name)


def _tiny():
    """144 designs; serving time 8/p + 5/d, cost p + d + both wastes: a 7-point front (the
    wastes at 1) the search must find in 26 of the 144 evaluations (6, then 5 batches of 4)."""
    par = (Parameter("p_units", (1, 2, 4, 8)), Parameter("p_waste", (1, 2, 3)),
           Parameter("d_units", (1, 2, 4, 8)), Parameter("d_waste", (1, 2, 3)))
    tree = TreeNode("system", children=(TreeNode("p", ("p_units", "p_waste")),
                                        TreeNode("d", ("d_units", "d_waste"))))
    space = DesignSpace(par, tree, (("p_units",), ("d_units",)))

    def evaluate(d):
        return pd.DataFrame({"serving_time_s": 8.0 / d.p_units + 5.0 / d.d_units,
                             "cost_usd": d.p_units + d.d_units + d.p_waste + d.d_waste},
                            index=d.index)
    table = space.enumerate()
    return space, table, evaluate, pareto_front(evaluate(table).to_numpy())


@pytest.mark.parametrize("method", ["llmshare", "llmshare-matern"])
def test_search_on_a_tiny_space_finds_the_known_front(method):
    space, table, evaluate, true_front = _tiny()
    assert len(true_front) == 7
    r = run_search(table, evaluate, space, method=method, n_init=6, n_iter=5, batch_size=4,
                   seed=0)
    assert len(r.history) == 26
    assert r.adrs(true_front) == 0.0
    found = r.front()[["serving_time_s", "cost_usd"]].to_numpy()
    assert np.array_equal(pareto_front(found), true_front)
    assert r.mci_bins is not None and r.mci_bins.selected.sum() == 6
