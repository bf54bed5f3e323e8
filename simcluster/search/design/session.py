"""One design search from a checked spec (``simcluster search SPACE.toml``), start to outputs.

:func:`run_design_search` takes a spec (:class:`simcluster.experiment.search_spec.SearchSpec`,
or any object with its attributes), draws the candidate designs, evaluates them through the
simulator (:class:`~.serving.ServingEvaluator` behind a :class:`~.evaluate.CachedEvaluator`:
a process pool or Ray, results cached by design hash in ``OUT/evaluations.parquet`` so a rerun
simulates nothing twice) or answers them from a table evaluated beforehand, runs the method,
evaluates the baseline design on the same trace, and returns a :class:`DesignSearchOutcome`,
whose :meth:`~DesignSearchOutcome.write` saves:

============================  ===========================================================
``front.csv``                 the found Pareto front: rows, objectives, other figures
``comparison.csv``            the baseline beside the front's fastest, cheapest, and best
                              designs no slower / no dearer than it, with ratios
``hypervolume.csv``           hypervolume after each iteration (stated reference point)
``designs.parquet``           every evaluated design: parameters, iteration, objectives,
                              feasibility and reason, every figure of its simulation
``search.png``                the front and the hypervolume per iteration
``summary.json``              what was searched, how, and what came out
============================  ===========================================================
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simcluster.hardware.parametric import ServingDesign, parse_row
from simcluster.search.design import report
from simcluster.search.design.evaluate import CachedEvaluator, TableEvaluator, read_table
from simcluster.search.design.loop import SearchResult, run_search
from simcluster.search.design.metrics import hypervolume_2d, pareto_front
from simcluster.search.design.serving import design_row
from simcluster.search.design.space import design_hashes


@dataclass
class DesignSearchOutcome:
    """A search's result, the figures of every evaluated design, and the comparison."""

    spec: object
    result: SearchResult
    figures: pd.DataFrame            # indexed by design hash
    front: pd.DataFrame
    comparison: pd.DataFrame
    baseline: dict | None
    true_front: np.ndarray | None    # when answered from an evaluated table
    wall_s: float
    simulated: int                   # designs simulated by this run (cache misses)
    candidates: int                  # designs the search chose among
    stale: int = 0                   # cached evaluations of other inputs or code, not used

    def __repr__(self) -> str:
        return (f"<DesignSearchOutcome {self.spec.name!r}: {self.result.describe()}; "
                f"{self.simulated} simulated, {self.wall_s:.3g} s wall; .front, .comparison, "
                ".designs(), .summary(), .plot()>")

    def designs(self) -> pd.DataFrame:
        """Every evaluated design, in evaluation order, with every figure."""
        h = self.result.history
        extra = self.figures.reindex(h["design_hash"]).reset_index(drop=True)
        extra = extra.drop(columns=[c for c in extra.columns if c in h.columns])
        return pd.concat([h.reset_index(drop=True), extra], axis=1)

    def summary(self) -> dict:
        r = self.result
        hv = r.hypervolume
        out = {"name": self.spec.name, "source": self.spec.source, "method": r.method,
               "seed": r.seed, "objectives": list(r.objectives),
               "initial": int(self.spec.n_init), "iterations": int(self.spec.n_iter),
               "batch_size": int(self.spec.batch_size),
               "candidates": self.candidates, "evaluated": len(r.history),
               "feasible": int(r.history["feasible"].sum()), "simulated": self.simulated,
               "stale_cached": self.stale,
               "front": len(self.front), "ref_point": [float(v) for v in r.ref_point],
               "hypervolume": float(hv["hypervolume"].iloc[-1]),
               "wall_s": round(self.wall_s, 2)}
        if self.true_front is not None:
            out["true_front"] = len(self.true_front)
            out["adrs"] = r.adrs(self.true_front) if out["feasible"] else float("inf")
            out["true_hypervolume"] = hypervolume_2d(self.true_front, r.ref_point)
        if self.baseline is not None:
            out["baseline"] = {k: v for k, v in self.baseline.items()
                               if isinstance(v, (str, int, float, bool))}
        return out

    def write(self, out: str | Path) -> list[Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / n for n in ("front.csv", "comparison.csv", "hypervolume.csv",
                                   "designs.parquet", "search.png", "summary.json")]
        self.front.to_csv(paths[0], index=False)
        self.comparison.to_csv(paths[1], index=False)
        self.result.hypervolume.to_csv(paths[2], index=False)
        designs = self.designs()
        designs["reason"] = designs["reason"].astype(str)
        designs.to_parquet(paths[3], index=False)
        self.plot(paths[4])
        paths[5].write_text(json.dumps(self.summary(), indent=1, default=float) + "\n")
        return paths

    def plot(self, path=None):
        return report.plot(self.result, self.baseline, self.true_front, path)


def run_design_search(spec, out: str | Path | None = None, *, progress=None,
                      evaluation_progress=None) -> DesignSearchOutcome:
    """Run the search ``spec`` describes (see the module docstring); ``out``: where the
    evaluation cache lives (``OUT/evaluations.parquet``), nothing is written without it.
    ``progress(iteration, hypervolume)`` after each iteration; ``evaluation_progress(done,
    total)`` after each simulated design."""
    t0 = time.perf_counter()
    candidates = spec.candidate_table()
    names = spec.space.names
    true_front = None
    if spec.table is not None:
        table = read_table(spec.table)
        evaluator = TableEvaluator(table, names, spec.objectives, source=str(spec.table))
        figures = table.set_index(pd.Index(design_hashes(table, names), name="design_hash"))
        ok = table[list(spec.objectives)].notna().all(axis=1)
        true_front = pareto_front(table.loc[ok, list(spec.objectives)].to_numpy(float))
        cached = None
    else:
        cache = None if out is None else Path(out) / "evaluations.parquet"
        cached = CachedEvaluator(spec.evaluator, spec.objectives, workers=spec.workers,
                                 ray=spec.ray, cache_path=cache, progress=evaluation_progress,
                                 context=spec.evaluator.fingerprint())
        evaluator = cached
    before = 0 if cached is None else cached.calls
    try:
        result = run_search(candidates, evaluator, spec.space, method=spec.method,
                            n_init=spec.n_init, n_iter=spec.n_iter, batch_size=spec.batch_size,
                            seed=spec.seed, objectives=spec.objectives,
                            ref_point=spec.ref_point, mci_groups=spec.mci_groups,
                            progress=progress)
    finally:
        if cached is not None:
            cached.close()
    if cached is not None:
        figures = cached.frame().set_index("design_hash")
    baseline = evaluate_baseline(spec)
    front = report.front_table(result, figures)
    comparison = report.comparison_table(front, spec.objectives, baseline)
    outcome = DesignSearchOutcome(spec, result, figures, front, comparison, baseline,
                                  true_front, time.perf_counter() - t0,
                                  0 if cached is None else cached.calls - before,
                                  len(candidates), 0 if cached is None else cached.stale)
    return outcome


def evaluate_baseline(spec) -> dict | None:
    """The baseline design's figures on the spec's trace (None when the spec skips it)."""
    if spec.baseline is None:
        return None
    name, prefill, decode = spec.baseline
    row = design_row(ServingDesign(parse_row(prefill), parse_row(decode)))
    figures = spec.evaluator(row)
    return {"name": name, **report.rows_of(row), **figures}
