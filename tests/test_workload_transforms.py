"""Trace transforms (pure: new Trace out, input untouched) and the describe summary."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcluster.workload import (
    Trace,
    describe,
    first_n,
    load_trace,
    poisson_arrivals,
    rescale_rate,
    subsample,
    time_window,
)
from simcluster.workload.describe import format_description


@pytest.fixture(scope="module")
def code() -> Trace:
    return first_n(load_trace("azure-code"), 2000)


@pytest.fixture(scope="module")
def moon() -> Trace:
    return first_n(load_trace("mooncake-conv"), 300)


def ramp(n: int = 10, start: float = 0.0) -> Trace:
    return Trace(start + np.arange(n, dtype=float), np.arange(1, n + 1), np.full(n, 2),
                 name="ramp")


@pytest.mark.parametrize("target", [0.5, 5.53, 20.5, 1000.0])
def test_rescale_rate_hits_target(code, target):
    out = rescale_rate(code, target)
    assert out.rate_per_s == pytest.approx(target, rel=1e-12)
    assert out.arrival_s[0] == code.arrival_s[0]
    assert np.array_equal(out.prompt_tokens, code.prompt_tokens)
    # one factor for every gap: the arrival pattern is kept
    ratio = np.diff(out.arrival_s)[np.diff(code.arrival_s) > 0.1] / \
        np.diff(code.arrival_s)[np.diff(code.arrival_s) > 0.1]
    assert np.allclose(ratio, code.rate_per_s / target, rtol=1e-9)
    assert out.name == code.name


def test_rescale_rate_keeps_offset_and_extras(moon):
    shifted = Trace(moon.arrival_s + 100.0, moon.prompt_tokens, moon.output_tokens,
                    extras=moon.extras)
    out = rescale_rate(shifted, 10.0)
    assert out.arrival_s[0] == 100.0
    assert out.rate_per_s == pytest.approx(10.0, rel=1e-12)
    assert list(out.extras["hash_ids"][5]) == list(moon.extras["hash_ids"][5])


def test_rescale_rate_rejects_bad_input():
    with pytest.raises(ValueError, match="target_rate_per_s"):
        rescale_rate(ramp(), 0.0)
    with pytest.raises(ValueError, match="no rate"):
        rescale_rate(Trace([1.0, 1.0], [1, 1], [1, 1]), 2.0)


def test_time_window_relative_and_rezeroed():
    t = ramp(10, start=100.0)  # arrivals 100..109
    w = time_window(t, 2.5, 6.0)  # relative 3, 4, 5
    assert len(w) == 3
    assert w.arrival_s.tolist() == [0.5, 1.5, 2.5]
    assert w.prompt_tokens.tolist() == [4, 5, 6]
    assert len(time_window(t, 3.0)) == 7
    assert time_window(t, 3.0).arrival_s[0] == 0.0
    assert len(time_window(t, 50.0, 60.0)) == 0
    with pytest.raises(ValueError, match="end_s"):
        time_window(t, 5.0, 5.0)
    with pytest.raises(ValueError, match="start_s"):
        time_window(t, -1.0, 5.0)


def test_time_window_counts_on_real_trace(code):
    rel = code.arrival_s - code.arrival_s[0]
    w = time_window(code, 200.0, 300.0)
    assert len(w) == int(np.sum((rel >= 200.0) & (rel < 300.0))) > 0
    assert w.arrival_s.min() >= 0.0 and w.arrival_s.max() < 100.0
    assert len(time_window(code, 70.0, 170.0)) == 0  # the code trace has quiet minutes


def test_first_n(moon):
    assert len(first_n(moon, 10)) == 10
    assert first_n(moon, 10).extras["hash_ids"].shape == (10,)
    assert len(first_n(moon, 0)) == 0
    assert len(first_n(moon, len(moon))) == len(moon)
    with pytest.raises(ValueError, match="n must be"):
        first_n(moon, len(moon) + 1)
    with pytest.raises(ValueError, match="n must be"):
        first_n(moon, -1)


def test_subsample_counts_order_and_seed(code):
    a = subsample(code, 500, np.random.default_rng(1))
    assert len(a) == 500
    assert np.all(np.diff(a.arrival_s) >= 0)
    assert np.isin(a.arrival_s, code.arrival_s).all()
    b = subsample(code, 500, np.random.default_rng(1))
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.prompt_tokens,
                                                                       b.prompt_tokens)
    assert len(subsample(code, 0.25, np.random.default_rng(2))) == round(0.25 * len(code))
    assert len(subsample(code, 1.0, np.random.default_rng(2))) == len(code)
    assert len(subsample(code, 1, np.random.default_rng(2))) == 1  # int: a count
    for bad in (0.0, 1.5, len(code) + 1, -1, True):
        with pytest.raises(ValueError, match="fraction_or_n"):
            subsample(code, bad, np.random.default_rng(2))


def test_subsample_keeps_extras_with_their_requests(moon):
    s = subsample(moon, 40, np.random.default_rng(3))
    index = {(a, p): i for i, (a, p) in enumerate(zip(moon.arrival_s, moon.prompt_tokens))}
    for k in range(len(s)):
        i = index[(s.arrival_s[k], s.prompt_tokens[k])]
        assert list(s.extras["hash_ids"][k]) == list(moon.extras["hash_ids"][i])


def test_transforms_do_not_touch_input(code):
    before = code.arrival_s.copy()
    rescale_rate(code, 50.0)
    time_window(code, 10.0, 20.0)
    subsample(code, 0.5, np.random.default_rng(0))
    assert np.array_equal(code.arrival_s, before)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 200), rate=st.floats(0.01, 1e4), target=st.floats(0.01, 1e4),
       a=st.floats(0, 100), width=st.floats(0.001, 100), seed=st.integers(0, 2**32 - 1))
def test_transform_properties(n, rate, target, a, width, seed):
    g = np.random.default_rng(seed)
    t = Trace(poisson_arrivals(n, rate, g), np.ones(n, int), np.ones(n, int))
    if t.span_s > 0:
        assert rescale_rate(t, target).rate_per_s == pytest.approx(target, rel=1e-9)
    w = time_window(t, a, a + width)
    rel = t.arrival_s - t.arrival_s[0]
    assert len(w) == int(np.sum((rel >= a) & (rel < a + width)))
    assert np.all(w.arrival_s >= 0)
    k = int(g.integers(0, n + 1))
    assert len(subsample(t, k, g)) == k == len(first_n(t, k))


def test_describe_values_and_table():
    t = Trace([0.0, 1.0, 3.0, 6.0], [10, 20, 30, 40], [1, 1, 1, 100], name="tiny")
    d = describe(t)
    assert d["requests"] == 4 and d["span_s"] == 6.0
    assert d["rate_per_s"] == pytest.approx(4 / 6)
    assert d["prompt_tokens_mean"] == 25.0 and d["prompt_tokens_p50"] == 25.0
    assert d["prompt_tokens_max"] == 40 and d["output_tokens_max"] == 100
    assert d["output_tokens_p99"] == pytest.approx(97.03)
    gaps = np.array([1.0, 2.0, 3.0])
    assert d["interarrival_cv"] == pytest.approx(gaps.std(ddof=1) / gaps.mean())
    for key in ("prompt_tokens_p90", "output_tokens_p90", "output_tokens_mean"):
        assert key in d
    table = format_description(d)
    lines = table.splitlines()
    assert lines[0].split() == ["name", "tiny"]
    assert any(line.split() == ["max", "40", "100"] for line in lines)
    value_ends = {len(line) for line in lines if line.split()[0] in ("requests", "span_s")}
    assert len(value_ends) == 1  # right-aligned numbers


def test_describe_small_traces():
    d = describe(Trace([0.0], [1], [1]))
    assert d["requests"] == 1 and math.isnan(d["interarrival_cv"])
    assert "n/a" in format_description(d)
    empty = describe(Trace(np.zeros(0), np.zeros(0, int), np.zeros(0, int)))
    assert empty["requests"] == 0 and math.isnan(empty["prompt_tokens_mean"])
    format_description(empty)
