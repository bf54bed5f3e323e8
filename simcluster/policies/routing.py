"""Routing policies: which instance a new request goes to.

A router is bound to the cluster (``bind(cluster)``) and answers ``route(request, candidates,
now)`` with one of ``candidates`` (the instances able to serve the request). A *queueing*
router may answer None and hold the request in its own queue; the cluster then calls its
``freed(instance, now)`` whenever an instance of its pool frees capacity, and the router
submits held requests itself (``instance.submit``).
"""

from __future__ import annotations

from collections import deque

from simcluster.policies.load_index import LoadIndex, LoadTable, speeds_differ
from simcluster.policies.registry import ROUTERS


class _Stateless:
    def bind(self, cluster):
        return self


@ROUTERS.register("round_robin")
class RoundRobin:
    """Cycle over the instances in order, skipping those that cannot serve the request."""

    def __init__(self):
        self._next = 0
        self._order: list[int] = []
        self._pool: list = []

    def bind(self, cluster):
        self._pool = list(cluster.instances)
        self._order = [inst.id for inst in self._pool]
        return self

    def route(self, request, candidates, now):
        n = len(self._order)
        if len(candidates) == n:           # every instance is a candidate: the next one
            i = self._next % n
            self._next = i + 1
            return self._pool[i]
        by_id = {inst.id: inst for inst in candidates}
        n = len(self._order)
        for step in range(n):
            i = (self._next + step) % n
            if self._order[i] in by_id:
                self._next = i + 1
                return by_id[self._order[i]]
        return candidates[0]


@ROUTERS.register("least_outstanding_tokens")
class LeastOutstandingTokens:
    """The instance with the fewest prompt-plus-output tokens still to process, relative to
    its speed (``instance.speed``, 1.0 for a reference device); the lowest id on ties.

    In a pool of ``index_from`` replicas or more, whenever every replica of the pool is a
    candidate, a :class:`~.load_index.LoadTable` answers from numpy arrays of every replica's
    load and next decode-step ends, kept current at each replica's events (``table=False``: a
    :class:`~.load_index.LoadIndex`, a heap of lower bounds) — the same answer as reading every
    replica, with five or six numpy calls a query. Below 24 replicas the plain scan is
    the cheaper (counted by callgrind, ``bench_instructions`` worker, 5 req/s a replica,
    thousand instructions a request, scan / table: 16 replicas 237.3 / 252.2, 20 247.0 /
    254.6, 24 257.0 / 256.5, 28 266.5 / 257.5). Where every replica has the same speed (one
    device kind), the scan, like the table, compares the integer loads without dividing them."""

    def __init__(self, index_from: int = 24, table: bool = True):
        self.index_from, self.table = index_from, table
        self.index = None
        self.instances, self.scaled = (), None

    def bind(self, cluster):
        self.instances = cluster.instances
        if len(cluster.instances) >= self.index_from:
            self.index = (LoadTable if self.table else LoadIndex)(cluster.instances)
        return self

    def route(self, request, candidates, now):
        if len(candidates) == 1:
            return candidates[0]
        if self.index is not None and len(candidates) == len(self.index.pool):
            return self.index.least(now)
        scaled = self.scaled
        if scaled is None:             # (read at the first choice: the cluster sets speeds last)
            scaled = self.scaled = speeds_differ(self.instances)
        # (the instances' own scan: their loads read inline, not by a property call each)
        return candidates[0].least_loaded(candidates, scaled)


@ROUTERS.register("prefix_aware")
class PrefixAware(_Stateless):
    """The instance that minimises ``prefix_weight x (prompt tokens it would have to prefill)
    + outstanding tokens``, relative to its speed: the longest cached prefix weighed against
    load, as the KV-aware routers of llm-d (prefix-cache scorer beside a load scorer) and
    NVIDIA Dynamo (``overlap_score_weight x prefill blocks + active blocks``) do.

    An instance's cached prefix is what its prefix cache holds for the request's block hashes
    now (:meth:`~simcluster.serving.instance.Instance.cached_prefix_tokens`); a request without
    hashes, or instances without caches, reduce it to least-outstanding-tokens (plus the
    same prompt on every instance). The lookup costs O(blocks of the request) per instance.
    """

    def __init__(self, prefix_weight: float = 1.0):
        if not prefix_weight >= 0:
            raise ValueError(f"prefix_weight must be >= 0, got {prefix_weight!r}")
        self.prefix_weight = float(prefix_weight)

    def route(self, request, candidates, now):
        w, prompt = self.prefix_weight, request.prompt_tokens

        def cost(inst):
            cached = inst.cached_prefix_tokens(request) if request.prefix_keys else 0
            return ((w * (prompt - cached) + inst.outstanding_tokens) / inst.speed, inst.id)
        return min(candidates, key=cost)


@ROUTERS.register("join_shortest_queue")
class JoinShortestQueue(_Stateless):
    """The instance with the fewest requests waiting or running."""

    def route(self, request, candidates, now):
        return min(candidates, key=lambda i: (len(i.waiting) + len(i.running), i.id))


@ROUTERS.register("pool_fcfs")
class PoolQueue:
    """One FCFS queue in front of the whole pool: a request waits here until an instance
    holds fewer than ``slots`` requests (default: its ``max_num_seqs``), then goes to the free
    instance with the fewest requests. With ``max_num_seqs = 1`` a pool of c instances is c
    servers behind one queue — M/M/c when arrivals are Poisson and service exponential —
    rather than c queues behind a router. Parked instances (``active`` False) take nothing
    while an active one could serve the request."""

    def __init__(self, slots: int | None = None):
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots = slots
        self.queue: deque = deque()      # (request, instances able to serve it)

    def bind(self, cluster):
        return self

    def _free(self, candidates):
        pick = [i for i in candidates if i.active] or list(candidates)
        free = [i for i in pick if len(i.running) + len(i.waiting)
                < (self.slots or i.config.max_num_seqs)]
        return min(free, key=lambda i: (len(i.running) + len(i.waiting), i.id), default=None)

    def route(self, request, candidates, now):
        inst = None if self.queue else self._free(candidates)
        if inst is None:
            self.queue.append((request, list(candidates)))
        return inst

    def freed(self, instance, now):
        while self.queue:
            req, candidates = self.queue[0]
            inst = self._free(candidates)
            if inst is None:
                return
            self.queue.popleft()
            inst.submit(req)
