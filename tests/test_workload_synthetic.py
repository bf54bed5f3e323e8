"""Synthetic workloads: seeded determinism, the statistics promised, parameter checks."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest

from simcluster.workload import (
    Trace,
    fixed_lengths,
    gamma_arrivals,
    lognormal_lengths,
    poisson_arrivals,
    resampled_lengths,
    synthetic_trace,
)
from simcluster.workload.describe import interarrival_cv


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def source_trace() -> Trace:
    return Trace([0.0, 1.0, 2.0], [100, 2000, 30], [5, 7, 900], name="src")


GENERATORS = {
    "poisson": lambda g: poisson_arrivals(100, 3.0, g),
    "gamma": lambda g: gamma_arrivals(100, 3.0, 2.5, g),
    "lognormal": lambda g: lognormal_lengths(100, 500, 1.0, g, max_tokens=4000),
    "resampled": lambda g: np.concatenate(resampled_lengths(100, source_trace(), g)),
    "trace": lambda g: synthetic_trace(100, arrivals=4.0, prompt=partial(
        lognormal_lengths, median=300, sigma=0.5), output=64, rng=g).to_frame().to_numpy(),
}


@pytest.mark.parametrize("name", GENERATORS)
def test_same_seed_same_draws(name):
    make = GENERATORS[name]
    assert np.array_equal(make(rng(7)), make(rng(7)))
    assert not np.array_equal(make(rng(7)), make(rng(8)))


def test_poisson_mean_rate_and_start():
    times = poisson_arrivals(20_000, 5.0, rng(1), start_s=10.0)
    assert times[0] > 10.0 and np.all(np.diff(times) >= 0)
    gaps = np.diff(np.concatenate([[10.0], times]))
    # mean gap 1/rate; its standard error is (1/rate)/sqrt(n)
    assert gaps.mean() == pytest.approx(0.2, abs=4 * 0.2 / math.sqrt(20_000))
    trace = Trace(times, fixed_lengths(20_000, 1), fixed_lengths(20_000, 1))
    assert trace.rate_per_s == pytest.approx(5.0, rel=4 / math.sqrt(20_000))


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_gamma_cv_within_sampling_error(cv):
    n = 20_000
    times = gamma_arrivals(n, 2.0, cv, rng(3))
    gaps = np.diff(np.concatenate([[0.0], times]))
    sample_cv = gaps.std(ddof=1) / gaps.mean()
    # delta method for s/m of a gamma sample (skewness 2 cv, kurtosis 3 + 6 cv^2):
    # Var(s/m) = cv^2 ((kurtosis - 1) / 4 - cv^2) / n = cv^2 (1 + cv^2) / (2 n)
    se = cv * math.sqrt((1 + cv**2) / (2 * n))
    assert abs(sample_cv - cv) < 4 * se, (sample_cv, cv, se)
    assert gaps.mean() == pytest.approx(0.5, rel=4 * cv / math.sqrt(n))


def test_gamma_cv_one_is_poisson_exactly():
    assert np.array_equal(gamma_arrivals(50, 2.0, 1.0, rng(5)), poisson_arrivals(50, 2.0, rng(5)))


def test_lognormal_median_and_resampling_not_clamping():
    values = lognormal_lengths(20_000, 800, 0.7, rng(2))
    assert values.dtype == np.int64 and values.min() >= 1
    assert np.median(values) == pytest.approx(800, rel=0.03)
    bounded = lognormal_lengths(20_000, 100, 1.0, rng(2), min_tokens=100, max_tokens=400)
    assert bounded.min() >= 100 and bounded.max() <= 400
    # half the mass lies below 100: clamping would pile ~50 % of draws onto exactly 100
    assert np.mean(bounded == 100) < 0.05
    assert np.mean(bounded == 400) < 0.05


def test_lognormal_rejects_a_range_it_cannot_fill():
    with pytest.raises(ValueError, match="widen the range"):
        lognormal_lengths(10, 1_000_000, 0.1, rng(), max_tokens=10)
    assert lognormal_lengths(3, 50, 0.0, rng()).tolist() == [50, 50, 50]


def test_fixed_and_resampled_lengths():
    assert fixed_lengths(3, 128).tolist() == [128, 128, 128]
    src = source_trace()
    prompt, output = resampled_lengths(1000, src, rng(4))
    pairs = set(zip(prompt.tolist(), output.tolist()))
    assert pairs == set(zip(src.prompt_tokens.tolist(), src.output_tokens.tolist()))


def test_synthetic_trace_composes_specs():
    g = rng(9)
    t = synthetic_trace(200, arrivals=partial(gamma_arrivals, rate_per_s=5.0, cv=2.0),
                        prompt=source_trace(), rng=g, name="mix")
    assert len(t) == 200 and t.name == "mix"
    assert set(t.prompt_tokens.tolist()) <= {100, 2000, 30}
    t2 = synthetic_trace(3, arrivals=[0.0, 1.0, 2.0], prompt=np.array([5, 6, 7]), output=1,
                         rng=g)
    assert t2.prompt_tokens.tolist() == [5, 6, 7] and t2.output_tokens.tolist() == [1, 1, 1]
    assert synthetic_trace(0, arrivals=1.0, prompt=1, output=1, rng=g).span_s == 0.0


@pytest.mark.parametrize("call, param", [
    (lambda: poisson_arrivals(10, 0.0, rng()), "rate_per_s"),
    (lambda: poisson_arrivals(10, -1.0, rng()), "rate_per_s"),
    (lambda: poisson_arrivals(-1, 1.0, rng()), "n"),
    (lambda: poisson_arrivals(2.5, 1.0, rng()), "n"),
    (lambda: gamma_arrivals(10, 1.0, 0.0, rng()), "cv"),
    (lambda: gamma_arrivals(10, 1.0, -2.0, rng()), "cv"),
    (lambda: gamma_arrivals(10, math.inf, 1.0, rng()), "rate_per_s"),
    (lambda: gamma_arrivals(-3, 1.0, 1.0, rng()), "n"),
    (lambda: fixed_lengths(3, 0), "tokens"),
    (lambda: fixed_lengths(-1, 3), "n"),
    (lambda: lognormal_lengths(3, 0, 1.0, rng()), "median"),
    (lambda: lognormal_lengths(3, 10, -1.0, rng()), "sigma"),
    (lambda: lognormal_lengths(3, 10, 1.0, rng(), min_tokens=0), "min_tokens"),
    (lambda: lognormal_lengths(3, 10, 1.0, rng(), min_tokens=5, max_tokens=4), "max_tokens"),
    (lambda: resampled_lengths(-1, source_trace(), rng()), "n"),
    (lambda: synthetic_trace(3, arrivals=1.0, prompt=5, rng=rng()), "output"),
    (lambda: synthetic_trace(3, arrivals=1.0, prompt=source_trace(), output=4, rng=rng()),
     "output"),
    (lambda: synthetic_trace(3, arrivals=[0.0, 1.0], prompt=5, output=5, rng=rng()),
     "arrivals"),
    (lambda: synthetic_trace(3, arrivals=1.0, prompt=[1, 2], output=5, rng=rng()), "prompt"),
    # a bad count names prompt or output, not the helper's own 'tokens'
    (lambda: synthetic_trace(3, arrivals=1.0, prompt=0, output=5, rng=rng()), "'prompt'"),
    (lambda: synthetic_trace(3, arrivals=1.0, prompt=5, output=2.5, rng=rng()), "'output'"),
    (lambda: synthetic_trace(3, arrivals="5", prompt=5, output=5, rng=rng()),
     "'arrivals': expected a rate .* got str '5'"),
])
def test_bad_parameters_name_the_parameter(call, param):
    with pytest.raises(ValueError, match=param):
        call()


def test_rng_must_be_a_generator():
    with pytest.raises(TypeError, match="Generator"):
        poisson_arrivals(3, 1.0, 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Generator"):
        lognormal_lengths(3, 10, 1.0, np.random.RandomState(0))  # type: ignore[arg-type]


def test_interarrival_cv_of_generated_trace():
    times = gamma_arrivals(5000, 1.0, 2.0, rng(11))
    trace = Trace(times, fixed_lengths(5000, 1), fixed_lengths(5000, 1))
    assert interarrival_cv(trace) == pytest.approx(2.0, rel=0.15)


def test_messages_show_numbers_not_numpy_reprs():
    """numpy 2's scalar reprs ('np.float64(1.0)') leaked into the trace checks' messages."""
    with pytest.raises(ValueError, match=r"arrival 1\.0 s is earlier than request 1's 2\.0 s"):
        synthetic_trace(3, arrivals=[0.0, 2.0, 1.0], prompt=5, output=5, rng=rng())
    with pytest.raises(ValueError, match=r"found -3$"):
        synthetic_trace(3, arrivals=1.0, prompt=[1, 2, -3], output=5, rng=rng())
    with pytest.raises(ValueError, match=r"found nan$"):
        synthetic_trace(3, arrivals=[0.0, math.nan, 1.0], prompt=5, output=5, rng=rng())
