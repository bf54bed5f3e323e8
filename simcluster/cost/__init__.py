"""Cost model: per-iteration time of a batch on a replica (see :mod:`.model`)."""

from simcluster.cost.layout import Layout
from simcluster.cost.model import Batch, CostModel, IterationCost, IterationTimer
from simcluster.cost.moe import RoutingModel
from simcluster.cost.parallel import ParallelismError, check_parallel

__all__ = ["Batch", "CostModel", "IterationCost", "IterationTimer", "Layout",
           "ParallelismError", "RoutingModel", "check_parallel"]
