"""Surrogate models of the objectives: a registry of factories, GP and scikit-learn ones.

A surrogate maps encoded designs x (n, d) on [0, 1]^d to the *log* objectives (n, m):
``fit(x, y)``, ``predict(x) -> (mean, std)``; ``probabilistic`` says whether ``std`` means
anything (a GP) or is zero (a regression that predicts a point). Each objective gets its own
model, its targets standardised.

- ``gp-dtk``, ``gp-mlp``, ``gp-matern``: :class:`~simcluster.search.design.gp.GPSurrogate`
  (torch; optional extra ``simcluster[search]``).
- ``svr``: support vector regression (RBF kernel; the source's SVR row, Awad & Khanna 2015),
  C and gamma chosen per fit by leave-one-out error over a small grid.
- ``adaboost``: boosted regression trees (scikit-learn's AdaBoost.R2 over depth-3 trees), in
  the spirit of DAC'16 (Li et al., "statistical sampling and AdaBoost learning"), which boosts
  with AdaBoost.RT, a variant scikit-learn does not ship; both reweight the training designs
  a weak learner predicts worst.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from simcluster.errors import InputError
from simcluster.search.design.space import DesignSpace


def _require_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as err:
        raise InputError("this surrogate needs scikit-learn: pip install "
                         "'simcluster[search]'") from err


@dataclass
class SklearnSurrogate:
    """One scikit-learn regressor per objective, on standardised log objectives."""

    make: Callable[[np.ndarray, np.ndarray, int], object]
    seed: int = 0
    probabilistic: bool = field(default=False, init=False)
    _models: list = field(default_factory=list, init=False, repr=False)
    _scale: list = field(default_factory=list, init=False, repr=False)

    def fit(self, x: np.ndarray, y: np.ndarray) -> "SklearnSurrogate":
        x, y = np.asarray(x, float), np.asarray(y, float)
        if len(x) < 2:
            raise InputError(f"a surrogate needs at least 2 evaluated designs, got {len(x)}")
        self._models, self._scale = [], []
        for i in range(y.shape[1]):
            mu, sd = float(np.mean(y[:, i])), float(np.std(y[:, i])) or 1.0
            self._models.append(self.make(x, (y[:, i] - mu) / sd, self.seed + i))
            self._scale.append((mu, sd))
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self._models:
            raise InputError("predict() before fit()")
        mean = np.column_stack([m.predict(np.asarray(x, float)) * sd + mu
                                for m, (mu, sd) in zip(self._models, self._scale)])
        return mean, np.zeros_like(mean)


@dataclass
class FeasibilityClassifier:
    """P(feasible | design): a logistic regression on the encoded designs.

    The usual causes of infeasibility are limits on products of parameters (a server's
    devices x memory must hold the weights; cores x lanes x array^2 sets the power), which
    are linear in the log-scaled encoding, so a linear boundary per cause is the right shape;
    ``C`` = 10 regularises lightly (tens of labels). Until both outcomes have been seen the
    probability is the observed share (1 when every design so far was feasible).
    """

    C: float = 10.0
    _model: object = field(default=None, init=False, repr=False)
    _share: float = field(default=1.0, init=False, repr=False)

    def fit(self, x: np.ndarray, feasible: np.ndarray) -> "FeasibilityClassifier":
        feasible = np.asarray(feasible, dtype=bool)
        self._share = float(feasible.mean()) if len(feasible) else 1.0
        self._model = None
        if 0 < feasible.sum() < len(feasible):
            _require_sklearn()
            from sklearn.linear_model import LogisticRegression
            self._model = LogisticRegression(C=self.C, max_iter=1000).fit(
                np.asarray(x, float), feasible)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self._model is None:
            return np.full(len(x), self._share)
        return self._model.predict_proba(np.asarray(x, float))[:, 1]


def _svr(x, t, seed):
    from sklearn.svm import SVR
    best, best_err = None, np.inf
    for c in (0.3, 1.0, 3.0, 10.0):
        for gamma in (0.3, 1.0, 3.0):
            err = 0.0
            for k in range(len(x)):                 # leave-one-out error
                keep = np.arange(len(x)) != k
                m = SVR(C=c, gamma=gamma, epsilon=0.05).fit(x[keep], t[keep])
                err += float((m.predict(x[k:k + 1])[0] - t[k]) ** 2)
            if err < best_err:
                best, best_err = (c, gamma), err
    return SVR(C=best[0], gamma=best[1], epsilon=0.05).fit(x, t)


def _adaboost(x, t, seed):
    from sklearn.ensemble import AdaBoostRegressor
    from sklearn.tree import DecisionTreeRegressor
    return AdaBoostRegressor(DecisionTreeRegressor(max_depth=3), n_estimators=50,
                             random_state=seed).fit(x, t)


def make_surrogate(name: str, space: DesignSpace, seed: int = 0):
    """A fresh surrogate by registry name (see :data:`SURROGATES`)."""
    if name not in SURROGATES:
        raise InputError(f"unknown surrogate {name!r}; known: {sorted(SURROGATES)}")
    return SURROGATES[name](space, seed)


def _gp(kernel):
    def make(space, seed):
        from simcluster.search.design.gp import GPSurrogate
        return GPSurrogate(space, kernel=kernel, seed=seed)
    return make


def _sk(fn):
    def make(space, seed):
        _require_sklearn()
        return SklearnSurrogate(fn, seed)
    return make


SURROGATES: dict[str, Callable] = {
    "gp-dtk": _gp("dtk"), "gp-mlp": _gp("mlp"), "gp-matern": _gp("matern"),
    "svr": _sk(_svr), "adaboost": _sk(_adaboost),
}
