"""Choosing designs without a model: random, Latin hypercube, TED, and memory-centric (MCI).

Every sampler picks *row indices* of a discrete candidate set, given as its encoded features
``x`` ((n, d) on [0, 1]^d, :meth:`DesignSpace.encode`); an ``exclude`` set of indices (designs
already evaluated) is never picked. Randomness comes from the ``np.random.Generator`` passed in.

- :func:`ted`: transductive experimental design (Yu, Bi & Tresp, ICML'06), the sequential
  greedy form BOOM-Explorer uses: with a kernel matrix K over the pool, repeatedly take the
  design whose column most reduces the pool's remaining variance, ||K[:, j]||^2 / (K_jj + mu),
  and deflate K by it. Picks designs that together represent the whole pool.
- :func:`mci`: the slides' Algorithm 1 (memory-centric initialisation): each design's total
  main memory c_i, bins at the percentiles 100 j / u of {c_i}, q = t // u designs per bin and
  one more in the first t mod u bins, chosen by TED within the bin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from simcluster.errors import InputError


TED_MAX_POOL = 8000          # an 8000^2 float64 kernel matrix is 512 MB


def _pool(n: int, exclude) -> np.ndarray:
    mask = np.ones(n, dtype=bool)
    if exclude is not None and len(exclude):
        mask[np.asarray(list(exclude), dtype=int)] = False
    return np.flatnonzero(mask)


def _check_count(k: int, available: int, what: str):
    if k < 0:
        raise InputError(f"{what}: a negative number of designs ({k}) was asked for")
    if k > available:
        raise InputError(f"{what}: asked for {k} designs, only {available} are left to choose")


def random_sample(x: np.ndarray, k: int, rng: np.random.Generator, exclude=None) -> np.ndarray:
    """``k`` distinct indices drawn uniformly from the rows not excluded."""
    pool = _pool(len(x), exclude)
    _check_count(k, len(pool), "random sample")
    return rng.choice(pool, size=k, replace=False)


def latin_hypercube(x: np.ndarray, k: int, rng: np.random.Generator, exclude=None) -> np.ndarray:
    """``k`` distinct indices spread like a Latin hypercube over the encoded space.

    A Latin hypercube of ``k`` points is drawn in [0, 1]^d (one point per stratum of every
    axis); each point, in turn, takes the nearest candidate not yet taken (Euclidean distance
    in the encoded space), so the design set inherits the hypercube's spread.
    """
    pool = _pool(len(x), exclude)
    _check_count(k, len(pool), "Latin hypercube")
    d = x.shape[1]
    strata = np.column_stack([rng.permutation(k) for _ in range(d)])
    points = (strata + rng.random((k, d))) / max(k, 1)
    free = np.ones(len(pool), dtype=bool)
    chosen = []
    for p in points:
        dist = np.linalg.norm(x[pool] - p, axis=1)
        dist[~free] = np.inf
        j = int(np.argmin(dist))
        free[j] = False
        chosen.append(pool[j])
    return np.asarray(chosen, dtype=int)


def rbf_kernel(x: np.ndarray, lengthscale: float | None = None) -> np.ndarray:
    """exp(-||a - b||^2 / (2 l^2)); ``l`` defaults to the median pairwise distance."""
    sq = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=2)
    if lengthscale is None:
        off = sq[np.triu_indices(len(x), 1)]
        med = np.median(off[off > 0]) if np.any(off > 0) else 1.0
        lengthscale = float(np.sqrt(med))
    return np.exp(-sq / (2.0 * lengthscale ** 2))


def ted(x: np.ndarray, k: int, exclude=None, *, mu: float = 0.1,
        lengthscale: float | None = None) -> np.ndarray:
    """``k`` indices chosen by sequential transductive experimental design over the pool.

    Deterministic: the pool's geometry alone decides (ties go to the lowest index).
    """
    pool = _pool(len(x), exclude)
    _check_count(k, len(pool), "TED")
    if len(pool) > TED_MAX_POOL:
        raise InputError(f"TED: a pool of {len(pool)} designs needs a {len(pool)}^2 kernel "
                         f"matrix; at most {TED_MAX_POOL} are allowed (search a sampled "
                         "candidate table, or use more MCI groups)")
    if k == 0:
        return np.zeros(0, dtype=int)
    kmat = rbf_kernel(x[pool], lengthscale)
    chosen: list[int] = []
    for _ in range(k):
        score = np.sum(kmat ** 2, axis=0) / (np.diag(kmat) + mu)
        score[chosen] = -np.inf
        j = int(np.argmax(score))
        chosen.append(j)
        col = kmat[:, j].copy()
        kmat -= np.outer(col, col) / (col[j] + mu)
    return pool[np.asarray(chosen)]


@dataclass(frozen=True)
class MCIBin:
    """One memory bin of MCI: its edges, how many designs it holds, asked for and got."""

    lower: float
    upper: float
    size: int
    requested: int
    selected: int


def mci_bins(memory: np.ndarray, t: int, u: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Algorithm 1, lines 1-13: bin edges b_j, each design's bin, and the count s_j per bin.

    Bins are [b_(j-1), b_j) as written, except that the last is closed on the right: as
    written, the design with the largest memory (c_i = b_u) would fall in no bin.
    """
    if u < 1:
        raise InputError(f"MCI needs at least one group, got u={u}")
    memory = np.asarray(memory, dtype=float)
    edges = np.percentile(memory, 100.0 * np.arange(u + 1) / u)
    which = np.searchsorted(edges, memory, side="right") - 1
    which = np.clip(which, 0, u - 1)           # c_i = b_u joins the last bin
    q, r = divmod(t, u)
    counts = np.array([q + 1 if j < r else q for j in range(u)])
    return edges, which, counts


def mci(x: np.ndarray, memory: np.ndarray, t: int, u: int, exclude=None, *,
        mu: float = 0.1) -> tuple[np.ndarray, list[MCIBin]]:
    """Memory-centric initialisation (slides' Algorithm 1): ``t`` indices in ``u`` groups.

    ``memory`` is each candidate's total main memory (``DesignSpace.total_memory``); bins and
    percentiles are computed over the unsampled designs (those not in ``exclude``). Within each
    bin, TED picks s_j designs. Algorithm 1 does not say what to do when a bin holds fewer than
    s_j designs (ties in memory can leave bins empty: many designs share a c_i); this takes the
    whole bin and carries the shortfall to the next bins in order, so that exactly ``t``
    designs come back, and reports each bin's request and selection.
    """
    pool = _pool(len(x), exclude)
    _check_count(t, len(pool), "MCI")
    memory = np.asarray(memory, dtype=float)
    if memory.shape != (len(x),):
        raise InputError(f"MCI: expected one memory figure per candidate ({len(x)}), got "
                         f"shape {memory.shape}")
    edges, which, counts = mci_bins(memory[pool], t, u)
    chosen, taken = _ted_per_group(x, pool, which, counts, mu)
    bins = [MCIBin(float(edges[j]), float(edges[j + 1]), int(np.sum(which == j)),
                   int(counts[j]), int(taken[j])) for j in range(u)]
    return chosen, bins


def cluster_ted(x: np.ndarray, t: int, u: int, rng: np.random.Generator, exclude=None, *,
                mu: float = 0.1) -> np.ndarray:
    """BOOM-Explorer's MicroAL without its domain knowledge: ``u`` k-means clusters of the
    encoded designs (seeded), then TED within each, q or q + 1 designs per cluster (largest
    clusters first), shortfalls carried on as in :func:`mci`."""
    from scipy.cluster.vq import kmeans2
    pool = _pool(len(x), exclude)
    _check_count(t, len(pool), "cluster TED")
    u = max(1, min(u, len(pool)))
    _, labels = kmeans2(x[pool], u, minit="++", seed=rng)
    order = np.argsort(-np.bincount(labels, minlength=u), kind="stable")
    rank = np.empty(u, dtype=int)
    rank[order] = np.arange(u)                 # cluster label -> its place by size
    q, r = divmod(t, u)
    counts = np.array([q + 1 if j < r else q for j in range(u)])
    return _ted_per_group(x, pool, rank[labels], counts, mu)[0]


def _ted_per_group(x, pool, which, counts, mu):
    """TED picks counts[j] designs of each group j of ``pool``; a short group's shortfall
    moves to the next groups, and what is still missing at the end comes from the rest."""
    chosen: list[np.ndarray] = []
    taken = []
    carry = 0
    for j in range(len(counts)):
        members = pool[which == j]
        want = counts[j] + carry
        take = min(want, len(members))
        carry = want - take
        chosen.append(members[ted(x[members], take, mu=mu)] if take else members[:0])
        taken.append(take)
    if carry:                                  # the last groups were short: wrap around
        rest = np.setdiff1d(pool, np.concatenate(chosen))
        chosen.append(rest[ted(x[rest], carry, mu=mu)])
    return np.concatenate(chosen).astype(int), taken


def mci_table(bins: list[MCIBin]) -> pd.DataFrame:
    """MCI's bins as a table (one row per bin)."""
    return pd.DataFrame([b.__dict__ for b in bins])
