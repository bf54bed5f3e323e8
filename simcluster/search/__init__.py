"""Many simulations answering one question: sweeps, comparisons, capacity, cheapest configuration.

=====================  ==========================================================================
:mod:`.runners`        where points run: this process, a local process pool, or Ray
:mod:`.sweep`          points -> outcomes (errors recorded, results cached on disk) -> a frame
:mod:`.compare`        a few runs side by side, with their frames kept for figures
:mod:`.capacity`       the highest rate meeting the SLOs (bracket, then parallel bisection)
:mod:`.cheapest`       the cheapest replicas (homogeneous and mixed) serving a rate
:mod:`.design`         hardware design-space search (LLMShare): samplers, surrogates, EHVI
=====================  ==========================================================================

A *point* (see :mod:`.sweep`) is duck-typed: the search layer asks it for its key, overrides
and results, and never imports the experiment shell that builds it
(:class:`simcluster.experiment.points.ExperimentPoint`).
"""

from simcluster.search.capacity import CapacityResult, capacity
from simcluster.search.cheapest import CheapestResult, cheapest
from simcluster.search.compare import Comparison, compare_points
from simcluster.search.runners import LocalRunner, RayRunner, SerialRunner, make_runner
from simcluster.search.sweep import Outcome, SweepResult, frame, run_points

__all__ = ["CapacityResult", "CheapestResult", "Comparison", "LocalRunner", "Outcome",
           "RayRunner", "SerialRunner", "SweepResult", "capacity", "cheapest",
           "compare_points", "frame", "make_runner", "run_points"]
