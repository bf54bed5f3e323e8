"""Analyses over the simulator: validation against measurements, and the source papers' figures.

:mod:`.calibration_validation` (operator and iteration error of the cost model against measured
tables and published profiles), :mod:`.engine_validation` (``simcluster validate-e2e``: a
measured replay simulated with an engine model), :mod:`.hllm` (the hLLM slides' figures).
"""
