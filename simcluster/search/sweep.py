"""Sweeps: many independent, seeded simulations -> one tidy DataFrame, one row per point.

A *point* is anything with

* ``key`` — a hash of its resolved configuration (equal configurations, equal keys);
* ``overrides`` — ``{key.path: value}``, what distinguishes it (the frame's columns);
* ``evaluate(keep=False)`` — run it: ``(row, results)``, ``row`` a dict of scalars (the
  run's summary), ``results`` the run's frames when ``keep`` (else None);
* ``with_overrides(mapping, folder=None)`` — the same point with more overrides (searches
  vary a key), relative paths in them read from ``folder`` (None: the current folder);
* optionally ``prepare()`` — load what every run shares (called once in this process before a
  pool forks its workers, which then start with it loaded);
* optionally ``folder`` — the folder the point's own relative paths are read from (a search
  that copies a part of the point's configuration into an override passes it on).

(:class:`simcluster.experiment.points.ExperimentPoint` is one: an experiment TOML's data plus
overrides.) :func:`run_points` runs them on a runner (:mod:`.runners`): a point that raises
records its error and the sweep goes on; with ``out``, each finished point's row is written to
``out/points/<key>.json`` as it arrives, and a later run skips the points found there (a point
that failed is run again). Points with equal keys run once.
"""

from __future__ import annotations

import gc
import json
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from simcluster.errors import InputError
from simcluster.paths import out_dir
from simcluster.search.runners import SerialRunner

META_COLUMNS = ["point", "config_hash", "error", "wall_s"]


@dataclass
class Outcome:
    """What became of one point: its row of results, or the error that stopped it."""

    key: str
    row: dict = field(default_factory=dict)
    error: str = ""
    wall_s: float = 0.0
    cached: bool = False
    results: Any = None

    @property
    def ok(self) -> bool:
        return not self.error


#: A point that ran at least this long (wall seconds) is followed by a full garbage collection.
#: A finished simulation is cyclic garbage (instances, router, cluster and SimPy environment
#: refer to each other) that holds its timeline columns and its cost model's decode step
#: tables — tens of MB for a run of the default trace — and Python's generational collector
#: frees it only after several more points: 12 points of the default experiment peaked at
#: 301 MiB without, 181 MiB with a collection after each (``benchmarks/bench_sweep.py
#: --memory``). A collection costs about 17 ms with simcluster and pandas loaded, at most
#: 3.5% of such a point; shorter points hold little and are left to the collector.
COLLECT_AFTER_S = 0.5


def evaluate(point, keep: bool = False) -> Outcome:
    """Run one point, catching its error (the function runners call in their workers)."""
    t0 = time.perf_counter()
    try:
        row, results = point.evaluate(keep=keep)
        outcome = Outcome(point.key, dict(row), "", time.perf_counter() - t0, results=results)
    except Exception as err:   # a failed point records why; the sweep goes on
        # (where it was raised only for a bug: bad input names its file and key itself)
        last = (traceback.extract_tb(err.__traceback__)[-1:]
                if err.__traceback__ and not isinstance(err, InputError) else [])
        where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
        outcome = Outcome(point.key, {}, f"{type(err).__name__}: {err}{where}",
                          time.perf_counter() - t0)
    if outcome.wall_s >= COLLECT_AFTER_S:
        gc.collect()
    return outcome


def _evaluate_kept(point) -> Outcome:
    return evaluate(point, keep=True)


def _cache_path(out: Path, key: str) -> Path:
    return out / "points" / f"{key}.json"


def _read_cached(out: Path, key: str) -> Outcome | None:
    path = _cache_path(out, key)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None     # a torn or foreign file: run the point again
    if data.get("error") or data.get("key") != key:
        return None
    return Outcome(key, data["row"], "", data.get("wall_s", 0.0), cached=True)


def _write_cached(out: Path, point, outcome: Outcome):
    path = _cache_path(out, outcome.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"key": outcome.key, "overrides": _jsonable(point.overrides), "row": outcome.row,
            "error": outcome.error, "wall_s": outcome.wall_s}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, default=str))
    tmp.replace(path)


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def run_points(points: Sequence, runner=None, *, out=None, progress=True,
               fresh: bool = False, keep: bool = False, desc: str = "points") -> list[Outcome]:
    """Run every point (see the module docstring); outcomes in the points' order.

    ``fresh`` ignores results on disk; ``keep`` returns each run's frames (not cached).
    ``progress`` draws a tqdm bar over points (rate and ETA; ``tqdm.auto`` in Jupyter), or
    is a bar to update (a search running several rounds keeps one: :func:`points_bar`).
    """
    runner = runner or SerialRunner()
    out = Path(out) if out is not None else None
    outcomes: dict[str, Outcome] = {}
    todo, seen = [], set()
    for p in points:
        if p.key in seen:
            continue
        seen.add(p.key)
        hit = None if (fresh or keep or out is None) else _read_cached(out, p.key)
        if hit is not None:
            outcomes[p.key] = hit
        else:
            todo.append(p)
    own = progress is True
    bar = None if progress is False or progress is None else progress
    if own:
        bar = points_bar(len(seen), desc, runner, len(seen) - len(todo))
    elif bar is not None:                     # a search's bar: these points join its total
        bar.total = (bar.total or 0) + len(todo)
        bar.refresh()
    fn = _evaluate_kept if keep else evaluate
    if todo and getattr(runner, "forks", False) and not runner.started \
            and hasattr(todo[0], "prepare"):
        try:
            todo[0].prepare()
        except Exception:     # that point fails again in its worker, which records why
            pass
    try:
        for i, outcome in runner.imap(fn, todo):
            outcomes[outcome.key] = outcome
            if out is not None and outcome.ok and not keep:
                _write_cached(out, todo[i], outcome)
            if bar is not None:
                bar.update(1)
    finally:
        if own:
            bar.close()
    return [outcomes[p.key] for p in points]


def points_bar(total: int | None, desc: str, runner, done: int = 0):
    """A tqdm bar over points (shown once they have taken a second: quick runs stay quiet)."""
    from simcluster.simulation.progress import auto_tqdm
    return auto_tqdm()(total=total, initial=done, desc=f"{desc} ({runner.name}, "
                       f"{runner.workers} worker{'s' if runner.workers != 1 else ''})",
                       unit="pt", dynamic_ncols=True, delay=1.0)


def _cell(v):
    """A frame cell: scalars as they are, lists and tables as their JSON text."""
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=str)
    return v


def frame(points: Sequence, outcomes: Sequence[Outcome], columns: Sequence[str] = (),
          labels: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per point: ``label`` (when given), every varied key (``columns``, or every key
    any point overrides), ``point`` (its position), ``config_hash``, ``error``, ``wall_s``,
    then the row of results (NaN where a point failed)."""
    keys = list(columns) or sorted({k for p in points for k in p.overrides})
    rows = []
    for i, (p, o) in enumerate(zip(points, outcomes)):
        row = {} if labels is None else {"label": labels[i]}
        row.update({k: _cell(p.overrides.get(k)) for k in keys})
        row.update(point=i, config_hash=o.key, error=o.error, wall_s=o.wall_s)
        row.update(o.row)
        rows.append(row)
    return pd.DataFrame(rows)     # a failed point's missing numbers are NaN


@dataclass
class SweepResult:
    """A sweep's frame (one row per point) and outcomes; ``path`` where it was written."""

    frame: pd.DataFrame
    outcomes: list[Outcome]
    path: Path | None = None

    @property
    def failed(self) -> pd.DataFrame:
        return self.frame[self.frame.error != ""]

    def __repr__(self) -> str:
        """A line for a notebook's cell or a prompt (the rows are in ``frame``)."""
        cols = list(self.frame.columns)
        varied = cols[:cols.index("point")] if "point" in cols else []
        varied = [c for c in varied if c != "label"]
        return (f"<SweepResult: {len(self.frame)} points, {len(self.failed)} failed; varied "
                f"{', '.join(varied) or 'nothing'}"
                f"{f'; written to {self.path}' if self.path else ''}; .frame, .failed>")

    def save(self, directory) -> Path:
        """Write ``results.csv`` and ``results.parquet`` (when pyarrow is installed)."""
        d = out_dir(directory, "directory")    # (a file there: named, not FileExistsError)
        d.mkdir(parents=True, exist_ok=True)
        self.frame.to_csv(d / "results.csv", index=False)
        write_parquet(self.frame, d / "results.parquet")
        self.path = d
        return d


def write_parquet(df: pd.DataFrame, path: Path) -> bool:
    """Write ``df`` as Parquet if pyarrow is installed (False if not). A column mixing types
    (a varied key taking numbers and words) is written as text."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    try:
        df.to_parquet(path, index=False)
    except Exception:     # pyarrow's ArrowTypeError / ArrowInvalid on a mixed column
        mixed = [c for c in df.columns if df[c].dtype == object]
        df.astype({c: str for c in mixed}).to_parquet(path, index=False)
    return True


def points_per_s(outcomes: Sequence[Outcome], wall_s: float) -> float:
    """Points run (not read from disk) per second of ``wall_s``."""
    ran = sum(1 for o in outcomes if not o.cached)
    return ran / wall_s if wall_s > 0 else math.nan
