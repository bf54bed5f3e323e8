"""Registries: one per extension point, a plain dict filled by a decorator.

    @ROUTERS.register("round_robin")
    class RoundRobin: ...

``ROUTERS.create(name, **params)`` builds one; an unknown name fails listing the known ones.

Registering a name again *replaces* the entry with a warning — re-running a notebook cell that
defines a policy, or reloading a plugin, must not fail — except that a built-in policy (one
defined in simcluster) is never shadowed by another definition: that is an error.
"""

from __future__ import annotations

import warnings
from typing import Callable


class Registry(dict):
    """Name -> factory (a class, or a function returning a policy object)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable:
        def deco(factory):
            old = self.get(name)
            if old is not None:
                self._replacing(name, old, factory)
            self[name] = factory
            factory.policy_name = name
            return factory
        return deco

    def _replacing(self, name: str, old, new):
        where = f"{getattr(old, '__module__', '?')}.{getattr(old, '__qualname__', old)}"
        same = where == f"{getattr(new, '__module__', '?')}.{getattr(new, '__qualname__', new)}"
        if where.startswith("simcluster.") and not same:
            raise ValueError(f"{self.kind} policy {name!r} is built in ({where}); register "
                             "yours under another name")
        warnings.warn(f"{self.kind} policy {name!r} registered again: replacing {where}",
                      RuntimeWarning, stacklevel=3)

    def lookup(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} policy {name!r}; known: "
                           f"{', '.join(sorted(self))}") from None

    def create(self, name: str, **params):
        factory = self.lookup(name)
        try:
            return factory(**params)
        except TypeError as err:
            raise TypeError(f"{self.kind} policy {name!r}: {err}") from None


ROUTERS = Registry("router")            # request -> instance
BATCHERS = Registry("batching")         # an instance's next iteration
PARTITIONS = Registry("partition")      # a model cut over a GPU group: TP shares or stages
CONTROLLERS = Registry("controller")    # pool sizing over time (e.g. M/M/c socket count)
OFFLOADS = Registry("offload")          # does a prefilled request move to the decode pool?
NUMA_PLACEMENTS = Registry("numa placement")   # CPU-socket weights and KV across sockets
POOL_ROUTERS = Registry("pool routing")  # a request's prompt and token servers (phase pools)
REBALANCERS = Registry("rebalancer")     # which servers move between phase pools, and when
# (a decode pool's choice of instance for a handed-off request is a router too: ROUTERS)
