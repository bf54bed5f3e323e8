"""Replicas behind routers: the cluster that places requests, and prefill/decode pools.

:mod:`.replicas` (instances behind one router, the sink of finished and rejected requests),
:mod:`.pools` (a prefill pool handing requests to a decode pool, KV shipped over a link),
:mod:`.phase_pools` (prompt, token and mixed pools of servers that move between pools, KV
hand-off through :mod:`.transfers`, links whose bandwidth concurrent transfers share).
"""

from simcluster.cluster.phase_pools import PhasePoolCluster
from simcluster.cluster.pools import DisaggregatedCluster
from simcluster.cluster.replicas import Cluster, InstanceSpec, reference_speed

__all__ = ["Cluster", "DisaggregatedCluster", "InstanceSpec", "PhasePoolCluster",
           "reference_speed"]
