"""Trace loaders: every supported format, the bundled traces, and every kind of bad input.

Each bad-input case asserts that the InputError names the file, the 1-based line (the CSV
header is line 1) and the column, as a user needs to fix the file.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from simcluster.errors import InputError
from simcluster.workload import Trace, bundled_trace_path, bundled_traces, load_trace

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


# --- formats -----------------------------------------------------------------------------

def test_azure_csv_keeps_sub_millisecond_precision(tmp_path):
    path = write(tmp_path, "a.csv", AZURE_HEADER.replace("\n", "\r\n")
                 + "2023-11-16 18:17:03.9799600,4808,10\r\n"
                 + "2023-11-16 18:17:04.0319601,3180,8\r\n"
                 + "2023-11-16 18:17:05.0000000,1,1\r\n")
    trace = load_trace(path)
    assert trace.name == "a"
    assert trace.arrival_s[0] == 0.0
    assert trace.arrival_s[1] == pytest.approx(0.0520001, abs=1e-12)
    assert trace.arrival_s[2] == pytest.approx(1.02004, abs=1e-12)
    assert trace.prompt_tokens.tolist() == [4808, 3180, 1]
    assert trace.output_tokens.tolist() == [10, 8, 1]
    assert trace.arrival_s.dtype == np.float64 and trace.prompt_tokens.dtype == np.int64


def test_azure_2024_timezone_suffix(tmp_path):
    path = write(tmp_path, "a24.csv", AZURE_HEADER
                 + "2024-05-10 00:00:00.009930+00:00,100,5\n"
                 + "2024-05-10 02:00:01.509930+02:00,200,6\n")
    trace = load_trace(path)
    assert trace.arrival_s.tolist() == pytest.approx([0.0, 1.5], abs=1e-12)


def test_mooncake_jsonl_keeps_hash_ids(tmp_path):
    path = write(tmp_path, "m.jsonl",
                 '{"timestamp": 0, "input_length": 700, "output_length": 5, "hash_ids": [0, 1]}\n'
                 '\n'
                 '{"timestamp": 1500, "input_length": 30, "output_length": 2, "hash_ids": [0]}\n')
    trace = load_trace(path)
    assert trace.arrival_s.tolist() == [0.0, 1.5]
    assert trace.prompt_tokens.tolist() == [700, 30]
    assert [list(h) for h in trace.extras["hash_ids"]] == [[0, 1], [0]]


def test_a_files_hash_ids_need_their_block_size(tmp_path):
    """Without hash_block_tokens the hashes were kept as an opaque column: prefix caching
    then saw no hashes, without a word."""
    path = write(tmp_path, "h.csv", "arrival_s,prompt_tokens,output_tokens,hash_ids\n"
                 "0,40,5,7 8 9\n")
    with pytest.raises(InputError) as err:
        load_trace(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 1,
                                                                 "hash_block_tokens")
    path.write_text("arrival_s,prompt_tokens,output_tokens,hash_ids,hash_block_tokens\n"
                    "0,40,5,7 8 9,16\n")
    assert load_trace(path).has_block_hashes
    # and a trace holding them without a block size is not written where it would not read
    # back (JSON Lines and Parquet keep list extras; a CSV leaves them out with a warning)
    opaque = Trace(np.array([0.0]), np.array([40]), np.array([5]), extras={"hash_ids": [[7]]})
    with pytest.raises(InputError, match="would not read back"):
        opaque.save(tmp_path / "o.jsonl")


@pytest.mark.parametrize("line", [
    '{"arrival_s": 0, "prompt_tokens": 10, "output_tokens": 5, "arrival_s": 2}',
    '{"arrival_s" : 0, "prompt_tokens": 10, "output_tokens": 5, "arrival_s" : 2}',
    '{"arrival_s": 0, "prompt_tokens": 10, "output_tokens": 5, "m": {"a": 1, "a": 2}}',
])
def test_a_key_given_twice_in_a_jsonl_object_is_named(tmp_path, line):
    """json.loads keeps the last of two equal keys: the second arrival_s was used."""
    path = write(tmp_path, "t.jsonl",
                 '{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "note": "x\\": y"}\n'
                 + line + "\n")
    with pytest.raises(InputError, match="appears twice in one object") as err:
        load_trace(path)
    assert err.value.line == 2


def test_vidur_csv(tmp_path):
    path = write(tmp_path, "v.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n"
                 "0.5,100,10\n1.25,200,20\n")
    trace = load_trace(path)
    assert trace.arrival_s.tolist() == [0.5, 1.25]
    assert trace.output_tokens.tolist() == [10, 20]


def test_canonical_csv_and_jsonl(tmp_path):
    csv = write(tmp_path, "c.csv", "request_id,arrival_s,prompt_tokens,output_tokens,tenant\n"
                "0,1.5,10,1,a\n1,2.0,20.0,2,b\n")
    trace = load_trace(csv)
    assert trace.arrival_s.tolist() == [1.5, 2.0]
    assert trace.prompt_tokens.tolist() == [10, 20]  # 20.0 is a whole number
    assert list(trace.extras) == ["tenant"]  # request_id 0..n-1 carries nothing
    jsonl = write(tmp_path, "c.jsonl", '{"request_id": 7, "arrival_s": 0, "prompt_tokens": 3, '
                  '"output_tokens": 4}\n')
    trace = load_trace(jsonl)
    assert trace.extras["source_request_id"].tolist() == [7]


def test_format_overrides_suffix(tmp_path):
    path = write(tmp_path, "trace.txt", AZURE_HEADER + "2023-11-16 18:17:03.9799600,1,1\n")
    assert len(load_trace(path, format="azure")) == 1
    assert len(load_trace(path, format="csv")) == 1
    with pytest.raises(ValueError, match="unknown trace format 'xml'"):
        load_trace(path, format="xml")


def test_sort_true_sorts_stably(tmp_path):
    path = write(tmp_path, "u.csv", "arrival_s,prompt_tokens,output_tokens\n"
                 "2.0,1,1\n1.0,2,1\n2.0,3,1\n1.0,4,1\n")
    trace = load_trace(path, sort=True)
    assert trace.arrival_s.tolist() == [1.0, 1.0, 2.0, 2.0]
    assert trace.prompt_tokens.tolist() == [2, 4, 1, 3]


def test_sort_must_be_a_bool(tmp_path):
    """sort="yes" was taken as true (and "no" would have been too)."""
    with pytest.raises(InputError, match="field 'sort': expected true or false, got 'no'"):
        load_trace("azure-code", sort="no")


def test_sort_true_azure_counts_from_earliest(tmp_path):
    path = write(tmp_path, "u.csv", AZURE_HEADER + "2023-11-16 18:00:02,1,1\n"
                 "2023-11-16 18:00:00,2,1\n")
    trace = load_trace(path, sort=True)
    assert trace.arrival_s.tolist() == [0.0, 2.0]
    assert trace.prompt_tokens.tolist() == [2, 1]


def test_blank_lines_skipped_and_line_numbers_kept(tmp_path):
    path = write(tmp_path, "b.csv", "arrival_s,prompt_tokens,output_tokens\n"
                 "0,1,1\n\n   \n1,2,2\n2,0,1\n\n")
    with pytest.raises(InputError) as info:
        load_trace(path)
    assert (info.value.line, info.value.field) == (6, "prompt_tokens")
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0,1,1\n\n1,2,2\n\n")
    assert len(load_trace(path)) == 2


# --- bundled traces ----------------------------------------------------------------------

@pytest.mark.parametrize("name, rows", [("azure-code", 8819), ("azure-conv", 19366),
                                        ("mooncake-conv", 12031)])
def test_bundled_row_counts(name, rows):
    trace = load_trace(name)
    assert len(trace) == rows
    assert trace.name == name
    assert trace.arrival_s[0] == 0.0


def test_bundled_azure_conv_span_and_mooncake_hashes():
    conv = load_trace("azure-conv")
    assert conv.span_s == pytest.approx(3502, abs=1)
    assert conv.rate_per_s == pytest.approx(5.53, abs=0.01)
    moon = load_trace("mooncake-conv")
    assert len(moon.extras["hash_ids"]) == 12031
    assert moon.span_s == pytest.approx(3536.999)


def test_bundled_listing_and_env_override(tmp_path, monkeypatch):
    assert sorted(bundled_traces()) == ["azure-code", "azure-conv", "mooncake-conv"]
    assert all(p.is_file() for p in bundled_traces().values())
    with pytest.raises(ValueError, match="known: .*azure-conv"):
        bundled_trace_path("azure-cnv")
    shutil.copy(bundled_trace_path("azure-code"), tmp_path / "AzureLLMInferenceTrace_code.csv")
    monkeypatch.setenv("SIMCLUSTER_TRACES", str(tmp_path))
    assert bundled_trace_path("azure-code").parent == tmp_path
    assert len(load_trace("azure-code")) == 8819
    with pytest.raises(InputError, match="SIMCLUSTER_TRACES"):
        bundled_trace_path("azure-conv")


# --- bad input ---------------------------------------------------------------------------

CANON = "arrival_s,prompt_tokens,output_tokens\n"
MOON_OK = '{"timestamp": 0, "input_length": 5, "output_length": 1}\n'

BAD_INPUTS = [
    # id, file name, content, line, field, words the message must hold
    ("missing column", "a.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:00:00,1\n", 1,
     "GeneratedTokens", ["expected columns", "found ['TIMESTAMP', 'ContextTokens']"]),
    ("empty cell", "a.csv", AZURE_HEADER + "2023-11-16 18:00:00,1,1\n2023-11-16 18:00:01,,1\n",
     3, "ContextTokens", ["empty"]),
    ("short row", "c.csv", CANON + "0,1,1\n1,1\n", 3, "output_tokens", ["empty"]),
    ("all-empty row", "c.csv", CANON + "0,1,1\n,,\n", 3, "arrival_s", ["empty"]),
    ("zero tokens", "a.csv", AZURE_HEADER + "2023-11-16 18:00:00,0,1\n", 2, "ContextTokens",
     [">= 1", "found 0"]),
    ("negative tokens", "v.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n"
     "0,5,1\n1,5,-3\n", 3, "num_decode_tokens", ["found -3"]),
    ("fractional tokens", "c.csv", CANON + "0,1,1\n1,3.5,1\n", 3, "prompt_tokens",
     ["whole number", "3.5"]),
    ("text tokens", "c.csv", CANON + "0,1,1\n1,many,1\n", 3, "prompt_tokens", ["'many'"]),
    ("NaN literal", "c.csv", CANON + "0,1,1\n1,NaN,1\n", 3, "prompt_tokens", ["'NaN'"]),
    ("infinite tokens", "c.csv", CANON + "0,1,inf\n", 2, "output_tokens", ["found inf"]),
    ("bad timestamp", "a.csv", AZURE_HEADER + "2023-11-16 18:00:00,1,1\nyesterday,1,1\n", 3,
     "TIMESTAMP", ["'yesterday'", "date-time"]),
    ("negative arrival", "c.csv", CANON + "-1,1,1\n", 2, "arrival_s", [">= 0"]),
    ("out of order", "c.csv", CANON + "0,1,1\n5,1,1\n4.5,1,1\n", 4, "arrival_s",
     ["line 3", "sort=True"]),
    ("out of order azure", "a.csv", AZURE_HEADER + "2023-11-16 18:00:01,1,1\n"
     "2023-11-16 18:00:00,1,1\n", 3, "TIMESTAMP", ["sort=True"]),
    ("header only", "c.csv", CANON, 1, None, ["no requests"]),
    ("empty file", "c.csv", "", 1, None, ["empty"]),
    ("too many fields", "c.csv", CANON + "0,1,1\n1,1,1,9\n", 3, None, ["Expected 3 fields"]),
    ("unknown columns", "c.csv", "when,in,out\n0,1,1\n", 1, None,
     ["found columns ['when', 'in', 'out']", "azure: ['TIMESTAMP'"]),
    ("malformed json", "m.jsonl", MOON_OK + '{"timestamp": 1, "input_length": 5,\n', 2, None,
     ["malformed JSON", "column"]),
    ("json not object", "m.jsonl", MOON_OK + "[1, 2, 3]\n", 2, None, ["JSON object"]),
    ("json missing key", "m.jsonl", MOON_OK + MOON_OK + '{"timestamp": 2, "input_length": 5}\n',
     3, "output_length", ["missing"]),
    ("json string tokens", "m.jsonl", MOON_OK + '{"timestamp": 1, "input_length": "lots", '
     '"output_length": 1}\n', 2, "input_length", ["'lots'"]),
    ("json bool tokens", "m.jsonl", MOON_OK + '{"timestamp": 1, "input_length": true, '
     '"output_length": 1}\n', 2, "input_length", ["True"]),
    ("json list tokens", "m.jsonl", MOON_OK + '{"timestamp": 1, "input_length": [5], '
     '"output_length": 1}\n', 2, "input_length", ["[5]"]),
    ("json missing column", "m.jsonl", '{"timestamp": 0, "input_length": 5}\n', 1,
     "output_length", ["expected columns"]),
    ("empty jsonl", "m.jsonl", "\n\n", 1, None, ["no requests"]),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_names_file_line_and_column(tmp_path, case):
    _, name, text, line, field, words = case
    path = write(tmp_path, name, text)
    with pytest.raises(InputError) as info:
        load_trace(path)
    err = info.value
    message = str(err)
    assert err.file == str(path) and message.startswith(f"{path}:{line}: ")
    assert err.line == line
    assert err.field == field
    if field is not None:
        assert f"field '{field}'" in message
    for word in words:
        assert word in message, message


def test_unknown_suffix_and_missing_file(tmp_path):
    path = write(tmp_path, "trace.txt", CANON + "0,1,1\n")
    with pytest.raises(InputError, match="suffix '.txt'") as info:
        load_trace(path)
    assert info.value.file == str(path)
    with pytest.raises(InputError, match="does not exist.*azure-conv"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="does not exist"):
        load_trace("azure-cnv")


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow installed")
def test_parquet_without_pyarrow_says_how_to_install(tmp_path):
    path = write(tmp_path, "t.parquet", "not really parquet")
    with pytest.raises(InputError, match=r"pip install simcluster\[parquet\]") as info:
        load_trace(path)
    assert info.value.file == str(path)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="needs pyarrow")
def test_parquet_round_trip(tmp_path):
    trace = load_trace("mooncake-conv")
    path = trace.save(tmp_path / "m.parquet")
    back = load_trace(path)
    assert np.array_equal(back.arrival_s, trace.arrival_s)
    assert np.array_equal(back.prompt_tokens, trace.prompt_tokens)
    assert list(back.extras["hash_ids"][0]) == list(trace.extras["hash_ids"][0])
