"""Pluggable decisions: routing, batching and pool controllers, each through its registry."""

from simcluster.policies import batching, routing  # noqa: F401  (fill the registries)
from simcluster.policies import bucketed, controllers  # noqa: F401
from simcluster.policies import hf_cb  # noqa: F401
from simcluster import numa  # noqa: F401,E402  (the numa_minibatch router)
from simcluster.policies.batching import Plan
from simcluster.policies.registry import (BATCHERS, CONTROLLERS, PARTITIONS, ROUTERS,
                                         Registry)

__all__ = ["BATCHERS", "CONTROLLERS", "PARTITIONS", "ROUTERS", "Plan", "Registry"]
