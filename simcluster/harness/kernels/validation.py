"""Held-out operators in every execution mode (table ``validation_ops``): never fitted.

A separate measurement run for validating the cost model: shapes drawn with a seeded generator
*off* the fitting grids (token counts, batch sizes and lengths between grid points, projection
shapes of models outside the presets), each timed in the three execution modes of
:mod:`.modes` (``graph``, ``eager``, ``isolated``) with its host dispatch time. The calibration
never reads this table (it lives under ``heldout/``); ``benchmarks/validation_report.py``
predicts every row.
"""

from __future__ import annotations

import math

import numpy as np

from .common import Budget, Table, TIMING_COLUMNS, finish_table, log, n_buffer_sets
from . import modes
from .attention import _attn_inputs, _sdpa_call
from .elementwise import rmsnorm_hf, rotary_hf
from .gpu import BF16_BYTES, _l2_bytes, _timer

SEED = 20261204
#: (K, N) pairs: some on the fitting grid, most off it (Llama-3-8B k/v, Qwen2-7B, Phi-3-mini,
#: Mistral-Nemo-like, a 5120-wide model's unfused FFN).
VALIDATION_KN = ((4096, 1024), (4096, 4096), (3584, 4608), (3584, 37888), (18944, 3584),
                 (3072, 9216), (3072, 16384), (8192, 3072), (5120, 6144), (5120, 14336),
                 (14336, 5120), (4096, 28672), (11008, 4096), (4096, 128256), (8192, 10240))
ATTN_CONFIGS = ((32, 32, 128), (32, 8, 128), (40, 40, 128), (64, 8, 128), (28, 4, 128))
ELEM_KINDS = ("rmsnorm", "rmsnorm_hf", "silu_mul", "residual_add", "rotary_hf")
MODES = ("graph", "eager", "isolated")


def _loguniform(rng, lo, hi):
    return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


def validation_shapes(quick: bool = False, seed: int = SEED) -> list[dict]:
    """The held-out shapes (deterministic for a seed), in a seeded random order."""
    rng = np.random.default_rng(seed)
    n_gemm, n_attn, n_elem = (4, 2, 3) if quick else (90, 30, 40)
    out = []
    for _ in range(n_gemm):
        k, n = VALIDATION_KN[rng.integers(len(VALIDATION_KN))]
        out.append({"op": "gemm", "m": _loguniform(rng, 1, 4096 if quick else 12000),
                    "k": k, "n": n, "layout": "nn" if rng.random() < 0.25 else "nt"})
    for _ in range(n_attn):
        h, kv, d = ATTN_CONFIGS[rng.integers(len(ATTN_CONFIGS))]
        b = int(rng.choice([1, 2, 3, 4]))
        s = _loguniform(rng, 100, 1024 if quick else 7000)
        out.append({"op": "attn_prefill", "batch": b, "seq_len": s, "num_heads": h,
                    "num_kv_heads": kv, "head_dim": d})
    for _ in range(n_attn):
        h, kv, d = ATTN_CONFIGS[rng.integers(len(ATTN_CONFIGS))]
        b = _loguniform(rng, 1, 8 if quick else 160)
        L = _loguniform(rng, 64, 2048 if quick else 16000)
        while 4 * b * L * kv * d > 8e9:          # K + V of one layer under 8 GB
            L //= 2
        out.append({"op": "attn_decode", "batch": b, "kv_len": L, "num_heads": h,
                    "num_kv_heads": kv, "head_dim": d})
    for _ in range(n_elem):
        kind = ELEM_KINDS[rng.integers(len(ELEM_KINDS))]
        t = _loguniform(rng, 1, 1024 if quick else 12000)
        if kind == "rotary_hf":
            h, kv, d = ATTN_CONFIGS[rng.integers(len(ATTN_CONFIGS))]
            out.append({"op": "elementwise", "kind": kind, "tokens": t,
                        "hidden": (h + kv) * d, "num_heads": h, "num_kv_heads": kv,
                        "head_dim": d})
        else:
            hid = int(rng.choice([3584, 4096, 5120, 8192, 14336]))
            out.append({"op": "elementwise", "kind": kind, "tokens": t, "hidden": hid})
    # interleaved, so that a time cut drops a random part of every class, not the last class
    return [out[i] for i in rng.permutation(len(out))]


def _gemm(torch, s, l2):
    dev, dt = modes.DEVICE, torch.bfloat16
    m, k, n = s["m"], s["k"], s["n"]
    b = BF16_BYTES * (m * k + k * n + m * n)
    ns = n_buffer_sets(b, 2 * l2, cap=32)
    ws = [torch.randn(n, k, device=dev, dtype=dt).t() if s["layout"] == "nt"
          else torch.randn(k, n, device=dev, dtype=dt) for _ in range(ns)]
    xs = [torch.randn(m, k, device=dev, dtype=dt) for _ in range(ns)]
    ys = [torch.empty(m, n, device=dev, dtype=dt) for _ in range(ns)]
    fns = [(lambda a=xs[i], w=ws[i], c=ys[i]: torch.mm(a, w, out=c)) for i in range(ns)]
    return fns, 2 * m * n * k, b


def _attention(torch, s, l2, backend):
    h, kv, d = s["num_heads"], s["num_kv_heads"], s["head_dim"]
    mode = "none" if h == kv else "enable_gqa"
    if s["op"] == "attn_prefill":
        bsz, sq = s["batch"], s["seq_len"]
        skv, causal = sq, True
        flops = 4 * bsz * h * sq * sq * d // 2
        b = BF16_BYTES * (2 * bsz * sq * h * d + 2 * bsz * sq * kv * d)
    else:
        bsz, sq, skv, causal = s["batch"], 1, s["kv_len"], False
        flops = 4 * bsz * h * skv * d
        b = BF16_BYTES * (2 * bsz * skv * kv * d + 2 * bsz * h * d)
    ns = n_buffer_sets(b, 2 * l2, cap=32)
    sets = [_attn_inputs(torch, bsz, h, kv, sq, skv, d, mode) for _ in range(ns)]
    if modes.dry_run():
        backend = "MATH"
    fns = [_sdpa_call(torch, backend, *t, causal=causal, gqa_mode=mode) for t in sets]
    return fns, flops, b


def _elementwise(torch, s, l2):
    import torch.nn.functional as F
    dev, dt = modes.DEVICE, torch.bfloat16
    t, hid, kind = s["tokens"], s["hidden"], s["kind"]
    if kind == "rotary_hf":
        h, kv, d = s["num_heads"], s["num_kv_heads"], s["head_dim"]
        b = BF16_BYTES * (4 * t * (h + kv) * d + 2 * t * d)

        def make():
            cs = torch.randn(1, t, d, device=dev, dtype=dt)
            return (torch.randn(1, t, h, d, device=dev, dtype=dt).transpose(1, 2),
                    torch.randn(1, t, kv, d, device=dev, dtype=dt).transpose(1, 2), cs, cs)
        call = (lambda a: rotary_hf(torch, *a))
    elif kind in ("rmsnorm", "rmsnorm_hf"):
        b = BF16_BYTES * (2 * t * hid + hid)

        def make():
            return (torch.randn(t, hid, device=dev, dtype=dt),
                    torch.randn(hid, device=dev, dtype=dt))
        call = ((lambda a: F.rms_norm(a[0], (hid,), a[1], 1e-6)) if kind == "rmsnorm"
                else (lambda a: rmsnorm_hf(torch, *a)))
    else:
        b = BF16_BYTES * 3 * t * hid

        def make():
            return (torch.randn(t, hid, device=dev, dtype=dt),
                    torch.randn(t, hid, device=dev, dtype=dt),
                    torch.empty(t, hid, device=dev, dtype=dt))
        call = ((lambda a: torch.mul(F.silu(a[0]), a[1], out=a[2])) if kind == "silu_mul"
                else (lambda a: torch.add(a[0], a[1], out=a[2])))
    ns = n_buffer_sets(b, 2 * l2, cap=128)
    sets = [make() for _ in range(ns)]
    return [(lambda a=a: call(a)) for a in sets], 0, b


SHAPE_COLUMNS = ["op", "kind", "m", "n", "k", "layout", "batch", "seq_len", "kv_len",
                 "num_heads", "num_kv_heads", "head_dim", "backend", "tokens", "hidden"]


def bench_validation_ops(torch, *, quick: bool = False) -> Table:
    """Every held-out shape in every execution mode (see module docstring)."""
    l2 = _l2_bytes(torch)
    budget = Budget(20 if quick else 80)
    timer = _timer(torch, quick)
    cols = [*SHAPE_COLUMNS, "mode", *TIMING_COLUMNS, "host_dispatch_s", "method",
            "ops_per_sample"]
    table = Table("validation_ops", cols, metadata={
        "purpose": "held-out validation: never fitted; shapes off the fitting grids",
        "seed": SEED, "modes": ", ".join(MODES),
        "formulas": "flops and bytes as in gemm.csv, attn_prefill.csv, attn_decode.csv and "
                    "elementwise.csv"})
    shapes = validation_shapes(quick)
    n_points = 0
    for s in shapes:
        backends = (("FLASH_ATTENTION", "CUDNN_ATTENTION") if s["op"].startswith("attn")
                    else ("",))
        for backend in backends:
            n_points += 1
            if budget.spent():
                budget.skipped += 1
                continue
            try:
                if s["op"] == "gemm":
                    fns, flops, b = _gemm(torch, s, l2)
                elif s["op"] == "elementwise":
                    fns, flops, b = _elementwise(torch, s, l2)
                else:
                    fns, flops, b = _attention(torch, s, l2, backend)
                host = modes.host_dispatch(torch, fns, launches=20 if quick else 60, rounds=3)
                res = modes.time_modes(torch, timer, fns, MODES)
            except Exception as exc:  # noqa: BLE001 -- an unsupported backend/shape is skipped
                log(f"  validation {s} {backend}: {type(exc).__name__}: {str(exc)[:120]}")
                if not modes.dry_run():
                    torch.cuda.synchronize()
                continue
            for mode, r in res.items():
                table.add(**s, backend=backend, mode=mode, flops=flops, bytes=b,
                          host_dispatch_s=host, **r)
            del fns
        if not modes.dry_run():
            torch.cuda.empty_cache()
    return finish_table(table, budget, n_points)
