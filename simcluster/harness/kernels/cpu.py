"""Host-CPU micro-benchmarks: GEMV / small GEMM and decode attention, over thread counts.

These calibrate CPU sockets as decode devices (hLLM-style offload). Timed with
``time.perf_counter`` around each call (median of repeats after warm-up); weights and KV are
rotated through copies that together exceed twice the last-level cache. Thread counts are set
with ``torch.set_num_threads``; counts above the cores this process may use are skipped.
"""

from __future__ import annotations

import os

from .common import (Budget, Table, TIMING_COLUMNS, cpu_info, finish_table,
                     last_level_cache_bytes, n_buffer_sets, time_cpu)

CPU_GEMM_M = (1, 4, 16, 64)
CPU_GEMM_KN = ((4096, 4096), (4096, 11008), (8192, 8192))
CPU_DTYPES = ("fp32", "bf16")
CPU_GEMM_THREADS = (1, 2, 4, 8, 16)
CPU_ATTN_KV_LEN = tuple(2 ** i for i in range(7, 15))  # 128 .. 16384
CPU_ATTN_BATCH = (1, 8)
CPU_ATTN_THREADS = (1, 4, 16)
CPU_ATTN_HEADS = (32, 32, 128)  # heads, kv heads, head dim (MHA, Llama-2 7B)
DTYPE_BYTES = {"fp32": 4, "bf16": 2}


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_gemm_grid(quick: bool = False, max_threads: int | None = None):
    """(m, k, n, dtype, threads) in measuring order: M outermost, so that a time cut drops the
    largest M first and the GEMV rows always exist."""
    max_threads = usable_cores() if max_threads is None else max_threads
    if quick:
        ms, kns, threads = (1, 16), ((4096, 4096),), (1, 16)
    else:
        ms, kns, threads = CPU_GEMM_M, CPU_GEMM_KN, CPU_GEMM_THREADS
    return [(m, k, n, dt, t) for m in ms for k, n in kns for dt in CPU_DTYPES
            for t in threads if t <= max_threads]


def cpu_attn_grid(quick: bool = False, max_threads: int | None = None):
    """(batch, kv_len, dtype, threads) in measuring order."""
    max_threads = usable_cores() if max_threads is None else max_threads
    if quick:
        bs, lens, threads = (1,), (128, 4096), (1, 16)
    else:
        bs, lens, threads = CPU_ATTN_BATCH, CPU_ATTN_KV_LEN, CPU_ATTN_THREADS
    return [(b, L, dt, t) for dt in CPU_DTYPES for b in bs for L in lens for t in threads
            if t <= max_threads]


def _cpu_metadata(torch) -> dict:
    md = cpu_info()
    md["torch_version"] = torch.__version__
    md["torch_default_threads"] = torch.get_num_threads()
    try:
        md["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        pass
    md["mkldnn_available"] = torch.backends.mkldnn.is_available()
    return md


def _dtype(torch, name):
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def _random_copies(torch, shape, dtype, n):
    """``n`` distinct buffers of random normal values (one draw, then copies: drawing every
    buffer costs seconds per point on the host)."""
    first = torch.randn(*shape, dtype=dtype)
    return [first] + [first.clone() for _ in range(n - 1)]


def bench_cpu_gemm(torch, *, quick: bool = False) -> Table:
    """y = x @ W^T on the host: M in {1, 4, 16, 64}, three weight shapes, fp32 and bf16."""
    llc = last_level_cache_bytes() or 64 * 2 ** 20
    grid = cpu_gemm_grid(quick)
    budget = Budget(10 if quick else 75)
    cols = ["m", "n", "k", "dtype", "threads", *TIMING_COLUMNS, "buffer_sets", "rotated_bytes",
            "method", "ops_per_sample"]
    table = Table("cpu_gemm", cols, metadata={
        **_cpu_metadata(torch),
        "op": "torch.mm(x, W.t()) with W stored [N, K] (nn.Linear layout)",
        "flops_formula": "2*m*n*k", "bytes_formula": "dtype_bytes*(m*k + k*n + m*n)",
        "rotate_min_bytes": 2 * llc})
    x = torch.randn(4, 4096, dtype=torch.bfloat16)
    w = torch.randn(4096, 4096, dtype=torch.bfloat16)
    err = torch.linalg.vector_norm((x @ w.t()).double() - x.double() @ w.double().t()) / \
        torch.linalg.vector_norm(x.double() @ w.double().t())
    table.metadata["check_bf16_rel_err_vs_fp64"] = f"{float(err):.2e}"
    old_threads = torch.get_num_threads()
    weights: dict = {}
    xs_cache: dict = {}
    try:
        for m, k, n, dt, t in grid:
            if budget.spent():
                budget.skipped += 1
                continue
            nb = DTYPE_BYTES[dt]
            torch.set_num_threads(old_threads)  # fill buffers with every thread
            if (k, n, dt) not in weights:  # kept for every M: six shapes, a few GB in all
                ns = n_buffer_sets(nb * k * n, 2 * llc, cap=8)
                weights[(k, n, dt)] = _random_copies(torch, (n, k), _dtype(torch, dt), ns)
            ws = weights[(k, n, dt)]
            if (m, k, dt) not in xs_cache:
                xs_cache.clear()
                xs_cache[(m, k, dt)] = _random_copies(torch, (m, k), _dtype(torch, dt), len(ws))
            xs = xs_cache[(m, k, dt)]
            torch.set_num_threads(t)
            r = time_cpu([(lambda a=a, b=b: torch.mm(a, b.t())) for a, b in zip(xs, ws)],
                         point_budget_s=0.05 if quick else 0.15)
            set_bytes = nb * (m * k + k * n + m * n)
            table.add(m=m, n=n, k=k, dtype=dt, threads=t, flops=2 * m * n * k, bytes=set_bytes,
                      buffer_sets=len(ws), rotated_bytes=len(ws) * set_bytes, **r)
    finally:
        torch.set_num_threads(old_threads)
    return finish_table(table, budget, len(grid))


def bench_cpu_attn_decode(torch, *, quick: bool = False) -> Table:
    """One query token per sequence against kv_len cached tokens on the host (SDPA, MHA)."""
    import torch.nn.functional as F
    llc = last_level_cache_bytes() or 64 * 2 ** 20
    h, kvh, d = CPU_ATTN_HEADS
    grid = cpu_attn_grid(quick)
    budget = Budget(10 if quick else 60)
    cols = ["batch", "kv_len", "num_heads", "num_kv_heads", "head_dim", "dtype", "threads",
            *TIMING_COLUMNS, "buffer_sets", "rotated_bytes", "method",
            "ops_per_sample"]
    table = Table("cpu_attn_decode", cols, metadata={
        **_cpu_metadata(torch),
        "op": "F.scaled_dot_product_attention(q[b,h,1,d], k[b,kv,L,d], v[b,kv,L,d]) on the host",
        "flops_formula": "4*batch*num_heads*kv_len*head_dim",
        "bytes_formula": "dtype_bytes*(2*batch*kv_len*num_kv_heads*head_dim + "
                         "2*batch*num_heads*head_dim)"})
    old_threads = torch.get_num_threads()
    sets_cache: dict = {}
    try:
        for b, L, dt, t in grid:
            if budget.spent():
                budget.skipped += 1
                continue
            nb = DTYPE_BYTES[dt]
            set_bytes = nb * (2 * b * L * kvh * d + 2 * b * h * d)
            ns = n_buffer_sets(set_bytes, 2 * llc, cap=64)
            if (b, L, dt) not in sets_cache:  # threads vary innermost: reuse the buffers
                sets_cache.clear()
                torch.set_num_threads(old_threads)
                tdt = _dtype(torch, dt)
                sets_cache[(b, L, dt)] = list(zip(
                    _random_copies(torch, (b, h, 1, d), tdt, ns),
                    _random_copies(torch, (b, kvh, L, d), tdt, ns),
                    _random_copies(torch, (b, kvh, L, d), tdt, ns)))
            sets = sets_cache[(b, L, dt)]
            torch.set_num_threads(t)
            r = time_cpu([(lambda s=s: F.scaled_dot_product_attention(*s)) for s in sets],
                         point_budget_s=0.05 if quick else 0.1)
            table.add(batch=b, kv_len=L, num_heads=h, num_kv_heads=kvh, head_dim=d, dtype=dt,
                      threads=t, flops=4 * b * h * L * d, bytes=set_bytes, buffer_sets=ns,
                      rotated_bytes=ns * set_bytes, **r)
    finally:
        torch.set_num_threads(old_threads)
    return finish_table(table, budget, len(grid))
