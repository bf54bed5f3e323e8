"""Quality of a found Pareto front: dominance, exact 2-D hypervolume, ADRS.

Every objective is *minimised* (serving time, cost). A point dominates another when it is no
worse in every objective and better in one.

- **Hypervolume** (HV) of a set, with a stated reference point r: the area of the region that
  some point of the set dominates and that r bounds, {z : y <= z <= r for some y in the set}.
  Points not strictly better than r in both objectives add nothing. Exact for two objectives
  (a sweep over the front sorted by the first objective).
- **ADRS** (average distance to the reference set; ``shared/REFERENCES.md``, after Palermo et
  al. and DAC'16): for the true front G and a found set O,
  ADRS = mean over g in G of min over o in O of max_i |o_i - g_i| / |g_i|.
  Each distance is relative to the true point's own objective values, so the figure has no
  unit and does not depend on the objectives' scales: this is the normalisation the source's
  "normalized ADRS" column carries. 0 when O contains G.
- :func:`adrs_minmax` is the variant BOOM-Explorer's code computes (Euclidean distance after
  min-max scaling each objective over the candidate set), reported beside it for comparison.
"""

from __future__ import annotations

import numpy as np

from simcluster.errors import InputError


def _points(y, what: str = "objectives") -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if y.ndim == 1 and y.size == 0:
        y = y.reshape(0, 2)
    if y.ndim != 2:
        raise InputError(f"{what}: expected an (n, m) array of objective values, got shape "
                         f"{y.shape}")
    if not np.all(np.isfinite(y)):
        raise InputError(f"{what}: objective values must be finite (drop infeasible designs "
                         "first)")
    return y


def pareto_mask(y) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``y`` (n, m), minimising every column.

    Duplicated points do not dominate each other: both are kept.
    """
    y = _points(y)
    n = len(y)
    if n == 0:
        return np.zeros(0, dtype=bool)
    if y.shape[1] == 2:                       # sort by (f1, f2); keep a strictly falling f2
        order = np.lexsort((y[:, 1], y[:, 0]))
        keep = np.zeros(n, dtype=bool)
        best2, best1 = np.inf, np.nan
        for i in order:
            f1, f2 = y[i]
            if f2 < best2 or (f2 == best2 and f1 == best1):
                keep[i] = True
                if f2 < best2:
                    best2, best1 = f2, f1
        return keep
    no_worse = np.all(y[:, None, :] <= y[None, :, :], axis=2)     # [a, b]: a no worse than b
    better = np.any(y[:, None, :] < y[None, :, :], axis=2)
    return ~np.any(no_worse & better, axis=0)


def pareto_front(y) -> np.ndarray:
    """The distinct non-dominated points of ``y``, sorted by the first objective."""
    y = _points(y)
    front = np.unique(y[pareto_mask(y)], axis=0)
    return front[np.lexsort(front.T[::-1])] if len(front) else front.reshape(0, y.shape[1])


def hypervolume_2d(y, ref) -> float:
    """The exact area dominated by the points ``y`` (n, 2) and bounded by ``ref`` (2,)."""
    y = _points(y)
    ref = np.asarray(ref, dtype=float)
    if y.shape[1] != 2 or ref.shape != (2,):
        raise InputError(f"hypervolume_2d needs (n, 2) points and a 2-vector reference, got "
                         f"{y.shape} and {ref.shape}")
    y = y[np.all(y < ref, axis=1)]
    if len(y) == 0:
        return 0.0
    front = pareto_front(y)                   # f1 rising, f2 falling
    right = np.append(front[1:, 0], ref[0])
    return float(np.sum((right - front[:, 0]) * (ref[1] - front[:, 1])))


def hypervolume_improvement_2d(points, front, ref) -> np.ndarray:
    """HV(front + {p}) - HV(front) for each row p of ``points`` (k, 2), exactly."""
    points = _points(points, "points")
    base = _cells(front, ref)
    return np.array([_dominated_in_cells(p, base) for p in points])


def _cells(front, ref) -> np.ndarray:
    """The region below ``ref`` that ``front`` does not dominate, as disjoint boxes.

    Rows (lo1, hi1, lo2, hi2); lo may be -inf. Minimisation: with the front sorted by f1
    (p_1..p_k), the strip f1 in [p_j1, p_(j+1)1) is undominated below f2 = p_j2 (p_02 = r2).
    """
    ref = np.asarray(ref, dtype=float)
    front = _points(front, "front")
    front = pareto_front(front[np.all(front < ref, axis=1)]) if len(front) else front
    xs = np.concatenate([[-np.inf], front[:, 0], [ref[0]]])
    tops = np.concatenate([[ref[1]], front[:, 1]])
    cells = np.column_stack([xs[:-1], xs[1:], np.full(len(tops), -np.inf), tops])
    return cells[cells[:, 0] < cells[:, 1]]


def _dominated_in_cells(p, cells) -> float:
    w1 = np.clip(cells[:, 1] - np.maximum(cells[:, 0], p[0]), 0, None)
    w2 = np.clip(cells[:, 3] - np.maximum(cells[:, 2], p[1]), 0, None)
    return float(np.sum(w1 * w2))


def adrs(true_front, found) -> float:
    """ADRS of the set ``found`` against the true front (see the module docstring).

    ``found`` is the set of evaluated designs' objectives (its own front is taken first: a
    dominated point never stands in for a true one). Objectives of the true front must be
    non-zero (the distance is relative to them).
    """
    g = _points(true_front, "true front")
    o = _points(found, "found")
    if len(g) == 0:
        raise InputError("ADRS needs a non-empty true front")
    if len(o) == 0:
        return float("inf")
    if np.any(g == 0):
        raise InputError("ADRS divides by the true front's objective values; one is zero")
    o = pareto_front(o)
    rel = np.abs(o[None, :, :] - g[:, None, :]) / np.abs(g[:, None, :])
    return float(np.mean(np.min(np.max(rel, axis=2), axis=1)))


def adrs_minmax(true_front, found, lo, hi) -> float:
    """BOOM-Explorer's ADRS: mean over G of the Euclidean distance to the nearest found point,
    each objective first scaled to [0, 1] by ``lo``/``hi`` (the candidate set's range)."""
    g = _points(true_front, "true front")
    o = _points(found, "found")
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    if np.any(hi <= lo):
        raise InputError(f"adrs_minmax needs hi > lo per objective, got lo={lo}, hi={hi}")
    if len(o) == 0:
        return float("inf")
    g, o = (g - lo) / (hi - lo), (pareto_front(o) - lo) / (hi - lo)
    d = np.linalg.norm(o[None, :, :] - g[:, None, :], axis=2)
    return float(np.mean(np.min(d, axis=1)))
