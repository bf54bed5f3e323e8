"""Designs of LLMShare's space simulated: a design row -> a serving system -> its objectives.

A row of :func:`~simcluster.search.design.space.llmshare_space`'s candidate table holds both
pools' ten numbers (``prefill_servers``, ``prefill_devices_per_server``, ...,
``decode_vector_width``). :func:`serving_design` makes it issue 14's
:class:`~simcluster.hardware.parametric.ServingDesign`, and :class:`ServingEvaluator` runs
:func:`~simcluster.simulation.design.evaluate_design` on a trace and a model and returns every
figure a search may minimise (:data:`METRICS`): serving time, latency percentiles, purchase
price, dollars per hour, run cost, energy.

A design that cannot serve the trace — its servers cannot hold the weights, its device is
beyond a plausible one, or it rejected requests — is *infeasible*: its time and latency figures
are NaN and ``reason`` says why (its price is still stated). The evaluator is picklable (the
trace travels as plain arrays), so :class:`~simcluster.search.design.evaluate.CachedEvaluator`
runs it in worker processes or Ray tasks as it is.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from simcluster.errors import InputError
from simcluster.hardware.parametric import (H100_PREFILL_ROW, ROW_FIELDS, AcceleratorDesign,
                                            PoolDesign, ServingDesign, parse_row)
from simcluster.paths import code_digest
from simcluster.search.design.space import POOLS

#: figures an evaluation returns, each minimisable, with its unit
METRICS: dict[str, str] = {
    "serving_time_s": "s, first arrival to last finish",
    "ttft_p50_s": "s", "ttft_p90_s": "s", "ttft_p99_s": "s",
    "tpot_p50_s": "s", "tpot_p90_s": "s", "tpot_p99_s": "s",
    "e2e_p50_s": "s", "e2e_p90_s": "s", "e2e_p99_s": "s",
    "capex_usd": "USD, both pools' servers' purchase price",
    "usd_per_hour": "USD/h, amortised ownership, colocation and energy",
    "run_cost_usd": "USD, usd_per_hour over the serving time",
    "energy_kwh": "kWh, device energy of the run",
}
#: figures that exist only for a design that served the trace (NaN when infeasible)
SERVED = tuple(m for m in METRICS if m not in ("capex_usd", "usd_per_hour"))
#: what else each evaluation records (not objectives)
EXTRAS = ("requests", "finished", "rejected", "requests_per_s", "slo_attainment",
          "server_moves", "prefill_die_mm2", "decode_die_mm2", "fits_reticle",
          "eval_s")                    # eval_s: seconds this evaluation took (wall clock)


def pool_columns(pool: str) -> list[str]:
    """The candidate table's columns of one pool, in the source's row order."""
    return [f"{pool}_{f}" for f in ROW_FIELDS]


def serving_design(design: Mapping, stated: Mapping | None = None) -> ServingDesign:
    """The serving system of one design row (``{pool}_{field}`` -> number).

    ``stated`` sets the stated device parameters of both pools (``clock_hz``,
    ``memory_technology``, ...; :class:`~simcluster.hardware.parametric.AcceleratorDesign`).
    A missing column, or a value that is not a whole number where one is needed, fails naming
    the column.
    """
    pools = []
    for pool in POOLS:
        cols = pool_columns(pool)
        missing = [c for c in cols if c not in design]
        if missing:
            raise InputError(f"the design lacks {missing}", field=missing[0])
        values = []
        for c in cols:
            v = design[c]
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise InputError(f"expected a number, got {v!r}", field=c) from None
            values.append(v)
        try:
            pools.append(parse_row(values, **dict(stated or {})))
        except InputError as err:
            raise InputError(err.reason, field=f"{pool}_{err.field}" if err.field in
                             ROW_FIELDS else err.field) from None
    return ServingDesign(*pools)


def design_row(design: ServingDesign) -> dict:
    """The inverse of :func:`serving_design`: a design's row (``{pool}_{field}`` -> number)."""
    out = {}
    for pool, p in zip(POOLS, (design.prefill, design.decode)):
        values = [p.servers] + [getattr(p.design, f) for f in ROW_FIELDS[1:]]
        out.update({f"{pool}_{f}": v for f, v in zip(ROW_FIELDS, values)})
    return out


@dataclass
class ServingEvaluator:
    """``design row -> {metric: value, ..., "reason": str}`` by simulating the trace.

    ``options`` go to :func:`~simcluster.simulation.design.evaluate_design` (``routing``,
    ``routing_params``, ``rebalancer``, ``rebalancer_params``, ``network_link``,
    ``reload_s``, ``calibration``, ``config``); ``stated`` to :func:`serving_design`.
    """

    trace: object
    model: object
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None
    stated: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        import inspect

        from simcluster.simulation.design import evaluate_design
        known = set(inspect.signature(evaluate_design).parameters) - {
            "design", "trace", "model", "ttft_slo_s", "tpot_slo_s"}
        unknown = sorted(set(self.options) - known)
        if unknown:
            raise InputError(f"unknown evaluation options {unknown}; known: {sorted(known)}",
                             field="options")
        bad = sorted(set(self.stated) - {f.name for f in
                                         AcceleratorDesign.__dataclass_fields__.values()}
                     | (set(self.stated) & set(ROW_FIELDS)))
        if bad:
            raise InputError(f"unknown stated parameters {bad}", field="stated")
        try:        # a stated value no device can have fails here, not in every evaluation
            parse_row(H100_PREFILL_ROW, **self.stated)
        except InputError as err:
            raise InputError(err.reason, field=f"stated.{err.field}") from None

    def __call__(self, design: Mapping) -> dict:
        from simcluster.simulation.design import evaluate_design
        t0 = time.perf_counter()
        ev = evaluate_design(serving_design(design, self.stated), self.trace, self.model,
                             ttft_slo_s=self.ttft_slo_s, tpot_slo_s=self.tpot_slo_s,
                             **self.options)
        return {**evaluation_row(ev), "eval_s": time.perf_counter() - t0}

    def fingerprint(self) -> str:
        """A hash of everything the figures depend on besides the design: the trace's
        requests, the model, the SLOs, stated parameters and options, and the simulator
        itself (its source and bundled hardware data), for :class:`CachedEvaluator`'s
        ``context``."""
        h = hashlib.sha256(pickle.dumps(self.__getstate__(), protocol=4))
        h.update(code_digest().encode())
        return h.hexdigest()[:16]

    def evaluate_pools(self, prefill: PoolDesign, decode: PoolDesign) -> dict:
        """The same figures for a design given as pools (e.g. the H100 cluster's rows)."""
        return self(design_row(ServingDesign(prefill, decode)))

    # the trace holds read-only mappings that do not pickle: it travels as its fields
    def __getstate__(self):
        state = dict(self.__dict__)
        t = state["trace"]
        state["trace"] = (type(t), {k: (dict(v) if isinstance(v, Mapping) else v)
                                    for k, v in vars(t).items()})
        return state

    def __setstate__(self, state):
        cls, fields = state["trace"]
        state["trace"] = cls(**fields)
        self.__dict__.update(state)


def _short(reason: str) -> str:
    """An out-of-memory reason names every rank of every pool alike: keep each pool's first."""
    parts = reason.split("; ")
    kept = {}
    for p in parts:
        kept.setdefault(p.split(":", 1)[0], p)
    more = len(parts) - len(kept)
    return "; ".join(kept.values()) + (f" (and {more} more ranks alike)" if more else "")


def evaluation_row(ev) -> dict:
    """A :class:`~simcluster.simulation.design.DesignEvaluation` as a flat row of figures."""
    s = ev.summary
    served = ev.feasible and ev.rejected == 0
    reason = _short(ev.infeasible) if not ev.feasible else (
        "" if served else f"rejected {ev.rejected} of {ev.requests} requests")
    row = {m: math.nan for m in METRICS}
    row.update(capex_usd=ev.capex_usd, usd_per_hour=ev.usd_per_hour)
    if served:
        row.update(serving_time_s=ev.serving_time_s, run_cost_usd=ev.run_cost_usd,
                   energy_kwh=ev.energy_kwh)
        row.update({m: float(s.get(m, math.nan)) for m in METRICS if m[:4] in
                    ("ttft", "tpot", "e2e_")})
    row.update(requests=ev.requests, finished=ev.finished, rejected=ev.rejected,
               requests_per_s=ev.requests_per_s if served else math.nan,
               slo_attainment=ev.slo_attainment if served else math.nan,
               server_moves=ev.server_moves, prefill_die_mm2=ev.die_area_mm2[0],
               decode_die_mm2=ev.die_area_mm2[1], fits_reticle=bool(ev.fits_reticle),
               reason=reason)
    return row
