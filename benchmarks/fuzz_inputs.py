"""Malformed inputs of every kind, each run once: does simcluster name the mistake?

    python benchmarks/fuzz_inputs.py [--kind trace|experiment|spec|hf_config|cli|api] [--list]
                                     [--show N] [--timeout-s S]

Generates several hundred malformed inputs — trace files in every format (canonical CSV,
JSONL and Parquet, Azure, Mooncake, Vidur), experiment TOMLs, device / link / node specs,
Hugging Face configs and command lines — plus a few valid ones that must be accepted (a
BOM-prefixed TOML, relative paths, an added spec folder, ...). Each runs in a fresh temporary
folder, through the command line in-process (``simcluster.cli.main``) or the library loader,
and is classed:

- ``named``: an :class:`~simcluster.errors.InputError` (library) or exit status 2 with a
  one-line ``simcluster: error:`` message (command line), naming what the case expects named
  (a file, a key, a field);
- ``vague``: refused, but the message does not name the place of the mistake;
- ``traceback``: any other exception, a Python traceback printed, or an exit status other
  than 2 for bad input;
- ``silent``: accepted without a word (the run went ahead on bad input);
- ``hang``: still running after ``--timeout-s``.

Valid controls are counted apart (``valid ok`` / ``valid refused``). The table's last line
is what the issue asks to drive to zero: tracebacks and silent accepts. Exit status 1 when
any case is not ``named`` (or a valid control is refused), else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- TOML writing
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def to_toml(data: dict, prefix: str = "") -> str:
    """A small TOML writer: scalars and inline values first, then tables, arrays of tables."""
    lines, tables, arrays = [], [], []
    for k, v in data.items():
        if isinstance(v, dict) and v and all(not isinstance(x, dict) or x for x in v.values()) \
                and not getattr(v, "inline", False):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays.append((k, v))
        else:
            lines.append(f"{_key(k)} = {_toml_value(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        name = f"{prefix}{_key(k)}"
        out += f"\n[{name}]\n" + to_toml(v, name + ".")
    for k, items in arrays:
        name = f"{prefix}{_key(k)}"
        for item in items:
            out += f"\n[[{name}]]\n" + to_toml(item, name + ".")
    return out


class Inline(dict):
    """A dict written as an inline table."""

    inline = True


# --------------------------------------------------------------------------- outcomes
@dataclass
class Case:
    kind: str
    name: str
    run: Callable[[Path], tuple[str, str]]   # tmp dir -> (outcome, detail)
    valid: bool = False


@dataclass
class Result:
    case: Case
    outcome: str
    detail: str
    wall_s: float = 0.0


OUTCOMES = ("named", "vague", "traceback", "silent", "hang")


class _Timeout(BaseException):
    """A case ran past --timeout-s (a BaseException: code that records a failed point and
    goes on, ``except Exception``, must not swallow it and run on)."""


def _classify_exc(err: BaseException, mention: tuple[str, ...],
                  refusals: tuple[type, ...] = ()) -> tuple[str, str]:
    """An exception's outcome: an InputError (or one of ``refusals``: how the Python face
    refuses an argument) is named or vague by ``mention``; anything else is a traceback."""
    from simcluster.errors import InputError
    if isinstance(err, (InputError, *refusals)):
        text = str(err) if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
        missing = [m for m in mention if m.lower() not in text.lower()]
        return ("vague" if missing else "named"), text + (f"  [missing: {missing}]"
                                                          if missing else "")
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-3:])
    return "traceback", f"{type(err).__name__}: {err}\n{tb}"


def lib(fn: Callable[[Path], Any], files: dict | None = None, mention=(), valid=False,
        refusals: tuple[type, ...] = ()):
    """A library call on files written into the case's folder (``refusals``: exception types
    besides InputError that name a mistake, :func:`_classify_exc`)."""
    def run(tmp: Path):
        _write(tmp, files or {})
        try:
            fn(tmp)
        except _Timeout:
            raise
        except Exception as err:  # noqa: BLE001 (classifying is the point)
            return _classify_exc(err, tuple(mention), refusals)
        return "silent", "accepted"
    return run, valid


def cli(args: list[str], files: dict | None = None, mention=(), env: dict | None = None,
        cwd: str | None = None, valid=False, keep: int = 300):
    """``simcluster ARGS`` in-process, in the case's folder (``{tmp}`` in an argument is it;
    ``keep``: the characters of an accepted run's output its detail keeps, from the end)."""
    def run(tmp: Path):
        _write(tmp, files or {})
        argv = [a.replace("{tmp}", str(tmp)) for a in args]
        out, err = io.StringIO(), io.StringIO()
        old_env = {k: os.environ.get(k) for k in (env or {})}
        old_cwd = os.getcwd()
        try:
            os.environ.update({k: v.replace("{tmp}", str(tmp)) for k, v in (env or {}).items()})
            os.chdir(tmp / cwd if cwd else tmp)
            from simcluster.cli import main
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(argv)
                except SystemExit as exc:
                    code = exc.code
                    if isinstance(code, str):
                        err.write(code + "\n")
                        code = 1
                    rc = 0 if code is None else code
        except _Timeout:
            raise
        except Exception as exc:  # noqa: BLE001
            return _classify_exc(exc, ())[0], _classify_exc(exc, ())[1]
        finally:
            os.chdir(old_cwd)
            for k, v in old_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        text = err.getvalue()
        if "Traceback" in text:
            return "traceback", text[-1500:]
        if rc == 0:
            return "silent", (out.getvalue()[-keep:] or "exit 0")
        if rc != 2:
            return "traceback", f"exit {rc}: {text[-800:]}"
        missing = [m for m in mention if m.replace("{tmp}", str(tmp)).lower() not in text.lower()]
        if missing:
            return "vague", text.strip()[-400:] + f"  [missing: {missing}]"
        return "named", text.strip()[-400:]
    return run, valid


def _write(tmp: Path, files: dict) -> None:
    for name, content in files.items():
        if content is None:
            continue
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif callable(content):
            content(path)
        else:
            path.write_text(content)


# --------------------------------------------------------------------------- traces
_CANON = ("arrival_s", "prompt_tokens", "output_tokens")
_FAMILIES = {   # format -> (suffix, columns, good rows)
    "canonical": (".csv", _CANON, [("0.0", "100", "10"), ("0.5", "200", "20"),
                                    ("1.0", "300", "30")]),
    "vidur": (".csv", ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
              [("0.0", "100", "10"), ("0.5", "200", "20"), ("1.0", "300", "30")]),
    "azure": (".csv", ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
              [("2023-11-16 18:15:46.6805900", "100", "10"),
               ("2023-11-16 18:15:47.1805900", "200", "20"),
               ("2023-11-16 18:15:48.0000000", "300", "30")]),
}
_BAD_TOKENS = ["", "abc", "-1", "0", "1.5", "nan", "inf", "1e400", str(2**63 - 1),
               str(2**53 + 1), str(2**64), "True", "[1]"]
_BAD_TIMES = ["", "abc", "-1", "nan", "inf", "-inf", "1e400"]
_BAD_STAMPS = ["", "yesterday", "2023-13-45 00:00:00", "2023-11-16 25:00:00", "1.5", "nan"]


def _csv(columns, rows) -> str:
    return "\n".join([",".join(columns)] + [",".join(r) for r in rows]) + "\n"


def _trace_cli(name, fname, content, mention=(), fmt=None, valid=False, files=None):
    args = ["trace-info", fname] + (["--format", fmt] if fmt else [])
    run, v = cli(args, files or {fname: content}, mention=mention or (fname,), valid=valid)
    return Case("trace", name, run, v)


def trace_cases() -> list[Case]:
    cases = []
    for fam, (suffix, cols, rows) in _FAMILIES.items():
        f = f"t_{fam}{suffix}"
        for ci, col in enumerate(cols):
            bads = _BAD_STAMPS if fam == "azure" and ci == 0 else \
                _BAD_TIMES if ci == 0 else _BAD_TOKENS
            for bad in bads:
                bad_rows = [list(r) for r in rows]
                bad_rows[1][ci] = bad
                cases.append(_trace_cli(f"{fam}: {col}={bad!r}", f,
                                        _csv(cols, bad_rows), mention=(f, col)))
            cases.append(_trace_cli(f"{fam}: missing column {col}", f,
                                    _csv([c for c in cols if c != col],
                                         [[x for j, x in enumerate(r) if j != ci] for r in rows]),
                                    mention=(f, col)))
        decreasing = [rows[1], rows[0], rows[2]]
        cases += [
            _trace_cli(f"{fam}: arrivals go back", f, _csv(cols, decreasing)),
            _trace_cli(f"{fam}: header only", f, _csv(cols, [])),
            _trace_cli(f"{fam}: ragged row", f, _csv(cols, rows) + "1,2,3,4,5\n"),
            _trace_cli(f"{fam}: short row", f, _csv(cols, rows) + "7\n"),
            _trace_cli(f"{fam}: latin-1 bytes", f, _csv(cols, rows).encode() + b"\xe9\xff,1,1\n"),
        ]
    cases += [
        _trace_cli("csv: empty file", "e.csv", ""),
        _trace_cli("csv: only blank lines", "e.csv", "\n\n\n"),
        _trace_cli("csv: unknown header", "u.csv", "a,b,c\n1,2,3\n"),
        _trace_cli("csv: binary", "b.csv", bytes(range(256)) * 4),
        _trace_cli("csv: semicolons", "s.csv", "arrival_s;prompt_tokens;output_tokens\n0;1;1\n"),
        _trace_cli("csv: tabs", "s.csv", "arrival_s\tprompt_tokens\toutput_tokens\n0\t1\t1\n"),
        # (were accepted: the hashes kept as an opaque column, the last of two keys used)
        _trace_cli("csv: hash_ids without hash_block_tokens", "h.csv",
                   "arrival_s,prompt_tokens,output_tokens,hash_ids\n0,40,5,7 8 9\n",
                   mention=("h.csv", "hash_block_tokens")),
        _trace_cli("jsonl: a key twice in one object", "d.jsonl",
                   '{"arrival_s": 0, "prompt_tokens": 4, "output_tokens": 2, "arrival_s": 9}\n',
                   mention=("d.jsonl:1", "arrival_s")),
        _trace_cli("json: one array", "a.json", json.dumps([{"arrival_s": 0, "prompt_tokens": 1,
                                                             "output_tokens": 1}])),
        _trace_cli("csv: duplicate column", "d.csv",
                   "arrival_s,prompt_tokens,output_tokens,prompt_tokens\n0,1,1,1\n"),
        _trace_cli("unknown suffix", "t.txt", _csv(_CANON, _FAMILIES["canonical"][2])),
        _trace_cli("no such file", "missing.csv", None, mention=("missing.csv",)),
        _trace_cli("a folder", "folder.csv", None, files={"folder.csv/x": "1"}),
        _trace_cli("--format bogus", "t.csv", _csv(_CANON, _FAMILIES["canonical"][2]),
                   fmt="bogus", mention=("bogus",)),
        _trace_cli("--format azure on a canonical file", "t.csv",
                   _csv(_CANON, _FAMILIES["canonical"][2]), fmt="azure"),
        _trace_cli("--format mooncake on a CSV", "t.csv",
                   _csv(_CANON, _FAMILIES["canonical"][2]), fmt="mooncake"),
        _trace_cli("bundled name misspelt", "azure-cnv", None, mention=("azure-conv",)),
    ]
    cases += _jsonl_cases() + _parquet_cases() + _in_memory_trace_cases()
    cases += [
        _trace_cli("valid: canonical CSV with BOM", "ok.csv",
                   "\ufeff" + _csv(_CANON, _FAMILIES["canonical"][2]), valid=True),
        _trace_cli("valid: extra column", "ok.csv",
                   "arrival_s,prompt_tokens,output_tokens,user\n0,1,1,a\n1,2,2,b\n", valid=True),
    ]
    return cases


def _jsonl(records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def _jsonl_cases() -> list[Case]:
    good = [{"timestamp": 0, "input_length": 100, "output_length": 10, "hash_ids": [1, 2]},
            {"timestamp": 500, "input_length": 200, "output_length": 20, "hash_ids": [1]},
            {"timestamp": 1000, "input_length": 300, "output_length": 30, "hash_ids": []}]
    canon = [{"arrival_s": 0.0, "prompt_tokens": 10, "output_tokens": 1},
             {"arrival_s": 1.0, "prompt_tokens": 20, "output_tokens": 2}]
    cases = []
    bad_values = [None, "abc", -1, 0, 1.5, True, [1], {"a": 1}, 2**63, 2**63 - 1, 2**53 + 1,
                  2**70, 1e400, "1e3x", "100"]
    for key in ("timestamp", "input_length", "output_length"):
        for bad in bad_values:
            if key == "timestamp" and not isinstance(bad, str) and (bad in (0, 2**53 + 1)
                                                                    or bad == 1.5):
                continue   # valid times (milliseconds may be fractional)
            recs = [dict(r) for r in good]
            recs[1][key] = bad
            text = _jsonl(recs).replace("Infinity", "1e400")
            cases.append(_trace_cli(f"mooncake: {key}={bad!r}", "m.jsonl", text,
                                    mention=("m.jsonl", key)))
    for key in _CANON:
        for bad in (None, "x", -5 if key == "arrival_s" else 0, [1], 2**63):
            recs = [dict(r) for r in canon]
            recs[1][key] = bad
            cases.append(_trace_cli(f"canonical jsonl: {key}={bad!r}", "c.jsonl", _jsonl(recs),
                                    mention=("c.jsonl", key)))
    cases += [
        _trace_cli("jsonl: malformed line", "m.jsonl", _jsonl(good) + "{not json\n"),
        _trace_cli("jsonl: array line", "m.jsonl", _jsonl(good) + "[1, 2, 3]\n"),
        _trace_cli("jsonl: number line", "m.jsonl", "3\n"),
        _trace_cli("jsonl: empty", "m.jsonl", ""),
        _trace_cli("jsonl: missing key", "m.jsonl", _jsonl([{"timestamp": 0, "input_length": 1}])),
        _trace_cli("jsonl: NaN literal", "m.jsonl",
                   '{"timestamp": NaN, "input_length": 1, "output_length": 1}\n'),
        _trace_cli("jsonl: times go back", "m.jsonl", _jsonl([good[1], good[0]])),
        _trace_cli("jsonl: mixed schemas", "m.jsonl", _jsonl([good[0], canon[1]])),
        _trace_cli("jsonl: latin-1", "m.jsonl", _jsonl(good).encode() + b'{"\xe9": 1}\n'),
    ]
    return cases


def _parquet(frame_fn):
    def write(path: Path):
        frame_fn().to_parquet(path, index=False)
    return write


def _parquet_cases() -> list[Case]:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return []
    import numpy as np
    import pandas as pd

    def canon(**over):
        data = {"arrival_s": [0.0, 1.0, 2.0], "prompt_tokens": [10, 20, 30],
                "output_tokens": [1, 2, 3]}
        data.update(over)
        return lambda: pd.DataFrame(data)

    stamps = pd.to_datetime(["2023-11-16 18:15:46", "2023-11-16 18:15:47",
                             "2023-11-16 18:15:49"])
    specs = [
        ("datetime arrival_s", canon(arrival_s=stamps), ("arrival_s",), False),
        ("tz-aware datetime arrival_s", canon(arrival_s=stamps.tz_localize("UTC")),
         ("arrival_s",), False),
        ("timedelta arrival_s (explicit seconds)",
         canon(arrival_s=pd.to_timedelta([0, 1, 2], unit="s")), (), True),
        ("string tokens", canon(prompt_tokens=["a", "b", "c"]), ("prompt_tokens",), False),
        ("float tokens 1.5", canon(prompt_tokens=[1.5, 2.0, 3.0]), ("prompt_tokens",), False),
        ("uint64 2^64-1 tokens", canon(prompt_tokens=np.array([1, 2, 2**64 - 1], np.uint64)),
         ("prompt_tokens",), False),
        ("int64 2^63-1 tokens", canon(output_tokens=np.array([1, 2, 2**63 - 1], np.int64)),
         ("output_tokens",), False),
        ("int64 2^53+1 tokens", canon(output_tokens=np.array([1, 2, 2**53 + 1], np.int64)),
         ("output_tokens",), False),
        ("null token", canon(output_tokens=[1, None, 3]), ("output_tokens",), False),
        ("bool tokens", canon(output_tokens=[True, True, False]), ("output_tokens",), False),
        ("negative time", canon(arrival_s=[0.0, -1.0, 2.0]), ("arrival_s",), False),
        ("nan time", canon(arrival_s=[0.0, float("nan"), 2.0]), ("arrival_s",), False),
        ("zero rows", lambda: pd.DataFrame({c: pd.Series([], dtype="float64") for c in _CANON}),
         (), False),
        ("mooncake datetime timestamp",
         lambda: pd.DataFrame({"timestamp": stamps, "input_length": [1, 2, 3],
                               "output_length": [1, 2, 3]}), ("timestamp",), False),
        ("azure datetime TIMESTAMP (valid)",
         lambda: pd.DataFrame({"TIMESTAMP": stamps, "ContextTokens": [1, 2, 3],
                               "GeneratedTokens": [1, 2, 3]}), (), True),
        ("azure integer TIMESTAMP", lambda: pd.DataFrame({
            "TIMESTAMP": [1, 2, 3], "ContextTokens": [1, 2, 3], "GeneratedTokens": [1, 2, 3]}),
         ("TIMESTAMP",), False),
    ]
    cases = []
    for name, fn, mention, valid in specs:
        cases.append(_trace_cli(f"parquet: {name}", "p.parquet", _parquet(fn),
                                mention=("p.parquet",) + mention, valid=valid))
    cases.append(_trace_cli("parquet: corrupt bytes", "p.parquet", b"PAR1" + b"\0" * 64))
    cases.append(_trace_cli("parquet: CSV text", "p.parquet", "arrival_s\n1\n"))
    return cases


def _in_memory_trace_cases() -> list[Case]:
    import numpy as np

    def trace(arrival, prompt, output):
        def fn(tmp):
            from simcluster.workload import Trace
            Trace(np.asarray(arrival), np.asarray(prompt), np.asarray(output))
        return fn

    def frame(**cols):
        def fn(tmp):
            import pandas as pd
            from simcluster.workload import Trace
            data = {"arrival_s": [0.0, 1.0], "prompt_tokens": [1, 2], "output_tokens": [1, 2]}
            data.update(cols)
            Trace.from_frame(pd.DataFrame(data))
        return fn

    specs = [
        ("Trace: int64 2^63-1 prompt", trace([0.0, 1.0], np.array([1, 2**63 - 1]), [1, 1]),
         ("prompt_tokens",)),
        ("Trace: uint64 2^64-1 output", trace([0.0, 1.0], [1, 1], np.array([1, 2**64 - 1],
                                                                          np.uint64)),
         ("output_tokens",)),
        ("Trace: float 1e300 prompt", trace([0.0, 1.0], [1.0, 1e300], [1, 1]),
         ("prompt_tokens",)),
        ("Trace: int 2^53+1 output", trace([0.0, 1.0], [1, 1], np.array([1, 2**53 + 1])),
         ("output_tokens",)),
        ("Trace: bool tokens", trace([0.0, 1.0], np.array([True, True]), [1, 1]),
         ("prompt_tokens",)),
        ("Trace: 2-D arrival", trace([[0.0, 1.0]], [1, 1], [1, 1]), ("arrival_s",)),
        ("Trace: string arrival", trace(["a", "b"], [1, 1], [1, 1]), ("arrival_s",)),
        ("Trace: datetime arrival", trace(np.array(["2023-01-01", "2023-01-02"],
                                                   dtype="datetime64[ns]"), [1, 1], [1, 1]),
         ("arrival_s",)),
        ("Trace.from_frame: 2^63-1", frame(prompt_tokens=[1, 2**63 - 1]), ("prompt_tokens",)),
        ("Trace.from_frame: datetime", frame(arrival_s=np.array(
            ["2023-01-01", "2023-01-02"], dtype="datetime64[ns]")), ("arrival_s",)),
    ]
    return [Case("trace", name, *lib(fn, mention=m)) for name, fn, m in specs]


# --------------------------------------------------------------------------- experiments
def _base() -> dict:
    return {
        "name": "fz", "seed": 1,
        "trace": {"synthetic": {"n": 8, "rate_per_s": 4.0,
                                "prompt": Inline(dist="fixed", tokens=64),
                                "output": Inline(dist="fixed", tokens=8)}},
        "model": {"name": "llama-2-7b"},
        "instances": [{"device": "H100-SXM", "count": 1,
                       "scheduler": {"max_num_seqs": 16}}],
        "router": {"policy": "round_robin"},
        "slo": {"ttft_s": 1.0, "tpot_s": 0.1},
        "cost": {"calibration": "datasheet"},
    }


def _disagg() -> dict:
    d = _base()
    d["instances"] = [{"device": "H100-SXM", "pool": "prefill"},
                      {"device": "H100-SXM", "pool": "decode", "count": 2}]
    d["disaggregation"] = {"kv_link": "PCIe5"}
    return d


def _cpu_decode() -> dict:
    d = _base()
    d["model"] = {"name": "llama-3.1-8b"}
    d["instances"] = [{"device": "A100-80GB-PCIe", "pool": "prefill"},
                      {"device": "Xeon-Gold-6148", "pool": "decode", "count": 4,
                       "scheduler": {"max_num_seqs": 8}}]
    d["disaggregation"] = {"kv_link": "PCIe3", "offload": "all",
                           "decode_router": "numa_minibatch",
                           "decode_router_params": Inline(mini_batch=2), "numa": "aware",
                           "numa_params": Inline(sockets_per_host=2), "controller": "mmc",
                           "controller_params": Inline(max_wait_s=2.0, window_s=10.0)}
    return d


def _hels() -> dict:
    d = _base()
    d["model"] = {"name": "llama-2-13b"}
    d["instances"] = [{"devices": ["A100-80GB-PCIe", "P100"], "link": "PCIe4",
                       "partition": "hels",
                       "partition_params": {"batch_size": 8, "context_tokens": 100}}]
    return d


def _phase_pools() -> dict:
    d = _base()
    d["instances"] = [{"device": "H100-SXM", "pool": "prefill"},
                      {"device": "H100-SXM", "pool": "decode"}]
    d["pools"] = {"network_link": "IB-NDR400", "routing": "splitwise",
                  "routing_params": Inline(overlap=True), "rebalancer": "threshold"}
    return d


def _design() -> dict:
    d = _base()
    d["model"] = {"name": "llama-2-13b"}
    d["instances"] = [{"design": "1,4,18,80,50,132,256,4,16,32"}]
    return d


def _moe() -> dict:
    d = _base()
    d["model"] = {"name": "Qwen3-30B-A3B"}
    d["instances"] = [{"device": "H200", "tp": 1, "dp": 2, "ep": 2, "link": "NVLink4",
                       "scheduler": {"prefix_caching": True}}]
    d["trace"] = {"shared_prefix": {"n": 10, "rate_per_s": 2.0, "system_tokens": 1024,
                                    "system_prompts": 2,
                                    "user": Inline(dist="fixed", tokens=100),
                                    "output": Inline(dist="fixed", tokens=10)}}
    d["cost"] = {"calibration": "datasheet", "moe_popularity_cv": 0.5}
    return d


def _set(d: dict, path: str, value: Any) -> dict:
    """``d`` with ``path`` (dotted, ``instances[0]`` indexes) set; _DEL deletes it."""
    import copy
    d = copy.deepcopy(d)
    parts = path.replace("]", "").replace("[", ".").split(".")
    node: Any = d
    for p in parts[:-1]:
        node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
    last = parts[-1]
    if value is _DEL:
        if isinstance(node, list):
            node.pop(int(last))
        else:
            node.pop(last, None)
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        if isinstance(value, dict) and not isinstance(value, Inline) and path.endswith(
                ("params",)):
            value = Inline(value)
        node[last] = value
    return d


_DEL = object()


def _exp_case(name, data, mention=(), files=None, extra=(), text=None, valid=False,
              args=None, cwd=None, env=None):
    files = dict(files or {})
    files["exp.toml"] = text if text is not None else to_toml(data)
    argv = args or ["run", "exp.toml", "--quiet", *extra]
    run, v = cli(argv, files, mention=mention, valid=valid, cwd=cwd, env=env)
    return Case("experiment", name, run, v)


# (path, bad values, words the error must contain besides the key)
_SCALAR_MUTATIONS = [
    ("name", [3, [], True, ""], ()),
    ("trace", ["azure-conv", 3, [], {"source": ""}, {"source": "azure-cnv"},
               {"source": "azure-conv", "first_n": 10**9},
               {"source": "azure-conv", "format": "mooncake"},
               {"source": "azure-conv", "sort": "yes"}, {"source": "azure-conv", "bogus": 1},
               {"source": "azure-conv", "window_s": [1.0, 1.0]},
               {"source": "azure-conv", "window_s": [-1.0, 5.0]},
               {"source": "azure-conv", "window_s": [1e9, 2e9]}], ()),
    ("router", ["round_robin", 3], ()),
    ("slo", [1, "fast"], ()),
    ("cost", ["measured"], ()),
    ("seed", ["x", -1, 1.5, True], ()),
    ("trace.synthetic.n", [0, -3, "8", 1.5, True, 10**9], ()),
    ("trace.synthetic.rate_per_s", [0, -1.0, "4", float("nan"), float("inf")], ()),
    ("trace.synthetic.cv", [0, -1.0, float("nan"), float("inf"), "1"], ()),
    ("trace.synthetic.prompt", [Inline(dist="bogus", tokens=3), Inline(dist="fixed"),
                                Inline(dist="fixed", tokens=0), Inline(dist="fixed", tokens=1.5),
                                Inline(dist="lognormal", median=100),
                                Inline(dist="lognormal", median=-1, sigma=1),
                                Inline(dist="lognormal", median=100, sigma=1, max_tokens=0),
                                Inline(dist="lognormal", median=100, sigma=float("nan")),
                                Inline(dist="fixed", tokens=8, extra=1),
                                Inline(dist="resample", source="nope"), 3, "fixed"], ()),
    ("trace.synthetic.output", [Inline(dist="fixed", tokens=-2), Inline(tokens=8)], ()),
    ("trace.synthetic.bogus", [1], ()),
    ("trace.first_n", [0, -1, "3", 1.5], ()),
    ("trace.window_s", [[1.0], [5.0, 1.0], ["a", "b"], [0, 1, 2], [1e6, 2e6], 3,
                        [float("nan"), 1.0]], ()),
    ("trace.subsample", [0, -1, 1.5, 100, "half", float("nan")], ()),
    ("trace.rate_per_s", [0, -1, float("inf"), float("nan")], ()),
    ("trace.sort", ["yes"], ()),
    ("trace.format", ["csv"], ()),
    ("model.name", ["llama-2-7", "", 7], ()),
    ("model", [{"config": "missing.json"}, {"config": "cfg/"}, {}], ()),
    ("model.bogus", [1], ()),
    ("instances[0].device", ["H100-SXMM", "", 3, ["H100-SXM"]], ()),
    ("instances[0].count", [0, -1, 1.5, "2", True, 10**7], ()),
    ("instances[0].tp", [0, -1, 3, 5, 1.5, "2", 2**40, 64], ()),
    ("instances[0].pp", [0, -2, 2**40, 64], ()),
    ("instances[0].link", ["bogus"], ()),
    ("instances[0].stage_link", ["bogus"], ()),
    ("instances[0].name", [3], ()),
    ("instances[0].batching", ["bogus", "vlm", 3], ()),
    ("instances[0].batching_params", [{"watermark": 1}, {"watermark_blocks": "x"},
                                      {"watermark_blocks": -1}, 3], ()),
    ("instances[0].pool", ["prefill", "decode", "bogus", 3], ()),
    ("instances[0].devices", [["H100-SXM"], [], ["bogus", "H100-SXM"], "H100-SXM"], ()),
    ("instances[0].partition", ["hels", "bogus"], ()),
    ("instances[0].partition_params", [{"batch_size": 3}], ()),
    ("instances[0].scheduler.block_size", [0, -16, 1.5, "16"], ()),
    ("instances[0].scheduler.max_num_seqs", [0, -1, "x"], ()),
    ("instances[0].scheduler.max_batched_tokens", [0, -1, 2.5], ()),
    ("instances[0].scheduler.chunked_prefill", ["yes", 1], ()),
    ("instances[0].scheduler.memory_utilization", [0, -0.5, 1.5, 1e30, float("nan"), "0.9",
                                                   float("inf")], ()),
    ("instances[0].scheduler.max_model_len", [0, -1, 1.5, "4096"], ()),
    ("instances[0].scheduler.max_steady_steps", [0], ()),
    ("instances[0].scheduler.bogus", [1], ()),
    ("instances[0].scheduler", [3, "fast"], ()),
    ("instances[0].bogus", [1], ()),
    ("instances", [[], 3, "x", [3]], ()),
    ("router.policy", ["bogus", "round-robin", 3], ()),
    ("router.params", [{"x": 1}, 3], ()),
    ("router.bogus", [1], ()),
    ("slo.ttft_s", [0, -1, "1", float("nan"), float("inf")], ()),
    ("slo.tpot_s", [0, -0.1], ()),
    ("slo.bogus", [1], ()),
    ("cost.calibration", ["bogus", "measure", 3], ()),
    ("cost.engine", ["bogus", 3, "../../x"], ()),
    ("cost.bogus", [1], ()),
    ("bogus", [1], ()),
    ("disaggregation", [{"kv_link": "PCIe5"}], ()),
]

_DISAGG_MUTATIONS = [
    ("disaggregation.kv_link", ["bogus", 3, _DEL, "specs/missing.toml"], ()),
    ("disaggregation.decode_router", ["bogus", 3], ()),
    ("disaggregation.decode_router_params", [{"nope": 1}], ()),
    ("disaggregation.offload", ["bogus"], ()),
    ("disaggregation.offload_params", [{"nope": 1}], ()),
    ("disaggregation.controller", ["bogus"], ()),
    ("disaggregation.controller_params", [{"max_wait": 1}], ()),
    ("disaggregation.numa", ["bogus"], ()),
    ("disaggregation.numa_params", [{"sockets": 2}], ()),
    ("disaggregation.bogus", [1], ()),
    ("instances[1].pool", ["prefill", "bogus", _DEL], ()),
    ("instances[0].pool", ["decode"], ()),
    ("disaggregation", [_DEL], ()),
]

_CPU_MUTATIONS = [
    ("disaggregation.controller_params", [
        {"max_wait_s": -1.0}, {"window_s": 0}, {"mu_source": "bogus"}, {"min_active": 0},
        {"max_wait_s": "2"}, {"interval_s": -5.0}, {"mean_prompt_tokens": -1},
        {"initial_active": 0}, {"initial_active": 100}, {"batch": 0}], ()),
    ("disaggregation.decode_router_params", [{"mini_batch": 0}, {"mini_batch": "4"},
                                             {"mini_batch": 1.5}], ()),
    ("disaggregation.numa_params", [{"sockets_per_host": 0}, {"home_socket": 5},
                                    {"sockets_per_host": "2"}], ()),
    ("disaggregation.offload", ["min_output", "max_context", "pool_room"], ()),
    ("disaggregation.offload_params", [{"min_output_tokens": "x"}], ()),
]

_POOLS_MUTATIONS = [
    ("pools.network_link", ["bogus", 3], ()),
    ("pools.routing", ["bogus", "splitwis"], ()),
    ("pools.routing_params", [{"overlapp": True}, {"overlap": "yes"}], ()),
    ("pools.rebalancer", ["bogus"], ()),
    ("pools.rebalancer_params", [{"nope": 1}], ()),
    ("pools.reload_s", [-1.0, "x", float("nan")], ()),
    ("pools.bogus", [1], ()),
    ("instances[1].pool", [_DEL, "prefill"], ()),
    ("disaggregation", [{"kv_link": "PCIe5"}], ()),
    ("router", [{"policy": "least_outstanding_tokens"}], ()),
]

_DESIGN_MUTATIONS = [
    ("instances[0].design", ["1,2,3", "a,b,c,d,e,f,g,h,i,j", "", 3,
                             "0,4,18,80,50,132,256,4,16,32", "1,4,18,-80,50,132,256,4,16,32"],
     ()),
    ("instances[0].design_params", [{"bogus": 1}, {"clock_hz": -1.0}], ()),
    ("instances[0].device", ["H100-SXM"], ()),
    ("instances[0].count", [2], ()),
]

_MOE_MUTATIONS = [
    ("instances[0].ep", [3, 0, "2"], ()),
    ("instances[0].dp", [0, 3], ()),
    ("instances[0].scheduler.prefix_caching", ["yes", 1], ()),
    ("trace.shared_prefix.n", [0, -1], ()),
    ("trace.shared_prefix.system_tokens", [0, "x"], ()),
    ("trace.shared_prefix.zipf_s", [-1.0], ()),
    ("trace.shared_prefix.block_tokens", [0], ()),
    ("trace.shared_prefix.user", [_DEL, Inline(dist="bogus")], ()),
    ("trace.shared_prefix.bogus", [1], ()),
    ("trace.conversations", [{"n": 3, "rate_per_s": 1.0, "think_s": -1.0,
                              "turns": Inline(dist="fixed", tokens=2),
                              "user": Inline(dist="fixed", tokens=10),
                              "output": Inline(dist="fixed", tokens=5)}], ()),
    ("trace.fit_context", [1, "x"], ()),
    ("cost.moe_popularity_cv", [-1.0, "x"], ()),
    ("cost.moe_samples", [0, 1.5], ()),
]

_HELS_MUTATIONS = [
    ("instances[0].partition_params", [{"batch_size": 0}, {"kv_rules": ["bogus"]},
                                       {"max_steps": -1}, {"nope": 1}, {"fit_batch": True},
                                       {"context_tokens": "x"}], ()),
    ("instances[0].partition", ["bogus"], ()),
    ("instances[0].pp", [2], ()),
    ("instances[0].tp", [2], ()),
    ("instances[0].devices", [["A100-80GB-PCIe", "bogus"]], ()),
]


def _mutation_cases(base: Callable[[], dict], mutations, label: str) -> list[Case]:
    cases = []
    for path, values, words in mutations:
        key = path.split(".")[-1]
        for v in values:
            data = _set(base(), path, v)
            if label == "tiny" and path == "instances[0].pool" and v in ("prefill", "decode"):
                pass  # a pool without [disaggregation]
            shown = "<deleted>" if v is _DEL else repr(v)
            # a valid replacement value is only a case when it makes the config inconsistent
            if label == "cpu" and path == "disaggregation.offload":
                data = _set(data, "disaggregation.offload_params", Inline(bogus=1))
            named = tuple(v) if isinstance(v, Inline) and key.endswith("params") else (key,)
            mention = ("exp.toml",) + tuple(words) + (named if v is not _DEL and key not in (
                "instances", "disaggregation") else ())
            cases.append(_exp_case(f"{label}: {path} = {shown}", data, mention=mention))
    return cases


def _tp_cases() -> list[Case]:
    out = []

    def inst(**kw):
        d = _base()
        d["instances"][0] = {**{"device": "H100-SXM"}, **kw}
        return d
    out.append(_exp_case("tp=2 without a link on a device with no node", inst(
        device="L4", tp=2), mention=("instances[0]",)))
    out.append(_exp_case("tp beside devices", inst(devices=["H100-SXM", "H100-SXM"], tp=2,
                                                   link="NVLink4") | {}, mention=("tp",)))
    out[-1].run = _exp_case("x", _set(_set(_base(), "instances[0]", {
        "devices": ["H100-SXM", "H100-SXM"], "tp": 2, "link": "NVLink4"}), "model.name",
        "llama-2-7b"), mention=("tp",)).run
    out.append(_exp_case("device and devices", _set(_base(), "instances[0].devices",
                                                    ["H100-SXM"]), mention=("devices",)))
    out.append(_exp_case("devices not divisible by pp", _set(_base(), "instances[0]", {
        "devices": ["H100-SXM"] * 3, "pp": 2, "link": "NVLink4"}), mention=("pp",)))
    out.append(_exp_case("tp=3 on 32 heads (llama-2-7b)", inst(tp=3, link="NVLink4"),
                         mention=("tp",)))
    out.append(_exp_case("tp=16 on 8 KV heads that do not divide", _set(inst(
        tp=6, link="NVLink4"), "model.name", "llama-3.1-8b"), mention=("tp",)))
    out.append(_exp_case("valid: pp=3 on 32 layers (uneven stages, as vLLM cuts them)",
                         inst(pp=3, link="NVLink4"), valid=True))
    out.append(_exp_case("pp=64 on 32 layers", inst(pp=64, link="NVLink4"), mention=("pp",)))
    out.append(_exp_case("valid: max_model_len above the model's (a what-if)", _set(
        _base(), "instances[0].scheduler.max_model_len", 8192), valid=True))
    return out


def _file_cases() -> list[Case]:
    """Experiments that name spec and config files: relative paths, bad files."""
    good_dev = (ROOT / "hwspecs/devices/h100-sxm.toml").read_text()
    good_link = (ROOT / "hwspecs/links/pcie4.toml").read_text()
    out = []

    def with_dev(name, text, mention=("mydev",), valid=False):
        d = _set(_base(), "instances[0].device", "specs/mydev.toml")
        return _exp_case(f"device file: {name}", d, files={"specs/mydev.toml": text},
                         mention=mention, valid=valid)
    lines = [ln for ln in good_dev.splitlines() if ln and not ln.startswith("#")]
    base_dev = "\n".join(ln for ln in lines if not ln.startswith("aliases")).replace(
        '"H100-SXM"', '"mydev"')
    out.append(with_dev("valid (relative to the TOML)", base_dev, valid=True))
    required = ("kind", "arch_family", "source", "mem_bytes", "mem_bw_bytes_per_s",
                "peak_flops_fp32", "compute_units", "clock_hz", "tdp_w", "price_usd_per_hour")
    out.append(with_dev("valid: peak_flops_bf16 = 0 (no bf16 units)", "\n".join(
        "peak_flops_bf16 = 0" if ln.startswith("peak_flops_bf16") else ln
        for ln in base_dev.splitlines()), valid=True))
    for ln in lines:
        key = ln.split("=")[0].strip()
        if key in ("aliases", "name"):
            continue
        text = "\n".join(x for x in base_dev.splitlines() if x.split("=")[0].strip() != key)
        if key in required:
            out.append(with_dev(f"missing {key}", text, mention=("mydev", key)))
        else:   # an optional field left out is fine
            out.append(with_dev(f"valid: without optional {key}", text, valid=True))
    for key, bad in [("mem_bytes", "-1"), ("mem_bytes", '"80GB"'), ("mem_bw_bytes_per_s", "3.35"),
                     ("kind", '"tpu"'), ("host_link", '"PCIe9"'), ("tdp_w", "nan"),
                     ("clock_hz", "1.98"), ("compute_units", "1.5"),
                     ("price_usd_per_hour", "-3"), ("arch_family", '"hoper"')]:
        text = "\n".join(f"{key} = {bad}" if ln.split("=")[0].strip() == key else ln
                         for ln in base_dev.splitlines())
        out.append(with_dev(f"{key} = {bad}", text, mention=("mydev", key)))
    out.append(with_dev("unknown field", base_dev + "\nbogus = 1\n", mention=("mydev", "bogus")))
    out.append(with_dev("name differs from file", base_dev.replace('"mydev"', '"other"'),
                        mention=("mydev", "name")))
    out.append(with_dev("not TOML", "name = \n", mention=("mydev",)))
    out.append(with_dev("cpu without NUMA fields", base_dev.replace('"gpu"', '"cpu"'),
                        mention=("mydev",)))
    out.append(with_dev("BOM-prefixed (valid)", "\ufeff" + base_dev, valid=True))
    out.append(_exp_case("device file missing", _set(_base(), "instances[0].device",
                                                     "specs/none.toml"), mention=("none.toml",)))

    def with_link(name, text, mention=("mylink",), valid=False):
        d = _set(_base(), "instances[0]", {"device": "H100-SXM", "tp": 2,
                                           "link": "specs/mylink.toml"})
        return _exp_case(f"link file: {name}", d, files={"specs/mylink.toml": text},
                         mention=mention, valid=valid)
    base_link = good_link.replace('"PCIe4"', '"mylink"')
    out.append(with_link("valid (relative)", base_link, valid=True))
    for key, bad in [("bw_bytes_per_s", "0"), ("bw_bytes_per_s", "31.5"), ("latency_s", "-1"),
                     ("kind", '"wifi"'), ("latency_s", '"5us"')]:
        text = "\n".join(f"{key} = {bad}" if ln.split("=")[0].strip() == key else ln
                         for ln in base_link.splitlines())
        out.append(with_link(f"{key} = {bad}", text, mention=("mylink", key)))
    out.append(with_link("missing bw", "\n".join(ln for ln in base_link.splitlines()
                                                 if not ln.startswith("bw_")),
                         mention=("mylink", "bw_bytes_per_s")))
    # a trace file relative to the TOML, run from another folder
    d = _set(_base(), "trace", {"source": "data/t.csv"})
    out.append(Case("experiment", "valid: trace relative to the TOML, run elsewhere", *cli(
        ["run", "sub/exp.toml", "--quiet"],
        {"sub/exp.toml": to_toml(d), "sub/data/t.csv": _csv(_CANON, _FAMILIES["canonical"][2])},
        valid=True)))
    d = _set(_base(), "instances[0].device", "../specs/mydev.toml")
    out.append(Case("experiment", "valid: device relative to the TOML, run elsewhere", *cli(
        ["run", "sub/exp.toml", "--quiet"],
        {"sub/exp.toml": to_toml(d), "specs/mydev.toml": base_dev}, valid=True)))
    d = _set(_set(_base(), "instances[0]", {"device": "H100-SXM", "tp": 2,
                                            "link": "mylink.toml"}), "model.name", "llama-2-7b")
    out.append(Case("experiment", "valid: link relative to the TOML, run elsewhere", *cli(
        ["run", "sub/exp.toml", "--quiet"],
        {"sub/exp.toml": to_toml(d), "sub/mylink.toml": base_link}, valid=True)))
    d = _set(_base(), "model", {"config": "cfg/config.json"})
    out.append(Case("experiment", "valid: model config relative to the TOML, run elsewhere",
                    *cli(["run", "sub/exp.toml", "--quiet"],
                         {"sub/exp.toml": to_toml(d),
                          "sub/cfg/config.json": json.dumps(_LLAMA_CFG)}, valid=True)))
    out.append(_exp_case("valid: BOM-prefixed TOML", _base(), text="\ufeff" + to_toml(_base()),
                         valid=True))
    # a link nothing crosses (read, never used)
    out.append(_exp_case("instances[0].link with tp = pp = 1", _set(
        _base(), "instances[0]", {"device": "H100-SXM", "link": "NVLink4"}),
        mention=("exp.toml", "link")))
    # kernels beside an engine model (did nothing: the engine file's [kernels] decides)
    out.append(_exp_case("cost.kernels beside cost.engine", _set(_set(
        _base(), "cost.engine", "hf-cb-h100"), "cost.kernels", "hf-eager"),
        mention=("exp.toml", "cost.kernels")))
    # a kernel accounting file of one's own (were: fuse_qkv "no" read as true, negative
    # launches taken, a base cycle recursed to RecursionError)
    for what, body in (("fuse_qkv a string", 'base = "hf-eager"\nfuse_qkv = "no"\n'),
                       ("negative launches", 'base = "hf-eager"\nnorm_launches = -8\n'),
                       ("a base cycle", 'base = "k.toml"\n')):
        out.append(_exp_case(f"kernel accounting: {what}", _set(_base(), "cost.kernels",
                                                                 "k.toml"),
                             files={"k.toml": body}, mention=("k.toml",)))
    out.append(_exp_case("TOML syntax error", None, text="name = \n[model\n",
                         mention=("exp.toml",)))
    out.append(_exp_case("empty TOML", None, text="", mention=("exp.toml",)))
    out.append(_exp_case("latin-1 TOML", None, text=to_toml(_base()).encode("utf-8") + b"# \xe9\n",
                         mention=("exp.toml",)))
    out.append(_exp_case("run --out names an existing file", _base(),
                         files={"out.txt": "keep me"}, extra=("--out", "out.txt"),
                         mention=("out.txt",)))
    out.append(_exp_case("run --out below a file", _base(), files={"out.txt": "keep me"},
                         extra=("--out", "out.txt/sub"), mention=("out.txt",)))
    out.append(_exp_case("valid: run --out a new folder", _base(), extra=("--out", "res"),
                         valid=True))
    return out


def experiment_cases() -> list[Case]:
    cases = (_mutation_cases(_base, _SCALAR_MUTATIONS, "tiny")
             + _mutation_cases(_disagg, _DISAGG_MUTATIONS, "disagg")
             + _mutation_cases(_cpu_decode, _CPU_MUTATIONS, "cpu")
             + _mutation_cases(_hels, _HELS_MUTATIONS, "hels")
             + _mutation_cases(_phase_pools, _POOLS_MUTATIONS, "pools")
             + _mutation_cases(_design, _DESIGN_MUTATIONS, "design")
             + _mutation_cases(_moe, _MOE_MUTATIONS, "moe")
             + _tp_cases() + _file_cases())
    hels_default_link = _set(_hels(), "instances[0].link", _DEL)
    cases += [_exp_case("valid: hels group without a link (its node's PCIe4)", hels_default_link,
                        valid=True),
              _exp_case("valid: hels over 3 GPUs (40 heads in whole, unequal shares)",
                        _set(_hels(), "instances[0].devices", ["A100-80GB-PCIe"] * 3),
                        valid=True),
              _exp_case("valid: tiny", _base(), valid=True),
              _exp_case("valid: disaggregated", _disagg(), valid=True),
              _exp_case("valid: CPU decode pool with controller", _cpu_decode(), valid=True),
              _exp_case("valid: hels partition", _hels(), valid=True),
              _exp_case("valid: phase pools", _phase_pools(), valid=True),
              _exp_case("valid: a parametric design", _design(), valid=True),
              _exp_case("valid: MoE with ep, dp, prefix caching", _moe(), valid=True),
              # a setting the batching policy fixes (hf_cb chunks every prompt, caches none)
              _exp_case("tiny: hf_cb with chunked_prefill = false", _set(_set(
                  _base(), "instances[0].batching", "hf_cb"),
                  "instances[0].scheduler.chunked_prefill", False),
                  mention=("exp.toml", "chunked_prefill", "hf_cb")),
              _exp_case("tiny: hf_cb with prefix_caching = true", _set(_set(
                  _base(), "instances[0].batching", "hf_cb"),
                  "instances[0].scheduler.prefix_caching", True),
                  mention=("exp.toml", "prefix_caching", "hf_cb")),
              _exp_case("valid: hf_cb", _set(_base(), "instances[0].batching", "hf_cb"),
                        valid=True)]
    return cases


# --------------------------------------------------------------------------- specs (library)
def spec_cases() -> list[Case]:
    from simcluster.hardware import load_device, load_link, load_node
    node = (ROOT / "hwspecs/nodes/dgx-h100.toml").read_text().replace('"dgx-h100"', '"mynode"')
    link = (ROOT / "hwspecs/links/pcie4.toml").read_text().replace('"PCIe4"', '"mylink"')
    dev = "\n".join(ln for ln in (ROOT / "hwspecs/devices/a100-40gb.toml").read_text()
                    .splitlines() if not ln.startswith("aliases")).replace('"A100-40GB"',
                                                                            '"mydev"')
    cases = []

    def add(name, loader, fname, text, mention=(), valid=False):
        cases.append(Case("spec", name, *lib(lambda tmp: loader(tmp / fname), {fname: text},
                                             mention=mention or (fname,), valid=valid)))
    add("node: valid", load_node, "mynode.toml", node, valid=True)
    add("node: unknown device", load_node, "mynode.toml", node.replace('"H100-SXM"', '"H1OO"'),
        mention=("mynode", "devices[0]"))
    add("node: count 0", load_node, "mynode.toml", node.replace("count = 8", "count = 0"),
        mention=("mynode", "count"))
    add("node: count string", load_node, "mynode.toml", node.replace("count = 8", 'count = "8"'))
    add("node: unknown link", load_node, "mynode.toml", node.replace('"NVLink4"', '"NVLink9"'),
        mention=("mynode", "intra_link"))
    add("node: no devices", load_node, "mynode.toml",
        node.split("[[devices]]")[0], mention=("mynode",))
    add("node: devices as a table", load_node, "mynode.toml",
        node.split("[[devices]]")[0] + "[devices]\nspec = 'H100-SXM'\n")
    add("node: entry with a typo", load_node, "mynode.toml", node.replace("spec =", "spek ="))
    add("node: a GPU among the sockets", load_node, "mynode.toml",
        node.replace('"Xeon-Platinum-8480+"', '"H200"'), mention=("sockets[0]",))
    add("node: a CPU among the devices", load_node, "mynode.toml",
        node.replace('spec = "H100-SXM"', 'spec = "EPYC-9654"'), mention=("devices[0]",))
    add("node: link given as a number", load_node, "mynode.toml",
        node.replace('intra_link = "NVLink4"', "intra_link = 4"), mention=("intra_link",))
    add("link: valid", load_link, "mylink.toml", link, valid=True)
    add("link: bw as string", load_link, "mylink.toml",
        link.replace("31.508e9", '"32 GB/s"'), mention=("bw_bytes_per_s",))
    add("link: latency huge", load_link, "mylink.toml", link.replace("5e-6", "5"),
        mention=("latency_s",))
    add("link: unknown kind", load_link, "mylink.toml", link.replace('"pcie"', '"carrier pigeon"'),
        mention=("kind",))
    add("link: BOM (valid)", load_link, "mylink.toml", "\ufeff" + link, valid=True)
    add("device: valid", load_device, "mydev.toml", dev, valid=True)
    add("device: host_link unknown", load_device, "mydev.toml",
        dev.replace('host_link = "PCIe4"', 'host_link = "PCIe7"'), mention=("host_link",))
    add("device: host_link a number", load_device, "mydev.toml",
        dev.replace('host_link = "PCIe4"', "host_link = 4"), mention=("host_link",))
    add("device: aliases a number", load_device, "mydev.toml", dev + "\naliases = 3\n",
        mention=("aliases",))
    add("device: peak dtype unknown", load_device, "mydev.toml", dev + "\npeak_flops_fp5 = 1e14\n",
        mention=("peak_flops_fp5",))
    add("device: idle above tdp", load_device, "mydev.toml",
        "\n".join("idle_power_w = 450" if ln.startswith("idle_power_w") else ln
                  for ln in dev.splitlines()), mention=("idle_power_w",))
    add("device: not UTF-8", load_device, "mydev.toml", dev.encode() + b"\n# \xff\n")
    add("device: a folder", load_device, "mydev.toml/x", "1")
    cases[-1].run = lib(lambda tmp: load_device(tmp / "mydev.toml"), {"mydev.toml/x": "1"},
                        mention=("mydev",))[0]
    # the spec folder added by SIMCLUSTER_HWSPECS
    extra = {"extra/devices/mydev.toml": dev}
    cases.append(Case("spec", "valid: SIMCLUSTER_HWSPECS adds a device, keeps the H100", *cli(
        ["list", "devices"], extra, env={"SIMCLUSTER_HWSPECS": "{tmp}/extra"}, valid=True,
        keep=100_000)))        # (the whole listing: both names are looked for in it)
    orig = cases[-1].run

    def both_listed(tmp, orig=orig):
        outcome, detail = orig(tmp)
        if outcome == "silent" and not ("H100-SXM" in detail and "mydev" in detail):
            return "traceback", f"listing lacks H100-SXM or mydev: {detail}"
        return outcome, detail
    cases[-1].run = both_listed
    cases.append(Case("spec", "SIMCLUSTER_HWSPECS holds a bad device", *cli(
        ["list", "devices"], {"extra/devices/bad.toml": "name = \n"},
        env={"SIMCLUSTER_HWSPECS": "{tmp}/extra"}, mention=("bad.toml",))))
    cases.append(Case("spec", "SIMCLUSTER_HWSPECS names a missing folder", *cli(
        ["list", "devices"], {}, env={"SIMCLUSTER_HWSPECS": "{tmp}/nowhere"},
        mention=("nowhere",))))
    cases.append(Case("spec", "valid: measured calibration with SIMCLUSTER_HWSPECS set", *cli(
        ["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--decode-seqs", "8",
         "--decode-context", "100"], extra, env={"SIMCLUSTER_HWSPECS": "{tmp}/extra"},
        valid=True)))
    orig2 = cases[-1].run

    def measured(tmp, orig=orig2):
        outcome, detail = orig(tmp)
        if outcome == "silent" and "own tables" not in detail:
            return "traceback", f"measured calibration fell back: {detail}"
        return outcome, detail
    cases[-1].run = measured
    # measured tables of a device in an added spec folder (were read as given: a table
    # without 'm' raised KeyError from the fit, m = 0 or 1.5 was fitted)
    from simcluster.calibration.tables import load_tables
    head = "# table: gemm\nm,n,k,dtype,time_s\n"
    for what, name, body, mention in (
            ("no m column", "gemm", "n,k,dtype,time_s\n4096,512,bf16,1e-5\n", ("gemm.csv", "'m'")),
            ("m = 0", "gemm", head + "1,4096,512,bf16,1e-5\n0,4096,512,bf16,1e-5\n",
             ("gemm.csv:4", "'m'")),
            ("m = 1.5", "gemm", head + "1.5,4096,512,bf16,1e-5\n", ("gemm.csv:3", "'m'")),
            ("no dtype", "gemm", "m,n,k,time_s\n1,4096,512,1e-5\n", ("gemm.csv", "dtype")),
            ("time 0", "gemm", head + "1,4096,512,bf16,0\n", ("gemm.csv:3", "time_s")),
            ("batch text", "attn_decode", "batch,kv_len,num_heads,num_kv_heads,head_dim,time_s\n"
             "x,5,32,8,128,1e-5\n", ("attn_decode.csv:2", "'batch'"))):
        cases.append(Case("spec", f"calibration table {name}: {what}", *lib(
            lambda tmp: load_tables(tmp / "cal"), {f"cal/{name}.csv": body}, mention=mention)))
    cases.append(Case("spec", "SIMCLUSTER_HWSPECS holds a table without m", *cli(
        ["predict", "--op", "gemm", "--device", "H100-SXM", "--m", "64", "--n", "4096", "--k",
         "4096"], {"extra/calibration/H100-SXM/gemm.csv": "n,k,dtype,time_s\n4,5,bf16,1e-5\n"},
        env={"SIMCLUSTER_HWSPECS": "{tmp}/extra"}, mention=("gemm.csv", "'m'"))))
    return cases


# --------------------------------------------------------------------------- HF configs
_LLAMA_CFG = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 32,
              "intermediate_size": 11008, "vocab_size": 32000,
              "max_position_embeddings": 4096, "torch_dtype": "float16",
              "tie_word_embeddings": False, "hidden_act": "silu"}


def hf_cases() -> list[Case]:
    cases = []

    def run_cfg(name, cfg, mention=(), valid=False, raw=None):
        d = _set(_base(), "model", {"config": "config.json"})
        text = raw if raw is not None else json.dumps(cfg)
        cases.append(Case("hf_config", name, *cli(
            ["run", "exp.toml", "--quiet"], {"exp.toml": to_toml(d), "config.json": text},
            mention=("config.json",) + tuple(mention), valid=valid)))
    run_cfg("valid llama config", _LLAMA_CFG, valid=True)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                "max_position_embeddings"):
        cfg = {k: v for k, v in _LLAMA_CFG.items() if k != key}
        run_cfg(f"missing {key}", cfg, mention=(key,))
    bad = [("hidden_size", 0), ("hidden_size", -4096), ("hidden_size", "4096"),
           ("hidden_size", 4096.5), ("hidden_size", 4095), ("num_hidden_layers", 0),
           ("num_attention_heads", 0), ("num_attention_heads", 33), ("num_key_value_heads", 0),
           ("num_key_value_heads", 5), ("num_key_value_heads", 64), ("intermediate_size", 0),
           ("intermediate_size", "big"), ("vocab_size", -1), ("max_position_embeddings", 0),
           ("max_position_embeddings", -1), ("max_position_embeddings", "4k"),
           ("head_dim", 0), ("head_dim", -128), ("head_dim", 1.5), ("torch_dtype", "float13"),
           ("torch_dtype", 16), ("tie_word_embeddings", "false"), ("tie_word_embeddings", 0),
           ("hidden_act", 3), ("multi_query", "yes"),
           ("attention_bias", "true"), ("model_type", 5)]
    for key, v in bad:
        run_cfg(f"{key} = {v!r}", {**_LLAMA_CFG, key: v}, mention=(key,))
    run_cfg("only a nested text_config", {"text_config": _LLAMA_CFG}, mention=("hidden_size",))
    run_cfg("MoE without experts per token", {**_LLAMA_CFG, "num_local_experts": 8},
            mention=("num_experts_per_tok",))
    run_cfg("num_local_experts = 1.5", {**_LLAMA_CFG, "num_local_experts": 1.5},
            mention=("num_local_experts",))
    run_cfg("torch_dtype = 'auto'", {**_LLAMA_CFG, "torch_dtype": "auto"},
            mention=("torch_dtype",))
    run_cfg("num_attention_heads = 2**40", {**_LLAMA_CFG, "num_attention_heads": 2**40},
            mention=("num_attention_heads",))
    # variant keys (were: a string quantization_config raised AttributeError; awq weights
    # read as fp16; layer_types of another length or kind, a negative first_k_dense_replace,
    # moe_layer_freq 0, use_sliding_window "no" taken as given)
    moe = {**_LLAMA_CFG, "model_type": "mixtral", "num_local_experts": 8,
           "num_experts_per_tok": 2}
    for key, v, base in (("quantization_config", "fp8", _LLAMA_CFG),
                         ("quantization_config", {"quant_method": "awq"}, _LLAMA_CFG),
                         ("layer_types", ["sliding_attention"] * 3, _LLAMA_CFG),
                         ("layer_types", ["linear_attention"] * 32, _LLAMA_CFG),
                         ("use_sliding_window", "no", _LLAMA_CFG),
                         ("first_k_dense_replace", -1, moe), ("first_k_dense_replace", 99, moe),
                         ("moe_layer_freq", 0, moe), ("n_shared_experts", -1, moe),
                         ("mlp_only_layers", [40], moe), ("decoder_sparse_step", -2, moe)):
        run_cfg(f"{key} = {v!r}", {**base, key: v}, mention=(key,))
    run_cfg("a key twice", None, raw=json.dumps(_LLAMA_CFG)[:-1] + ', "hidden_size": 2048}',
            mention=("hidden_size",))
    run_cfg("not JSON", None, raw="{hidden_size: 1}")
    run_cfg("a JSON list", None, raw="[1, 2]")
    run_cfg("empty file", None, raw="")
    run_cfg("latin-1 bytes", None, raw=None)
    cases[-1].run = cli(["run", "exp.toml", "--quiet"],
                        {"exp.toml": to_toml(_set(_base(), "model", {"config": "config.json"})),
                         "config.json": json.dumps(_LLAMA_CFG).encode() + b" \xff"},
                        mention=("config.json",))[0]

    def in_cwd(tmp):
        from simcluster.models import load_model
        old = os.getcwd()
        os.chdir(tmp)
        try:
            spec = load_model("config.json")
        finally:
            os.chdir(old)
        if not spec.name:
            raise AssertionError("no name")
    cases.append(Case("hf_config", "valid: config.json in the current folder gets a name",
                      *lib(in_cwd, {"config.json": json.dumps(_LLAMA_CFG)}, valid=True)))
    return cases


# --------------------------------------------------------------------------- command lines
def cli_cases() -> list[Case]:
    good_csv = _csv(_CANON, _FAMILIES["canonical"][2])
    exp = to_toml(_base())
    specs = [
        ([], {}, ()),
        (["bogus"], {}, ()),
        (["list"], {}, ()),
        (["list", "device"], {}, ("devices",)),
        (["list", "bogus"], {}, ()),
        (["run", "missing.toml"], {}, ("missing.toml",)),
        (["run", "folder"], {"folder/x": "1"}, ("folder",)),
        (["run", "exp.toml", "--bogus"], {"exp.toml": exp}, ()),
        (["run", "exp.toml", "extra-arg"], {"exp.toml": exp}, ()),
        (["trace-info"], {}, ()),
        (["trace-info", ""], {}, ()),
        (["list", ""], {}, ()),
        (["run", "exp.toml", "--out"], {"exp.toml": exp}, ()),
        (["run", ""], {}, ()),
        (["predict", "--in", ""], {}, ()),
        (["trace-info", "t.csv", "--format"], {"t.csv": good_csv}, ()),
        (["trace-info", "t.csv", "--format", "Azure"], {"t.csv": good_csv}, ("azure",)),
        (["predict"], {}, ()),
        (["predict", "--model", "llama-2-7b"], {}, ("--device",)),
        (["predict", "--model", "lama-2-7b", "--device", "H100-SXM"], {}, ("llama-2-7b",)),
        (["predict", "--model", "llama-2-7b", "--device", "H10O"], {}, ("H100",)),
        (["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--tp", "0"], {}, ("tp",)),
        (["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--tp", "-2"], {},
         ("tp",)),
        (["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--tp", "3",
          "--link", "NVLink4"], {}, ("tp",)),
        (["predict", "--model", "llama-2-7b", "--device", "L4", "--tp", "2", "--decode-seqs",
          "4", "--decode-context", "100"], {}, ("link",)),
        (["predict", "--model", "llama-2-7b", "--device", "H100-SXM"], {}, ("decode",)),
        (["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--tp", "2", "--link",
          "NVLnk4"], {}, ("NVLink4",)),
        (["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--decode-seqs", "-3"],
         {}, ("decode",)),
        (["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--tp", "x"], {}, ()),
        (["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--calibration", "bogus"],
         {}, ("calibration",)),
        (["predict", "--op", "gemm"], {}, ("--device",)),
        (["predict", "--op", "gemm", "--device", "H100-SXM"], {}, ()),
        (["predict", "--op", "gemm", "--device", "H100-SXM", "--m", "-1", "--n", "2",
          "--k", "3"], {}, ()),
        (["predict", "--op", "attn_decode", "--device", "H100-SXM"], {}, ()),
        (["predict", "--op", "conv", "--device", "H100-SXM"], {}, ()),
        (["predict", "--in", "missing.csv"], {}, ("missing.csv",)),
        (["predict", "--in", "s.csv"], {"s.csv": "op,device\nbogus,H100-SXM\n"}, ("s.csv",)),
        (["predict", "--in", "s.csv"], {"s.csv": ""}, ("s.csv",)),
        (["predict", "--in", "s.csv"], {"s.csv": "op,device,m,n,k\ngemm,H1,1,2,3\n"},
         ("s.csv",)),
        (["predict", "--in", "s.csv"], {"s.csv": "op,device,m,n,k\ngemm,H100-SXM,x,2,3\n"},
         ("s.csv",)),
        # prefill tokens with no prompt to hold them (was accepted: the decodes alone timed)
        (["predict", "--in", "s.csv"],
         {"s.csv": "op,model,device,prefill_tokens,decode_seqs,decode_context\n"
                   "iteration,llama-2-7b,H100-SXM,2048,8,512\n"}, ("s.csv", "prefill_seqs")),
        # a column twice (pandas read the second as 'm.1': it went unread)
        (["predict", "--in", "s.csv"], {"s.csv": "op,device,m,n,k,m\ngemm,H100-SXM,1,2,3,4\n"},
         ("s.csv:1", "'m'")),
        (["validate-e2e", "r.csv", "--engine", "hf-cb-h100"],
         {"r.csv": "arrival_s,prompt_tokens,output_tokens,ttft_s,tpot_s,e2e_s,e2e_s\n"
                   "0,9,5,.1,.1,1,2\n"}, ("r.csv:1", "e2e_s")),
        # shape cells truncated or taken as given (were accepted: 128.5 as 128, m = 0)
        (["predict", "--in", "s.csv"], {"s.csv": "op,device,m,n,k\ngemm,H100-SXM,128.5,2,3\n"},
         ("s.csv:2", "'m'")),
        (["predict", "--in", "s.csv"], {"s.csv": "op,device,m,n,k\ngemm,H100-SXM,0,2,3\n"},
         ("s.csv:2", "'m'")),
        (["predict", "--in", "s.csv"], {"s.csv": "op,device,bytes\nelementwise,H100-SXM,-4\n"},
         ("s.csv:2", "'bytes'")),
        (["predict", "--in", "s.csv"],
         {"s.csv": "op,model,device,decode_seqs,decode_context\n"
                   "iteration,llama-2-7b,H100-SXM,1.5,64\n"}, ("s.csv:2", "decode_seqs")),
        (["predict", "--in", "s.csv"],
         {"s.csv": "op,device,decode_seqs,decode_context\niteration,H100-SXM,1,64\n"},
         ("s.csv:2", "'model'")),
        (["validate", "m.csv", "--device", "H100-SXM"],
         {"m.csv": "# table: mine\nop,m,n,k,measured_time_s\ngemm,1,2,3,1e-5\n"
                   "gemm,1,2,0,1e-5\n"}, ("m.csv:4", "'k'")),
        (["predict", "--in", "s.csv", "--out", "o.csv/x"],
         {"s.csv": "op,device,m,n,k\ngemm,H100-SXM,1,2,3\n", "o.csv": "x"}, ("o.csv",)),
        (["validate", "missing.csv", "--device", "H100-SXM"], {}, ("missing.csv",)),
        (["validate", "m.csv", "--device", "H100-SXM"], {"m.csv": "a,b\n1,2\n"}, ("m.csv",)),
        (["validate", "m.csv", "--device", "H100-SXM"], {"m.csv": ""}, ("m.csv",)),
        (["validate", "gemm.csv", "--device", "bogus"],
         {"gemm.csv": "m,n,k,dtype,time_s\n1,2,3,bf16,1e-5\n1,2,4,bf16,1e-5\n"}, ("bogus",)),
        (["validate", "gemm.csv", "--device", "H100-SXM"],
         {"gemm.csv": "m,n,k,dtype,time_s\n1,2,3,bf16,-1\n"}, ("time_s",)),
        (["validate-e2e", "missing.csv", "--engine", "hf-cb-h100"], {}, ("missing.csv",)),
        (["validate-e2e", "r.csv", "--engine", "bogus"], {"r.csv": "a\n1\n"}, ("bogus",)),
        (["validate-e2e", "r.csv", "--engine", "hf-cb-h100"], {"r.csv": "a,b\n1,2\n"},
         ("r.csv",)),
        # a replay's cells (were taken as given: 1.5 tokens, a negative TTFT, an infinite
        # latency; a missing arrival named only as 'request 0', without the file)
        *[(["validate-e2e", "r.csv", "--engine", "hf-cb-h100"],
           {"r.csv": "arrival_s,prompt_tokens,output_tokens,ttft_s,tpot_s,e2e_s\n"
                     "0,100,8,0.1,0.05,1\n" + row}, ("r.csv:3", column))
          for column, row in (("prompt_tokens", "0.5,1.5,8,0.1,0.05,1\n"),
                              ("ttft_s", "0.5,100,8,-1,0.05,1\n"),
                              ("e2e_s", "0.5,100,8,0.1,0.05,inf\n"),
                              ("arrival_s", ",100,8,0.1,0.05,1\n"))],
        (["calibrate-engine", "log.csv", "--device", "H100-SXM", "--model", "llama-2-7b",
          "--name", "x"], {"log.csv": "a,b\n1,2\n"}, ("log.csv",)),
        (["calibrate-engine", "missing.csv", "--device", "H100-SXM", "--model", "llama-2-7b",
          "--name", "x"], {}, ("missing.csv",)),
        (["calibrate-engine", "log.csv", "--device", "H100-SXM", "--model", "llama-2-7b",
          "--name", "../../evil"], {"log.csv": _engine_log()}, ("name",)),
        (["calibrate-engine", "log.csv", "--device", "H100-SXM", "--model", "llama-2-7b",
          "--name", "/tmp/evil"], {"log.csv": _engine_log()}, ("name",)),
        (["calibrate-engine", "log.csv", "--device", "H100-SXM", "--model", "llama-2-7b",
          "--name", "hf-cb-h100"], {"log.csv": _engine_log()}, ("--force",)),
        (["calibrate-engine", "log.csv", "--device", "H100-SXM", "--model", "llama-2-7b",
          "--name", ""], {"log.csv": _engine_log()}, ("name",)),
        # a log's cells and counts (were taken as given: 1.5 prompt tokens, more samples
        # than sequences, a prefill_detail at odds with its row; 'garbage' there raised
        # "not enough values to unpack"; a bad cell was named by row, not line)
        *[(["calibrate-engine", "log.csv", "--device", "H100-SXM", "--model", "llama-2-7b",
            "--name", "x", "--out", "o"],
           {"log.csv": "# engine: e\niteration_s,prefill_tokens,prefill_seqs,decode_seqs,"
                       "decode_context_tokens,samples,prefill_detail\n"
                       "0.1,64,1,0,0,1,64/0\n" + row}, ("log.csv:4", column))
          for column, row in (("prefill_tokens", "0.1,1.5,1,0,0,1,\n"),
                              ("samples", "0.1,64,1,2,40,9,64/0\n"),
                              ("prefill_detail", "0.1,64,1,0,0,1,garbage\n"),
                              ("prefill_detail", "0.1,64,2,0,0,2,30/0;30/0\n"),
                              ("iteration_s", "-0.1,64,1,0,0,1,64/0\n"))],
        # what calibrate-engine writes must load (were written: a transfer rule or batching
        # policy that does not exist); a --set value that is no number (was 'cannot read it')
        (["calibrate-engine", "log.csv", "--device", "H100-SXM", "--model", "llama-2-7b",
          "--name", "x", "--out", "x.toml", "--transfer", "kv_token=banana"],
         {"log.csv": _engine_log()}, ("--transfer", "banana")),
        (["calibrate-engine", "log.csv", "--device", "H100-SXM", "--model", "llama-2-7b",
          "--name", "x", "--out", "x.toml", "--batching", "vlm"],
         {"log.csv": _engine_log()}, ("--batching", "vllm")),
        (["validate-e2e", "r.csv", "--engine", "hf-cb-h100", "--set", "num_blocks=abc"],
         {"r.csv": "arrival_s,prompt_tokens,output_tokens,ttft_s,tpot_s,e2e_s\n"
                   "0,100,8,0.1,0.05,1\n"}, ("--set", "num_blocks")),
        # an engine file's own settings (were unchecked where a replay's replaced them, and
        # named without the file where not; an unknown table such as [termz] was ignored)
        *[(["validate-e2e", "r.csv", "--engine", "mine.toml"],
           {"r.csv": "arrival_s,prompt_tokens,output_tokens,ttft_s,tpot_s,e2e_s\n"
                     "0,100,8,0.1,0.05,1\n",
            "mine.toml": (ROOT / "hwspecs/engines/hf-cb-h100.toml").read_text().replace(
                old, new, 1)}, ("mine.toml", field))
          for old, new, field in (("block_size = 256", "block_size = 0", "block_size"),
                                  ("[terms]    #", "[termz]    #", "termz"),
                                  ('policy = "hf_cb"', 'policy = "hf"', "batching.policy"),
                                  ("safety_margin = 0.15,", "safety_margin = 7.0,",
                                   "batching.params"))],
        (["calibrate", "--out", "d", "--only", "bogus"], {}, ()),
        # a GPU table here: the fuzz machines have none (was: RuntimeError, a traceback)
        *([(["calibrate", "--out", "d", "--quick", "--only", "gemm"], {}, ("--only", "gemm"))]
          if _no_gpu() else []),
        (["import-profile", "vidur", "x.csv"], {"x.csv": "a,b\n1,2\n"}, ("--device",)),
        (["import-profile", "vidur", "x.csv", "--device", "../evil"], {"x.csv": "a\n1\n"},
         ("--device",)),
        (["import-profile", "vidur", "x.csv", "--device", "MyGPU", "--out", "o"],
         {"x.csv": "a,b\n1,2\n"}, ("x.csv",)),
        (["import-profile", "splitwise", "p.csv"], {"p.csv": "a\n1\n"}, ("--model",)),
        (["import-profile", "splitwise", "p.csv", "--model", "m", "--hardware", "h", "--tp",
          "1", "--out", "o.csv"], {"p.csv": "a,b\n1,2\n"}, ("p.csv",)),
        (["import-profile", "vidur", "missing.csv", "--device", "X"], {}, ("missing.csv",)),
        (["compare", "exp.toml", "--vary", "router.policy=round_robin,bogus"],
         {"exp.toml": exp}, ("bogus",)),
        (["compare", "exp.toml", "--vary", "nonsense"], {"exp.toml": exp}, ("--vary",)),
        (["compare", "missing.toml", "--vary", "seed=1,2"], {}, ("missing.toml",)),
        (["sweep", "missing.toml"], {}, ("missing.toml",)),
        (["sweep", "s.toml"], {"s.toml": "experiment = 3\n"}, ("s.toml",)),
        (["sweep", "s.toml"], {"s.toml": "name = \n"}, ("s.toml",)),
        # points that would run twice, or values one source would silently replace (ran)
        (["sweep", "s.toml"], {"s.toml": 'experiment = "exp.toml"\n[grid]\nseed = [1, 2, 1]\n',
                               "exp.toml": exp}, ("s.toml", "grid.seed")),
        (["sweep", "s.toml"], {"s.toml": 'experiment = "exp.toml"\n[grid]\nseed = [1, 2]\n'
                                         '[[points]]\nseed = 3\n', "exp.toml": exp},
         ("s.toml", "points[0].seed")),
        (["sweep", "s.toml"], {"s.toml": 'experiment = "exp.toml"\n[set]\nseed = 4\n[grid]\n'
                                         'seed = [1, 2]\n', "exp.toml": exp},
         ("s.toml", "set.seed")),
        (["sweep", "s.toml", "--set", "seed=4"],
         {"s.toml": 'experiment = "exp.toml"\n[grid]\nseed = [1, 2]\n', "exp.toml": exp},
         ("--set", "seed")),
        (["compare", "exp.toml", "--vary", "seed=1,1"], {"exp.toml": exp}, ("vary.seed",)),
        (["capacity", "exp.toml", "--ttft-slo", "-1"], {"exp.toml": exp}, ("ttft",)),
        (["capacity", "exp.toml", "--ttft-slo", "nan"], {"exp.toml": exp}, ("ttft",)),
        (["cheapest", "exp.toml", "--rate", "-1"], {"exp.toml": exp}, ("rate",)),
        (["cheapest", "exp.toml", "--rate", "2", "--devices", "H10O"], {"exp.toml": exp},
         ("H10O",)),
        (["cheapest", "exp.toml", "--rate", "2", "--tp", "0"], {"exp.toml": exp}, ("tp",)),
        # a key given twice (the last replaced the first without a word)
        (["run", "exp.toml", "--set", "seed=1", "--set", "seed=2"], {"exp.toml": exp},
         ("seed", "twice")),
        (["compare", "exp.toml", "--vary", "seed=1,2", "--vary", "seed=3,4"], {"exp.toml": exp},
         ("--vary", "seed")),
        # flags that did nothing in that company
        (["run", "exp.toml", "--timeline-window", "0,5"], {"exp.toml": exp},
         ("--timeline-window", "--timeline-out")),
        (["cheapest", "exp.toml", "--rate", "2", "--candidates", "c.toml", "--tp", "1,2"],
         {"exp.toml": exp}, ("--tp", "--candidates")),
        (["predict", "--op", "gemm", "--device", "H100-SXM", "--m", "1", "--n", "2", "--k",
          "3", "--kv-len", "9"], {}, ("--kv-len", "gemm")),
        (["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--decode-seqs", "1",
          "--out", "p.csv"], {}, ("--out", "--in")),
        # two candidates of one name (one of them was lost from the results)
        (["cheapest", "exp.toml", "--rate", "2", "--candidates", "c.toml"],
         {"exp.toml": exp, "c.toml": '[[candidates]]\nname = "a"\ninstances = [{device = '
                                     '"H100-SXM"}]\n[[candidates]]\nname = "a"\ninstances = '
                                     '[{device = "L4"}]\n'}, ("c.toml", "candidates[1].name")),
        (["run", "t.csv"], {"t.csv": good_csv}, ("t.csv", "--trace")),
        (["run", "exp.toml", "--trace", "missing.csv"], {"exp.toml": exp}, ("missing.csv",)),
        (["run", "exp.toml", "--trace", "folder"], {"exp.toml": exp, "folder/x": "1"},
         ("folder",)),
        (["run", "exp.toml", "--trace", "bad.csv"], {"exp.toml": exp, "bad.csv": "a,b\n1,2\n"},
         ("bad.csv",)),
        (["run", "exp.toml", "--set", "trace.source=missing.csv"], {"exp.toml": exp},
         ("missing.csv",)),
        (["compare", "exp.toml", "--trace", "t.csv", "--vary", "trace.rate_per_s=1,-2"],
         {"exp.toml": exp, "t.csv": good_csv}, ("rate_per_s",)),
        (["run", "exp.toml", "--set", "router=jsq"], {"exp.toml": exp},
         ("router", "router.KEY=VALUE")),
        (["compare", "exp.toml", "--vary", "router.policy=round_robin,jsq"],
         {"exp.toml": exp}, ("jsq", "join_shortest_queue")),
        (["cheapest", "exp.toml", "--rate", "2"], {"exp.toml": exp},
         ("--devices", "list devices")),
        # outputs of the questions checked before their runs (compare --out FILE ran every
        # variant, then raised FileExistsError with a traceback)
        (["compare", "exp.toml", "--vary", "seed=1,2", "--out", "o.txt"],
         {"exp.toml": exp, "o.txt": "keep"}, ("--out", "o.txt")),
        (["compare", "exp.toml", "--vary", "seed=1,2", "--plots", "o.txt/p"],
         {"exp.toml": exp, "o.txt": "keep"}, ("--plots", "o.txt")),
        (["capacity", "exp.toml", "--out", "o.txt"], {"exp.toml": exp, "o.txt": "keep"},
         ("--out", "o.txt")),
        (["cheapest", "exp.toml", "--rate", "2", "--devices", "L4", "--plots", "o.txt"],
         {"exp.toml": exp, "o.txt": "keep"}, ("--plots", "o.txt")),
        (["sweep", "s.toml", "--out", "o.txt"], {"exp.toml": exp, "o.txt": "keep",
                                                 "s.toml": 'experiment = "exp.toml"\n[grid]\n'
                                                           'seed = [1, 2]\n'},
         ("--out", "o.txt")),
        (["sweep", "s.toml"], {"exp.toml": exp, "s.toml": 'experiment = "exp.toml"\n'},
         ("s.toml", "grid")),
        (["compare", "exp.toml", "exp.toml"], {"exp.toml": exp}, ("exp.toml", "twice")),
        # capacity of a trace arriving at one instant (said "give start_per_s", no such flag)
        (["capacity", "exp.toml", "--trace", "t.csv"],
         {"exp.toml": exp, "t.csv": "arrival_s,prompt_tokens,output_tokens\n0,10,5\n0,9,5\n"},
         ("trace", "one instant")),
        # a TOML of another kind (was "field 'trace': missing" / "'instances': unknown key")
        (["run", "s.toml"], {"s.toml": 'experiment = "x.toml"\n[grid]\nseed = [1]\n'},
         ("s.toml", "sweep")),
        (["sweep", "exp.toml"], {"exp.toml": exp}, ("exp.toml", "simcluster run")),
    ]
    cases = []
    for args, files, mention in specs:
        run, valid = cli(args, files, mention=mention)
        if args and args[0] == "calibrate-engine":
            run = _guarded(run)
        cases.append(Case("cli", "simcluster " + " ".join(args), run, valid))
    cases.append(Case("cli", "broken pipe: list devices | (closed)", lambda tmp: _broken_pipe(
        ["list", "devices"])))
    cases.append(Case("cli", "broken pipe: trace-info azure-conv | (closed)",
                      lambda tmp: _broken_pipe(["trace-info", "azure-conv"])))
    cases.append(Case("cli", "subprocess exit code for a missing experiment",
                      lambda tmp: _subprocess(["run", str(tmp / "none.toml")], 2)))
    cases.append(Case("cli", "valid: predict tp=2 on H100-SXM over its node's NVLink4", *cli(
        ["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--tp", "2",
         "--decode-seqs", "4", "--decode-context", "100"], {}, valid=True)))
    cases.append(Case("cli", "valid: run --trace t.csv (in the case's folder, not the TOML's)",
                      *cli(["run", "sub/exp.toml", "--quiet", "--trace", "t.csv"],
                           {"sub/exp.toml": exp, "t.csv": good_csv}, valid=True)))
    cases.append(Case("cli", "valid: python -m simcluster list routers",
                      lambda tmp: _subprocess(["list", "routers"], 0), valid=True))
    return cases


def _guarded(run):
    """Run a case that might write engine specs; restore the bundled engines folder and
    report a write outside the case's folder as a silent accept."""
    def guarded(tmp: Path):
        engines = ROOT / "hwspecs" / "engines"
        before = {p: p.read_bytes() for p in engines.glob("*.toml")}
        strays = [ROOT / "evil.toml", Path("/tmp/evil.toml"), engines / ".toml"]
        old = {p: p.exists() for p in strays}
        try:
            outcome, detail = run(tmp)
        finally:
            wrote = [p for p in engines.glob("*.toml") if p not in before]
            wrote += [p for p, data in before.items() if p.read_bytes() != data]
            wrote += [p for p in strays if p.exists() and not old[p]]
            for p, data in before.items():
                p.write_bytes(data)
            for p in wrote:
                if p not in before:
                    p.unlink()
        if wrote:
            return "silent", f"wrote {[str(p) for p in wrote]}; {detail}"
        return outcome, detail
    return guarded


def _no_gpu() -> bool:
    """torch is installed and sees no CUDA device (where a GPU table must be refused)."""
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return False
    import torch
    return not torch.cuda.is_available()


def _engine_log() -> str:
    return (ROOT / "hwspecs/engines/hf-cb-h100/profile-grid.csv").read_text()


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _broken_pipe(args) -> tuple[str, str]:
    p = subprocess.Popen([sys.executable, "-m", "simcluster", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_env(), cwd=ROOT)
    p.stdout.close()          # the reader went away (like `| head -0`)
    err = p.stderr.read().decode()
    rc = p.wait()
    if "Traceback" in err or "Exception ignored" in err:
        return "traceback", f"exit {rc}: {err[-600:]}"
    return "named", f"exit {rc}, stderr {err.strip()[:200]!r}"


def _subprocess(args, want: int) -> tuple[str, str]:
    p = subprocess.run([sys.executable, "-m", "simcluster", *args], capture_output=True,
                       text=True, env=_env(), cwd=ROOT)
    if "Traceback" in p.stderr:
        return "traceback", p.stderr[-600:]
    if p.returncode != want:
        return ("silent" if p.returncode == 0 else "traceback"), f"exit {p.returncode}"
    return ("silent" if want == 0 else "named"), f"exit {p.returncode}"


# --------------------------------------------------------------------------- runner
def _search_spec() -> dict:
    import tomllib
    return tomllib.loads((ROOT / "experiments" / "search" / "tiny.toml").read_text())


def design_search_cases() -> list[Case]:
    """``simcluster search SPACE.toml``: a design-search spec, each key broken once; every
    mistake is refused before anything is simulated. The valid control answers from the
    benchmark's table with no baseline (no simulation)."""
    table = str(ROOT / "benchmarks" / "data" / "llmshare_designs.csv")
    muts = [
        ("objectives", [["serving_time_s"], ["serving_time_s", "serving_time_s"],
                        ["serving_time_s", "price"], "serving_time_s", []], ()),
        ("space.prefill.cores", [[], {"min": 10, "max": 5}, {"min": 0, "max": 4}, ["many"],
                                 {"min": 1, "max": 4, "step": -1}, {"max": 4}], ()),
        ("space.prefill.bogus", [[1]], ()),
        ("space.middle", [Inline(servers=[1])], ()),
        ("space.stated", [Inline(clock_hz=-1.0), Inline(warp=2)], ()),
        ("budget.initial", [0, -3, 1.5, "ten"], ()),
        ("budget.iterations", [-1, "x"], ()),
        ("budget.batch_size", [0, "two"], ()),
        ("budget.candidates", [0, "some", -5], ()),
        ("budget.initial", [10_000], ("budget",)),
        ("search.method", ["llmshar", ""], ("llmshare",)),
        ("search.workers", [0, -1, True], ()),
        ("search.table", ["missing.csv"], ("missing.csv",)),
        ("search.bogus", [1], ()),
        ("baseline.prefill", ["1,2,3", "a,b,c,d,e,f,g,h,i,j"], ()),
        ("trace", [_DEL], ()),
        ("model.name", ["gpt-5"], ()),
        ("slo.ttft_s", [-1.0, "fast"], ()),
        ("seed", [-1, "zero"], ()),
        ("wobble", [3], ()),
    ]
    cases = []
    for path, values, words in muts:
        key = path.split(".")[-1]
        for v in values:
            data = _set(_search_spec(), path, v)
            shown = "<deleted>" if v is _DEL else repr(v)
            mention = ("s.toml",) + (tuple(words) or (key,))
            cases.append(Case("design_search", f"search: {path} = {shown}", *cli(
                ["search", "s.toml", "--out", "{tmp}/out"], {"s.toml": to_toml(data)},
                mention=mention)))
    cases.append(Case("design_search", "search: not TOML", *cli(
        ["search", "s.toml"], {"s.toml": "objectives = [\n"}, mention=("s.toml",))))
    cases.append(Case("design_search", "search: no such file", *cli(
        ["search", "nope.toml"], {}, mention=("nope.toml",))))
    cases.append(Case("design_search", "search: a bundled search's name misspelt", *cli(
        ["search", "tinyy"], {}, mention=("tinyy", "did you mean 'tiny'"))))
    cases.append(Case("design_search", "search: --method unknown", *cli(
        ["search", "s.toml", "--method", "bayes"], {"s.toml": to_toml(_search_spec())},
        mention=("bayes", "llmshare"))))
    cases.append(Case("design_search", "search: --workers 0", *cli(
        ["search", "s.toml", "--workers", "0"], {"s.toml": to_toml(_search_spec())},
        mention=("--workers",))))
    valid = _set(_set(_set(_search_spec(), "search.table", table), "baseline.skip", True),
                 "budget", Inline(initial=4, iterations=2, batch_size=1))
    for drop in ("space",):
        valid = _set(valid, drop, _DEL)
    valid = _set(valid, "search.method", "random")
    cases.append(Case("design_search", "valid: answered from the benchmark's table", *cli(
        ["search", "s.toml", "--out", "{tmp}/out", "--quiet"], {"s.toml": to_toml(valid)},
        valid=True)))
    # the table's objective cells (were: a negative time and an empty price of a feasible
    # design ranked as given, text raised ValueError from numpy); a design twice
    lines = Path(table).read_text().splitlines()
    head, cols = lines[0], lines[0].split(",")
    for what, col, value, mention in (("negative time", "serving_time_s", "-5", "t.csv:2"),
                                      ("empty price", "capex_usd", "", "t.csv:2"),
                                      ("text time", "serving_time_s", "fast", "t.csv:2"),
                                      ("a design twice", None, None, "t.csv:10")):
        cells = lines[1].split(",")
        if col is not None:
            cells[cols.index(col)] = value
        body = "\n".join([head, ",".join(cells), *lines[2:9]]    # (8 designs: the budget's
                         + ([lines[1]] if col is None else [])) + "\n"   # 6 fit)
        spec = _set(valid, "search.table", "t.csv")
        cases.append(Case("design_search", f"search: table {what}", *cli(
            ["search", "s.toml", "--out", "{tmp}/out", "--quiet"],
            {"s.toml": to_toml(spec), "t.csv": body}, mention=(mention,))))
    return cases


# --------------------------------------------------------------------------- Python API

def api(fn: Callable[[], Any], mention=(), valid=False):
    """A call of the public Python face (``import simcluster as sc``). A TypeError or
    ValueError is that face's way to refuse an argument, so it counts as named (or vague)
    like an InputError; any other exception is a traceback."""
    return lib(lambda tmp: fn(), mention=mention, valid=valid,
               refusals=(TypeError, ValueError))


def api_cases() -> list[Case]:
    import functools

    import numpy as np

    import simcluster as sc
    from simcluster.cluster.pools import DisaggregatedCluster

    def trace():
        return sc.Trace(np.array([0.0, 0.5]), np.array([100, 200]), np.array([5, 6]))

    def spec(**kw):
        return sc.InstanceSpec(**{"layout": sc.Layout.uniform("H100-SXM"), **kw})

    def sim(*args, **kw):
        return lambda: sc.Simulation(*args, **kw)

    def rng():
        return np.random.default_rng(0)

    def frame():                    # a sweep's frame, as sc.sweep(...).frame has it
        import pandas as pd
        return pd.DataFrame({"trace.rate_per_s": [1.0, 2.0], "point": [0, 1],
                             "slo_attainment": [1.0, 0.5], "cost_per_m_tokens_usd": [1.0, 2.0]})
    specs = [
        ("Layout.uniform: tp=1.5", lambda: sc.Layout.uniform("H100-SXM", tp=1.5,
                                                             link="NVLink4"), ("tp=1.5",)),
        ("Layout.uniform: tp='2'", lambda: sc.Layout.uniform("H100-SXM", tp="2"), ("tp=",)),
        ("Layout.uniform: pp=0", lambda: sc.Layout.uniform("H100-SXM", pp=0), ("pp=0",)),
        ("Layout.uniform: unknown link", lambda: sc.Layout.uniform("H100-SXM", tp=2,
                                                                   link="NVLink9"),
         ("NVLink9",)),
        ("Layout.uniform: tp=2 without a link", lambda: sc.Layout.uniform("H100-SXM", tp=2),
         ("link",)),
        ("InstanceSpec: a device name for the layout", lambda: sc.InstanceSpec("H100-SXM"),
         ("InstanceSpec.layout",)),
        ("InstanceSpec: count 0", lambda: spec(count=0), ("count",)),
        ("InstanceSpec: config a dict", lambda: spec(config={"max_num_seqs": 8}),
         ("InstanceSpec.config",)),
        ("InstanceSpec: pool 'nope'", lambda: spec(pool="nope"), ("pool", "nope")),
        ("InstanceConfig: memory_utilization 1.5",
         lambda: sc.InstanceConfig(memory_utilization=1.5), ("memory_utilization",)),
        ("Simulation: cost_model 3", sim(trace(), "llama-2-7b", spec(), cost_model=3),
         ("cost_model",)),
        ("Simulation: cost_model 'nope'", sim(trace(), "llama-2-7b", spec(),
                                              cost_model="nope"), ("calibration", "nope")),
        ("Simulation: pools without a disaggregated cluster",
         sim(trace(), "llama-2-7b", [spec(pool="prefill"), spec(pool="decode")]),
         ("pools", "cluster_factory")),
        ("Simulation: unknown router", sim(trace(), "llama-2-7b", spec(), router="nope"),
         ("router", "nope")),
        ("Simulation: unknown batching", lambda: sc.Simulation(
            trace(), "llama-2-7b", spec(batching="nope")).run(), ("batching", "nope")),
        ("Simulation: router param unknown", sim(trace(), "llama-2-7b", spec(),
                                                 router="least_outstanding_tokens",
                                                 router_params={"nope": 1}), ("nope",)),
        ("Simulation: empty trace", sim(sc.first_n(trace(), 0), "llama-2-7b", spec()),
         ("no requests",)),
        ("Simulation: ttft_slo_s -1", sim(trace(), "llama-2-7b", spec(), ttft_slo_s=-1),
         ("ttft_slo_s",)),
        ("synthetic_trace: rate 0", lambda: sc.synthetic_trace(
            3, arrivals=0.0, prompt=10, output=10, rng=rng()), ("arrivals",)),
        ("synthetic_trace: rng 0", lambda: sc.synthetic_trace(
            3, arrivals=1.0, prompt=10, output=10, rng=0), ("rng",)),
        ("subsample: fraction 2.0", lambda: sc.subsample(trace(), 2.0, rng()),
         ("fraction",)),
        ("rescale_rate: nan", lambda: sc.rescale_rate(trace(), float("nan")),
         ("target_rate_per_s",)),
        ("time_window: end before start", lambda: sc.time_window(trace(), 10, 5),
         ("end_s",)),
        ("first_n: 1.5", lambda: sc.first_n(trace(), 1.5), ("n ",)),
        ("load_experiment: overrides a list", lambda: sc.load_experiment(overrides=[1]),
         ("overrides",)),
        ("capacity: rel_tol 0", lambda: sc.capacity(rel_tol=0, progress=False),
         ("rel_tol",)),
        ("capacity: abs_tol nan", lambda: sc.capacity(abs_tol=float("nan"), progress=False),
         ("abs_tol",)),
        ("cheapest: tp [0]", lambda: sc.cheapest(rate_per_s=4, devices=["L4"], tp=[0],
                                                 progress=False), ("tp",)),
        ("cheapest: max_count 1.5", lambda: sc.cheapest(rate_per_s=4, devices=["L4"],
                                                        max_count=1.5, progress=False),
         ("max_count",)),
        ("cheapest: mixed 'no'", lambda: sc.cheapest(rate_per_s=4, devices=["L4"],
                                                     mixed="no", progress=False), ("mixed",)),
        ("cheapest: candidates [3]", lambda: sc.cheapest(rate_per_s=4, candidates=[3],
                                                         progress=False), ("candidates[0]",)),
        ("compare: no experiments", lambda: sc.compare([], progress=False),
         ("experiments",)),
        ("sweep: out a file", lambda: sc.sweep(grid={"seed": [1]}, out=__file__,
                                               progress=False), ("out", "fuzz_inputs.py")),
        ("sweep: progress 'no'", lambda: sc.sweep(grid={"seed": [1]}, progress="no"),
         ("progress",)),
        ("sweep: nothing varied", lambda: sc.sweep(grid={}, progress=False), ("grid",)),
        ("plots.slo_attainment: target 90", lambda: sc.plots.slo_attainment(
            frame(), target=90), ("target",)),
        ("plots.slo_attainment: no rows", lambda: sc.plots.slo_attainment(frame().iloc[:0]),
         ("no rows",)),
        ("plots.slo_attainment: a list", lambda: sc.plots.slo_attainment([1, 2]),
         ("frame",)),
        ("plots.cost_per_m_tokens: label missing", lambda: sc.plots.cost_per_m_tokens(
            frame(), label="config"), ("label", "config")),
        ("plots.capacity_curve: a frame", lambda: sc.plots.capacity_curve(frame()),
         ("capacity()",)),
        ("plots.save: a list", lambda: sc.plots.save([1], "figs"), ("figures",)),
        ("Batch: 1.5 tokens of context", lambda: sc.Batch(decode_context=(1.5,)),
         ("decode_context", "whole"),),
        ("PoolDesign: a string for the design", lambda: sc.PoolDesign(1, "x"),
         ("PoolDesign.design",)),
        ("ServingDesign: strings for the pools", lambda: sc.ServingDesign("x", "y"),
         ("ServingDesign.prefill",)),
        ("evaluate_design: a string for the design", lambda: sc.evaluate_design(
            "x", trace(), "llama-2-7b"), ("design",)),
        ("describe: a number for the trace", lambda: sc.describe(3), ("trace",)),
        ("chrome_trace: a number for the results", lambda: sc.chrome_trace(3),
         ("results",)),
        ("Simulation.run: progress 'x'", lambda: sc.Simulation(
            trace(), "llama-2-7b", spec()).run(progress="x"), ("progress",)),
        ("Simulation.run: stream_to a file", lambda: sc.Simulation(
            trace(), "llama-2-7b", spec()).run(stream_to=__file__), ("stream_to",)),
        ("Results.load: no such folder", lambda: sc.Results.load("nowhere"), ("nowhere",)),
        ("Results.load: a folder without the run's files", lambda: sc.Results.load(
            os.path.dirname(__file__)), ("requests.csv",)),
        ("InstanceConfig: prefix_caching 'yes'", lambda: sc.InstanceConfig(
            prefix_caching="yes"), ("prefix_caching",)),
        ("CostModel: routing a string", lambda: sc.CostModel("measured", routing="x"),
         ("routing",)),
        ("load_device: a number", lambda: sc.load_device(5), ("device",)),
        ("load_model: a number", lambda: sc.load_model(5), ("model",)),
        ("model_preset: a number", lambda: sc.model_preset(5), ("model",)),
        ("load_trace: a number", lambda: sc.load_trace(5), ("trace",)),
        ("Simulation: cluster_factory 3", sim(trace(), "llama-2-7b", spec(),
                                              cluster_factory=3), ("cluster_factory",)),
        ("DisaggregatedCluster: kv_link 3", sim(
            trace(), "llama-2-7b", [spec(pool="prefill"), spec(pool="decode")],
            cluster_factory=functools.partial(DisaggregatedCluster, kv_link=3)),
         ("kv_link",)),
        ("DisaggregatedCluster: a link's name for kv_link (valid)", lambda: sc.Simulation(
            trace(), "llama-2-7b", [spec(pool="prefill"), spec(pool="decode")],
            cluster_factory=functools.partial(DisaggregatedCluster, kv_link="NVLink4")).run(),
         (), True),
        ("Simulation: a name for the cost model (valid)",
         lambda: sc.Simulation(trace(), "llama-2-7b", spec(), cost_model="datasheet").run(),
         (), True),
    ]
    return [Case("api", s[0], *api(*s[1:])) for s in specs]


KINDS = {"trace": trace_cases, "experiment": experiment_cases, "spec": spec_cases,
         "hf_config": hf_cases, "cli": cli_cases, "design_search": design_search_cases,
         "api": api_cases}


def all_cases(kinds=None) -> list[Case]:
    out = []
    for kind, make in KINDS.items():
        if kinds is None or kind in kinds:
            out += make()
    return out


def run_case(case: Case, timeout_s: float) -> Result:
    def alarm(signum, frame):
        raise _Timeout()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as d:
        old = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            outcome, detail = case.run(Path(d))
        except _Timeout:
            outcome, detail = "hang", f"still running after {timeout_s} s"
        except Exception as err:  # noqa: BLE001 (a case that breaks is reported, not fatal)
            outcome, detail = "traceback", f"case itself failed: {type(err).__name__}: {err}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    return Result(case, outcome, detail, time.perf_counter() - t0)


def report(results: list[Result], show: int = 200, out=sys.stdout) -> bool:
    bad = [r for r in results if not r.case.valid and r.outcome != "named"]
    refused = [r for r in results if r.case.valid and r.outcome != "silent"]
    kinds = sorted({r.case.kind for r in results}, key=list(KINDS).index)
    print(f"{'kind':<11} {'cases':>6} " + " ".join(f"{o:>9}" for o in OUTCOMES)
          + f" {'valid ok':>9} {'valid refused':>14}", file=out)
    for kind in kinds + ["all"]:
        rs = [r for r in results if kind in ("all", r.case.kind)]
        bad_cases = [r for r in rs if not r.case.valid]
        valid = [r for r in rs if r.case.valid]
        counts = [sum(r.outcome == o for r in bad_cases) for o in OUTCOMES]
        print(f"{kind:<11} {len(rs):>6} " + " ".join(f"{c:>9}" for c in counts)
              + f" {sum(r.outcome == 'silent' for r in valid):>9}"
              f" {sum(r.outcome != 'silent' for r in valid):>14}", file=out)
    total = sum(r.wall_s for r in results)
    print(f"{len(results)} cases in {total:.1f} s", file=out)
    for r in (bad + refused)[:show]:
        tag = "VALID REFUSED" if r.case.valid else r.outcome.upper()
        detail = " | ".join(r.detail.strip().splitlines()[-3:])[:400]
        print(f"  [{tag}] {r.case.kind}: {r.case.name}\n      {detail}", file=out)
    return not bad and not refused


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", action="append", choices=list(KINDS))
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--show", type=int, default=200, help="failing cases to print")
    ap.add_argument("--timeout-s", type=float, default=30.0)
    ap.add_argument("--match", help="only cases whose name contains this")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    cases = all_cases(args.kind)
    if args.match:
        cases = [c for c in cases if args.match in c.name]
    if args.list:
        for c in cases:
            print(f"{c.kind:<11} {'valid ' if c.valid else ''}{c.name}")
        return 0
    results = [run_case(c, args.timeout_s) for c in cases]
    return 0 if report(results, args.show) else 1


if __name__ == "__main__":
    sys.exit(main())
