"""Pluggable decisions: routing and batching, each through its registry."""

from simcluster.policies import batching, routing  # noqa: F401  (fill the registries)
from simcluster.policies.batching import Plan
from simcluster.policies.registry import (BATCHERS, CONTROLLERS, PARTITIONS, ROUTERS,
                                         Registry)

__all__ = ["BATCHERS", "CONTROLLERS", "PARTITIONS", "ROUTERS", "Plan", "Registry"]
