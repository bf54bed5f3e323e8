"""Pure trace transforms: each takes a Trace and returns a new one, the input untouched.

Extras (per-request columns such as ``hash_ids``) follow their requests. Out-of-range
arguments raise InputError (a ValueError) naming the argument; nothing is clamped.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from simcluster.errors import InputError
from simcluster.workload._table import subset_extras
from simcluster.workload.hashes import HASH_COLUMN
from simcluster.workload.trace import Trace


def _take(trace: Trace, index: np.ndarray, *, arrival_s: np.ndarray | None = None,
          name: str | None = None) -> Trace:
    """The requests of ``trace`` at ``index`` (sorted positions or a mask), as a new Trace."""
    return Trace(trace.arrival_s[index] if arrival_s is None else arrival_s,
                 trace.prompt_tokens[index], trace.output_tokens[index],
                 name=trace.name if name is None else name,
                 extras=subset_extras(trace.extras, index),
                 hash_block_tokens=trace.hash_block_tokens)


def rescale_rate(trace: Trace, target_rate_per_s: float) -> Trace:
    """The same requests with inter-arrival times scaled so that rate_per_s is the target.

    Every gap between consecutive arrivals is multiplied by one factor
    (current rate / target), so the arrival pattern (burstiness, diurnal shape) is kept
    and only the time axis is stretched or compressed. The first arrival stays where it
    is. Needs a trace with at least two requests and a positive span.
    """
    if not (isinstance(target_rate_per_s, numbers.Real) and math.isfinite(target_rate_per_s)
            and target_rate_per_s > 0):
        raise InputError(f"target_rate_per_s must be a finite number > 0, "
                         f"got {target_rate_per_s!r}")
    if len(trace) < 2 or trace.span_s <= 0:
        raise InputError(f"cannot rescale the rate of a trace with {len(trace)} requests "
                         f"spanning {trace.span_s} s: it has no rate")
    new_span = len(trace) / float(target_rate_per_s)
    start = trace.arrival_s[0]
    offsets = (trace.arrival_s - start) * (new_span / trace.span_s)
    offsets[-1] = new_span  # exact end, so that rate_per_s == target up to rounding
    offsets = np.maximum.accumulate(offsets)
    return Trace(start + offsets, trace.prompt_tokens, trace.output_tokens, name=trace.name,
                 extras=dict(trace.extras), hash_block_tokens=trace.hash_block_tokens)


def time_window(trace: Trace, start_s: float, end_s: float | None = None) -> Trace:
    """The requests arriving in [start_s, end_s) seconds after the trace's first arrival.

    Times in the result count from the window start, so a request that arrived
    ``start_s + 2.5`` s after the first arrival is at 2.5 s (the first kept request is at
    >= 0, not necessarily 0: the quiet time before it is part of the window).
    ``end_s=None`` keeps everything from ``start_s`` on. The window may be empty.
    """
    for value, name in ((start_s, "start_s"), (end_s, "end_s")):
        if value is None and name == "end_s":
            continue
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
            raise InputError(f"{name} must be a finite number >= 0, got {value!r}", field=name)
    if end_s is not None and end_s <= start_s:
        raise InputError(f"end_s ({end_s}) must be greater than start_s ({start_s})")
    if len(trace) == 0:
        return trace
    rel = trace.arrival_s - trace.arrival_s[0]
    keep = rel >= start_s
    if end_s is not None:
        keep &= rel < end_s
    shifted = np.maximum(rel[keep] - start_s, 0.0)
    return _take(trace, keep, arrival_s=shifted)


def first_n(trace: Trace, n: int) -> Trace:
    """The first n requests (0 <= n <= len(trace)); times unchanged."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= n <= len(trace):
        raise InputError(f"n must be a whole number in [0, {len(trace)}], got {n!r}")
    return _take(trace, np.arange(int(n)))


def subsample(trace: Trace, fraction_or_n: float | int, rng: np.random.Generator) -> Trace:
    """A random subset of the requests, in their original order and at their original times.

    An int keeps exactly that many requests (0..len); a float in (0, 1] keeps
    round(fraction * len) of them. Requests are chosen uniformly without replacement using
    ``rng``. Thinning this way lowers the rate in proportion and keeps the arrival shape.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(fraction_or_n, bool) or not isinstance(fraction_or_n, numbers.Real):
        raise InputError(f"fraction_or_n must be an int count or a float fraction, "
                         f"got {fraction_or_n!r}")
    if isinstance(fraction_or_n, numbers.Integral):
        count = int(fraction_or_n)
        if not 0 <= count <= len(trace):
            raise InputError(f"fraction_or_n as a count must be in [0, {len(trace)}], "
                             f"got {count}")
    else:
        if not (math.isfinite(fraction_or_n) and 0 < fraction_or_n <= 1):
            raise InputError(f"fraction_or_n as a fraction must be in (0, 1], "
                             f"got {fraction_or_n!r}")
        count = int(round(float(fraction_or_n) * len(trace)))
    chosen = np.sort(rng.choice(len(trace), size=count, replace=False))
    return _take(trace, chosen)


def fit_context(trace: Trace, max_tokens: int) -> Trace:
    """The same requests with prompts cut so that prompt + output <= ``max_tokens`` (a model's
    context), keeping each prompt's last tokens — as a chat front end drops the oldest turns of
    a conversation. The tokens cut per request are kept in ``extras["prompt_tokens_cut"]``
    (0 where nothing was cut). A request whose output alone reaches ``max_tokens`` is left
    as it is: the simulator rejects it with the reason (it cannot be made to fit).

    Prefix-block hashes stay with the requests that were not cut. A cut prompt starts inside
    what its hashes described, so it keeps none (it shares no cached prefix); the trace
    keeps its block size. (Before, the block size was dropped for every request, which
    turned prefix caching off for the whole trace without a word.)"""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, numbers.Integral) \
            or max_tokens < 2:
        raise ValueError(f"max_tokens must be a whole number >= 2, got {max_tokens!r}")
    room = int(max_tokens) - trace.output_tokens
    cut = np.where(room >= 1, np.maximum(0, trace.prompt_tokens - room), 0)
    extras = dict(trace.extras)
    extras["prompt_tokens_cut"] = cut.astype(np.int64)
    if trace.has_block_hashes:
        ids = np.empty(len(trace), dtype=object)      # (one tuple of ids per request)
        for i, (v, c) in enumerate(zip(trace.extras[HASH_COLUMN], cut)):
            ids[i] = () if c else v
        extras[HASH_COLUMN] = ids
    return Trace(trace.arrival_s, trace.prompt_tokens - cut, trace.output_tokens,
                 name=trace.name, extras=extras, hash_block_tokens=trace.hash_block_tokens)
