"""Pluggable decisions, one registry per extension point, filled by decorators.

=====================  =======================  ==========================================
registry               modules                  decides
=====================  =======================  ==========================================
``ROUTERS``            routing, bucketed,       which instance a request goes to
                       minibatch
``BATCHERS``           batching, hf_cb,         an instance's next iteration
                       bucketed
``PARTITIONS``         partition/               how a model is cut over a GPU group
``CONTROLLERS``        controllers (queueing)   how many instances of a pool are active
``OFFLOADS``           offload                  does a prefilled request change pool
``NUMA_PLACEMENTS``    numa                     where a CPU socket's weights and KV live
``POOL_ROUTERS``       pool_routing             a request's prompt and token servers, and
                                                which servers join the mixed pool
``REBALANCERS``        rebalance                which servers move between phase pools
=====================  =======================  ==========================================

Policies read the state of instances and clusters they are bound to (duck-typed) and import
nothing above the cost model.
"""

from simcluster.policies import batching, routing  # noqa: F401  (fill the registries)
# (the other modules of the table are imported when a registry first needs them:
# registry.BUILTIN_MODULES)
from simcluster.policies.batching import Plan
from simcluster.policies.registry import (BATCHERS, CONTROLLERS, NUMA_PLACEMENTS, OFFLOADS,
                                          PARTITIONS, POOL_ROUTERS, REBALANCERS, ROUTERS,
                                          Registry)

__all__ = ["BATCHERS", "CONTROLLERS", "NUMA_PLACEMENTS", "OFFLOADS", "PARTITIONS",
           "POOL_ROUTERS", "REBALANCERS", "ROUTERS", "Plan", "Registry"]
