"""Routing policies: which instance a new request goes to.

A router is bound to the cluster (``bind(cluster)``) and answers ``route(request, candidates,
now)`` with one of ``candidates`` (the instances able to serve the request).
"""

from __future__ import annotations

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

    def bind(self, cluster):
        self._order = [inst.id for inst in cluster.instances]
        return self

    def route(self, request, candidates, now):
        by_id = {inst.id: inst for inst in candidates}
        n = len(self._order)
        for step in range(n):
            i = (self._next + step) % n
            if self._order[i] in by_id:
                self._next = i + 1
                return by_id[self._order[i]]
        return candidates[0]


@ROUTERS.register("least_outstanding_tokens")
class LeastOutstandingTokens(_Stateless):
    """The instance with the fewest prompt-plus-output tokens still to process, relative to
    its speed (``instance.speed``, 1.0 for a reference device)."""

    def route(self, request, candidates, now):
        return min(candidates, key=lambda i: (i.outstanding_tokens / i.speed, i.id))


@ROUTERS.register("join_shortest_queue")
class JoinShortestQueue(_Stateless):
    """The instance with the fewest requests waiting or running."""

    def route(self, request, candidates, now):
        return min(candidates, key=lambda i: (len(i.waiting) + len(i.running), i.id))
