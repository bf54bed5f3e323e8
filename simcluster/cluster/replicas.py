"""A cluster: replicas behind a router, and the record of what became of each request.

The cluster is every instance's *sink*: instances report finished and rejected requests to it
(it passes them to the simulation's request log, ``log``, and to ``finish_listeners``, e.g. a
controller measuring completions), and ask it whether a request whose prompt is done should be
handed off (disaggregated serving
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

import numbers
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import simpy

from simcluster.cost import CostModel, Layout
from simcluster.cost.memory import memory_plan
from simcluster.serving.instance import Instance
from simcluster.serving.config import InstanceConfig
from simcluster.policies import BATCHERS, ROUTERS
from simcluster.policies.batching import settled_config
from simcluster.serving.request import Request


POOLS = ("", "prefill", "decode")


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
        if isinstance(self.count, bool) or not isinstance(self.count, numbers.Integral) or \
                self.count < 1:
            raise ValueError(f"InstanceSpec.count must be a whole number >= 1, got "
                             f"{self.count!r}")
        for name, want, hint in (("layout", Layout, "a Layout (Layout.uniform(device, tp=...))"),
                                 ("config", InstanceConfig, "an InstanceConfig"),
                                 ("name", str, "a string"), ("batching", str,
                                                            "a batching policy's name"),
                                 ("batching_params", Mapping, "a mapping")):
            value = getattr(self, name)
            if not isinstance(value, want):
                raise TypeError(f"InstanceSpec.{name}: expected {hint}; got "
                                f"{type(value).__name__} {value!r}")
        if self.pool not in POOLS:
            raise ValueError(f"InstanceSpec.pool must be one of {', '.join(map(repr, POOLS))} "
                             f"(a disaggregated cluster's prefill or decode pool), got "
                             f"{self.pool!r}")


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


_UNSEEN = object()      # (a marker: an instance whose router's freed() is not looked up yet)


class Cluster:
    """Replicas behind a router."""

    #: True where no request is ever handed off (``wants_handoff`` not overridden): replicas
    #: then skip asking.
    hands_off_never = True
    #: Whether instances' ``pool`` names mean something here (the disaggregated clusters).
    pooled = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.hands_off_never = cls.wants_handoff is Cluster.wants_handoff

    def __init__(self, env: simpy.Environment, model, specs: Sequence[InstanceSpec],
                 router: str = "round_robin", router_params: Mapping | None = None,
                 cost_model: CostModel | None = None):
        pools = sorted({s.pool for s in specs if s.pool})
        if pools and not self.pooled:
            raise ValueError(f"instances name pools {pools} but {type(self).__name__} has none: "
                             f"pass cluster_factory=DisaggregatedCluster (with its kv_link) or "
                             f"PhasePoolCluster, or leave pool unset")
        self.env, self.model = env, model
        self.cost_model = cost_model or CostModel()
        self.instances: list[Instance] = []
        self.log = None                  # where ended requests go (the simulation's RequestLog)
        self.finish_listeners: list = []  # callables(request) told of each finish
        self.finished_count = self.rejected_count = 0
        memo_of = getattr(self.cost_model, "iteration_memo", None)
        for spec in specs:
            timer = self.cost_model.timer(model, spec.layout)
            cfg = settled_config(spec.config, BATCHERS.lookup(spec.batching))
            mem = memory_plan(model, spec.layout, memory_utilization=cfg.memory_utilization,
                              max_batched_tokens=cfg.max_batched_tokens,
                              max_num_seqs=cfg.max_num_seqs)
            for _ in range(spec.count):
                iid = len(self.instances)
                name = f"{spec.name or spec.layout.devices[0].name}#{iid}"
                batcher = BATCHERS.create(spec.batching, **dict(spec.batching_params))
                wrap = getattr(batcher, "wrap_timer", None)
                t = wrap(timer) if wrap else timer
                # replicas of one timer share its memo of iteration times
                memo = memo_of(t) if memo_of is not None and t is timer else None
                inst = Instance(env, iid, name, model, spec.layout, t, mem, cfg, batcher, self,
                                memo=memo)
                self.instances.append(inst)
        set_speeds(self.instances)
        self.router = ROUTERS.create(router, **dict(router_params or {})).bind(self)
        self.router_of = {inst.id: self.router for inst in self.instances}
        self._freed: dict = {}           # instance id -> its router's freed(), or None
        self._active_version = 0
        self._pools: dict = {}           # id(pool) -> placement cache (see place)
        self._fast_pool = None           # (pool, its one profile's admits, candidates, version)
        self._fast: dict = {}            # id(pool) -> the same, per pool (see _candidates)

    # -- requests in -------------------------------------------------------------------------
    def submit(self, req: Request):
        fast = self._fast_pool         # (place's usual case, inline)
        if (fast is not None and fast[0] is self.instances
                and fast[3] == self._active_version and fast[1](req)):
            inst = self.router.route(req, fast[2], self.env._now)
            if inst is not None:
                inst.submit(req)
            return
        self.place(req, self.instances, self.router)

    def activity_changed(self):
        """An instance was parked or activated (instances call this): candidates change."""
        self._active_version += 1

    def _candidates(self, req: Request, pool: Sequence[Instance]):
        """The instances of ``pool`` a router may choose for ``req`` (active ones able to
        serve it; all able ones if none is active), or None. Replicas with one admission
        profile answer alike, so each profile is asked once per request."""
        fast = self._fast.get(id(pool))
        if fast is not None and fast[0] is pool and fast[3] == self._active_version:
            if fast[1](req):           # one admission profile, and it admits: the usual case
                return fast[2]
        cache = self._pools.get(id(pool))
        if cache is None or cache[0] is not pool:
            if len(self._pools) > 16:
                self._pools.clear()
            groups: dict = {}
            for inst in pool:
                groups.setdefault(inst.profile, []).append(inst)
            cache = self._pools[id(pool)] = (pool, [g[0] for g in groups.values()],
                                             list(groups.values()), {})
        _, heads, groups, lists = cache
        mask = (heads[0].admits(req),) if len(heads) == 1 else tuple(h.admits(req)
                                                                       for h in heads)
        key = (mask, self._active_version)
        hit = lists.get(key)
        if hit is None:
            able = [inst for inst, ok in zip(pool, self._expand(mask, groups, pool)) if ok]
            hit = [inst for inst in able if inst.active] or able or None
            if len(lists) > 64:
                lists.clear()
            lists[key] = hit
        if len(heads) == 1 and mask[0]:
            if len(self._fast) > 16:
                self._fast.clear()
            fast = self._fast[id(pool)] = (pool, heads[0].admits, hit, self._active_version)
            if pool is self.instances:
                self._fast_pool = fast
        return hit

    @staticmethod
    def _expand(mask, groups, pool):
        ok = {id(inst) for m, g in zip(mask, groups) if m for inst in g}
        return [id(inst) in ok for inst in pool]

    def place(self, req: Request, pool: Sequence[Instance], router):
        """Route ``req`` to an active instance of ``pool`` able to serve it, or reject it
        with the reason the pool's instances give. A queueing router may hold it instead."""
        candidates = self._candidates(req, pool)
        if candidates is not None:
            inst = router.route(req, candidates, self.env.now)
            if inst is not None:
                inst.submit(req)
            return
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

    @property
    def router_of(self) -> dict:
        """Instance id -> the router of its pool."""
        return self._router_of

    @router_of.setter
    def router_of(self, value: dict):
        self._router_of, self._freed = value, {}

    def capacity_changed(self, inst: Instance):
        """``inst`` may take more work (a request left it, or it was activated): let its
        pool's router submit requests it holds."""
        try:
            freed = self._freed[inst.id]
        except KeyError:
            freed = self._freed[inst.id] = getattr(self._router_of.get(inst.id), "freed", None)
        if freed is not None:
            freed(inst, self.env.now)

    # -- the sink interface ------------------------------------------------------------------
    def finished(self, req: Request):
        self.finished_count += 1
        if self.log is not None:
            self.log.record(req)
        for listener in self.finish_listeners:
            listener(req)
        freed = self._freed.get(req.instance, _UNSEEN)    # (capacity_changed, inline)
        if freed is _UNSEEN:
            self.capacity_changed(self.instances[req.instance])
        elif freed is not None:
            freed(self.instances[req.instance], self.env.now)

    def rejected(self, req: Request):
        if not req.reason:
            raise RuntimeError(f"request {req.id} rejected without a reason")
        self.rejected_count += 1
        if self.log is not None:
            self.log.record(req)
        if req.instance >= 0:
            self.capacity_changed(self.instances[req.instance])

    def wants_handoff(self, req: Request) -> bool:
        return False

    def prefilled(self, req: Request):
        raise RuntimeError("this cluster does not hand requests off after prefill")
