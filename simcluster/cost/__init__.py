"""Cost model: per-iteration time of a batch on a replica (see :mod:`.model`)."""

from simcluster.cost.layout import Layout
from simcluster.cost.model import Batch, CostModel, IterationCost, IterationTimer

__all__ = ["Batch", "CostModel", "IterationCost", "IterationTimer", "Layout"]
