"""Evaluating designs: objectives per design, in parallel, cached by design hash.

An *evaluator* is any callable ``designs (DataFrame) -> objectives (DataFrame)``: one row per
design, in the same order, one column per objective (minimised), and optionally a ``reason``
column saying why a design could not be served (its objectives are then NaN and the search
records it as infeasible) and further columns of figures the search carries along. Two
evaluators come with the search:

- :class:`CachedEvaluator` wraps a function of one design (``dict -> dict`` of figures, e.g.
  :class:`~simcluster.search.design.serving.ServingEvaluator`), runs the designs it has not
  seen on a *runner* and remembers every result under the design's hash
  (:func:`~.space.design_hash`), optionally in a Parquet file that later runs read back (a
  long evaluation killed half-way resumes where it stopped: results are saved as they come).
  Runners: this process (``workers=1``), a pool of ``workers`` processes kept open across
  calls, Ray tasks (``ray="local"`` or a cluster's address), or any object with
  ``imap(fn, items) -> (index, result), ...`` and ``close()`` (the sweep runners' interface).
- :class:`TableEvaluator` answers from a table evaluated beforehand (the benchmark's subset,
  simulated exhaustively once): a design absent from it is an error, never a guess.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from simcluster.errors import InputError
from simcluster.search.design.space import design_hashes
from simcluster.search.runners import LocalRunner, RayRunner, SerialRunner
from simcluster.workload._columns import Rows, numbers, unique_file_header


def make_runner(workers: int = 1, ray: str | None = None, mp_context: str = "spawn"):
    """The search layer's runners (:mod:`simcluster.search.runners`): Ray when ``ray`` names
    an address, else this process (``workers=1``) or a kept pool of ``workers`` processes,
    spawned by default (forking a process that has torch loaded can hang)."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InputError(f"expected a whole number >= 1, got {workers!r}", field="workers")
    if ray:
        return RayRunner(ray, field="ray")
    if workers == 1:
        return SerialRunner()
    return LocalRunner(workers, start_method=mp_context, field="workers")


class CachedEvaluator:
    """Figures of designs from ``fn(design) -> {figure: value, ...}``, cached and parallel.

    ``objectives`` must be among what ``fn`` returns; every other number, flag or string it
    returns is kept beside them (``reason``: why a design cannot be served, with non-finite
    objectives). ``fn`` must be picklable for a pool or Ray (a module-level function or a
    picklable object). ``cache_path`` (Parquet) persists every result with its design's
    parameters, keyed by design hash, saved at least every ``save_every_s`` seconds while a
    call runs. ``context`` names what the figures depend on besides the design (the trace,
    model, SLOs, options and simulator code: :meth:`ServingEvaluator.fingerprint`): cached
    rows of another context are not used (``stale`` counts them) but are kept in the file, so
    a rerun after the trace or the code changed simulates afresh instead of answering from old
    figures. An :class:`InputError` raised for one design (a design no device can be built
    from) is recorded as that design's reason; any other error stops the call, after saving.
    Use as a context manager, or :meth:`close`, to stop a pool or Ray.
    """

    def __init__(self, fn: Callable[[dict], Mapping], objectives: Sequence[str], *,
                 workers: int = 1, ray: str | None = None, runner=None,
                 cache_path: str | Path | None = None, mp_context: str = "spawn",
                 save_every_s: float = 30.0, context: str | None = None,
                 progress: Callable[[int, int], None] | None = None):
        self.fn, self.objectives = fn, list(objectives)
        self.runner = runner if runner is not None else make_runner(workers, ray, mp_context)
        self.workers = getattr(self.runner, "workers", workers)
        self.cache_path = None if cache_path is None else Path(cache_path)
        self.save_every_s, self.progress = save_every_s, progress
        self.cache: dict[str, dict] = {}
        self.calls = 0                        # designs actually evaluated (cache misses)
        self.context = context
        self.stale = 0                        # cached rows of another context, not used
        self._foreign: pd.DataFrame | None = None
        if self.cache_path is not None and self.cache_path.exists():
            try:
                old = pd.read_parquet(self.cache_path)
            except Exception as err:          # a truncated or foreign file
                raise InputError(f"cannot read the evaluation cache: {err}",
                                 file=str(self.cache_path)) from None
            if "design_hash" not in old.columns:
                raise InputError("not an evaluation cache (no design_hash column)",
                                 file=str(self.cache_path))
            if context is not None:
                mine = old.get("context", pd.Series(None, index=old.index)) == context
                self._foreign = old[~mine]
                self.stale = len(self._foreign)
                old = old[mine]
            for row in old.to_dict("records"):
                row.pop("context", None)
                self.cache[row.pop("design_hash")] = row

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.runner.close()

    def __call__(self, designs: pd.DataFrame) -> pd.DataFrame:
        keys = design_hashes(designs)
        todo: dict[str, dict] = {}
        for k, row in zip(keys, designs.to_dict("records")):
            if k not in self.cache and k not in todo:
                todo[k] = row
        if todo:
            self._evaluate(todo)
        frame = pd.DataFrame([self.cache[k] for k in keys], index=designs.index)
        return frame.drop(columns=[c for c in designs.columns if c in frame.columns])

    def _evaluate(self, todo: dict[str, dict]):
        order, rows = list(todo), list(todo.values())
        last = time.monotonic()
        done = 0
        try:
            for i, result in self.runner.imap(_Guarded(self.fn), rows):
                self.cache[order[i]] = {**rows[i], **self._check(result, rows[i])}
                self.calls += 1
                done += 1
                if self.progress is not None:
                    self.progress(done, len(rows))
                if time.monotonic() - last > self.save_every_s:
                    self._save()
                    last = time.monotonic()
        finally:
            self._save()

    def _check(self, result: Mapping, design: dict) -> dict:
        if not isinstance(result, Mapping):
            raise InputError(f"the evaluator returned {type(result).__name__} for design "
                             f"{design}; expected a mapping of figures")
        missing = [o for o in self.objectives if o not in result]
        if missing and not result.get("reason"):
            raise InputError(f"the evaluator returned {sorted(result)} for design {design}; "
                             f"missing objectives {missing}")
        out = {o: float(result.get(o, math.nan)) for o in self.objectives}
        for k, v in result.items():
            if k not in out and k != "reason" and isinstance(v, (int, float, bool, str,
                                                                 np.number, np.bool_)):
                out[k] = v
        reason = str(result.get("reason") or "")
        if not reason and not all(np.isfinite(list(out[o] for o in self.objectives))):
            reason = "non-finite objective"
        out["reason"] = reason
        return out

    def frame(self) -> pd.DataFrame:
        """Every cached evaluation: design hash, parameters, figures and reason."""
        return pd.DataFrame([{"design_hash": k, **v} for k, v in self.cache.items()])

    def _save(self):
        if self.cache_path is None or not self.cache:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_name(self.cache_path.name + ".tmp")
        frame = self.frame()
        if self.context is not None:
            frame["context"] = self.context
            if self._foreign is not None and len(self._foreign):
                frame = pd.concat([frame, self._foreign], ignore_index=True)
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, self.cache_path)         # a kill mid-write leaves the old cache


class _Guarded:
    """``fn`` with an :class:`InputError` for one design turned into that design's reason."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, design: dict):
        try:
            return self.fn(design)
        except InputError as err:
            return {"reason": f"cannot evaluate: {err}"}


def read_table(path: str | Path) -> pd.DataFrame:
    """A table of evaluated designs (CSV, or Parquet by its suffix), or an InputError naming
    the file."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
            df.attrs["lines"] = np.arange(1, len(df) + 1)     # (rows, numbered from 1)
            return df
        unique_file_header(path)
        df = pd.read_csv(path)
        df.attrs["lines"] = np.arange(2, len(df) + 2)         # (a header, a line a row)
        return df
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError("no such table of evaluated designs", file=str(path)) from None
    except Exception as err:              # a malformed file: say which, not a traceback
        raise InputError(f"cannot read the table: {err}", file=str(path)) from None


def _check_objectives(table: pd.DataFrame, objectives: Sequence[str], rows: Rows) -> None:
    """Every objective a number >= 0, at its line; empty only in a row whose ``reason`` says
    why the design has none (an infeasible design). A negative time or an empty price of a
    feasible design would otherwise rank it."""
    reason = table["reason"] if "reason" in table.columns else pd.Series("", index=table.index)
    why = (reason.notna() & (reason.astype(str).str.strip() != "")).to_numpy()
    for o in objectives:
        check = ~why | table[o].notna().to_numpy()
        numbers(table[o][check], rows.take(np.flatnonzero(check)), o, integer=False,
                minimum=0, expected="a number >= 0 (empty only where the row's reason says "
                "why the design has none)")


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
        lines = table.attrs.get("lines")      # (read_table's; a frame: a header, a line a row)
        rows = Rows(source, np.arange(2, len(table) + 2) if lines is None
                    else np.asarray(lines))
        _check_objectives(table, self.objectives, rows)
        keys = design_hashes(table, self.names)
        if len(set(keys)) != len(keys):
            first: dict = {}
            for i, k in enumerate(keys):
                if k in first:
                    raise rows.error(i, None, f"the design of line {rows.line(first[k])} "
                                              "appears again")
                first[k] = i
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
        out["reason"] = [r if isinstance(r, str) else "" for r in out["reason"]]
        return out
