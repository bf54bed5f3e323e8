"""Importers: published per-operator profiles -> this project's calibration tables.

**Vidur** (github.com/microsoft/vidur) profiles one GPU type per folder,
``data/profiling/compute/<device>/<model>/{mlp,attention}.csv``, one row per profiled shape and
one ``time_stats.<op>.{min,max,mean,median,std}`` group per operator, in milliseconds per layer
and GPU. Only the ``median`` columns are required.

``mlp.csv`` keys: ``n_head, n_kv_head, n_embd, n_expanded_embd, vocab_size, use_gated_mlp,
num_tokens, num_tensor_parallel_workers``; operators -> tables:

==============================  ============================================================
``attn_pre_proj``               GEMM m = tokens, k = n_embd, n = (n_head + 2 n_kv_head) d / TP
``attn_post_proj``              GEMM k = n_head d / TP, n = n_embd
``mlp_up_proj``                 GEMM k = n_embd, n = (2 if gated) n_expanded_embd / TP
``mlp_down_proj``               GEMM k = n_expanded_embd / TP, n = n_embd
``input_layernorm``,            elementwise ``rmsnorm`` (fused kernel) over tokens x n_embd
``post_attention_layernorm``
``mlp_act``                     elementwise ``silu_mul`` over tokens x n_expanded_embd / TP
``add``                         elementwise ``residual_add`` over tokens x n_embd
==============================  ============================================================

(``emb`` and ``attn_rope`` have no counterpart table and are skipped.) ``attention.csv`` keys:
``n_embd, n_q_head, n_kv_head, num_tensor_parallel_workers, batch_size, prefill_chunk_size,
kv_cache_size, is_prefill``; ``attn_prefill`` rows (a chunk of ``prefill_chunk_size`` new tokens
after ``kv_cache_size`` cached ones, ``batch_size`` sequences) -> ``attn_prefill.csv`` (with a
``context`` column), ``attn_decode`` rows (``batch_size`` sequences over ``kv_cache_size``
cached tokens each) -> ``attn_decode.csv``. Heads are per GPU: ``n_q_head / TP``, KV heads
``max(n_kv_head / TP, 1)``, head size ``n_embd / n_q_head``.

Every table's metadata names the source files (``source``), which the calibration's provenance
prints. SplitwiseSim's per-iteration perf model is imported by
:mod:`simcluster.engines.importers` (it times whole iterations, not operators).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from simcluster.errors import InputError
from simcluster.models.operators import op_counts
from simcluster.workload._columns import unique_file_header

BF16 = 2
MLP_KEYS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "use_gated_mlp", "num_tokens",
            "num_tensor_parallel_workers")
ATTN_KEYS = ("n_embd", "n_q_head", "n_kv_head", "num_tensor_parallel_workers", "batch_size",
             "prefill_chunk_size", "kv_cache_size", "is_prefill")
MLP_GEMMS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
MLP_ELEMENTWISE = {"input_layernorm": "rmsnorm", "post_attention_layernorm": "rmsnorm",
                   "mlp_act": "silu_mul", "add": "residual_add"}


def _read(path, keys, ops) -> pd.DataFrame:
    path = Path(path)
    try:
        unique_file_header(path)
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError("no such Vidur profile", file=str(path)) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(f"not a CSV: {err}", file=str(path)) from None
    missing = [k for k in keys if k not in df.columns]
    medians = [c for c in df.columns if c.startswith("time_stats.") and c.endswith(".median")]
    if missing:
        raise InputError(f"missing columns {missing}; a Vidur profile has {list(keys)} and "
                         "time_stats.<op>.median columns", file=str(path))
    if not any(c.split(".")[1] in ops for c in medians):
        raise InputError(f"no time_stats.<op>.median column for any of {list(ops)}",
                         file=str(path))
    return df


def _time(df, op, i, path):
    col = f"time_stats.{op}.median"
    if col not in df.columns:
        return None
    v = df[col].iloc[i]
    if pd.isna(v):
        return None
    if not (isinstance(v, (int, float, np.floating)) and v > 0):
        raise InputError(f"row {i + 1}: {col} must be a number > 0 (ms), got {v!r}",
                         file=str(path), line=i + 2, field=col)
    return float(v) * 1e-3


def _int(df, key, i, path) -> int:
    v = df[key].iloc[i]
    try:
        f = float(v)
    except (TypeError, ValueError):
        f = math.nan
    if not math.isfinite(f) or f < 0 or f != int(f):
        raise InputError(f"row {i + 1}: expected a whole number >= 0, got {v!r}",
                         file=str(path), line=i + 2, field=key)
    return int(f)


def _flag(df, key, i, path) -> bool:
    """A true/false cell (``True``/``False``, ``1``/``0``, any case); anything else named."""
    v = str(df[key].iloc[i]).strip().lower()
    if v not in ("true", "false", "1", "0", "1.0", "0.0"):
        raise InputError(f"row {i + 1}: expected true or false, got {df[key].iloc[i]!r}",
                         file=str(path), line=i + 2, field=key)
    return v in ("true", "1", "1.0")


def _divides(whole: int, parts: int, what: str, i: int, path, field: str) -> int:
    """``whole / parts`` when it is whole; an InputError naming the row otherwise (a floor
    would invent a shape the profile never ran)."""
    if whole % parts:
        raise InputError(f"row {i + 1}: {what} ({whole} / {parts}) is not whole",
                         file=str(path), line=i + 2, field=field)
    return whole // parts


def vidur_mlp_rows(path) -> tuple[list[dict], list[dict]]:
    """(GEMM rows, elementwise rows) of a Vidur ``mlp.csv`` (see module docstring)."""
    df = _read(path, MLP_KEYS, MLP_GEMMS + tuple(MLP_ELEMENTWISE))
    gemm, elem = [], []
    for i in range(len(df)):
        h, kv, e = (_int(df, k, i, path) for k in ("n_head", "n_kv_head", "n_embd"))
        ffn, t = _int(df, "n_expanded_embd", i, path), _int(df, "num_tokens", i, path)
        tp = _int(df, "num_tensor_parallel_workers", i, path)
        if not (h and e and t and tp):
            raise InputError(f"row {i + 1}: heads, n_embd, num_tokens and TP must be >= 1",
                             file=str(path), line=i + 2)
        gated = _flag(df, "use_gated_mlp", i, path)
        d = _divides(e, h, "head size n_embd / n_head", i, path, "n_embd")
        _divides(h, tp, "heads a GPU n_head / TP", i, path, "n_head")
        _divides(ffn, tp, "n_expanded_embd / TP", i, path, "n_expanded_embd")
        shapes = {"attn_pre_proj": (e, (h + 2 * kv) * d // tp),
                  "attn_post_proj": (h * d // tp, e),
                  "mlp_up_proj": (e, (2 if gated else 1) * ffn // tp),
                  "mlp_down_proj": (ffn // tp, e)}
        for op, (k, n) in shapes.items():
            t_s = _time(df, op, i, path)
            if t_s is not None:
                gemm.append({"m": t, "n": n, "k": k, "dtype": "bf16", "layout": "nt",
                             "time_s": t_s, "flops": 2 * t * n * k,
                             "bytes": BF16 * (t * k + k * n + t * n),
                             "sources": f"vidur/{op}/tp{tp}"})
        for op, kind in MLP_ELEMENTWISE.items():
            t_s = _time(df, op, i, path)
            if t_s is None:
                continue
            row = ffn // tp if kind == "silu_mul" else e
            byts = BF16 * ((2 * t * row + row) if kind == "rmsnorm" else 3 * t * row)
            elem.append({"op": kind, "tokens": t, "hidden": row, "dtype": "bf16",
                         "kernels": 1, "time_s": t_s, "flops": 0, "bytes": byts,
                         "sources": f"vidur/{op}/tp{tp}"})
    return gemm, elem


def vidur_attention_rows(path) -> tuple[list[dict], list[dict]]:
    """(prefill rows, decode rows) of a Vidur ``attention.csv`` (see module docstring)."""
    df = _read(path, ATTN_KEYS, ("attn_prefill", "attn_decode"))
    pre, dec = [], []
    for i in range(len(df)):
        e, qh, kvh = (_int(df, k, i, path) for k in ("n_embd", "n_q_head", "n_kv_head"))
        tp = _int(df, "num_tensor_parallel_workers", i, path)
        if not (e and qh and tp):
            raise InputError(f"row {i + 1}: n_embd, n_q_head and TP must be >= 1",
                             file=str(path), line=i + 2)
        heads = _divides(qh, tp, "heads a GPU n_q_head / TP", i, path, "n_q_head")
        kv, d = max(kvh // tp, 1), _divides(e, qh, "head size n_embd / n_q_head", i, path,
                                            "n_embd")
        b = _int(df, "batch_size", i, path)
        ctx = _int(df, "kv_cache_size", i, path)
        prefill = _flag(df, "is_prefill", i, path)
        if not b:
            raise InputError(f"row {i + 1}: expected batch_size >= 1, got 0", file=str(path),
                             line=i + 2, field="batch_size")
        common = {"num_heads": heads, "num_kv_heads": kv, "head_dim": d, "dtype": "bf16",
                  "backend": "vidur", "gqa_mode": "none" if heads == kv else "enable_gqa"}
        if prefill:
            t_s, chunk = _time(df, "attn_prefill", i, path), _int(df, "prefill_chunk_size",
                                                                  i, path)
            if t_s is None or not chunk:
                continue
            f, by, _ = op_counts("attn_prefill", {"tokens": chunk, "context": ctx, "batch": b,
                                                  "num_heads": heads, "num_kv_heads": kv,
                                                  "head_dim": d})
            pre.append({"batch": b, "seq_len": chunk, "context": ctx, "causal": True,
                        **common, "time_s": t_s, "flops": f, "bytes": by})
        else:
            t_s = _time(df, "attn_decode", i, path)
            if t_s is None or not ctx:
                continue
            f, by, _ = op_counts("attn_decode", {"batch": b, "kv_len": ctx, "num_heads": heads,
                                                 "num_kv_heads": kv, "head_dim": d})
            dec.append({"batch": b, "kv_len": ctx, **common, "time_s": t_s, "flops": f,
                        "bytes": by})
    return pre, dec


COLUMNS = {
    "gemm": ["m", "n", "k", "dtype", "layout", "time_s", "flops", "bytes", "sources"],
    "elementwise": ["op", "tokens", "hidden", "dtype", "kernels", "time_s", "flops", "bytes",
                    "sources"],
    "attn_prefill": ["batch", "seq_len", "context", "num_heads", "num_kv_heads", "head_dim",
                     "causal", "backend", "gqa_mode", "dtype", "time_s", "flops", "bytes"],
    "attn_decode": ["batch", "kv_len", "num_heads", "num_kv_heads", "head_dim", "backend",
                    "gqa_mode", "dtype", "time_s", "flops", "bytes"],
}


def import_vidur(paths, device: str) -> dict[str, tuple[dict, pd.DataFrame]]:
    """Calibration tables (name -> (metadata, rows)) from Vidur ``mlp.csv`` and
    ``attention.csv`` files (told apart by their columns)."""
    rows = {name: [] for name in COLUMNS}
    sources = {name: [] for name in COLUMNS}
    for path in paths:
        head = pd.read_csv(path, nrows=0).columns if Path(path).exists() else []
        if "num_tokens" in head or not len(head):
            g, e = vidur_mlp_rows(path)
            for name, got in (("gemm", g), ("elementwise", e)):
                rows[name] += got
                sources[name] += [Path(path).name] if got else []
        else:
            p, d = vidur_attention_rows(path)
            for name, got in (("attn_prefill", p), ("attn_decode", d)):
                rows[name] += got
                sources[name] += [Path(path).name] if got else []
    out = {}
    for name, got in rows.items():
        if not got:
            continue
        meta = {"table": name, "device_name": device,
                "source": f"imported from Vidur profiles ({', '.join(sources[name])}; "
                          "github.com/microsoft/vidur)",
                "importer": "simcluster import-profile vidur",
                "units": "SI: seconds, bytes, floating-point operations (Vidur: ms)"}
        out[name] = (meta, pd.DataFrame(got, columns=COLUMNS[name]))
    if not out:
        raise InputError("no operator rows in the given Vidur profiles",
                         file=", ".join(str(p) for p in paths))
    return out


def write_tables(tables: dict, folder) -> list[Path]:
    """Write calibration tables (``# key: value`` metadata, then the rows)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (meta, df) in tables.items():
        p = folder / f"{name}.csv"
        head = "".join(f"# {k}: {' '.join(str(v).split())}\n" for k, v in meta.items())
        p.write_text(head + df.to_csv(index=False))
        written.append(p)
    return written
