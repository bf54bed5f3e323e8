"""The Trace value: validation, immutability, table form, and save/load round trips."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcluster.errors import InputError
from simcluster.workload import Trace, first_n, load_trace


def small() -> Trace:
    return Trace(np.array([0.5, 1.0, 1.0, 3.5]), np.array([10, 20, 30, 40]),
                 np.array([1, 2, 3, 4]), name="small")


def test_fields_dtypes_and_properties():
    t = small()
    assert len(t) == 4
    assert t.arrival_s.dtype == np.float64 and t.output_tokens.dtype == np.int64
    assert t.span_s == 3.0
    assert t.rate_per_s == pytest.approx(4 / 3)
    assert "requests=4" in repr(t)


def test_empty_and_single_request_traces():
    empty = Trace(np.zeros(0), np.zeros(0, dtype=int), np.zeros(0, dtype=int))
    assert len(empty) == 0 and empty.span_s == 0.0 and math.isnan(empty.rate_per_s)
    one = Trace([2.0], [1], [1])
    assert one.span_s == 0.0 and math.isnan(one.rate_per_s)
    burst = Trace([1.0, 1.0], [1, 1], [1, 1])
    assert burst.rate_per_s == math.inf


def test_arrays_are_read_only_copies():
    arrival = np.array([0.0, 1.0])
    t = Trace(arrival, [1, 2], [3, 4])
    arrival[0] = 5.0
    assert t.arrival_s[0] == 0.0
    with pytest.raises(ValueError):
        t.prompt_tokens[0] = 7
    with pytest.raises(AttributeError):
        t.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, field, words", [
    (dict(arrival_s=[1.0, 0.5], prompt_tokens=[1, 1], output_tokens=[1, 1]), "arrival_s",
     "request 1"),
    (dict(arrival_s=[-1.0], prompt_tokens=[1], output_tokens=[1]), "arrival_s", ">= 0"),
    (dict(arrival_s=[np.nan], prompt_tokens=[1], output_tokens=[1]), "arrival_s", "finite"),
    (dict(arrival_s=[0.0, 1.0], prompt_tokens=[1, 0], output_tokens=[1, 1]), "prompt_tokens",
     "request 1"),
    (dict(arrival_s=[0.0], prompt_tokens=[2.5], output_tokens=[1]), "prompt_tokens", "2.5"),
    (dict(arrival_s=[0.0], prompt_tokens=[1], output_tokens=[1, 2]), "output_tokens",
     "one entry per request"),
    (dict(arrival_s=[[0.0]], prompt_tokens=[1], output_tokens=[1]), "arrival_s", "1-D"),
    (dict(arrival_s=["a"], prompt_tokens=[1], output_tokens=[1]), "arrival_s", "real numbers"),
    (dict(arrival_s=[0.0], prompt_tokens=[True], output_tokens=[1]), "prompt_tokens",
     "whole numbers"),
    (dict(arrival_s=[0.0], prompt_tokens=[1], output_tokens=[1], extras={"x": [1, 2]}),
     "extras['x']", "one entry per request"),
    (dict(arrival_s=[0.0], prompt_tokens=[1], output_tokens=[1], extras={"arrival_s": [1]}),
     "extras", "clash"),
])
def test_construction_validates(kwargs, field, words):
    with pytest.raises(InputError) as info:
        Trace(**kwargs)
    assert info.value.field == field
    assert words in str(info.value)


def test_whole_floats_become_ints():
    t = Trace([0.0], [3.0], [np.float32(2)])
    assert t.prompt_tokens.tolist() == [3] and t.prompt_tokens.dtype == np.int64


def test_to_frame_and_from_frame():
    t = small()
    df = t.to_frame()
    assert list(df.columns) == ["request_id", "arrival_s", "prompt_tokens", "output_tokens"]
    assert df["request_id"].tolist() == [0, 1, 2, 3]
    back = Trace.from_frame(df, name="again")
    assert back.name == "again" and not back.extras
    assert np.array_equal(back.arrival_s, t.arrival_s)
    assert np.array_equal(back.output_tokens, t.output_tokens)
    empty = Trace.from_frame(first_n(t, 0).to_frame())
    assert len(empty) == 0


def test_from_frame_errors_name_row_column_and_source():
    df = pd.DataFrame({"arrival_s": [0.0, 1.0], "prompt_tokens": [5, -2],
                       "output_tokens": [1, 1]})
    with pytest.raises(InputError) as info:
        Trace.from_frame(df, source="my.csv")
    assert info.value.file == "my.csv" and info.value.field == "prompt_tokens"
    assert "row 1" in str(info.value)
    with pytest.raises(InputError, match="missing column 'output_tokens'"):
        Trace.from_frame(df.drop(columns="output_tokens"))
    with pytest.raises(TypeError):
        Trace.from_frame({"arrival_s": [0.0]})  # type: ignore[arg-type]
    # a column twice: df[name] was a frame, and an AttributeError came from pandas
    twice = pd.DataFrame([[0.0, 5, 1, 6]], columns=["arrival_s", "prompt_tokens",
                                                    "output_tokens", "prompt_tokens"])
    with pytest.raises(InputError, match="'prompt_tokens' appears 2 times"):
        Trace.from_frame(twice, source="my.csv")


def test_save_load_round_trip_csv_and_jsonl(tmp_path):
    t = first_n(load_trace("azure-conv"), 500)
    for suffix in (".csv", ".jsonl"):
        back = load_trace(t.save(tmp_path / f"t{suffix}"))
        assert np.array_equal(back.arrival_s, t.arrival_s)  # exact, not approximate
        assert np.array_equal(back.prompt_tokens, t.prompt_tokens)
        assert np.array_equal(back.output_tokens, t.output_tokens)
        assert not back.extras


def test_block_hashes_round_trip_and_other_list_extras_warn_in_csv(tmp_path):
    t = first_n(load_trace("mooncake-conv"), 50)
    assert t.hash_block_tokens == 512 and t.has_block_hashes
    for suffix in (".jsonl", ".csv"):          # the canonical block-hash column, both formats
        back = load_trace(t.save(tmp_path / f"m{suffix}"))
        assert list(back.extras["hash_ids"]) == list(t.extras["hash_ids"])
        assert back.hash_block_tokens == 512 and "hash_block_tokens" not in back.extras
    first = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert list(first)[:4] == ["request_id", "arrival_s", "prompt_tokens", "output_tokens"]
    assert first["hash_block_tokens"] == 512
    other = Trace(t.arrival_s, t.prompt_tokens, t.output_tokens,
                  extras={"tags": [[1, 2]] * len(t)})
    with pytest.warns(UserWarning, match="tags"):
        other.save(tmp_path / "o.csv")
    assert not load_trace(tmp_path / "o.csv").extras


def test_save_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match="suffix"):
        small().save(tmp_path / "t.xlsx")


@settings(max_examples=25, deadline=None)
@given(gaps=st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=30),
       start=st.floats(0, 1e6, allow_nan=False),
       tokens=st.data())
def test_round_trip_property(gaps, start, tokens):
    n = len(gaps)
    arrival = start + np.cumsum(gaps)
    prompt = tokens.draw(st.lists(st.integers(1, 2**40), min_size=n, max_size=n))
    output = tokens.draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n))
    t = Trace(arrival, prompt, output)
    with tempfile.TemporaryDirectory() as d:
        for suffix in (".csv", ".jsonl"):
            back = load_trace(t.save(Path(d) / f"t{suffix}"))
            assert np.array_equal(back.arrival_s, t.arrival_s)
            assert np.array_equal(back.prompt_tokens, t.prompt_tokens)
            assert np.array_equal(back.output_tokens, t.output_tokens)
