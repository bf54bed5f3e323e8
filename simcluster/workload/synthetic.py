"""Synthetic workloads: arrival processes, token-length distributions, and a composer.

Every random function takes an explicit ``rng: np.random.Generator`` and draws only from
it, so that the same seed gives the same trace and two generators never interfere. Bad
parameters raise InputError (a ValueError) naming the parameter.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np

from simcluster.errors import InputError
from simcluster.workload.trace import Trace

#: What synthetic_trace accepts for arrivals: a Poisson rate (requests/s), an array of n
#: arrival times, or a callable ``f(n, rng=rng)`` returning one.
ArrivalSpec = float | np.ndarray | Callable[..., np.ndarray]
#: What synthetic_trace accepts for token lengths: a fixed count, an array of n counts, or
#: a callable ``f(n, rng=rng)`` returning one.
LengthSpec = int | np.ndarray | Callable[..., np.ndarray]

# Below this fraction of a length distribution inside [min_tokens, max_tokens],
# resampling would take too long; the parameters are rejected instead.
_MIN_ACCEPTANCE = 1e-3


def _count(value: object, name: str) -> int:
    """``value`` as a whole number >= 0, else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise InputError(f"{name} must be a whole number >= 0, got {value!r}", field=name)
    return int(value)


def _positive(value: object, name: str, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (>= 0 with allow_zero), else ValueError."""
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value) and (value >= 0 if allow_zero else value > 0))
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be a finite number {bound}, got {value!r}",
                         field=name)
    return float(value)


def _generator(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


def poisson_arrivals(n: int, rate_per_s: float, rng: np.random.Generator, *,
                     start_s: float = 0.0) -> np.ndarray:
    """Arrival times (s) of n requests from a Poisson process of rate ``rate_per_s``.

    Inter-arrival times are exponential with mean 1/rate; the process starts at
    ``start_s``, so the first request arrives one inter-arrival time after it.
    """
    n = _count(n, "n")
    rate = _positive(rate_per_s, "rate_per_s")
    start = _positive(start_s, "start_s", allow_zero=True)
    gaps = _generator(rng).exponential(1.0 / rate, size=n)
    return start + np.cumsum(gaps)


def gamma_arrivals(n: int, rate_per_s: float, cv: float, rng: np.random.Generator, *,
                   start_s: float = 0.0) -> np.ndarray:
    """Arrival times (s) of n requests of a gamma renewal process: bursty for cv > 1.

    Inter-arrival times are Gamma with shape 1/cv**2 and mean 1/rate_per_s, so their
    coefficient of variation (std/mean) is ``cv``: cv < 1 is smoother than Poisson, cv > 1
    burstier. With cv == 1 this is exactly :func:`poisson_arrivals` (same draws from rng).
    """
    n = _count(n, "n")
    rate = _positive(rate_per_s, "rate_per_s")
    cv = _positive(cv, "cv")
    start = _positive(start_s, "start_s", allow_zero=True)
    rng = _generator(rng)
    if cv == 1.0:
        gaps = rng.exponential(1.0 / rate, size=n)
    else:
        shape = 1.0 / cv**2
        gaps = rng.gamma(shape, 1.0 / (rate * shape), size=n)
    return start + np.cumsum(gaps)


def fixed_lengths(n: int, tokens: int) -> np.ndarray:
    """n token counts all equal to ``tokens`` (int64)."""
    n = _count(n, "n")
    if isinstance(tokens, bool) or not isinstance(tokens, numbers.Integral) or tokens < 1:
        raise InputError(f"tokens must be a whole number >= 1, got {tokens!r}")
    return np.full(n, int(tokens), dtype=np.int64)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def lognormal_lengths(n: int, median: float, sigma: float, rng: np.random.Generator, *,
                      min_tokens: int = 1, max_tokens: int | None = None) -> np.ndarray:
    """n token counts from a log-normal distribution, rounded to whole tokens (int64).

    ``median`` is the distribution's median (exp of the log-mean) and ``sigma`` the
    standard deviation of the log. Counts outside [min_tokens, max_tokens] are *resampled*,
    not clamped: the result follows the log-normal truncated to that range, with no pile-up
    at the bounds. Parameters that leave less than 0.1 % of the distribution inside the range
    raise ValueError rather than resample for ever.
    """
    n = _count(n, "n")
    median = _positive(median, "median")
    sigma = _positive(sigma, "sigma", allow_zero=True)
    if isinstance(min_tokens, bool) or not isinstance(min_tokens, numbers.Integral) \
            or min_tokens < 1:
        raise InputError(f"min_tokens must be a whole number >= 1, got {min_tokens!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool)
                                   or not isinstance(max_tokens, numbers.Integral)
                                   or max_tokens < min_tokens):
        raise InputError(f"max_tokens must be None or a whole number >= min_tokens "
                         f"({min_tokens}), got {max_tokens!r}")
    rng = _generator(rng)
    hi = math.inf if max_tokens is None else max_tokens + 0.5
    lo = min_tokens - 0.5
    if sigma == 0.0:
        accept = 1.0 if min_tokens <= round(median) <= hi else 0.0
    else:
        z_hi = math.inf if hi == math.inf else (math.log(hi) - math.log(median)) / sigma
        accept = _normal_cdf(z_hi) - _normal_cdf((math.log(lo) - math.log(median)) / sigma)
    if accept < _MIN_ACCEPTANCE:
        raise InputError(f"lognormal_lengths: median={median}, sigma={sigma} puts only "
                         f"{accept:.2g} of the draws in [min_tokens={min_tokens}, "
                         f"max_tokens={max_tokens}]; widen the range or move the median")
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        want = n - filled
        draw = int(math.ceil(want / accept * 1.1)) + 16
        values = np.rint(median * np.exp(sigma * rng.standard_normal(draw)))
        ok = values >= min_tokens
        if max_tokens is not None:
            ok &= values <= max_tokens
        kept = values[ok][:want]
        out[filled:filled + len(kept)] = kept
        filled += len(kept)
    return out


def resampled_lengths(n: int, trace: Trace, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(prompt_tokens, output_tokens) of n requests drawn with replacement from ``trace``.

    Each pair comes from one row, so the joint distribution (e.g. long prompts with short
    answers in code traces) is kept.
    """
    n = _count(n, "n")
    if not isinstance(trace, Trace) or len(trace) == 0:
        raise InputError("trace must be a Trace with at least one request")
    rows = _generator(rng).integers(0, len(trace), size=n)
    return trace.prompt_tokens[rows], trace.output_tokens[rows]


def _realise(spec: object, n: int, rng: np.random.Generator, name: str,
             scalar: Callable[[int, object], np.ndarray]) -> np.ndarray:
    """An array of n values from a scalar, an array or a callable ``f(n, rng=rng)``."""
    if callable(spec):
        values = np.asarray(spec(n, rng=rng))
    elif isinstance(spec, numbers.Number) and not isinstance(spec, bool):
        try:
            values = scalar(n, spec)
        except InputError as err:      # (it names its own argument, 'tokens': say which)
            raise InputError(err.reason, field=name) from None
    elif isinstance(spec, (str, bytes, bool)) or spec is None:
        raise InputError(f"expected {_SPECS[name]}; got {type(spec).__name__} "
                         f"{spec!r}", field=name)
    else:
        values = np.asarray(spec)
    if values.shape != (n,):
        raise InputError(f"{name} must give {n} values, got shape {values.shape}", field=name)
    return values


_SPECS = {"arrivals": "a rate (requests/s), an array of n times or a callable f(n, rng=rng)",
          "prompt": "a token count, an array of n counts or a callable f(n, rng=rng)",
          "output": "a token count, an array of n counts or a callable f(n, rng=rng)"}


def synthetic_trace(n: int, *, arrivals: ArrivalSpec, prompt: LengthSpec | Trace,
                    output: LengthSpec | None = None, rng: np.random.Generator,
                    name: str = "synthetic") -> Trace:
    """A trace of n requests composed from an arrival process and two length sources.

    - ``arrivals``: a number (Poisson rate in requests/s), an array of n non-decreasing
      times, or a callable ``f(n, rng=rng)`` such as
      ``functools.partial(gamma_arrivals, rate_per_s=5.0, cv=2.0)``.
    - ``prompt`` / ``output``: an int (every request the same), an array of n counts, or a
      callable ``f(n, rng=rng)`` such as ``partial(lognormal_lengths, median=1000,
      sigma=0.8)``. ``prompt`` may also be a Trace: (prompt, output) pairs are then
      resampled jointly from its rows and ``output`` must be None.

    Draws from ``rng`` in the order arrivals, prompt, output.
    """
    n = _count(n, "n")
    rng = _generator(rng)
    times = _realise(arrivals, n, rng, "arrivals",
                     lambda k, rate: poisson_arrivals(k, rate, rng))
    if isinstance(prompt, Trace):
        if output is not None:
            raise InputError("output must be None when prompt is a Trace: both lengths are "
                             "resampled from its rows")
        prompt_tokens, output_tokens = resampled_lengths(n, prompt, rng)
    else:
        if output is None:
            raise InputError("output is required unless prompt is a Trace")
        prompt_tokens = _realise(prompt, n, rng, "prompt", fixed_lengths)
        output_tokens = _realise(output, n, rng, "output", fixed_lengths)
    return Trace(times, prompt_tokens, output_tokens, name=name)
