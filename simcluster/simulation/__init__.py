"""One run: a trace's arrivals into a cluster, and its results as DataFrames.

:mod:`.simulation` (the run), :mod:`.results` (request, timeline and instance frames, and
the summary as a pure function of them).
"""

from simcluster.simulation.results import (Results, format_summary, request_frame, summarize,
                                           timeline_frame)
from simcluster.simulation.simulation import Simulation

__all__ = ["Results", "Simulation", "format_summary", "request_frame", "summarize",
           "timeline_frame"]
