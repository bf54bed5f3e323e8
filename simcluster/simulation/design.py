"""Evaluate a serving design: both pools' parameters and server counts -> time, cost, energy.

The entry point of a hardware design-space search (LLMShare's simulator: "serving system
configuration, model, trace -> serving time and total cost"):

    from simcluster.hardware.parametric import ServingDesign, parse_row
    design = ServingDesign(parse_row("7,8,18,80,50,132,256,4,16,32"),
                           parse_row("6,8,18,80,50,132,256,4,16,32"))
    ev = evaluate_design(design, trace, model_preset("gpt-3-175b"))
    ev.serving_time_s, ev.capex_usd, ev.usd_per_hour

Each pool's servers become instances (one per server, tensor parallel over its devices) of a
:class:`~simcluster.cluster.PhasePoolCluster`, timed by the tile model; a design whose servers
cannot hold the model's weights is answered at once as infeasible (``feasible`` False, the
reason in ``infeasible``, infinite serving time), without simulating; so is one whose device
falls outside a device spec's plausible ranges (e.g. more than 20 kW or 1e17 FLOP/s: LLMShare's
space holds 180-core, 8-lane, 128 x 128-array designs). Designs are plain frozen
data, so evaluations run in parallel processes as they are (``concurrent.futures``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Mapping

from simcluster.calibration import load_calibration
from simcluster.cluster import InstanceSpec, PhasePoolCluster
from simcluster.cost import CostModel, Layout
from simcluster.cost.memory import memory_plan
from simcluster.errors import InputError
from simcluster.hardware import load_link
from simcluster.hardware.area import die_area
from simcluster.hardware.designed import designed_device
from simcluster.hardware.parametric import ServingDesign
from simcluster.hardware.tco import design_cost
from simcluster.serving.config import InstanceConfig
from simcluster.simulation.simulation import Simulation, as_model, as_trace


@dataclass(frozen=True)
class DesignEvaluation:
    """What one design did on one trace (times in s, money in USD, energy in kWh)."""

    feasible: bool
    infeasible: str
    serving_time_s: float          # first arrival to last finish
    requests: int
    finished: int
    rejected: int
    requests_per_s: float          # finished / serving time
    capex_usd: float               # the servers' purchase price, both pools
    usd_per_hour: float            # amortised ownership, colocation and energy, both pools
    run_cost_usd: float            # usd_per_hour over the serving time
    energy_kwh: float
    ttft_p90_s: float
    tpot_p90_s: float
    slo_attainment: float
    die_area_mm2: tuple[float, float]
    fits_reticle: bool
    server_moves: int
    summary: dict = field(default_factory=dict, repr=False, compare=False)


def _pool_spec(pool, role: str, config: InstanceConfig) -> InstanceSpec:
    d = pool.design
    layout = Layout.uniform(designed_device(d), tp=d.devices_per_server, link=d.link_spec())
    return InstanceSpec(layout, config, count=pool.servers, name=role, pool=role)


def _money(design) -> tuple[float, float, tuple[float, float], bool]:
    costs = [(p.servers, design_cost(p.design)) for p in (design.prefill, design.decode)]
    capex = sum(n * c.server_price_usd for n, c in costs)
    per_hour = sum(n * c.usd_per_hour for n, c in costs)
    areas = tuple(die_area(p.design).total_mm2 for p in (design.prefill, design.decode))
    return capex, per_hour, areas, all(c.fits_reticle for _, c in costs)


def evaluate_design(design, trace, model, *, routing: str = "splitwise",
                    routing_params: Mapping | None = None, rebalancer: str | None = "threshold",
                    rebalancer_params: Mapping | None = None,
                    network_link: str = "IB-NDR400", reload_s: float | None = None,
                    config: InstanceConfig = InstanceConfig(), calibration: str = "measured",
                    ttft_slo_s: float | None = None,
                    tpot_slo_s: float | None = None) -> DesignEvaluation:
    """Simulate ``trace`` on ``design`` (a :class:`~simcluster.hardware.parametric.
    ServingDesign`) serving ``model``; see the module docstring. ``trace`` and ``model``
    may be names or paths, as :class:`~simcluster.simulation.Simulation` takes them."""
    if not isinstance(design, ServingDesign):
        raise TypeError(f"design: expected a ServingDesign (prefill and decode PoolDesigns); "
                        f"got {type(design).__name__}")
    trace, model = as_trace(trace), as_model(model)
    capex, per_hour, areas, fits = _money(design)
    try:
        specs = [_pool_spec(design.prefill, "prefill", config),
                 _pool_spec(design.decode, "decode", config)]
    except InputError as err:       # beyond any buildable device (e.g. a 50 kW chip)
        return DesignEvaluation(False, f"not a plausible device: {err}", math.inf, len(trace),
                                0, len(trace), 0.0, capex, per_hour, math.inf, math.nan,
                                math.nan, math.nan, 0.0, areas, fits, 0)
    oom = [f"{s.pool}: {line}" for s in specs
           for line in memory_plan(model, s.layout, memory_utilization=config.memory_utilization,
                                   max_batched_tokens=config.max_batched_tokens,
                                   max_num_seqs=config.max_num_seqs).oom]
    if oom:
        return DesignEvaluation(False, "; ".join(oom), math.inf, len(trace), 0, len(trace),
                                0.0, capex, per_hour, math.inf, math.nan, math.nan, math.nan,
                                0.0, areas, fits, 0)
    factory = partial(PhasePoolCluster, network_link=load_link(network_link), routing=routing,
                      routing_params=dict(routing_params or {"overlap": True}),
                      rebalancer=rebalancer, rebalancer_params=rebalancer_params,
                      reload_s=reload_s)
    sim = Simulation(trace, model, specs, cost_model=CostModel(load_calibration(calibration)),
                     ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, cluster_factory=factory)
    s = sim.run().summary()
    span = s["span_s"]
    return DesignEvaluation(
        True, "", span, s["requests"], s["finished"], s["rejected"],
        s["finished"] / span if span > 0 else math.nan, capex, per_hour,
        per_hour * span / 3600, s.get("energy_kwh", math.nan), s["ttft_p90_s"],
        s["tpot_p90_s"], s.get("slo_attainment", math.nan), areas, fits,
        sum(1 for m in sim.cluster.moves if m[4] == "ready"), s)
