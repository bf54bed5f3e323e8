"""Disaggregated serving: a prefill pool hands requests to a decode pool, KV over a link.

Instances whose spec says ``pool = "prefill"`` (or ``""``) take new requests through the
cluster's router. When such an instance samples a request's first token and the *offload
policy* says the request should move, the instance releases the request's KV blocks and the
cluster ships its KV (``model.kv_bytes(kv_tokens)`` bytes) over the prefill
instance's KV link — transfers on one link go one at a time — and then places the request on a
``pool = "decode"`` instance through the decode router. The decode instance admits it straight
into decoding (its KV is complete). Prefix caches live on the prefill instances, where
prompts are computed (a hit skips prefill there; the whole KV still ships). This is the
mechanism of Splitwise/DistServe-style
prefill/decode pools and of hLLM's CPU decode offload: they differ in the devices of the decode
pool, the offload policy and the routers.

Offload policies (``OFFLOADS``, :mod:`simcluster.policies.offload`) decide which prefilled
requests move; a policy with a ``bind(cluster)`` method is bound to the cluster. A request that
no decode instance could ever serve (its KV exceeds their capacity, or their max_model_len) is
not handed off whatever the policy: it decodes on its prefill instance, which has served its
prompt, rather than being refused after its prefill.

The prefill instance keeps the request's KV blocks until the transfer ends. The transfer time
is the calibration's ``transfer`` time on ``kv_link`` (the datasheet
``bytes / bw + latency`` under the neutral calibration). A decode router with a
``handoff(request, source)`` method takes the hand-offs itself and ships them with
:meth:`DisaggregatedCluster.send` (callbacks; :meth:`DisaggregatedCluster.ship` is its process
step) and :meth:`DisaggregatedCluster.deliver` (hLLM's mini-batch dispatcher copies a batch's
KV in mini-batches to sockets chosen before the copy);
``in_flight`` counts the hand-offs not yet delivered. The decode pool's routers weigh its
instances by a decode batch, NUMA placement applied (:func:`decode_reference_speed`). A
controller (``CONTROLLERS``) is bound with ``bind(cluster)`` and, if it has
``handed_off(request, now)``, told of each request that reaches the decode pool. ``numa`` names a placement (:mod:`simcluster.policies.numa`) of
the weights and KV of decode instances that run on CPU sockets of multi-socket hosts.
"""

from __future__ import annotations

from collections import deque
import os
from typing import Mapping, Sequence

import simpy

from simcluster.cluster.replicas import (Cluster, InstanceSpec, decode_reference_speed,
                                         set_speeds)
from simcluster.hardware import LinkSpec, load_link
from simcluster.policies import CONTROLLERS, NUMA_PLACEMENTS, OFFLOADS, ROUTERS
from simcluster.serving import Request
from simcluster.serving.clock import after


class DisaggregatedCluster(Cluster):
    """A cluster with a prefill pool and a decode pool (see module docstring)."""

    pooled = True

    def __init__(self, env: simpy.Environment, model, specs: Sequence[InstanceSpec],
                 router: str = "round_robin", router_params: Mapping | None = None,
                 cost_model=None, *, kv_link: LinkSpec, decode_router: str = "least_outstanding_tokens",
                 decode_router_params: Mapping | None = None, offload: str = "all",
                 offload_params: Mapping | None = None, controller: str | None = None,
                 controller_params: Mapping | None = None, numa: str | None = None,
                 numa_params: Mapping | None = None):
        if isinstance(kv_link, (str, os.PathLike)):
            kv_link = load_link(kv_link)       # (a link's name or TOML path, as elsewhere)
        elif not isinstance(kv_link, LinkSpec):
            raise TypeError(f"kv_link must be a LinkSpec or a link's name or TOML path "
                            f"(load_link), got {kv_link!r}")
        pools = {s.pool for s in specs}
        if "decode" not in pools or not pools - {"decode"}:
            raise ValueError("a disaggregated cluster needs instances with pool = 'decode' "
                             "and instances with pool = 'prefill'")
        super().__init__(env, model, specs, router=router, router_params=router_params,
                         cost_model=cost_model)
        pool_of = [s.pool for s in specs for _ in range(s.count)]
        self.prefill_pool = [i for i, p in zip(self.instances, pool_of) if p != "decode"]
        self.decode_pool = [i for i, p in zip(self.instances, pool_of) if p == "decode"]
        for inst in self.instances:      # (the base class bound a router to all of them)
            inst.load_watchers.clear()
        self.router = ROUTERS.create(router, **dict(router_params or {})).bind(
            _PoolView(self, self.prefill_pool))
        self.decode_router = ROUTERS.create(decode_router, **dict(decode_router_params or {})
                                            ).bind(_PoolView(self, self.decode_pool))
        self.router_of = {**{i.id: self.router for i in self.prefill_pool},
                          **{i.id: self.decode_router for i in self.decode_pool}}
        self.offload = OFFLOADS.create(offload, **dict(offload_params or {}))
        if hasattr(self.offload, "bind"):
            self.offload.bind(self)
        self._offload_reads_pool = getattr(self.offload, "reads_pool", True)
        self._prefill_ids = frozenset(i.id for i in self.prefill_pool)
        # one decode instance per admission profile (replicas of one profile admit alike)
        self._decode_heads = list({i.profile: i for i in reversed(self.decode_pool)}.values())
        self.kv_link = kv_link
        self._queues: dict[int, deque] = {}  # the default hand-offs per link (see _send)
        self._sizes: dict[int, float] = {}   # KV tokens -> bytes
        self._seconds: dict = {}             # bytes -> seconds of a transfer on kv_link
        self.transfers: list[tuple] = []   # (request, instance, start_s, end_s, bytes)
        self.in_flight = 0                 # hand-offs whose KV has not reached the pool yet
        self.numa = None
        if numa:
            self.numa = NUMA_PLACEMENTS.create(numa, **dict(numa_params or {}))
            self.numa.apply(self.decode_pool, self.cost_model, model)
        # the decode pool's routers weigh its instances by a decode batch, placement applied
        set_speeds(self.decode_pool, decode_reference_speed)
        self.controller = None
        if controller:
            self.controller = CONTROLLERS.create(controller, **dict(controller_params or {}))
            self.controller.bind(self)

    def submit(self, req: Request):
        self.place(req, self.prefill_pool, self.router)

    def wants_handoff(self, req: Request) -> bool:
        if req.instance not in self._prefill_ids:
            return False
        if not any(other.admits(req) for other in self._decode_heads):
            return False    # no decode instance could ever hold it: it decodes where it is
        if self._offload_reads_pool:     # offload policies may read the decode pool's state
            for other in self.decode_pool:
                other.sync(self.env.now)
        return self.offload(req)

    def prefilled(self, req: Request):
        source = self.instances[req.instance]
        self.in_flight += 1
        handoff = getattr(self.decode_router, "handoff", None)
        if handoff is not None:          # the router ships (e.g. hLLM's mini-batches)
            handoff(req, source)
        else:
            self._send(req, source)
        self.capacity_changed(source)

    # the default hand-off: one request per transfer, through the source's link queue
    def _send(self, req: Request, source):
        self.send((req,), source)

    def send(self, reqs: Sequence[Request], source, then=None):
        """Copy the KV of ``reqs`` as one transfer over ``source``'s KV link, after the
        transfers queued there before it (one at a time, in order); when it ends, ``source``
        frees their blocks and ``then(reqs)`` is called — by default :meth:`deliver`, through
        the decode router. (Callbacks, one event a transfer: the times of a process holding
        the link as a resource, :meth:`ship`, which is built on this.)"""
        queue = self._queues.get(source.id)
        if queue is None:
            queue = self._queues[source.id] = deque()
        # (sliding-window layers hold at most their window: ModelSpec.kv_bytes)
        sizes = tuple([self._kv_bytes(r.kv_tokens) for r in reqs])
        nbytes = sum(sizes)
        seconds = self._seconds.get(nbytes)
        if seconds is None:             # (a pure function of the bytes)
            if len(self._seconds) >= 1 << 16:
                self._seconds.clear()
            seconds = self._seconds[nbytes] = float(
                self.cost_model.calibration.link_time(self.kv_link, "transfer", nbytes))
        queue.append((tuple(reqs), sizes, seconds, then))
        if len(queue) == 1:             # the link is free: the transfer starts now
            self._transfer(source, queue[0])

    def _kv_bytes(self, tokens: int):
        nbytes = self._sizes.get(tokens)
        if nbytes is None:
            if len(self._sizes) >= 1 << 16:
                self._sizes.clear()
            nbytes = self._sizes[tokens] = self.model.kv_bytes(tokens)
        return nbytes

    def _transfer(self, source, item):
        after(self.env, item[2], self._sent, (source, item, self.env.now))

    def _sent(self, sent):
        source, (reqs, sizes, _, then), start = sent
        queue = self._queues[source.id]
        queue.popleft()
        if queue:                       # the next transfer on this link starts as this ends
            self._transfer(source, queue[0])
        self._shipped(reqs, source, start, sizes)
        (self.deliver if then is None else then)(reqs)

    def ship(self, reqs: Sequence[Request], source):
        """:meth:`send` as a process step (``yield from cluster.ship(...)``): returns once
        the KV of ``reqs`` has crossed ``source``'s link and ``source`` has freed it (the
        caller delivers them)."""
        done = self.env.event()
        self.send(reqs, source, lambda _reqs: done.succeed())
        yield done

    def _shipped(self, reqs, source, start: float, sizes=None):
        for i, req in enumerate(reqs):
            nb = self.model.kv_bytes(req.kv_tokens) if sizes is None else sizes[i]
            self.transfers.append((req.id, source.id, start, self.env.now, nb))
            req.handoff_start_s, req.handoff_end_s, req.handoff_bytes = start, self.env.now, nb
            source.release_kv(req)      # the prefill instance held the KV until now
        self.capacity_changed(source)

    def deliver(self, reqs: Sequence[Request], dest=None):
        """Shipped requests reach the decode pool: the controller hears of them, and each goes
        to ``dest`` (the instance its KV was copied to) or through the decode router."""
        handed_off = getattr(self.controller, "handed_off", None)
        for req in reqs:
            self.in_flight -= 1
            req.tag = "offloaded"
            if handed_off is not None:
                handed_off(req, self.env.now)
            if dest is not None and dest.admits(req):
                dest.submit(req)
            else:
                self.place(req, self.decode_pool, self.decode_router)


class _PoolView:
    """What a router bound to one pool sees: that pool's instances as ``instances``."""

    def __init__(self, cluster: Cluster, pool):
        self.cluster, self.instances, self.env = cluster, list(pool), cluster.env
