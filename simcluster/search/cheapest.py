"""Cheapest configuration: the replicas that serve a rate within the SLOs at the lowest price.

Candidates replace a colocated experiment's ``[[instances]]`` (its scheduler settings and
batching kept) at a fixed rate (``trace.rate_per_s``):

1. **Homogeneous** — for each device and TP degree, the fewest replicas (1..``max_count``)
   that meet the SLOs at ``attainment``, found by bisection on the count (more replicas never
   serve worse). A layout whose weights do not fit rejects every request and is recorded as
   not fitting.
2. **Mixed** — replicas of two of those families behind the experiment's router: ``a`` of X
   and ``b`` of Y with ``a < n_X`` and ``b < n_Y`` (the fewest of each that meet alone).
   Only mixes cheaper than the cheapest homogeneous answer are worth a run, and only those
   whose capacity could reach the rate: X's ``n_X - 1`` replicas fail, so one replica of X
   serves less than ``rate / (n_X - 1)`` and the mix needs ``a / (n_X - 1) + b / (n_Y - 1) >
   1``. They run in order of price, ``width`` at a time; the first that meets is the
   cheapest mix. At most ``max_mixed`` mixes run.

Price is USD per hour of every device of every replica (the device specs'
``price_usd_per_hour``); the table also gives each run's cost per million tokens.
A TP degree above one joins the devices by the intra-node link of a node spec holding the
device (NVLink on DGX/HGX), else the device's own ``host_link`` (PCIe).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from simcluster.errors import InputError, whole_number

from simcluster.hardware import list_nodes, load_device, load_node
from simcluster.search.capacity import burst_note, is_burst, meets, rejection_note
from simcluster.search.sweep import points_bar, run_points

COLUMNS = ["config", "kind", "usd_per_hour", "meets", "slo_attainment", "cost_per_m_tokens_usd",
           "ttft_p90_s", "tpot_p90_s", "mfu_mean", "mbu_mean", "error"]


def tp_link(device: str) -> str | None:
    """The link that joins ``device``s of one TP group (see the module docstring)."""
    spec = load_device(device)
    for node in list_nodes():
        n = load_node(node)
        if spec.name in n.device_names and n.intra_link:
            return n.intra_link
    return spec.host_link


@dataclass(frozen=True)
class Family:
    """Replicas of one device at one TP degree."""

    device: str
    tp: int

    @property
    def usd_per_hour(self) -> float:
        return self.tp * load_device(self.device).price_usd_per_hour

    @property
    def label(self) -> str:
        return f"{self.device} tp{self.tp}"

    def table(self, base: dict, count: int) -> dict:
        """An ``[[instances]]`` table: the base's settings with this device, TP and count."""
        t = {k: v for k, v in base.items() if k not in ("device", "devices", "tp", "count",
                                                        "link", "name", "partition",
                                                        "partition_params")}
        t.update(device=self.device, tp=self.tp, count=count, name=self.device)
        if self.tp > 1:
            link = tp_link(self.device)
            if link is None:
                raise InputError(f"{self.device} has no link for tensor parallelism (no node "
                                 "spec holds it and it names no host_link)", field="--tp")
            t["link"] = link
        return t


@dataclass
class CheapestResult:
    """The cheapest configuration that meets (None if none did) and every candidate run;
    ``burst`` when its run measured a burst absorbed, not the rate sustained
    (:func:`~.capacity.is_burst`)."""

    best: dict | None
    candidates: pd.DataFrame
    rate_per_s: float
    attainment: float
    note: str = ""
    burst: bool = False

    def __repr__(self) -> str:
        return f"<CheapestResult: {self}; .best, .candidates>"

    def __str__(self) -> str:
        if self.best is None:
            return (f"no candidate serves {self.rate_per_s:.4g} req/s at "
                    f"{self.attainment:.0%} SLO attainment{self.note}")
        return (f"cheapest at {self.rate_per_s:.4g} req/s: {self.best['config']} "
                f"({self.best['usd_per_hour']:.4g} USD/h, attainment "
                f"{self.best['slo_attainment']:.3f}, {self.best['cost_per_m_tokens_usd']:.4g} "
                f"USD per M tokens){self.note}")


class _Runs:
    """Candidates evaluated so far: config label -> (usd/h, kind, outcome)."""

    def __init__(self, point, runner, attainment, kw):
        from simcluster.search.runners import SerialRunner
        self.point, self.attainment = point, attainment
        self.runner = runner or SerialRunner()
        self.own_bar = kw["progress"] is True
        given = kw["progress"]
        bar = (points_bar(0, "cheapest", self.runner) if self.own_bar
               else None if given is False or given is None else given)
        self.kw = dict(kw, progress=bar)
        self.done: dict[str, tuple] = {}

    def close(self):
        if self.own_bar:
            self.kw["progress"].close()

    def run(self, cands: list[tuple[str, str, float, list]]) -> list[bool]:
        todo = [c for c in cands if c[0] not in self.done]
        # (the tables copy the point's first [[instances]] table: a relative path left in one,
        # a stage_link spec, is read from where the point's own paths are)
        folder = getattr(self.point, "folder", None)
        pts = [self.point.with_overrides({"instances": tables}, folder)
               for _, _, _, tables in todo]
        for (label, kind, usd, _), o in zip(todo, run_points(pts, self.runner, **self.kw)):
            self.done[label] = (kind, usd, o)
        return [meets(self.done[c[0]][2], self.attainment) for c in cands]

    def frame(self) -> pd.DataFrame:
        rows = []
        for label, (kind, usd, o) in self.done.items():
            rows.append({"config": label, "kind": kind, "usd_per_hour": usd,
                         "meets": meets(o, self.attainment),
                         **{k: o.row.get(k, math.nan) for k in COLUMNS[4:-1]},
                         "error": o.error or o.row.get("failure", "")})
        df = pd.DataFrame(rows, columns=COLUMNS)
        return df.sort_values(["meets", "usd_per_hour"], ascending=[False, True],
                              kind="stable").reset_index(drop=True)


def _closest_note(runs: _Runs) -> str:
    """When no candidate meets: the rejections of the one closest to meeting (the highest
    attainment), which no number of replicas of its kind removes."""
    ran = [(label, o) for label, (_, _, o) in runs.done.items() if o.ok]
    if not ran:
        return ""
    label, o = max(ran, key=lambda lo: _attained(lo[1]))
    note = rejection_note(o)
    return f"; the closest, {label}, {note}" if note else ""


def _attained(o) -> float:
    a = o.row.get("slo_attainment", math.nan)
    return a if a == a else -1.0


def _homogeneous(runs: _Runs, fams: list[Family], base: dict, max_count: int) -> dict:
    """Family -> the fewest replicas that meet (None: not even ``max_count``)."""
    def cand(f, n):
        return (f"{n}x {f.label}", "homogeneous", n * f.usd_per_hour, [f.table(base, n)])
    ok_max = runs.run([cand(f, max_count) for f in fams])
    lo = {f: 0 for f in fams}                          # lo fails (0: vacuous), hi meets
    hi = {f: max_count for f, ok in zip(fams, ok_max) if ok}
    while True:
        live = [f for f in hi if hi[f] - lo[f] > 1]
        if not live:
            return {f: hi.get(f) for f in fams}
        mids = {f: (lo[f] + hi[f]) // 2 for f in live}
        for f, ok in zip(live, runs.run([cand(f, mids[f]) for f in live])):
            if ok:
                hi[f] = mids[f]
            else:
                lo[f] = mids[f]


def _mixes(fewest: dict, base: dict, budget: float, max_count: int) -> list:
    out = []
    fams = [f for f, n in fewest.items() if n is not None and n > 1]
    for x, y in itertools.combinations(fams, 2):
        nx, ny = fewest[x], fewest[y]
        for a in range(1, nx):
            for b in range(1, ny):
                usd = a * x.usd_per_hour + b * y.usd_per_hour
                if a + b > max_count or usd >= budget or a / (nx - 1) + b / (ny - 1) <= 1:
                    continue
                out.append((f"{a}x {x.label} + {b}x {y.label}", "mixed", usd,
                            [x.table(base, a), y.table(base, b)]))
    return sorted(out, key=lambda c: (c[2], c[0]))


def cheapest(point, rate_per_s: float, devices, tp=(1,), *, max_count: int = 8,
             attainment: float = 0.9, mixed: bool = True, max_mixed: int = 64, runner=None,
             out=None, progress: bool = True, fresh: bool = False) -> CheapestResult:
    """The cheapest replicas of ``devices`` x ``tp`` serving ``rate_per_s`` (see the module
    docstring). ``point`` is a colocated experiment (one ``[[instances]]`` table) with SLOs."""
    instances = point.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or instances[0].get("pool") \
            or point.get("disaggregation") is not None:
        raise InputError("cheapest varies the replicas of a colocated experiment: give one "
                         "with a single [[instances]] table and no [disaggregation] (or "
                         "--candidates)", field="instances")
    if point.get("slo.ttft_s") is None and point.get("slo.tpot_s") is None:
        raise InputError("cheapest needs an SLO: set slo.ttft_s and/or slo.tpot_s (--ttft-slo, "
                         "--tpot-slo)", field="slo")
    whole_number(max_count, "max_count")
    for t in tp:
        whole_number(t, "tp")
    if not isinstance(mixed, bool):
        raise InputError(f"expected true or false, got {mixed!r}", field="mixed")
    base = instances[0]
    fams = [Family(load_device(d).name, int(t)) for d in devices for t in tp]
    runs = _Runs(point.with_overrides({"trace.rate_per_s": float(rate_per_s)}), runner,
                 attainment, dict(out=out, progress=progress, fresh=fresh))
    try:
        return _search(runs, fams, base, max_count, mixed, max_mixed, rate_per_s, attainment)
    finally:
        runs.close()


def _search(runs, fams, base, max_count, mixed, max_mixed, rate_per_s, attainment):
    fewest = _homogeneous(runs, fams, base, max_count)
    feasible = [(n * f.usd_per_hour, f, n) for f, n in fewest.items() if n is not None]
    budget = min(feasible, key=lambda c: c[0])[0] if feasible else math.inf
    note = ""
    if mixed and feasible:
        mixes = _mixes(fewest, base, budget, max_count)
        if len(mixes) > max_mixed:
            note = f" ({len(mixes) - max_mixed} costlier mixes not run: max_mixed={max_mixed})"
            mixes = mixes[:max_mixed]
        width = max(1, getattr(runs.runner, "workers", 1))
        for i in range(0, len(mixes), width):
            if any(runs.run(mixes[i:i + width])):
                break
    return _answer(runs, rate_per_s, attainment, note)


def cheapest_of(point, rate_per_s: float, candidates, *, attainment: float = 0.9,
                runner=None, out=None, progress: bool = True,
                fresh: bool = False) -> CheapestResult:
    """The cheapest of listed ``candidates`` — ``(name, [instance tables])`` replacing the
    experiment's ``instances`` — that serves ``rate_per_s`` within the SLOs; price from each
    run's ``cost_usd_per_hour``."""
    if point.get("slo.ttft_s") is None and point.get("slo.tpot_s") is None:
        raise InputError("cheapest needs an SLO: set slo.ttft_s and/or slo.tpot_s (--ttft-slo, "
                         "--tpot-slo)", field="slo")
    candidates = list(candidates)
    for i, c in enumerate(candidates):
        if not (isinstance(c, (tuple, list)) and len(c) == 2 and isinstance(c[0], str)
                and isinstance(c[1], list) and c[1]
                and all(isinstance(t, Mapping) for t in c[1])):
            raise InputError(f"expected (name, [instance tables]), e.g. ('4x H100', "
                             f"[{{'device': 'H100-SXM', 'count': 4}}]); got {c!r}",
                             field=f"candidates[{i}]")
    names = [c[0] for c in candidates]
    if not names:
        raise InputError("expected at least one candidate", field="candidates")
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:      # (the results are keyed by name: one would be lost)
        raise InputError(f"{twice!r} names two candidates; expected each name once",
                         field="candidates")
    runs = _Runs(point.with_overrides({"trace.rate_per_s": float(rate_per_s)}), runner,
                 attainment, dict(out=out, progress=progress, fresh=fresh))
    try:
        runs.run([(name, "listed", math.nan, tables) for name, tables in candidates])
    finally:
        runs.close()
    for label, (kind, _, o) in list(runs.done.items()):
        runs.done[label] = (kind, o.row.get("cost_usd_per_hour", math.nan), o)
    return _answer(runs, rate_per_s, attainment)


def _answer(runs: _Runs, rate_per_s, attainment, note: str = "") -> CheapestResult:
    """The cheapest that meets, with why none did (:func:`_closest_note`) or whether its run
    measured a burst rather than the rate sustained (:func:`~.capacity.burst_note`)."""
    table = runs.frame()
    if not table.meets.any():
        return CheapestResult(None, table, float(rate_per_s), attainment,
                              note + _closest_note(runs))
    best = table[table.meets].iloc[0].to_dict()
    o = runs.done[best["config"]][2]
    return CheapestResult(best, table, float(rate_per_s), attainment,
                          note + burst_note(o, rate_per_s), burst=is_burst(o))
