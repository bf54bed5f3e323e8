"""Cost model: per-iteration time of a batch on a replica (see :mod:`.model`)."""

from simcluster.cost.layout import Layout
from simcluster.cost.model import Batch, CostModel, IterationCost, IterationTimer
from simcluster.cost.parallel import ParallelismError, check_parallel
from simcluster.lazy import lazy_exports

# (mixtures of experts: imported when first read)
__getattr__, __dir__ = lazy_exports(globals(), {"RoutingModel": "simcluster.cost.moe"})

__all__ = ["Batch", "CostModel", "IterationCost", "IterationTimer", "Layout",
           "ParallelismError", "RoutingModel", "check_parallel"]
