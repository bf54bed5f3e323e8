"""Gaussian-process surrogates on GPyTorch/BoTorch: the deep tree kernel, an MLP deep kernel,
and a plain Matern-ARD kernel (optional extra ``simcluster[search]``).

One exact GP per objective (BoTorch ``SingleTaskGP``: constant mean, Gaussian likelihood,
outcomes standardised), fitted on the log objectives by maximising the marginal likelihood
with L-BFGS-B (at most ``maxiter`` = 100 steps) over *every* parameter, the kernel's networks
included. The base kernel is Matern-5/2 with one lengthscale per input and BoTorch's
dimension-scaled lengthscale prior (Hvarfner et al. 2024); with the older Gamma(3, 6) prior a
20-parameter space left the plain GP predicting the mean from 30 designs. Three kernels:

- ``dtk``, the **deep tree kernel** (LLMShare, slides' eqs. 2-3): the design is a tree
  (:class:`~simcluster.search.design.space.TreeNode`; for LLMShare system -> prefill / decode
  pool -> server -> device -> compute / memory / links). Each node v has its own small network
  phi_v (one linear layer and tanh; the root's is linear): its embedding is
  phi_v(concat(children's embeddings, its own parameter columns)), 3-wide at the leaves (or
  as wide as their inputs) and 4-wide above. The kernel is the Matern kernel on the root's embedding,
  k_t(x, x') = k(h_system(x), h_system(x')): a kernel on a feature map, hence positive
  semi-definite for any network weights.
- ``mlp``: BOOM-Explorer's deep kernel learning (Wilson et al. 2016): the same Matern kernel
  on the output of a multilayer perceptron of the flat vector (d -> 32 -> 16 -> 3, tanh).
  BOOM-Explorer's extractor is wider (1000 -> 500 -> 50 units); with 10-40 training designs
  a wider one only overfits more, and costs more time.
- ``matern``: the Matern kernel on the flat vector.

The deep kernels are confident: on held-out designs their predictive standard deviation is
a fraction of their error (the usual weakness of deep kernel learning with few data), so EHVI
under them explores less than under the Matern kernel. An optional N(0, s^2) prior on the
networks' weights (``weight_std``; off by default: the source fits everything by marginal
likelihood) narrows that gap but, on the synthetic benchmark, doubled the DTK's error.
Weights start from a seeded draw (the search's seed and the
objective), then from the previous iteration's fit (a warm start: the data grew by a batch).
Torch runs on one thread while fitting (tiny matrices; threads on a shared machine cost 10x).
The torch classes are built on first use, so importing this module needs no torch.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from simcluster.errors import InputError
from simcluster.search.design.space import DesignSpace, TreeNode

KERNELS = ("dtk", "mlp", "matern")


def require_torch():
    """Import torch, gpytorch and botorch, or say how to install them."""
    try:
        import botorch  # noqa: F401
        import gpytorch  # noqa: F401
        import torch  # noqa: F401
    except ImportError as err:
        raise InputError("Gaussian-process surrogates need the optional extra: "
                         "pip install 'simcluster[search]' (torch, gpytorch, botorch)") from err


@functools.cache
def _torch_classes():
    require_torch()
    import gpytorch
    import torch
    from torch import nn

    class Encoder(gpytorch.Module):
        """A feature map whose linear layers' weights carry a N(0, s^2) prior (MAP fit)."""

        def weight_prior(self, std: float | None):
            if std is not None:
                self.register_prior("weights_prior", gpytorch.priors.NormalPrior(0.0, std),
                                    lambda m: m.weight_values())
            return self

        def weight_values(self):
            return torch.cat([p.flatten() for n, p in self.named_parameters()
                              if n.endswith("weight")])

    class TreeEncoder(Encoder):
        """h_v = tanh(W_v concat(h_children, x_v) + b_v) up the tree; the root is linear.

        The nodes of one level (a leaf is level 0, a parent one above its highest child) are
        computed together: one block-diagonal product per level, the blocks being the nodes'
        own W_v (a dense matrix times a fixed 0/1 mask, so that no node reads another's
        inputs). The same function as one small layer per node, in 5 products instead of 13.
        """

        def __init__(self, tree: TreeNode, names: list[str], leaf_dim: int, inner_dim: int):
            super().__init__()
            level: dict[str, int] = {}
            col: dict[str, tuple[int, int]] = {}        # node -> its columns of H
            width = len(names)                          # H = [x, level 0, level 1, ...]
            self.nodes: dict[str, tuple[int, int, int]] = {}   # node -> (level, in, out)
            for node in tree.walk():
                level[node.name] = 1 + max((level[c.name] for c in node.children), default=-1)
            self.levels = []
            for lv in range(level[tree.name] + 1):
                members = [n for n in tree.walk() if level[n.name] == lv]
                idx, blocks, out = [], [], 0
                for node in members:
                    cols = [i for c in node.children for i in range(*col[c.name])]
                    cols += [names.index(f) for f in node.features]
                    dim = min(leaf_dim, len(cols)) if not node.children else inner_dim
                    blocks.append((len(idx), len(cols), out, dim))
                    self.nodes[node.name] = (lv, len(cols), dim)
                    col[node.name] = (width + out, width + out + dim)
                    idx += cols
                    out += dim
                mask = torch.zeros(out, len(idx))
                weight = torch.zeros(out, len(idx))
                bias = torch.zeros(out)
                for i0, fan_in, o0, dim in blocks:     # nn.Linear's initialisation per block
                    bound = 1.0 / fan_in ** 0.5
                    mask[o0:o0 + dim, i0:i0 + fan_in] = 1.0
                    weight[o0:o0 + dim, i0:i0 + fan_in] = (2 * torch.rand(dim, fan_in) - 1) \
                        * bound
                    bias[o0:o0 + dim] = (2 * torch.rand(dim) - 1) * bound
                self.register_parameter(f"level{lv}_weight", nn.Parameter(weight))
                self.register_parameter(f"level{lv}_bias", nn.Parameter(bias))
                self.register_buffer(f"level{lv}_mask", mask)
                self.register_buffer(f"level{lv}_index", torch.tensor(idx, dtype=torch.long))
                self.levels.append(lv)
                width += out
            self.out_dim = self.nodes[tree.name][2]
            self.columns = col

        def weight_values(self):
            return torch.cat([getattr(self, f"level{lv}_weight")[
                getattr(self, f"level{lv}_mask").bool()] for lv in self.levels])

        def level_outputs(self, x) -> dict:
            """Every node's embedding of ``x`` (for checks), by node name."""
            with torch.no_grad():
                h = self._run(x)[1]
            return {name: h[..., a:b] for name, (a, b) in self.columns.items()}

        def forward(self, x):
            return self._run(x)[0]

        def _run(self, x):
            h = x
            top = self.levels[-1]
            for lv in self.levels:
                w = getattr(self, f"level{lv}_weight") * getattr(self, f"level{lv}_mask")
                z = h[..., getattr(self, f"level{lv}_index")] @ w.transpose(-1, -2) \
                    + getattr(self, f"level{lv}_bias")
                z = z if lv == top else torch.tanh(z)
                h = torch.cat([h, z], dim=-1)
            return z, h

    class MLPEncoder(Encoder):
        def __init__(self, d: int, widths=(32, 16), out_dim: int = 3):
            super().__init__()
            layers, prev = [], d
            for w in widths:
                layers += [nn.Linear(prev, w), nn.Tanh()]
                prev = w
            layers.append(nn.Linear(prev, out_dim))
            self.net = nn.Sequential(*layers)
            self.out_dim = out_dim

        def forward(self, x):
            return self.net(x)

    class FeatureKernel(gpytorch.kernels.Kernel):
        """k(x, x') = base(g(x), g(x')) for a learned feature map g (PSD by construction)."""

        def __init__(self, encoder, base):
            super().__init__()
            self.encoder = encoder
            self.base = base

        def forward(self, x1, x2, diag: bool = False, **params):
            h1 = self.encoder(x1)
            h2 = h1 if x2 is x1 else self.encoder(x2)
            return self.base.forward(h1, h2, diag=diag, **params)

    return TreeEncoder, MLPEncoder, FeatureKernel


def _covar(kernel: str, space: DesignSpace, dims: tuple[int, int],
           weight_std: float | None = None):
    """The covariance module: a Matern-5/2 ARD kernel (lengthscale prior scaled with the
    input dimension, Hvarfner et al. 2024, BoTorch's default) on the flat vector, or on the
    embedding of a tree or MLP feature map."""
    from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
    TreeEncoder, MLPEncoder, FeatureKernel = _torch_classes()
    if kernel == "matern":
        return get_covar_module_with_dim_scaled_prior(len(space.names), use_rbf_kernel=False)
    enc = (TreeEncoder(space.tree, space.names, *dims) if kernel == "dtk"
           else MLPEncoder(len(space.names))).weight_prior(weight_std)
    return FeatureKernel(enc, get_covar_module_with_dim_scaled_prior(enc.out_dim,
                                                                     use_rbf_kernel=False))


@contextlib.contextmanager
def _one_thread():
    """Torch on one thread for the duration: these matrices are tiny (tens of designs), and
    several threads on a shared machine cost ten times more than they save."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class GPSurrogate:
    """Independent exact GPs, one per objective, on the encoded designs and log objectives.

    ``fit(x, y)`` with x (n, d) on [0, 1]^d and y (n, m); ``predict(x)`` gives the posterior
    mean and standard deviation (n, m) of the latent log objectives; ``condition(x, y)`` adds
    fantasy observations without refitting (batch selection by Kriging believer).
    """

    space: DesignSpace
    kernel: str = "dtk"
    seed: int = 0
    dims: tuple[int, int] = (3, 4)
    maxiter: int = 100
    maxiter_warm: int | None = None
    warm_start: bool = True
    weight_std: float | None = None
    probabilistic: bool = field(default=True, init=False)
    _models: list = field(default_factory=list, init=False, repr=False)
    _states: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise InputError(f"unknown GP kernel {self.kernel!r}; known: {list(KERNELS)}")
        require_torch()

    def build(self, x: np.ndarray, y: np.ndarray, index: int):
        """A BoTorch ``SingleTaskGP`` on objective ``index``, weights seeded."""
        import torch
        from botorch.models import SingleTaskGP
        from botorch.models.transforms.outcome import Standardize
        tx = torch.as_tensor(x, dtype=torch.float64)
        ty = torch.as_tensor(y[:, index:index + 1], dtype=torch.float64)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed * 1009 + index)
            covar = _covar(self.kernel, self.space, self.dims,
                           self.weight_std).to(torch.float64)
        return SingleTaskGP(tx, ty, covar_module=covar, outcome_transform=Standardize(m=1))

    def fit(self, x: np.ndarray, y: np.ndarray) -> "GPSurrogate":
        with _one_thread():
            return self._fit(x, y)

    def _fit(self, x: np.ndarray, y: np.ndarray) -> "GPSurrogate":
        from botorch.optim.fit import fit_gpytorch_mll_scipy
        from gpytorch.mlls import ExactMarginalLogLikelihood
        x, y = np.asarray(x, float), np.asarray(y, float)
        if len(x) < 2:
            raise InputError(f"a GP needs at least 2 evaluated designs, got {len(x)}")
        models = []
        for i in range(y.shape[1]):
            model = self.build(x, y, i)
            warm = self.warm_start and i < len(self._states)
            if warm:
                model.load_state_dict(self._states[i], strict=False)
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
            mll.train()
            params = {n: p for n, p in mll.named_parameters() if p.requires_grad}
            steps = self.maxiter_warm if warm and self.maxiter_warm else self.maxiter
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit_gpytorch_mll_scipy(mll, parameters=params,
                                       closure=_mll_closure(model, params),
                                       options={"maxiter": steps})
            mll.eval()
            models.append(model)
        self._models = models
        self._states = [{k: v.detach().clone() for k, v in m.state_dict().items()
                         if not k.startswith("outcome_transform")} for m in models]
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self._models:
            raise InputError("predict() before fit()")
        with _one_thread():
            return self._predict(x)

    def _predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch
        tx = torch.as_tensor(np.asarray(x, float), dtype=torch.float64)
        means, stds = [], []
        with torch.no_grad():
            for model in self._models:
                post = model.posterior(tx)
                means.append(post.mean.squeeze(-1).numpy())
                stds.append(post.variance.clamp_min(0).sqrt().squeeze(-1).numpy())
        return np.column_stack(means), np.column_stack(stds)

    def condition(self, x: np.ndarray, y: np.ndarray) -> "GPSurrogate":
        """A copy conditioned on fantasy observations (x, y), hyperparameters unchanged."""
        import torch
        tx = torch.as_tensor(np.asarray(x, float), dtype=torch.float64)
        other = GPSurrogate(self.space, self.kernel, self.seed, self.dims, self.maxiter,
                            self.maxiter_warm, self.warm_start, self.weight_std)
        with torch.no_grad():
            for i, model in enumerate(self._models):
                model.posterior(tx[:1])              # caches needed before conditioning
                ty = torch.as_tensor(np.asarray(y, float)[:, i:i + 1], dtype=torch.float64)
                other._models.append(model.condition_on_observations(tx, ty))
        other._states = self._states
        return other


def _mll_closure(model, params: dict):
    """The exact GP's negative log marginal likelihood per datum (with the parameters' log
    priors) and its gradients, as ``fit_gpytorch_mll_scipy`` wants them: the same value as
    GPyTorch's ``ExactMarginalLogLikelihood`` (``tests/test_design_gp.py`` checks it), on a
    dense Cholesky factor, without its lazy-tensor machinery (these matrices are at most
    tens of rows; that machinery was most of the fitting time)."""
    import torch
    x, y = model.train_inputs[0], model.train_targets
    n = y.shape[-1]
    eye = torch.eye(n, dtype=x.dtype)
    priors = list(model.named_priors())
    const = 0.5 * n * math.log(2 * math.pi)

    def closure():
        for p in params.values():
            p.grad = None
        k = model.covar_module(x).to_dense() + model.likelihood.noise * eye
        r = (y - model.mean_module(x)).unsqueeze(-1)
        jitter = 0.0
        for jitter in (0.0, 1e-8, 1e-6, 1e-4):
            chol, info = torch.linalg.cholesky_ex(k + jitter * eye if jitter else k)
            if not int(info):
                break
        alpha = torch.cholesky_solve(r, chol)
        mll = -0.5 * (r * alpha).sum() - torch.log(torch.diagonal(chol)).sum() - const
        for _, module, prior, get, _ in priors:
            mll = mll + prior.log_prob(get(module)).sum()
        loss = -mll / n
        loss.backward()
        return loss.detach(), tuple(p.grad for p in params.values())
    return closure


def kernel_matrix(space: DesignSpace, x: np.ndarray, kernel: str = "dtk",
                  seed: int = 0) -> np.ndarray:
    """The (untrained, seeded) prior covariance matrix of ``kernel`` over designs ``x``."""
    import torch
    require_torch()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        covar = _covar(kernel, space, (3, 4)).to(torch.float64)
    with torch.no_grad():
        tx = torch.as_tensor(np.asarray(x, float), dtype=torch.float64)
        return covar(tx).to_dense().numpy()
