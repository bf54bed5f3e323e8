"""A design search: one TOML file (``simcluster search SPACE.toml``) -> a checked SearchSpec.

    name = "llmshare-search"
    seed = 0                      the search's seed (initial designs, model weights, sampling)
    objectives = ["serving_time_s", "capex_usd"]    two minimised figures of
                 simcluster.search.design.serving.METRICS: a time (serving_time_s, or a latency
                 percentile ttft_p90_s, tpot_p99_s, e2e_p50_s, ...) and a cost (capex_usd,
                 usd_per_hour, run_cost_usd, energy_kwh)
    [space.prefill], [space.decode]   the design space, per pool: any of servers,
                 devices_per_server, links_per_device, memory_gb, global_buffer_mb, cores,
                 local_buffer_kb, lanes, array_height, vector_width, each a list of values or a
                 range {min = 64, max = 512, step = 64} (both ends included); a parameter not
                 given takes the values of LLMShare's Table 1
    [space]      stated = {clock_hz = 1.83e9, memory_technology = "HBM3", ...}: the stated
                 device parameters of both pools (simcluster.hardware.parametric)
    [trace], [model], [slo]   as in an experiment TOML (simcluster.experiment)
    [pools]      network_link, routing, routing_params, rebalancer, rebalancer_params, reload_s
                 (simcluster.simulation.design.evaluate_design; defaults: Splitwise with
                 layer-wise overlap, threshold rebalancer, IB-NDR400)
    [scheduler]  the servers' scheduler settings, as [instances.scheduler] of an experiment
    [cost]       calibration = "measured"
    [budget]     initial = 10, iterations = 20, batch_size = 1, candidates = 5000 (designs
                 drawn from the space, seeded, for the search to choose among; the whole space
                 when it holds no more; "all" enumerates it, up to 1,000,000 designs)
    [search]     method = "llmshare" (simcluster.search.design.METHODS), mci_groups = 5,
                 ref_point = [time, cost] (the reported hypervolume's reference; default: the
                 initial designs' nadir plus 10% of their range), workers = 1, ray = "local"
                 (or a cluster's address: evaluations as Ray tasks), table = "designs.csv"
                 (answer from designs simulated beforehand, e.g. benchmarks/data/
                 llmshare_designs.csv, instead of simulating; the candidates are its designs)
    [baseline]   name = "H100 cluster", prefill = "7,8,18,80,...", decode = "6,8,18,80,...":
                 the design the front is compared with (default: LLMShare's H100 rows);
                 skip = true for none

Every key is checked: an unknown or mistyped key fails naming the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simcluster.errors import InputError
from simcluster.experiment import sections
from simcluster.experiment.tables import Table, check_kind, positive
from simcluster.hardware import read_toml_file
from simcluster.hardware.parametric import (DESIGN_SPACE, H100_DECODE_ROW, H100_PREFILL_ROW,
                                            ROW_FIELDS, parse_row)
from simcluster.search.design import METHODS, DesignSpace, llmshare_space
from simcluster.search.design.evaluate import read_table
from simcluster.search.design.serving import METRICS, ServingEvaluator
from simcluster.search.design.space import POOLS

#: fields whose values need not be whole numbers
FRACTIONAL = ("memory_gb", "global_buffer_mb", "local_buffer_kb")
DEFAULT_CANDIDATES = 5000


@dataclass(frozen=True)
class SearchSpec:
    """A design search, resolved and checked."""

    name: str
    seed: int
    source: str
    space: DesignSpace
    objectives: tuple[str, str]
    evaluator: ServingEvaluator
    method: str = "llmshare"
    n_init: int = 10
    n_iter: int = 20
    batch_size: int = 1
    candidates: int | str | None = None         # a count, "all", or None (the default rule)
    mci_groups: int = 5
    ref_point: tuple[float, float] | None = None
    workers: int = 1
    ray: str | None = None
    table: Path | None = None
    baseline: tuple[str, str, str] | None = ("H100 cluster", H100_PREFILL_ROW, H100_DECODE_ROW)
    options: dict = field(default_factory=dict)

    def candidate_table(self) -> pd.DataFrame:
        """The designs the search chooses among (seeded by the spec's seed)."""
        if self.table is not None:
            return self.space.validate(read_table(self.table), source=str(self.table))
        n = self.candidates
        if n == "all":
            return self.space.enumerate()
        if n is None:
            n = DEFAULT_CANDIDATES
        if n >= self.space.size:
            return self.space.enumerate()
        return self.space.sample(n, np.random.default_rng([self.seed, 1]))


def _values(t: Table, key: str, pool: str) -> tuple[float, ...]:
    raw = t.get(key, (list, dict))
    where = f"{t.where}{key}"
    if isinstance(raw, dict):
        r = Table(raw, t.file, where + ".")
        lo = r.get("min", float, check=positive)
        hi = r.get("max", float, check=positive)
        step = r.get("step", float, 1.0, check=positive)
        r.done()
        if hi < lo:
            raise InputError(f"max {hi:g} is below min {lo:g}", file=t.file, field=where)
        count = math.floor((hi - lo) / step + 1e-9) + 1
        if count > 10_000:
            raise InputError(f"the range holds {count} values; at most 10,000",
                             file=t.file, field=where)
        raw = [lo + i * step for i in range(count)]
    if not raw:
        raise InputError("expected at least one value", file=t.file, field=where)
    out = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v <= 0:
            raise InputError(f"expected positive numbers, got {v!r}", file=t.file, field=where)
        if key not in FRACTIONAL and float(v) != int(v):
            raise InputError(f"expected whole numbers, got {v!r}", file=t.file, field=where)
        out.append(int(v) if float(v) == int(v) else float(v))
    if len(set(out)) != len(out):
        raise InputError(f"values repeat: {raw}", file=t.file, field=where)
    return tuple(out)


def _space(t: Table | None) -> tuple[DesignSpace, dict]:
    overrides: dict[str, tuple] = {}
    stated: dict = {}
    if t is not None:
        stated = t.get("stated", dict, {})
        for pool in POOLS:
            p = t.sub(pool)
            if p is None:
                continue
            for key in list(p.data):
                if key not in DESIGN_SPACE:
                    break                     # p.done() names it with the known keys
                overrides[f"{pool}_{key}"] = _values(p, key, pool)
            for key in ROW_FIELDS:
                p.seen.add(key)
            p.done()
        t.done()
    try:
        return llmshare_space(overrides), stated
    except InputError as err:
        raise InputError(err.reason, file=t.file if t else None,
                         field=f"space.{err.field}" if err.field else "space") from None


def _budget(t: Table | None) -> dict:
    if t is None:
        return {}
    out = {"n_init": t.get("initial", int, 10, check=lambda v: v >= 2),
           "n_iter": t.get("iterations", int, 20, check=lambda v: v >= 0),
           "batch_size": t.get("batch_size", int, 1, check=positive)}
    cand = t.get("candidates", (int, str), None)
    if cand is not None and not (cand == "all" or (isinstance(cand, int) and cand >= 2)):
        raise InputError(f'expected a number of designs >= 2 or "all", got {cand!r}',
                         file=t.file, field="budget.candidates")
    out["candidates"] = cand
    t.done()
    return out


def _search(t: Table | None, base: Path) -> dict:
    if t is None:
        return {}
    out = {"method": t.get("method", str, "llmshare"),
           "mci_groups": t.get("mci_groups", int, 5, check=positive),
           "workers": t.get("workers", int, 1, check=positive),
           "ray": t.get("ray", str, None)}
    if out["method"] not in METHODS:
        raise InputError(f"unknown search method {out['method']!r}; known: "
                         f"{', '.join(METHODS)}", file=t.file, field="search.method")
    ref = t.get("ref_point", list, None)
    if ref is not None:
        if len(ref) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                    and math.isfinite(v) and v > 0 for v in ref):
            raise InputError(f"expected two positive numbers [time, cost], got {ref!r}",
                             file=t.file, field="search.ref_point")
        out["ref_point"] = (float(ref[0]), float(ref[1]))
    table = t.get("table", str, None)
    if table is not None:
        p = Path(table)
        out["table"] = p if p.is_absolute() else base / p
        if not out["table"].exists():
            raise InputError(f"no such table of evaluated designs: {out['table']}",
                             file=t.file, field="search.table")
    t.done()
    return out


def _baseline(t: Table | None):
    default = ("H100 cluster", H100_PREFILL_ROW, H100_DECODE_ROW)
    if t is None:
        return default
    skip = t.get("skip", bool, False)
    name = t.get("name", str, default[0])
    rows = [t.get(pool, str, row) for pool, row in zip(POOLS, default[1:])]
    t.done()
    for pool, row in zip(POOLS, rows):
        try:
            parse_row(row)
        except InputError as err:
            raise InputError(err.reason, file=t.file, field=f"baseline.{pool}") from None
    return None if skip else (name, *rows)


def _pools(t: Table | None) -> dict:
    if t is None:
        return {}
    from simcluster.hardware import load_link
    from simcluster.policies.registry import POOL_ROUTERS, REBALANCERS
    out = {"network_link": t.get("network_link", str, "IB-NDR400"),
           "routing": t.get("routing", str, "splitwise", check=lambda v: v in POOL_ROUTERS),
           "routing_params": t.get("routing_params", dict, None),
           "rebalancer": t.get("rebalancer", str, "threshold", check=lambda v: v in REBALANCERS),
           "rebalancer_params": t.get("rebalancer_params", dict, None),
           "reload_s": t.get("reload_s", float, None, check=lambda v: v >= 0)}
    try:
        load_link(out["network_link"])
    except (InputError, KeyError) as err:
        raise InputError(str(err.args[0] if err.args else err), file=t.file,
                         field="pools.network_link") from None
    t.done()
    return {k: v for k, v in out.items() if v is not None}


def bundled_searches() -> list[str]:
    """The names of the bundled design searches (``simcluster search NAME``), sorted."""
    from simcluster.experiment import experiments_dir
    return sorted(f.stem for f in (experiments_dir() / "search").glob("*.toml"))


def search_path(path) -> Path:
    """The file of a design search: a path, or a bundled search's name (``tiny``,
    ``llmshare_search.toml``: ``simcluster search tiny`` works from any folder), or a path
    under the bundled experiments folder (``search/tiny.toml``). Otherwise InputError
    listing the bundled searches."""
    from simcluster.errors import unknown_name
    from simcluster.experiment import experiments_dir
    p = Path(path).expanduser()
    if p.exists():
        return p
    bundled = experiments_dir() / "search"
    candidates = [experiments_dir() / p]
    if p.parent == Path("."):
        candidates[:0] = [bundled / p, bundled / f"{p}.toml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    err = unknown_name("search", str(path), bundled_searches(), hint=" (bundled), or the path of a "
                       "search TOML file")
    raise InputError(f"no such search file; {err.reason}", file=str(p))


def load_search(path) -> SearchSpec:
    """Read and check a design-search TOML (see the module docstring): a path or a bundled
    search's name (:func:`search_path`)."""
    path = search_path(path)
    data = read_toml_file(path, "search")
    check_kind(data, path, "search")
    top = Table(data, str(path), "", path.parent)
    name = top.get("name", str, path.stem)
    seed = top.get("seed", int, 0, check=lambda v: v >= 0, expect=">= 0")
    objectives = tuple(top.get("objectives", list, ["serving_time_s", "capex_usd"]))
    if len(objectives) != 2 or len(set(objectives)) != 2 or not all(
            isinstance(o, str) and o in METRICS for o in objectives):
        raise InputError(f"expected two different figures of {', '.join(METRICS)}; got "
                         f"{list(objectives)}", file=str(path), field="objectives")
    space, stated = _space(top.sub("space"))
    trace = sections.read_trace(top.sub("trace", required=True), np.random.default_rng(seed))
    model = sections.read_model(top.sub("model", required=True))
    slo = top.sub("slo")
    ttft = tpot = None
    if slo is not None:
        ttft = slo.get("ttft_s", float, None, check=positive)
        tpot = slo.get("tpot_s", float, None, check=positive)
        slo.done()
    options = _pools(top.sub("pools"))
    if "scheduler" in top.data:
        options["config"] = sections._config(top, model)
    cost = top.sub("cost")
    if cost is not None:
        options["calibration"] = cost.get("calibration", str, "measured")
        cost.done()
    budget = _budget(top.sub("budget"))
    search = _search(top.sub("search"), path.parent)
    baseline = _baseline(top.sub("baseline"))
    top.done()
    try:
        evaluator = ServingEvaluator(trace, model, ttft, tpot, stated=stated, options=options)
    except InputError as err:
        raise InputError(err.reason, file=str(path), field=f"space.{err.field}") from None
    spec = SearchSpec(name, seed, str(path), space, objectives, evaluator, baseline=baseline,
                      options=options, **budget, **search)
    check_spec(spec)
    return spec


def check_spec(spec: SearchSpec):
    """The checks that span sections (also after a command line overrides a setting)."""
    if spec.method not in METHODS:
        raise InputError(f"unknown search method {spec.method!r}; known: {', '.join(METHODS)}",
                         file=spec.source, field="search.method")
    if isinstance(spec.workers, bool) or not isinstance(spec.workers, int) or spec.workers < 1:
        raise InputError(f"expected a whole number >= 1, got {spec.workers!r}",
                         file=spec.source, field="search.workers")
    total = spec.n_init + spec.n_iter * spec.batch_size
    room = (spec.space.size if spec.table is None and spec.candidates in (None, "all")
            else spec.candidates if isinstance(spec.candidates, int) else None)
    if spec.table is None and room is not None and total > min(room, spec.space.size):
        raise InputError(f"the budget ({spec.n_init} initial + {spec.n_iter} x "
                         f"{spec.batch_size} = {total} designs) exceeds the "
                         f"{min(room, spec.space.size)} candidates", file=spec.source,
                         field="budget")
    if spec.table is not None and spec.candidates is not None:
        raise InputError("candidates come from [search] table; drop budget.candidates",
                         file=spec.source, field="budget.candidates")
