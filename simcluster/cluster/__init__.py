"""Replicas behind routers: the cluster that places requests, and prefill/decode pools.

:mod:`.replicas` (instances behind one router, the sink of finished and rejected requests),
:mod:`.pools` (a prefill pool handing requests to a decode pool, KV shipped over a link),
:mod:`.phase_pools` (prompt, token and mixed pools of servers that move between pools, KV
hand-off through :mod:`.transfers`, links whose bandwidth concurrent transfers share).
"""

from simcluster.cluster.replicas import Cluster, InstanceSpec, reference_speed
from simcluster.lazy import lazy_exports

# (pools of other kinds: imported when first read)
__getattr__, __dir__ = lazy_exports(globals(), {
    "DisaggregatedCluster": "simcluster.cluster.pools",
    "PhasePoolCluster": "simcluster.cluster.phase_pools"})

__all__ = ["Cluster", "DisaggregatedCluster", "InstanceSpec", "PhasePoolCluster",
           "reference_speed"]
