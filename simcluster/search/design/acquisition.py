"""Expected hypervolume improvement, exact for two objectives, and batch selection over a table.

EHVI(x) = E[HV(P + {Y(x)}) - HV(P)] (slides' eq. 4) for a minimised pair of objectives whose
predictive marginals are independent (one surrogate per objective).

Exact form: the region below the reference point that the current front P does not dominate
is a union of disjoint boxes [l, u] (:func:`metrics._cells`). A new point y dominates, inside
one box, exactly the box prod_i [max(l_i, y_i), u_i] (empty where y_i >= u_i), so its
improvement is sum over boxes of prod_i (u_i - max(l_i, y_i))^+, and with independent
marginals the expectation factorises per box and per objective:

    EHVI = sum_boxes prod_i [g_i(u_i) - g_i(l_i)],   g_i(a) = E[(a - Y_i)^+].

For a normal marginal g(a) = (a - mu) Phi(z) + sigma phi(z), z = (a - mu) / sigma; for a
log-normal one (a surrogate of log objectives, so that EHVI is taken in the objectives' own
units, where hypervolume is reported) g(a) = a Phi(z) - exp(mu + sigma^2 / 2) Phi(z - sigma),
z = (ln a - mu) / sigma. This is the same decomposition BoTorch's analytic EHVI uses
(Yang et al. 2019); ``tests/test_design_search.py`` checks it against Monte Carlo and BoTorch.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from simcluster.errors import InputError
from simcluster.search.design.metrics import _cells, _points

_SQRT2PI = np.sqrt(2.0 * np.pi)


def _expected_shortfall(a: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
                        lognormal: bool) -> np.ndarray:
    """g(a) = E[(a - Y)^+] elementwise; a = -inf gives 0, sigma = 0 gives (a - mu)^+."""
    a, mu, sigma = np.broadcast_arrays(np.asarray(a, float), np.asarray(mu, float),
                                       np.asarray(sigma, float))
    out = np.zeros(a.shape)
    finite = np.isfinite(a)
    if lognormal:
        finite &= a > 0
        det = finite & (sigma <= 0)
        out[det] = np.clip(a[det] - np.exp(mu[det]), 0, None)
        ok = finite & (sigma > 0)
        z = (np.log(a[ok]) - mu[ok]) / sigma[ok]
        out[ok] = a[ok] * ndtr(z) - np.exp(mu[ok] + sigma[ok] ** 2 / 2) * ndtr(z - sigma[ok])
    else:
        det = finite & (sigma <= 0)
        out[det] = np.clip(a[det] - mu[det], 0, None)
        ok = finite & (sigma > 0)
        z = (a[ok] - mu[ok]) / sigma[ok]
        out[ok] = (a[ok] - mu[ok]) * ndtr(z) + sigma[ok] * np.exp(-z * z / 2) / _SQRT2PI
    return np.clip(out, 0, None)


def ehvi_2d(mean, std, front, ref, *, lognormal: bool = False) -> np.ndarray:
    """Exact EHVI of each candidate (rows of ``mean``/``std``, shape (n, 2)).

    ``front``: the objectives observed so far (any set; its front is taken); ``ref``: the
    reference point. With ``lognormal``, ``mean``/``std`` are those of the *log* objectives and
    the improvement is measured in the objectives' own units.
    """
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    if mean.ndim != 2 or mean.shape[1] != 2 or std.shape != mean.shape:
        raise InputError(f"ehvi_2d: expected (n, 2) means and stds, got {mean.shape} and "
                         f"{std.shape}")
    if np.any(std < 0) or not np.all(np.isfinite(mean)):
        raise InputError("ehvi_2d: predictive stds must be >= 0 and means finite")
    cells = _cells(_points(front, "front") if len(front) else np.zeros((0, 2)), ref)
    total = np.zeros(len(mean))
    for lo1, hi1, lo2, hi2 in cells:
        t1 = (_expected_shortfall(hi1, mean[:, 0], std[:, 0], lognormal)
              - _expected_shortfall(lo1, mean[:, 0], std[:, 0], lognormal))
        t2 = (_expected_shortfall(hi2, mean[:, 1], std[:, 1], lognormal)
              - _expected_shortfall(lo2, mean[:, 1], std[:, 1], lognormal))
        total += np.clip(t1, 0, None) * np.clip(t2, 0, None)
    return total


def ehvi_monte_carlo(mean, std, front, ref, *, samples: int = 200_000,
                     rng: np.random.Generator, lognormal: bool = False) -> np.ndarray:
    """EHVI by sampling (for tests and checks): the mean improvement over ``samples`` draws."""
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    cells = _cells(front, ref)
    out = []
    for m, s in zip(mean, std):
        y = m + s * rng.standard_normal((samples, 2))
        if lognormal:
            y = np.exp(y)
        w1 = np.clip(cells[None, :, 1] - np.maximum(cells[None, :, 0], y[:, None, 0]), 0, None)
        w2 = np.clip(cells[None, :, 3] - np.maximum(cells[None, :, 2], y[:, None, 1]), 0, None)
        out.append(float(np.mean(np.sum(w1 * w2, axis=1))))
    return np.asarray(out)


def dominance_gap(points, front, scale) -> np.ndarray:
    """How far each point stands behind the front: max over f of min_i (p_i - f_i) / scale_i.

    Positive when some front point dominates p (by that margin, scaled per objective),
    negative or zero when p is not dominated. Ranks candidates whose EHVI is zero.
    """
    points, front = np.asarray(points, float), np.asarray(front, float)
    if len(front) == 0:
        return np.full(len(points), -np.inf)
    diff = (points[:, None, :] - front[None, :, :]) / np.asarray(scale, float)
    return np.max(np.min(diff, axis=2), axis=1)


def rank_scores(acq: np.ndarray, mean_objectives: np.ndarray, front: np.ndarray,
                scale) -> np.ndarray:
    """Order of preference (best first) by acquisition, ties (zeros) broken by the gap.

    A candidate with positive acquisition comes before every one with zero; among those with
    zero, the one whose predicted objectives stand nearest the front comes first. Ties left
    after that go to the lowest index (deterministic).
    """
    acq = np.asarray(acq, float)
    positive = acq > 0
    gap = dominance_gap(mean_objectives, front, scale)
    return np.lexsort((np.arange(len(acq)), gap, -np.where(positive, acq, 0), ~positive))
