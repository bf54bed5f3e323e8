"""A cluster: replicas behind a router, and the record of what became of each request.

The cluster is every instance's *sink*: instances report finished and rejected requests to it,
and ask it whether a request whose prompt is done should be handed off (disaggregated serving
pools override :meth:`Cluster.wants_handoff` and :meth:`Cluster.prefilled`).

A router may *hold* a request (``route`` returns None): it keeps its own queue in front of the
pool (M/M/c's single FCFS queue, length-bucketed batches) and submits later. The cluster tells a
pool's router when one of its instances frees capacity (a request finished, was rejected or was
handed off) through the router's optional ``freed(instance, now)``; a controller that
activates an instance calls :meth:`Cluster.capacity_changed` for the same effect.

A batching policy may say how its batches execute by wrapping the instance's iteration timer
(``wrap_timer(timer) -> timer``; e.g. static batches padded to their longest prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import simpy

from simcluster.cost import CostModel, Layout
from simcluster.cost.memory import memory_plan
from simcluster.serving.instance import Instance
from simcluster.serving.config import InstanceConfig
from simcluster.policies import BATCHERS, ROUTERS
from simcluster.serving.request import Request


@dataclass(frozen=True)
class InstanceSpec:
    """``count`` identical replicas: their layout, scheduler settings and batching policy."""

    layout: Layout
    config: InstanceConfig = InstanceConfig()
    count: int = 1
    name: str = ""
    batching: str = "vllm"
    batching_params: Mapping = field(default_factory=dict)
    pool: str = ""          # "", "prefill" or "decode" (disaggregated serving, see disagg.py)

    def __post_init__(self):
        if self.count < 1:
            raise ValueError(f"InstanceSpec.count must be >= 1, got {self.count}")


def reference_speed(timer) -> float:
    """Iterations per second of a reference mixed batch (one 512-token prefill and 32 decodes
    over 1,024 tokens each): how routers weigh replicas of different hardware."""
    t = timer.time(np.array([512]), np.array([0]), 32, 32 * 1025, 33)
    return 1.0 / t


def decode_reference_speed(timer) -> float:
    """Iterations per second of a reference decode batch (32 sequences over 1,024 tokens
    each): how routers weigh the replicas of a pool that only decodes."""
    empty = np.zeros(0, dtype=np.int64)
    return 1.0 / timer.time(empty, empty, 32, 32 * 1025, 32)


def set_speeds(instances, speed=reference_speed):
    """Set each instance's ``speed``: ``speed(its timer)`` relative to the fastest of
    ``instances`` (instances sharing a timer are timed once)."""
    by_timer: dict = {}
    rates = [by_timer.setdefault(id(i.timer), speed(i.timer)) for i in instances]
    fastest = max(rates)
    for inst, rate in zip(instances, rates):
        inst.speed = rate / fastest


class Cluster:
    """Replicas behind a router."""

    def __init__(self, env: simpy.Environment, model, specs: Sequence[InstanceSpec],
                 router: str = "round_robin", router_params: Mapping | None = None,
                 cost_model: CostModel | None = None):
        self.env, self.model = env, model
        self.cost_model = cost_model or CostModel()
        self.instances: list[Instance] = []
        self.done: list[Request] = []
        self.refused: list[Request] = []
        for spec in specs:
            timer = self.cost_model.timer(model, spec.layout)
            cfg = spec.config
            mem = memory_plan(model, spec.layout, memory_utilization=cfg.memory_utilization,
                              max_batched_tokens=cfg.max_batched_tokens,
                              max_num_seqs=cfg.max_num_seqs)
            for _ in range(spec.count):
                iid = len(self.instances)
                name = f"{spec.name or spec.layout.devices[0].name}#{iid}"
                batcher = BATCHERS.create(spec.batching, **dict(spec.batching_params))
                wrap = getattr(batcher, "wrap_timer", None)
                inst = Instance(env, iid, name, model, spec.layout,
                                wrap(timer) if wrap else timer, mem, cfg, batcher, self)
                self.instances.append(inst)
        set_speeds(self.instances)
        self.router = ROUTERS.create(router, **dict(router_params or {})).bind(self)
        self.router_of = {inst.id: self.router for inst in self.instances}

    # -- requests in -------------------------------------------------------------------------
    def submit(self, req: Request):
        self.place(req, self.instances, self.router)

    def place(self, req: Request, pool: Sequence[Instance], router):
        """Route ``req`` to an active instance of ``pool`` able to serve it, or reject it
        with the reason the pool's instances give. A queueing router may hold it instead."""
        reasons = [inst.can_serve(req) for inst in pool]
        able = [inst for inst, why in zip(pool, reasons) if not why]
        candidates = [inst for inst in able if inst.active] or able
        if not candidates:
            req.reason = min(reasons, key=len)
            self.rejected(req)
            return
        inst = router.route(req, candidates, self.env.now)
        if inst is not None:
            inst.submit(req)

    def capacity_changed(self, inst: Instance):
        """``inst`` may take more work (a request left it, or it was activated): let its
        pool's router submit requests it holds."""
        freed = getattr(self.router_of.get(inst.id), "freed", None)
        if freed is not None:
            freed(inst, self.env.now)

    # -- the sink interface ------------------------------------------------------------------
    def finished(self, req: Request):
        self.done.append(req)
        self.capacity_changed(self.instances[req.instance])

    def rejected(self, req: Request):
        if not req.reason:
            raise RuntimeError(f"request {req.id} rejected without a reason")
        self.refused.append(req)
        if req.instance >= 0:
            self.capacity_changed(self.instances[req.instance])

    def wants_handoff(self, req: Request) -> bool:
        return False

    def prefilled(self, req: Request):
        raise RuntimeError("this cluster does not hand requests off after prefill")
