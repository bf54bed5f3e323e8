"""Evaluating designs: objectives per design, in parallel, cached by design hash.

An *evaluator* is any callable ``designs (DataFrame) -> objectives (DataFrame)``: one row per
design, in the same order, one column per objective (minimised), and optionally a ``reason``
column saying why a design could not be served (its objectives are then NaN and the search
records it as infeasible). Two evaluators come with the search:

- :class:`CachedEvaluator` wraps a function of one design (``dict -> dict`` of objectives),
  runs the designs it has not seen in a process pool (or in-process with ``workers=1``) and
  remembers every result under the design's hash (:func:`~.space.design_hash`), optionally in
  a Parquet file that later runs read back.
- :class:`TableEvaluator` answers from a table evaluated beforehand (the benchmark's subset,
  simulated exhaustively once): a design absent from it is an error, never a guess.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from simcluster.errors import InputError
from simcluster.search.design.space import design_hashes


class CachedEvaluator:
    """Objectives of designs from ``fn(design) -> {objective: value}``, cached and parallel.

    ``fn`` must be picklable (a module-level function) when ``workers > 1``; it may return
    ``reason`` (a string) with non-finite objectives for a design that cannot be served.
    ``cache_path`` (Parquet) persists results across runs, keyed by design hash.
    """

    def __init__(self, fn: Callable[[dict], Mapping], objectives: Sequence[str], *,
                 workers: int = 1, cache_path: str | Path | None = None,
                 mp_context: str = "spawn"):
        if workers < 1:
            raise InputError(f"workers must be >= 1, got {workers}", field="workers")
        self.fn, self.objectives, self.workers = fn, list(objectives), workers
        self.mp_context = mp_context
        self.cache_path = None if cache_path is None else Path(cache_path)
        self.cache: dict[str, dict] = {}
        self.calls = 0                        # designs actually evaluated (cache misses)
        if self.cache_path is not None and self.cache_path.exists():
            old = pd.read_parquet(self.cache_path)
            for row in old.to_dict("records"):
                self.cache[row.pop("design_hash")] = row

    def __call__(self, designs: pd.DataFrame) -> pd.DataFrame:
        keys = design_hashes(designs)
        todo = {k: row for k, row in zip(keys, designs.to_dict("records"))
                if k not in self.cache}
        if todo:
            for key, result in zip(todo, self._run(list(todo.values()))):
                self.cache[key] = self._check(result, todo[key])
            self.calls += len(todo)
            self._save()
        return pd.DataFrame([self.cache[k] for k in keys], index=designs.index)

    def _run(self, rows: list[dict]) -> list[Mapping]:
        if self.workers == 1 or len(rows) == 1:
            return [self.fn(r) for r in rows]
        ctx = multiprocessing.get_context(self.mp_context)
        with cf.ProcessPoolExecutor(min(self.workers, len(rows)), mp_context=ctx) as pool:
            return list(pool.map(self.fn, rows))

    def _check(self, result: Mapping, design: dict) -> dict:
        missing = [o for o in self.objectives if o not in result]
        if missing:
            raise InputError(f"the evaluator returned {sorted(result)} for design {design}; "
                             f"missing objectives {missing}")
        out = {o: float(result[o]) for o in self.objectives}
        reason = result.get("reason")
        if not all(np.isfinite(list(out.values()))) and not reason:
            reason = "non-finite objective"
        out["reason"] = reason or ""
        return out

    def _save(self):
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame([{"design_hash": k, **v} for k, v in self.cache.items()])
        frame.to_parquet(self.cache_path, index=False)


class TableEvaluator:
    """Objectives looked up in a table of designs evaluated beforehand.

    ``table`` holds the parameter columns ``names`` and the ``objectives`` (and optionally
    ``reason``); ``calls`` counts the designs asked for.
    """

    def __init__(self, table: pd.DataFrame, names: Sequence[str], objectives: Sequence[str],
                 source: str = "evaluated table"):
        missing = [c for c in list(names) + list(objectives) if c not in table.columns]
        if missing:
            raise InputError(f"missing columns {missing}", file=source)
        self.names, self.objectives = list(names), list(objectives)
        keys = design_hashes(table, self.names)
        if len(set(keys)) != len(keys):
            raise InputError("a design appears twice", file=source)
        cols = self.objectives + (["reason"] if "reason" in table.columns else [])
        self.lookup = dict(zip(keys, table[cols].to_dict("records")))
        self.calls = 0

    def __call__(self, designs: pd.DataFrame) -> pd.DataFrame:
        keys = design_hashes(designs, self.names)
        absent = [i for i, k in enumerate(keys) if k not in self.lookup]
        if absent:
            raise InputError(f"design {designs.iloc[absent[0]][self.names].to_dict()} is not in "
                             "the evaluated table")
        self.calls += len(keys)
        out = pd.DataFrame([self.lookup[k] for k in keys], index=designs.index)
        if "reason" not in out.columns:
            out["reason"] = ""
        return out
