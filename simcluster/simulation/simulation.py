"""A simulation: a trace's requests arriving at a cluster, run to completion.

    sim = Simulation(trace, model, [InstanceSpec(Layout.uniform(h100), count=4)],
                     router="least_outstanding_tokens")
    results = sim.run()
    results.summary()

Each simulation owns its SimPy environment, its request ids and its instances: two simulations
in one process never interfere.

A trace with block hashes (``Trace.has_block_hashes``) gives every request the chained keys of
its prompt blocks, which the instances' prefix caches look up (``InstanceConfig.prefix_caching``;
the trace's block size must be a whole number of KV blocks).
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import pandas as pd
import simpy

from simcluster.cluster import Cluster, InstanceSpec
from simcluster.cost import CostModel
from simcluster.errors import InputError
from simcluster.serving.prefix_cache import chain_keys
from simcluster.simulation.energy import power_columns
from simcluster.simulation.results import (ACTIVITY_COLUMNS, Results, request_frame,
                                           timeline_frame, transfer_frame)
from simcluster.simulation.work import WorkCoefficients, layout_peaks, row_work
from simcluster.engines.envelope import envelope_check
from simcluster.serving.request import Request


def cost_provenance(cost_model: CostModel, devices) -> dict:
    """The cost model in data: calibration name, engine model name (None: kernel time only),
    and per device how its rates were obtained (own tables, borrowed curves, datasheet)."""
    cal = cost_model.calibration
    engine = getattr(cost_model, "name", None) or None
    return {"calibration": getattr(cal, "name", type(cal).__name__), "engine": engine,
            "devices": {d.name: cal.provenance(d) for d in devices}}


class Simulation:
    """One trace on one cluster configuration."""

    def __init__(self, trace, model, instances: Sequence[InstanceSpec], *,
                 router: str = "round_robin", router_params: Mapping | None = None,
                 cost_model: CostModel | None = None, ttft_slo_s: float | None = None,
                 tpot_slo_s: float | None = None, name: str = "",
                 cluster_factory: Callable = Cluster):
        if len(trace) == 0:
            raise ValueError("the trace has no requests")
        self.trace, self.model, self.name = trace, model, name
        self.slo = (ttft_slo_s, tpot_slo_s)
        self.env = simpy.Environment(initial_time=float(trace.arrival_s[0]))
        self.cluster = cluster_factory(self.env, model, list(instances), router=router,
                                       router_params=router_params, cost_model=cost_model)
        self.requests: list[Request] = []
        self._ran = False
        self._hashes = None
        if trace.has_block_hashes:
            self._check_block_size(trace.hash_block_tokens, instances)
            self._hashes = trace.extras["hash_ids"]
        self.prefix_caching = self._hashes is not None and any(
            spec.config.prefix_caching for spec in instances)

    @staticmethod
    def _check_block_size(tokens: int, instances):
        for spec in instances:
            bs = spec.config.block_size
            if spec.config.prefix_caching and tokens % bs:
                raise InputError(f"the trace's hash blocks of {tokens} tokens are not a whole "
                                 f"number of KV blocks of {bs} tokens; pick a block_size that "
                                 f"divides {tokens}, or turn prefix_caching off",
                                 field="block_size")

    def _arrivals(self):
        env, cluster = self.env, self.cluster
        arr, prompt, out = (self.trace.arrival_s, self.trace.prompt_tokens,
                            self.trace.output_tokens)
        for i in range(len(arr)):
            t = float(arr[i])
            if t > env.now:
                yield env.timeout(t - env.now)
            # the clock's time, which may differ from t by an ulp after timeout(t - now)
            req = Request(i, env.now, int(prompt[i]), int(out[i]))
            if self._hashes is not None:
                req.prefix_keys = chain_keys(self._hashes[i])
                req.prefix_block_tokens = self.trace.hash_block_tokens
            self.requests.append(req)
            cluster.submit(req)

    def run(self, progress: Callable[[int, int], None] | bool | None = None,
            progress_every_s: float = 0.5) -> Results:
        """Run until every request has finished or been rejected.

        ``progress(arrived, total)`` is called about every ``progress_every_s`` of wall time;
        ``progress=True`` draws a tqdm bar over arrivals (``tqdm.auto``: a widget in Jupyter)
        once the run has taken two seconds.
        """
        if self._ran:
            raise RuntimeError("a Simulation runs once; build a new one to run again")
        self._ran = True
        self.env.process(self._arrivals())
        total = len(self.trace)
        bar = None
        if progress is True:
            from simcluster.simulation.progress import arrivals_bar
            progress = bar = arrivals_bar(total, self.name)
        if not progress:
            self.env.run()
        else:
            last = time.perf_counter()
            while self.env.peek() != float("inf"):
                self.env.step()
                now = time.perf_counter()
                if now - last >= progress_every_s:
                    progress(len(self.requests), total)
                    last = now
            progress(len(self.requests), total)
        if bar is not None:
            bar.close()
        return self.results()

    def provenance(self) -> dict:
        """:func:`cost_provenance` of this simulation's cost model over its devices."""
        devices = {d.name: d for inst in self.cluster.instances for d in inst.layout.devices}
        return cost_provenance(self.cluster.cost_model, devices.values())

    def results(self) -> Results:
        unfinished = [r for r in self.requests
                      if r.finish_s != r.finish_s and not r.reason]   # NaN finish, no reason
        if unfinished:
            raise RuntimeError(f"{len(unfinished)} requests neither finished nor rejected, "
                               f"e.g. {unfinished[0]!r}")
        rows = []
        for inst in self.cluster.instances:
            devs = inst.layout.devices
            flops, bw = layout_peaks(inst.layout, inst.model.dtype)
            rows.append({"instance": inst.id, "name": inst.name, "layout": inst.layout.describe(),
                         "num_devices": len(devs), "kind": devs[0].kind,
                         "price_usd_per_hour": sum(d.price_usd_per_hour for d in devs),
                         "kv_blocks_total": inst.kv.total_blocks,
                         "block_size": inst.config.block_size, "speed": inst.speed,
                         "peak_flops_per_s": flops, "peak_mem_bw_bytes_per_s": bw,
                         **power_columns(devs)})
        timeline = timeline_frame([row for inst in self.cluster.instances
                                   for row in inst.timeline])
        timeline["flops"], timeline["bytes"] = row_work(timeline,
                                                        WorkCoefficients.of(self.model))
        transfers = transfer_frame(getattr(self.cluster, "transfers", []))
        ctl = getattr(self.cluster, "controller", None)
        activity = (ctl.activity if ctl is not None and hasattr(ctl, "activity")
                    else pd.DataFrame(columns=ACTIVITY_COLUMNS))
        res = Results(request_frame(self.requests), timeline, pd.DataFrame(rows),
                      ttft_slo_s=self.slo[0], tpot_slo_s=self.slo[1], name=self.name,
                      prefix_caching=self.prefix_caching, transfers=transfers,
                      activity=activity, provenance=self.provenance(),
                      envelope=envelope_check(self.cluster.instances, self.cost_model_name()))
        return res

    def cost_model_name(self) -> str:
        return getattr(self.cluster.cost_model, "name", "") or "engine"
