"""Analyses over the simulator: comparisons, pictures, validation against measurements, and the
source papers' figures.

:mod:`.compare` (runs side by side, metrics grouped latency / throughput / SLO / cost),
:mod:`.plots` (functions returning matplotlib Figures), :mod:`.perfetto` (a run as a
Chrome/Perfetto trace), :mod:`.calibration_validation` (operator and iteration error of the cost
model against measured tables and published profiles), :mod:`.engine_validation`
(``simcluster validate-e2e``: a measured replay simulated with an engine model), :mod:`.hllm`
(the hLLM slides' figures). Nothing here is imported by ``import simcluster.analysis``: plots
load matplotlib only when asked for.
"""
