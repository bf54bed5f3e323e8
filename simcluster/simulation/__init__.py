"""One run: a trace's arrivals into a cluster, and its results as DataFrames.

:mod:`.simulation` (the run), :mod:`.results` (request, timeline and instance frames, and
the summary as a pure function of them), :mod:`.work` (model FLOPs and bytes per timeline row,
for MFU and MBU), :mod:`.progress` (a tqdm bar over arrivals).
"""

from simcluster.simulation.results import (Results, format_provenance, format_summary,
                                           format_utilisation, request_frame, summarize,
                                           timeline_frame, utilisation)
from simcluster.simulation.simulation import Simulation, cost_provenance

__all__ = ["Results", "Simulation", "cost_provenance", "format_provenance", "format_summary",
           "format_utilisation", "request_frame", "summarize", "timeline_frame", "utilisation"]
