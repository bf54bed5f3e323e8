"""Questions over experiment files: sweep, compare, capacity, cheapest (``sc.sweep`` ...).

Each takes an experiment (a TOML path, a bundled name such as ``"default.toml"``, or None for
the bundled default) and ``set`` overrides (``{"trace.first_n": 2000}``) that apply to every
run, and runs on ``jobs`` local processes (1: this process) or on Ray (``ray="local"`` or an
address). A sweep file names all of that in TOML::

    experiment = "default.toml"      # relative to the sweep file, or a bundled experiment
    [set]                            # overrides for every point
    "trace.first_n" = 2000
    [grid]                           # every combination of these values
    "trace.rate_per_s" = [2, 4, 8]
    "instances.0.count" = [1, 2, 4]
    seed = [0, 1, 2]
    [[points]]                       # and/or listed points, each crossed with the grid
    "router.policy" = "round_robin"
    [[points]]
    "router.policy" = "least_outstanding_tokens"

Keys are dotted paths into the experiment's TOML (quoted, or as nested tables). A relative path
in a value (``"trace.source" = ["a.csv", "b.csv"]``) is relative to the sweep file's folder, as
``experiment`` is; one in ``set`` given to these functions (or ``--set`` / ``--vary``) to the
current folder. Each point runs once and each key is set in one place: a grid value listed
twice, a point listed twice, a key a point sets and the grid varies, or one ``set`` fixes
and the sweep varies, is an error (one value would silently replace the other).
"""

from __future__ import annotations

import itertools
import numbers
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from simcluster.errors import InputError, toml_text
from simcluster.experiment.overrides import as_mapping
from simcluster.experiment.points import ExperimentPoint
from simcluster.experiment.tables import Table, check_kind
from simcluster.hardware import read_toml_file
from simcluster.paths import out_dir
from simcluster.search import capacity as _capacity
from simcluster.search import cheapest as _cheapest
from simcluster.search.cheapest import cheapest_of
from simcluster.search.compare import compare_points
from simcluster.search.runners import make_runner
from simcluster.search.sweep import SweepResult, frame, run_points
from simcluster.simulation.simulation import slo_seconds


def _point(experiment, set=None) -> ExperimentPoint:
    if isinstance(experiment, ExperimentPoint):
        return experiment.with_overrides(set)
    return ExperimentPoint.from_file(experiment, set)


def _flatten(data: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested tables -> dotted keys (``{"trace": {"rate_per_s": 3}}`` -> ``trace.rate_per_s``)."""
    out = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def expand(grid: Mapping[str, Sequence] | None = None,
           points: Sequence[Mapping] | None = None, file: str | None = None,
           name: str = "grid", fixed: Mapping | None = None,
           fixed_name: str = "set") -> list[dict]:
    """Every combination of the grid's values, crossed with each listed point (``name``: what
    the caller calls the grid, for errors: ``grid``, ``vary``). The same point twice (a value
    repeated in the grid, a point listed twice) and a key both varied and ``fixed`` (set for
    every point, by what the caller calls ``fixed_name``) or set by a point and the grid —
    where one would silently replace the other — are InputErrors."""
    if grid is not None and not isinstance(grid, Mapping):
        raise TypeError(f"{name}: expected a mapping of KEY.PATH to a list of values; got "
                        f"{type(grid).__name__}")
    if points is not None and (isinstance(points, (Mapping, str)) or not all(
            isinstance(p, Mapping) for p in points)):
        raise TypeError(f"points: expected a list of mappings of KEY.PATH to value (one a "
                        f"point); got {type(points).__name__}")
    grid = _flatten(grid or {})
    for k, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise InputError(f"expected a non-empty list of values, got {values!r}", file=file,
                             field=f"{name}.{k}")
        for i, v in enumerate(values):
            if any(_same(v, w) for w in values[:i]):
                raise InputError(f"{toml_text(v)} is listed twice: it would run the same point "
                                 "twice", file=file, field=f"{name}.{k}")
    listed = [_flatten(p) for p in (points or [{}])]
    for i, p in enumerate(listed):
        both = sorted(set(p) & set(grid))
        if both:
            raise InputError(f"{both[0]} is set by points[{i}] and varied by [{name}]: the "
                             "grid's values would replace the point's; vary it in one place",
                             file=file, field=f"points[{i}].{both[0]}")
        if any(_same(p, q) for q in listed[:i]):
            raise InputError("the same point as an earlier one: it would run twice",
                             file=file, field=f"points[{i}]")
    varied = set(grid).union(*listed)
    clash = sorted(varied & set(_flatten(as_mapping(fixed))))
    if clash:
        raise InputError(f"{clash[0]} is set for every point ({fixed_name}) and varied "
                         f"({name}): the varied values would replace it; drop one", file=file,
                         field=fixed_name if fixed_name.startswith("-")
                         else f"{fixed_name}.{clash[0]}")
    combos = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]
    return [{**p, **c} for p in listed for c in combos]


def _same(a, b) -> bool:
    """Equal as values of a key: ``2`` and ``2.0`` alike, ``1`` and ``true`` not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b)


def _run(jobs, ray, out=None, **flags):
    """The runner of ``jobs`` / ``ray``, once ``out`` (a folder the question writes, checked
    before any point runs) and the true-or-false ``flags`` (``progress``, ``fresh``) are
    what they must be."""
    out_dir(out, "out")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise InputError(f"expected true or false, got {value!r}", field=name)
    return make_runner(jobs, ray)


def sweep(experiment=None, grid=None, points=None, set=None, *, jobs: int | None = None,
          ray: str | None = None, out=None, progress: bool = True, fresh: bool = False,
          folder=None) -> SweepResult:
    """Run every point of ``grid`` x ``points`` (with ``set`` on all): one row per point,
    every varied key a column. With ``out``, rows are cached in ``out/points/`` (a re-run
    skips them) and the frame is written as ``results.csv`` and ``results.parquet``.
    Relative paths in ``grid`` and ``points`` are read from ``folder`` (default: the current
    folder), those in ``set`` from the current folder."""
    if not grid and not points:     # (one run of the experiment, with nothing varied)
        raise InputError("nothing to sweep: give grid= values or points= (a single "
                         "configuration is Simulation / load_experiment(...).run())",
                         field="grid")
    base = _point(experiment, set)
    combos = expand(grid, points, fixed=set)
    pts = [base.with_overrides(c, folder) for c in combos]
    columns = list(dict.fromkeys(k for c in combos for k in c))
    runner = _run(jobs, ray, out, progress=progress, fresh=fresh)
    try:
        outcomes = run_points(pts, runner, out=out, progress=progress, fresh=fresh,
                              desc="sweep")
    finally:
        runner.close()
    result = SweepResult(frame(pts, outcomes, columns), outcomes)
    if out is not None:
        result.save(out)
    return result


def read_sweep(path) -> dict:
    """A sweep file's parts: ``experiment`` (a path), ``set``, ``grid``, ``points``."""
    path = Path(path)
    data = read_toml_file(path, "sweep")
    check_kind(data, path, "sweep")
    t = Table(data, str(path), "")
    exp = t.get("experiment", str, None)
    out = {"set": _flatten(t.get("set", dict, {})), "grid": t.get("grid", dict, {}),
           "points": t.get("points", list, [])}
    t.done()
    if exp is None:
        raise InputError("missing; expected the experiment TOML to sweep (a path relative to "
                         "this file, or a bundled experiment)", file=str(path), field="experiment")
    found = path.parent / exp
    out["experiment"] = found if found.exists() else exp
    if not all(isinstance(p, dict) for p in out["points"]):
        raise InputError("expected [[points]] tables", file=str(path), field="points")
    if not out["grid"] and not out["points"]:
        raise InputError("nothing to sweep: expected a [grid] of values or [[points]] "
                         "('simcluster run' runs a single configuration)", file=str(path),
                         field="grid")
    expand(out["grid"], out["points"], file=str(path), fixed=out["set"])   # checks the grid
    return out


def sweep_file(path, set=None, **kw) -> SweepResult:
    """:func:`sweep` of a sweep file (its ``set`` first, then ``set``; relative paths in the
    file's values are read from its folder, those in ``set`` from the current folder)."""
    spec = read_sweep(path)
    folder = Path(path).parent
    base = ExperimentPoint.from_file(spec["experiment"], spec["set"], folder=folder)
    expand(spec["grid"], spec["points"], fixed=set, fixed_name="--set")  # (a key it varies)
    return sweep(base.with_overrides(set), spec["grid"], spec["points"], folder=folder, **kw)


def compare(experiments=None, vary: Mapping[str, Sequence] | None = None, set=None, *,
            jobs: int | None = 1, ray: str | None = None, progress: bool = True):
    """Run each experiment (a path or a list of paths) under each combination of ``vary``,
    keeping every run's frames: a :class:`~simcluster.search.compare.Comparison`."""
    files = experiments if isinstance(experiments, (list, tuple)) else [experiments]
    if not files:
        raise InputError("expected an experiment, or a list of them; got an empty list",
                         field="experiments")
    combos = expand(vary, name="vary", fixed=set)
    bases = [_point(f, set) for f in files]
    paths = [str(b.path) for b in bases]
    twice = next((p for i, p in enumerate(paths) if p in paths[:i]), None)
    if twice is not None:
        raise InputError(f"{twice} is listed twice; expected each experiment once",
                         field="experiments")
    names = [Path(p).stem for p in paths]
    if len(dict.fromkeys(names)) < len(names):   # (a/exp.toml, b/exp.toml: their paths tell)
        names = [os.path.relpath(p) for p in paths]
    pts, labels = [], []
    for base, name in zip(bases, names):
        for c in combos:
            pts.append(base.with_overrides(c))
            parts = ([name] if len(files) > 1 else []) + [f"{k}={v}" for k, v in c.items()]
            labels.append(", ".join(parts) or name)
    runner = _run(jobs, ray, progress=progress)
    try:
        return compare_points(pts, labels, runner, progress=progress)
    finally:
        runner.close()


def _slo_set(set, ttft_slo_s, tpot_slo_s) -> dict:
    """``set`` with the SLO arguments as overrides; an SLO that is not a number of seconds
    > 0 is the caller's mistake, named as their argument (not a point that fails)."""
    out = as_mapping(set)
    for name, value, key in (("ttft_slo_s", ttft_slo_s, "slo.ttft_s"),
                             ("tpot_slo_s", tpot_slo_s, "slo.tpot_s")):
        if slo_seconds(value, name) is not None:
            out[key] = value
    return out


def capacity(experiment=None, *, ttft_slo_s: float | None = None,
             tpot_slo_s: float | None = None, attainment: float = 0.9, set=None,
             rel_tol: float = 0.02, abs_tol: float | None = None, jobs: int | None = 1,
             ray: str | None = None, out=None, progress: bool = True, fresh: bool = False):
    """The highest ``trace.rate_per_s`` meeting the SLOs (the experiment's ``[slo]``, or
    these) at ``attainment``: :func:`simcluster.search.capacity.capacity`. ``abs_tol`` (req/s)
    replaces ``rel_tol``: the two together are an error."""
    if abs_tol is not None and rel_tol != 0.02:
        raise InputError("rel_tol does nothing with abs_tol, which sets the bracket's width "
                         "in req/s; give one", field="rel_tol")
    point = _point(experiment, _slo_set(set, ttft_slo_s, tpot_slo_s))
    runner = _run(jobs, ray, out, progress=progress, fresh=fresh)
    try:
        return _capacity(point, runner, attainment=attainment, rel_tol=rel_tol,
                         abs_tol=abs_tol, out=out, progress=progress, fresh=fresh)
    finally:
        runner.close()


def read_candidates(path) -> list[tuple[str, list]]:
    """A candidates file: ``[[candidates]]`` tables, each a ``name`` and ``instances``, a
    list of ``[[instances]]`` tables as in an experiment::

        [[candidates]]
        name = "4x H100"
        instances = [{device = "H100-SXM", count = 4}]
    """
    path = Path(path)
    data = read_toml_file(path, "candidates")
    check_kind(data, path, "candidates")
    top = Table(data, str(path), "")
    out = []
    for i, c in enumerate(top.get("candidates", list)):
        t = Table(c if isinstance(c, dict) else {}, str(path), f"candidates[{i}].")
        name = t.get("name", str, f"candidate {i}")
        inst = t.get("instances", list)
        t.done()
        if not inst or not all(isinstance(x, dict) for x in inst):
            raise InputError("expected a non-empty list of instance tables", file=str(path),
                             field=f"candidates[{i}].instances")
        same = [j for j, (other, _) in enumerate(out) if other == name]
        if same:        # (the results are keyed by name: one of the two would be lost)
            raise InputError(f"{name!r} names candidates[{same[0]}] too; expected each name "
                             "once", file=str(path), field=f"candidates[{i}].name")
        out.append((name, inst))
    top.done()
    if not out:
        raise InputError("no [[candidates]]", file=str(path), field="candidates")
    return out


def cheapest(experiment=None, *, rate_per_s: float, devices: Sequence[str] = (),
             tp: Sequence[int] = (1,), max_count: int = 8, attainment: float = 0.9,
             ttft_slo_s: float | None = None, tpot_slo_s: float | None = None, set=None,
             candidates=None, mixed: bool = True, jobs: int | None = 1,
             ray: str | None = None, out=None, progress: bool = True, fresh: bool = False):
    """The cheapest replicas of ``devices`` x ``tp`` serving ``rate_per_s`` within the SLOs
    (:func:`simcluster.search.cheapest.cheapest`), or the cheapest of ``candidates`` (a
    candidates file, or a list of (name, instance tables)). ``devices``: names, or one
    string of them joined by commas (``"H100-SXM,L40S"``); ``tp``: degrees, or one."""
    if isinstance(rate_per_s, bool) or not isinstance(rate_per_s, numbers.Real) \
            or not 0 < rate_per_s < float("inf"):
        raise InputError(f"expected a request rate > 0 (req/s), got {rate_per_s!r}",
                         field="rate_per_s")
    if not 0 < attainment <= 1:
        raise InputError(f"expected a share in (0, 1], got {attainment}", field="attainment")
    if isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    if isinstance(tp, str):                    # "1,2", as --tp takes it
        try:
            tp = [int(t) for t in tp.split(",") if t.strip()]
        except ValueError:
            raise InputError(f"expected TP degrees (whole numbers, e.g. [1, 2] or '1,2'), "
                             f"got {tp!r}", field="tp") from None
    tp = [tp] if isinstance(tp, numbers.Integral) else tp
    if candidates is None and not devices:
        raise InputError("cheapest needs the devices to consider (devices=['H100-SXM', "
                         "'L40S']; simcluster list devices has the names and prices) or "
                         "candidates=", field="devices")
    if candidates is not None:      # (the search's arguments would do nothing)
        search = [k for k, given in (("devices", bool(devices)), ("tp", list(tp) != [1]),
                                     ("max_count", max_count != 8), ("mixed", not mixed))
                  if given]
        if search:
            raise InputError("does nothing with candidates=, which lists the configurations "
                             "instead of a search over devices, tp, max_count, mixed",
                             field=search[0])
    point = _point(experiment, _slo_set(set, ttft_slo_s, tpot_slo_s))
    runner = _run(jobs, ray, out, progress=progress, fresh=fresh)
    kw = dict(attainment=attainment, runner=runner, out=out, progress=progress, fresh=fresh)
    try:
        if candidates is not None:
            if isinstance(candidates, (str, Path)):
                candidates = read_candidates(candidates)
            return cheapest_of(point, rate_per_s, candidates, **kw)
        return _cheapest(point, rate_per_s, devices, tp, max_count=max_count, mixed=mixed,
                         **kw)
    finally:
        runner.close()
