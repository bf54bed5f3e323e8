"""Fit an engine model to a per-iteration log: kernel-calibrated device time + overheads.

For every logged iteration the device time comes from the roofline cost model with a measured
calibration (same batch shape, same device and model); the overhead coefficients of
:data:`~simcluster.engines.model.TERMS` are then fitted, non-negative, to the remainder by
least squares on *relative* errors, so that 25 ms decode steps weigh as much as 250 ms prefills.

Transients are kept out of the fit in two steps (:func:`fit_logs`): iterations right after an
idle period, and iterations of the engine's *fast host state*. On the lent machine the
reference engine's host overhead is ~20 ms per iteration for a while after it idles or starts
a burst, ~50 ms once busy (hwspecs/engines/README.md); the profiles' group starts and drains
catch the fast state often, replays at load rarely (2-3% of their iterations).

Terms the data does not support are dropped one at a time (backward elimination): a term goes
when refitting without it raises the cost by less than ``min_gain`` (relative), and the result
says, per term, what removing it costs. The terms the physics needs -- ``kv_token`` and
``attn_pair``, work over the context that grows with every KV token attended -- are kept even
when the profile barely constrains them (it may not reach the contexts a workload does); only
the data's rejection drops them: a non-negative fit that puts them at zero (``rejected``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from simcluster.engines.model import BASE_TERMS, TERMS, EngineTerms, term_counts

#: Terms kept unless the data rejects them (coefficient 0): attention over context, and the
#: per-iteration host work every iteration has (with a CUDA-graph engine's padded shapes the
#: KV counts are nearly constant and would otherwise stand in for it, then double when the
#: KV read crosses a padding step).
PHYSICAL = ("kv_token", "attn_pair")
PROTECTED = ("iteration",) + PHYSICAL
from simcluster.engines.profile import IterationLog


def transient_mask(log: IterationLog, idle_gap_s: float = 0.05,
                   settle_s: float = 0.35) -> np.ndarray:
    """True for iterations starting within ``settle_s`` after an idle gap of ``idle_gap_s``
    (the first iteration of the log counts as after one). Needs ``start_s``; else all False."""
    df = log.frame
    if "start_s" not in df.columns:
        return np.zeros(len(df), dtype=bool)
    start = df.start_s.to_numpy(float)
    end = start + df.iteration_s.to_numpy(float)
    out = np.zeros(len(df), dtype=bool)
    resume = -np.inf
    for i in range(len(df)):
        if i == 0 or start[i] - end[i - 1] >= idle_gap_s:
            resume = start[i]
        out[i] = start[i] - resume < settle_s
    return out


def design(log: IterationLog, timer, pad=None) -> tuple[np.ndarray, np.ndarray]:
    """Counts of every term (n x len(TERMS)) and the device time of every iteration
    (``timer``: the engine's device timer; ``pad``: its CUDA-graph padding, if any)."""
    df = log.frame
    X = np.zeros((len(df), len(TERMS)))
    dev = np.zeros(len(df))
    dec = df.decode_seqs.to_numpy(int)
    ctx = df.decode_context_tokens.to_numpy(int)
    smp = df.samples.to_numpy(int)
    for i in range(len(df)):
        chunks, context = log.chunks(i)
        X[i] = term_counts(chunks, context, dec[i], ctx[i], smp[i], pad)
        dev[i] = timer.time(chunks, context, int(dec[i]), int(ctx[i]), int(smp[i]))
    return X, dev


@dataclass
class FitResult:
    """Fitted terms, which terms the data supports, and the fit's errors."""

    terms: EngineTerms
    kept: tuple[str, ...]
    support: dict = field(default_factory=dict)     # term -> cost increase if removed
    share: dict = field(default_factory=dict)       # term -> share of predicted time
    n_fit: int = 0
    n_dropped: int = 0
    rel_err_median: float = float("nan")
    rel_err_p90: float = float("nan")
    bias: float = float("nan")                      # sum(pred) / sum(measured) - 1
    device_share: float = float("nan")              # device time / predicted time
    shared: bool = False                            # one coefficient for both kinds
    n_transient: int = 0                            # of n_dropped: post-idle transients
    n_skipped: int = 0                              # prefill iterations of decode-only logs
    rejected: tuple = ()                            # physical terms the data put at zero
    mask: np.ndarray | None = None                  # the iterations fitted


def _solve(X, dev, y, cols, scale_free, loss, f_scale):
    norm = np.maximum(np.abs(X[:, cols]).max(axis=0), 1e-300) if cols else np.ones(0)
    A = X[:, cols] / norm if cols else np.zeros((len(y), 0))

    def resid(p):
        s = p[-1] if scale_free else 1.0
        return (s * dev + A @ p[:len(cols)] - y) / y
    n = len(cols) + int(scale_free)
    if n == 0:
        r = resid(np.zeros(0))
        return np.zeros(0), 1.0, float(np.sum(np.log1p(r ** 2 / f_scale ** 2)))
    x0 = np.full(n, 1e-3)
    sol = least_squares(resid, x0, bounds=(0.0, np.inf), loss=loss, f_scale=f_scale,
                        x_scale="jac")
    coef = sol.x[:len(cols)] / norm
    return coef, (sol.x[-1] if scale_free else 1.0), float(2 * sol.cost)


def fit_terms(X: np.ndarray, dev: np.ndarray, y: np.ndarray, *, terms=TERMS,
              scale_free: bool = False, loss: str = "soft_l1", f_scale: float = 0.05,
              min_gain: float = 0.01, min_rows: int = 20) -> FitResult:
    """Fit the overhead coefficients (and the device-time multiplier if ``scale_free``).

    With fewer than ``min_rows`` iterations of one kind (decode, prefill), both kinds share
    each coefficient (the log cannot tell them apart).
    """
    k = len(BASE_TERMS)
    n_decode, n_prefill = int(X[:, 0].sum()), int(X[:, k].sum())
    shared = min(n_decode, n_prefill) < min_rows
    names = list(BASE_TERMS) if shared else list(TERMS)
    A = X[:, :k] + X[:, k:] if shared else X
    wanted = {t.split("_", 1)[1] if shared else t for t in terms}
    kept = [t for t in names if t in wanted]

    def run(sel):
        return _solve(A, dev, y, [names.index(t) for t in sel], scale_free, loss, f_scale)
    coef, scale, cost = run(kept)

    def physical(t):
        return t.split("_", 1)[-1] in PROTECTED if not shared else t in PROTECTED
    # rejected by the data: the non-negative fit leaves the term at (next to) zero
    rejected = [t for t, c in zip(kept, coef) if physical(t) and
                c * np.abs(A[:, names.index(t)]).max() < 1e-4 * np.median(y)]
    kept = [t for t in kept if t not in rejected]
    if rejected:
        coef, scale, cost = run(kept)
    while len(kept) > 1:
        trials = {t: run([q for q in kept if q != t])[2] for t in kept if not physical(t)}
        if not trials:
            break
        t, c = min(trials.items(), key=lambda kv: kv[1])
        if c > cost * (1 + min_gain):
            break
        kept.remove(t)
        coef, scale, cost = run(kept)
    support = {t: (run([q for q in kept if q != t])[2] / cost - 1) for t in kept}
    full = np.zeros(len(names))
    full[[names.index(t) for t in kept]] = coef
    pred = scale * dev + A @ full
    share = {t: float(np.sum(A[:, names.index(t)] * full[names.index(t)]) / np.sum(pred))
             for t in kept}
    if shared:
        terms_ = EngineTerms.shared(device_scale=scale, **dict(zip(names, full)))
        expand = {f"{kd}_{t}": v for t, v in support.items() for kd in ("decode", "prefill")}
        support, share = expand, {f"{kd}_{t}": v for t, v in share.items()
                                  for kd in ("decode", "prefill")}
        kept = [f"{kd}_{t}" for kd in ("decode", "prefill") for t in kept]
    else:
        terms_ = EngineTerms(**dict(zip(names, full)), device_scale=scale)
    err = np.abs(pred - y) / y
    if shared:
        rejected = [f"{kd}_{t}" for t in rejected for kd in ("decode", "prefill")]
    return FitResult(terms_, tuple(kept), support, share, n_fit=len(y), rejected=tuple(rejected),
                     rel_err_median=float(np.median(err)),
                     rel_err_p90=float(np.percentile(err, 90)),
                     bias=float(pred.sum() / y.sum() - 1),
                     device_share=float(np.sum(scale * dev) / np.sum(pred)), shared=shared)


def fit_logs(logs, timer, *, decode_only=(), fast_regime: float = 0.25,
             loss: str = "linear", pad=None, exclude=None, **kw) -> tuple[FitResult, np.ndarray]:
    """Fit one or several logs together; also returns the mask of the iterations used (over
    the logs concatenated). Of the logs in ``decode_only`` (indices into ``logs``) only the
    decode iterations are used: e.g. a sweep whose prompts ran back to back, unlike served
    prompts, which arrive into running decode batches.

    1. Post-idle transients are dropped (:func:`transient_mask`, per log).
    2. A robust fit with one coefficient per term for both kinds (``soft_l1``) gives each
       iteration's typical time; iterations that ran more than ``fast_regime`` (25%) faster
       than it are dropped: the engine's fast host state, which replays at load rarely
       visit (2-3% of their iterations), unlike the profiles' group starts and drains.
    3. The decode and prefill coefficients are fitted on the rest with ``loss`` ("linear":
       least squares on relative errors, which estimates the mean, stalls included — the
       time requests actually wait), dropping unsupported terms.
    """
    logs = [logs] if isinstance(logs, IterationLog) else list(logs)
    parts = [design(log, timer, pad) for log in logs]
    X = np.vstack([p[0] for p in parts])
    dev = np.concatenate([p[1] for p in parts])
    y = np.concatenate([log.frame.iteration_s.to_numpy(float) for log in logs])
    use = ~np.concatenate([transient_mask(log) for log in logs])
    if exclude is not None:          # e.g. iterations that captured a CUDA graph
        use &= ~np.asarray(exclude, bool)
    n_transient = int((~use).sum())
    skip = np.concatenate([np.full(len(log.frame), i in set(decode_only))
                           for i, log in enumerate(logs)])
    use &= ~(skip & (X[:, len(BASE_TERMS)] > 0))
    if fast_regime:
        typical = fit_terms(X[use], dev[use], y[use], loss="soft_l1", min_rows=len(y) + 1)
        pred = typical.terms.device_scale * dev + X @ typical.terms.vector()
        use &= (pred - y) / y <= fast_regime
    res = fit_terms(X[use], dev[use], y[use], loss=loss, **kw)
    res.n_skipped = int((skip & (X[:, len(BASE_TERMS)] > 0)).sum())
    res.n_dropped = int((~use).sum()) - res.n_skipped
    res.n_transient = n_transient
    res.mask = use
    return res, use


def predict_log(log: IterationLog, timer, terms: EngineTerms, pad=None) -> np.ndarray:
    """Predicted iteration times of a log under ``terms``."""
    X, dev = design(log, timer, pad)
    return terms.device_scale * dev + X @ terms.vector()
