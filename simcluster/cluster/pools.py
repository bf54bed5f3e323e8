"""Disaggregated serving: a prefill pool hands requests to a decode pool, KV over a link.

Instances whose spec says ``pool = "prefill"`` (or ``""``) take new requests through the
cluster's router. When such an instance samples a request's first token and the *offload
policy* says the request should move, the instance releases the request's KV blocks and the
cluster ships its KV (``kv_tokens * model.kv_bytes_per_token`` bytes) over the prefill
instance's KV link — transfers on one link go one at a time — and then places the request on a
``pool = "decode"`` instance through the decode router. The decode instance admits it straight
into decoding (its KV is complete). This is the mechanism of Splitwise/DistServe-style
prefill/decode pools and of hLLM's CPU decode offload: they differ in the devices of the decode
pool, the offload policy and the routers.

Offload policies (``OFFLOADS``, :mod:`simcluster.policies.offload`) decide which prefilled
requests move; a policy with a ``bind(cluster)`` method is bound to the cluster.

The prefill instance keeps the request's KV blocks until the transfer ends. The transfer time
is the calibration's ``transfer`` time on ``kv_link`` (the datasheet
``bytes / bw + latency`` under the neutral calibration). A controller (``CONTROLLERS``) is bound
with ``bind(cluster)`` and, if it has ``handed_off(request, now)``, told of each request that
reaches the decode pool. ``numa`` names a placement (:mod:`simcluster.policies.numa`) of
the weights and KV of decode instances that run on CPU sockets of multi-socket hosts.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import simpy

from simcluster.cluster.replicas import Cluster, InstanceSpec
from simcluster.hardware import LinkSpec
from simcluster.policies import CONTROLLERS, NUMA_PLACEMENTS, OFFLOADS, ROUTERS
from simcluster.serving import Request


class DisaggregatedCluster(Cluster):
    """A cluster with a prefill pool and a decode pool (see module docstring)."""

    def __init__(self, env: simpy.Environment, model, specs: Sequence[InstanceSpec],
                 router: str = "round_robin", router_params: Mapping | None = None,
                 cost_model=None, *, kv_link: LinkSpec, decode_router: str = "least_outstanding_tokens",
                 decode_router_params: Mapping | None = None, offload: str = "all",
                 offload_params: Mapping | None = None, controller: str | None = None,
                 controller_params: Mapping | None = None, numa: str | None = None,
                 numa_params: Mapping | None = None):
        pools = {s.pool for s in specs}
        if "decode" not in pools or not pools - {"decode"}:
            raise ValueError("a disaggregated cluster needs instances with pool = 'decode' "
                             "and instances with pool = 'prefill'")
        if pools - {"", "prefill", "decode"}:
            raise ValueError(f"unknown pool names {sorted(pools - {'', 'prefill', 'decode'})}; "
                             "expected 'prefill' or 'decode'")
        super().__init__(env, model, specs, router=router, router_params=router_params,
                         cost_model=cost_model)
        pool_of = [s.pool for s in specs for _ in range(s.count)]
        self.prefill_pool = [i for i, p in zip(self.instances, pool_of) if p != "decode"]
        self.decode_pool = [i for i, p in zip(self.instances, pool_of) if p == "decode"]
        self.router = ROUTERS.create(router, **dict(router_params or {})).bind(
            _PoolView(self, self.prefill_pool))
        self.decode_router = ROUTERS.create(decode_router, **dict(decode_router_params or {})
                                            ).bind(_PoolView(self, self.decode_pool))
        self.router_of = {**{i.id: self.router for i in self.prefill_pool},
                          **{i.id: self.decode_router for i in self.decode_pool}}
        self.offload = OFFLOADS.create(offload, **dict(offload_params or {}))
        if hasattr(self.offload, "bind"):
            self.offload.bind(self)
        self.kv_link = kv_link
        self.links = {inst.id: simpy.Resource(env, capacity=1) for inst in self.prefill_pool}
        self.transfers: list[tuple] = []   # (request, instance, start_s, end_s, bytes)
        self.numa = None
        if numa:
            self.numa = NUMA_PLACEMENTS.create(numa, **dict(numa_params or {}))
            self.numa.apply(self.decode_pool, self.cost_model, model)
        self.controller = None
        if controller:
            self.controller = CONTROLLERS.create(controller, **dict(controller_params or {}))
            self.controller.bind(self)

    def submit(self, req: Request):
        self.place(req, self.prefill_pool, self.router)

    def wants_handoff(self, req: Request) -> bool:
        inst = self.instances[req.instance]
        if inst not in self.prefill_pool:
            return False
        for other in self.decode_pool:   # offload policies may read the decode pool's state
            other.sync(self.env.now)
        return self.offload(req)

    def prefilled(self, req: Request):
        source = self.instances[req.instance]
        self.env.process(self._ship(req, source))
        self.capacity_changed(source)

    def _ship(self, req: Request, source):
        nbytes = req.kv_tokens * self.model.kv_bytes_per_token
        with self.links[source.id].request() as slot:
            yield slot
            start = self.env.now
            yield self.env.timeout(float(self.cost_model.calibration.link_time(
                self.kv_link, "transfer", nbytes)))
        self.transfers.append((req.id, source.id, start, self.env.now, nbytes))
        req.handoff_start_s, req.handoff_end_s, req.handoff_bytes = start, self.env.now, nbytes
        source.release_kv(req)          # the prefill instance held the KV until now
        self.capacity_changed(source)
        req.tag = "offloaded"
        handed_off = getattr(self.controller, "handed_off", None)
        if handed_off is not None:
            handed_off(req, self.env.now)
        self.place(req, self.decode_pool, self.decode_router)


class _PoolView:
    """What a router bound to one pool sees: that pool's instances as ``instances``."""

    def __init__(self, cluster: Cluster, pool):
        self.cluster, self.instances, self.env = cluster, list(pool), cluster.env
