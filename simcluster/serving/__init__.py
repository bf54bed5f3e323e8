"""One replica: its requests, paged KV cache, settings, and the batching loop that serves them.

:mod:`.request` (a request's tokens and times), :mod:`.kv` (paged KV blocks), :mod:`.config`
(scheduler and memory settings), :mod:`.instance` (the SimPy process: plan, time, apply).
"""

from simcluster.serving.config import InstanceConfig
from simcluster.serving.instance import Instance
from simcluster.serving.kv import KVCache
from simcluster.serving.request import Request

__all__ = ["Instance", "InstanceConfig", "KVCache", "Request"]
