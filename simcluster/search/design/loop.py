"""One design search: initial designs, then surrogate-guided batches, over a candidate table.

:func:`run_search` takes a discrete candidate table (a DataFrame of designs over the
:class:`~.space.DesignSpace`'s parameters), an evaluator (``designs -> objectives``, see
:mod:`.evaluate`) and a method (:mod:`.methods`), and returns a :class:`SearchResult`: every
evaluated design with its objectives and the iteration that chose it, and the hypervolume of
the designs found after each iteration.

Objectives are minimised and must be positive (serving time, cost): surrogates model their
logarithms, and EHVI is taken on the log-normal predictive marginals, in the objectives' own
units. Designs whose evaluation gives a non-finite objective are *infeasible* (the evaluator's
``reason`` says why): they stay in the history, never on a front; by default the surrogate is
fitted to the feasible designs only and a classifier's probability of feasibility weighs the
acquisition (``infeasible="classify"``), or, as before, the surrogate sees them at the worst
observed value of each objective plus 10% of its observed range (``"penalty"``). The
acquisition's reference point is the observed nadir plus 10% of the
observed range (BoTorch's ``infer_reference_point`` rule), re-inferred each iteration from
what has been evaluated; the *reported* hypervolume uses the stated ``ref_point``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from simcluster.errors import InputError
from simcluster.search.design.acquisition import ehvi_2d, rank_scores
from simcluster.search.design.methods import Method, get_method, initial_designs
from simcluster.search.design.metrics import (adrs, adrs_minmax, hypervolume_2d, pareto_front,
                                              pareto_mask)
from simcluster.search.design.space import DesignSpace, design_hashes
from simcluster.search.design.surrogates import FeasibilityClassifier, make_surrogate

DEFAULT_OBJECTIVES = ("serving_time_s", "cost_usd")


@dataclass
class SearchResult:
    """What a search evaluated, and how its front grew.

    ``history``: one row per evaluated design (``order`` of evaluation, ``iteration`` that
    chose it, 0 for the initial designs; ``candidate``: its row in the candidate table;
    ``design_hash``; the parameters; the objectives; ``feasible`` and ``reason``).
    ``hypervolume``: per iteration, the evaluations so far and the hypervolume of their
    feasible objectives with reference point ``ref_point``. ``timings``: seconds spent fitting
    and choosing per iteration. ``mci_bins``: MCI's per-bin record when MCI chose the start.
    """

    method: str
    seed: int
    objectives: tuple[str, str]
    ref_point: np.ndarray
    history: pd.DataFrame
    hypervolume: pd.DataFrame
    timings: pd.DataFrame
    mci_bins: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return f"<SearchResult {self.describe()}; .history, .front(), .hypervolume>"

    def describe(self) -> str:
        """Method, seed, designs evaluated and feasible, the front's size, in one line."""
        h = self.history
        feasible = int(h["feasible"].sum()) if "feasible" in h else 0
        return (f"{self.method} (seed {self.seed}): {len(h)} designs evaluated, {feasible} "
                f"feasible, {len(self.front())} on the front of {' x '.join(self.objectives)}")

    def feasible_objectives(self) -> np.ndarray:
        ok = self.history[self.history["feasible"]]
        return ok[list(self.objectives)].to_numpy(dtype=float)

    def front(self) -> pd.DataFrame:
        """The evaluated designs on the Pareto front of the feasible ones, by first objective."""
        ok = self.history[self.history["feasible"]]
        if ok.empty:
            return ok
        mask = pareto_mask(ok[list(self.objectives)].to_numpy(dtype=float))
        return ok[mask].sort_values(list(self.objectives)).reset_index(drop=True)

    def adrs(self, true_front) -> float:
        """ADRS of the feasible evaluated designs against ``true_front`` (n, 2)."""
        return adrs(true_front, self.feasible_objectives())

    def adrs_minmax(self, true_front, lo, hi) -> float:
        return adrs_minmax(true_front, self.feasible_objectives(), lo, hi)


@dataclass
class _State:
    candidates: pd.DataFrame
    x: np.ndarray
    evaluate: Callable
    objectives: tuple[str, str]
    rows: list = field(default_factory=list)
    taken: set = field(default_factory=set)

    def run(self, idx, iteration: int):
        idx = [int(i) for i in idx]
        designs = self.candidates.iloc[idx]
        out = self.evaluate(designs)
        if len(out) != len(designs) or any(o not in out.columns for o in self.objectives):
            raise InputError(f"the evaluator must return one row per design with columns "
                             f"{list(self.objectives)}; got {len(out)} rows, columns "
                             f"{list(out.columns)}")
        values = out[list(self.objectives)].to_numpy(dtype=float)
        reasons = (out["reason"].fillna("").astype(str).tolist() if "reason" in out.columns
                   else [""] * len(idx))
        hashes = design_hashes(designs)
        for k, i in enumerate(idx):
            feasible = bool(np.all(np.isfinite(values[k])))
            if feasible and np.any(values[k] <= 0):
                raise InputError(f"objectives must be positive (they are modelled in log); "
                                 f"design {designs.iloc[k].to_dict()} gave {values[k].tolist()}")
            self.rows.append({"order": len(self.rows), "iteration": iteration, "candidate": i,
                              "design_hash": hashes[k], **designs.iloc[k].to_dict(),
                              **dict(zip(self.objectives, values[k])), "feasible": feasible,
                              "reason": reasons[k] if not feasible else ""})
            self.taken.add(i)

    def observed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(candidate indices, objectives, feasible mask) of everything evaluated."""
        idx = np.array([r["candidate"] for r in self.rows], dtype=int)
        y = np.array([[r[o] for o in self.objectives] for r in self.rows], dtype=float)
        ok = np.array([r["feasible"] for r in self.rows], dtype=bool)
        return idx, y, ok


def _log_targets(y: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Log objectives, infeasible rows at the worst feasible value + 10% of the range."""
    logs = np.log(np.where(ok[:, None], y, 1.0))
    if (~ok).any():
        lo, hi = logs[ok].min(axis=0), logs[ok].max(axis=0)
        logs[~ok] = hi + 0.1 * np.where(hi > lo, hi - lo, 1.0)
    return logs


def _choose(state: _State, surrogate, batch: int, infeasible: str = "classify") -> list[int]:
    idx, y, ok = state.observed()
    free = np.setdiff1d(np.arange(len(state.x)), list(state.taken))
    if infeasible == "penalty":
        surrogate.fit(state.x[idx], _log_targets(y, ok))
        feasible = np.ones(len(free))
    else:
        surrogate.fit(state.x[idx[ok]], np.log(y[ok]))
        feasible = FeasibilityClassifier().fit(state.x[idx], ok).predict(state.x[free])
    front = pareto_front(y[ok])
    lo, hi = y[ok].min(axis=0), y[ok].max(axis=0)
    span = np.where(hi > lo, hi - lo, np.abs(hi) + 1.0)
    ref = hi + 0.1 * span
    picks: list[int] = []
    model = surrogate
    for _ in range(batch):
        mean, std = model.predict(state.x[free])
        acq = ehvi_2d(mean, std, front, ref, lognormal=True) * feasible
        order = rank_scores(acq, np.exp(mean), front, span)
        order = [o for o in order if free[o] not in picks]
        j = order[0]
        picks.append(int(free[j]))
        believed = np.exp(mean[j])              # Kriging believer: the predicted median
        front = pareto_front(np.vstack([front, believed]))
        if len(picks) < batch and hasattr(model, "condition"):
            model = model.condition(state.x[[free[j]]], mean[[j]])
    return picks


def run_search(candidates: pd.DataFrame, evaluate: Callable[[pd.DataFrame], pd.DataFrame],
               space: DesignSpace, *, method: str | Method = "llmshare", n_init: int = 10,
               n_iter: int = 20, batch_size: int = 1, seed: int = 0,
               objectives: Sequence[str] = DEFAULT_OBJECTIVES, ref_point=None,
               mci_groups: int = 5, infeasible: str = "classify",
               progress: Callable[[int, float], None] | None = None) -> SearchResult:
    """Search ``candidates`` for the Pareto front of two minimised ``objectives``.

    ``n_init`` designs by the method's initialisation, then ``n_iter`` iterations of
    ``batch_size`` designs each. ``ref_point`` (one value per objective) is the hypervolume's
    reference; by default the worst feasible value of each objective among the initial designs
    plus 10% of their range, fixed from then on (stated in the result). ``progress(iteration,
    hypervolume)`` is called after each iteration. ``infeasible`` says how a surrogate
    treats designs that could not be served: ``"classify"`` fits the objectives' surrogate to
    the feasible designs only and weighs each candidate's acquisition by its probability of
    being feasible (:class:`~.surrogates.FeasibilityClassifier`); ``"penalty"`` fits it to
    every design, the infeasible ones at the worst observed value plus 10% of the range.
    """
    m = get_method(method)
    if infeasible not in ("classify", "penalty"):
        raise InputError(f'expected "classify" or "penalty", got {infeasible!r}',
                         field="infeasible")
    objectives = tuple(objectives)
    if len(objectives) != 2:
        raise InputError(f"the search handles two objectives, got {list(objectives)}",
                         field="objectives")
    for name, v, low in (("n_init", n_init, 2), ("n_iter", n_iter, 0),
                         ("batch_size", batch_size, 1)):
        if not isinstance(v, (int, np.integer)) or v < low:
            raise InputError(f"expected an integer >= {low}, got {v!r}", field=name)
    table = space.validate(candidates).reset_index(drop=True)
    dup = pd.Series(design_hashes(table)).duplicated()
    if dup.any():
        raise InputError(f"row {int(np.flatnonzero(dup)[0])} repeats an earlier design",
                         file="candidate table")
    total = n_init + n_iter * batch_size
    if total > len(table):
        raise InputError(f"the budget ({n_init} + {n_iter} x {batch_size} = {total} designs) "
                         f"exceeds the {len(table)} candidates", field="budget")
    rng = np.random.default_rng(seed)
    x = space.encode(table)
    memory = space.total_memory(table) if m.init == "mci" else None
    state = _State(table, x, evaluate, objectives)
    first = total if m.surrogate is None else n_init
    plan, bins = initial_designs(m.init, x, first, rng, memory=memory, groups=mci_groups)
    t0 = time.perf_counter()
    state.run(plan[:n_init], 0)
    timings = [{"iteration": 0, "choose_s": 0.0, "evaluations": n_init}]
    ref = _reference(state, ref_point)
    hv = [_hv_row(state, 0, ref)]
    surrogate = make_surrogate(m.surrogate, space, seed) if m.surrogate else None
    for it in range(1, n_iter + 1):
        t0 = time.perf_counter()
        if surrogate is None:
            picks = plan[n_init + (it - 1) * batch_size: n_init + it * batch_size]
        elif state.observed()[2].sum() < 2:    # under 2 feasible designs: no model to fit
            picks = initial_designs("random", x, batch_size, rng, exclude=state.taken)[0]
        else:
            picks = _choose(state, surrogate, batch_size, infeasible)
        timings.append({"iteration": it, "choose_s": time.perf_counter() - t0,
                        "evaluations": len(picks)})
        state.run(picks, it)
        hv.append(_hv_row(state, it, ref))
        if progress is not None:
            progress(it, hv[-1]["hypervolume"])
    history = pd.DataFrame(state.rows)
    return SearchResult(m.name, seed, objectives, ref, history, pd.DataFrame(hv),
                        pd.DataFrame(timings),
                        None if bins is None else pd.DataFrame([b.__dict__ for b in bins]))


def _reference(state: _State, ref_point) -> np.ndarray:
    if ref_point is not None:
        ref = np.asarray(ref_point, dtype=float)
        if ref.shape != (2,) or not np.all(np.isfinite(ref)):
            raise InputError(f"expected two finite numbers, got {ref_point!r}",
                             field="ref_point")
        return ref
    _, y, ok = state.observed()
    if not ok.any():
        raise InputError("no initial design is feasible, so no reference point can be "
                         "inferred; state ref_point or widen the candidate table")
    lo, hi = y[ok].min(axis=0), y[ok].max(axis=0)
    return hi + 0.1 * np.where(hi > lo, hi - lo, np.abs(hi) + 1.0)


def _hv_row(state: _State, iteration: int, ref) -> dict:
    _, y, ok = state.observed()
    return {"iteration": iteration, "evaluations": len(y), "feasible": int(ok.sum()),
            "hypervolume": hypervolume_2d(y[ok], ref) if ok.any() else 0.0}
