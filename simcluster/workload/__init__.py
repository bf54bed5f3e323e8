"""Workloads: request traces, their loaders, synthetic generators, transforms and summaries.

A :class:`Trace` is what a simulation replays: arrival times plus prompt and output token
counts per request, optionally with prefix-block hashes (:mod:`.hashes`; synthetic
prefix-sharing workloads in :mod:`.prefixes`). Load one from a file or a bundled public trace
(:func:`load_trace`), generate one (:func:`synthetic_trace` and the arrival/length generators),
reshape it with the pure transforms (:func:`rescale_rate`, :func:`time_window`, :func:`first_n`,
:func:`subsample`, :func:`fit_context`), and summarise it (:func:`describe`,
:func:`format_description`).
"""

from simcluster.lazy import lazy_exports
from simcluster.workload.bundled import bundled_trace_path, bundled_traces
from simcluster.workload.describe import describe, format_description, interarrival_cv
from simcluster.workload.loaders import load_trace
from simcluster.workload.trace import Trace

# (generators, prefix workloads and transforms: imported when first read — a simulation of
# a trace file needs none of them)
__getattr__, __dir__ = lazy_exports(globals(), {
    **dict.fromkeys(("conversation_trace", "ideal_hit_rate", "shared_prefix_hit_rate",
                     "shared_prefix_trace"), "simcluster.workload.prefixes"),
    **dict.fromkeys(("fixed_lengths", "gamma_arrivals", "lognormal_lengths", "poisson_arrivals",
                     "resampled_lengths", "synthetic_trace"), "simcluster.workload.synthetic"),
    **dict.fromkeys(("first_n", "fit_context", "rescale_rate", "subsample", "time_window"),
                    "simcluster.workload.transforms"),
})

__all__ = [
    "Trace",
    "load_trace", "bundled_traces", "bundled_trace_path",
    "poisson_arrivals", "gamma_arrivals", "fixed_lengths", "lognormal_lengths",
    "resampled_lengths", "synthetic_trace",
    "shared_prefix_trace", "conversation_trace", "shared_prefix_hit_rate", "ideal_hit_rate",
    "rescale_rate", "time_window", "first_n", "subsample", "fit_context",
    "describe", "format_description", "interarrival_cv",
]
