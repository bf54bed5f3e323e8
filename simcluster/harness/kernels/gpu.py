"""GPU kernel micro-benchmarks: GEMM, prefill and decode attention, elementwise, copies.

Each ``bench_*`` function measures one table on CUDA device 0 and returns a
:class:`~simcluster.harness.kernels.common.Table`; the shape grids are plain functions of the
preset models (:data:`MODEL_SHAPES`) so that they can be checked without a GPU.

Conventions (also in ``hwspecs/calibration/README.md``): bf16 everywhere unless a ``dtype``
column says otherwise; random normal inputs (never zeros); buffers rotated so that the copies
an operation cycles through exceed twice the L2 cache; timed with CUDA events over CUDA-graph
replays (:class:`~simcluster.harness.kernels.common.GpuTimer`).
"""

from __future__ import annotations

import math

from .common import (Budget, GpuTimer, Table, TIMING_COLUMNS, finish_table, log_spaced_pow2,
                     n_buffer_sets)

#: Projection-relevant dimensions of the preset models: hidden size, attention heads, KV heads,
#: head dim, FFN inner size, whether the FFN is gated (SwiGLU: gate and up fused, 2*ffn wide),
#: vocabulary size (the lm_head's N).
MODEL_SHAPES: dict[str, dict] = {
    "llama2-7b": dict(hidden=4096, heads=32, kv_heads=32, head_dim=128, ffn=11008, gated=True,
                      vocab=32000),
    "llama2-13b": dict(hidden=5120, heads=40, kv_heads=40, head_dim=128, ffn=13824, gated=True,
                       vocab=32000),
    "llama2-70b": dict(hidden=8192, heads=64, kv_heads=8, head_dim=128, ffn=28672, gated=True,
                       vocab=32000),
    "llama3.1-8b": dict(hidden=4096, heads=32, kv_heads=8, head_dim=128, ffn=14336, gated=True,
                        vocab=128256),
    "llama3.1-70b": dict(hidden=8192, heads=64, kv_heads=8, head_dim=128, ffn=28672, gated=True,
                         vocab=128256),
    "opt-13b": dict(hidden=5120, heads=40, kv_heads=40, head_dim=128, ffn=20480, gated=False,
                    vocab=50272),
    "opt-30b": dict(hidden=7168, heads=56, kv_heads=56, head_dim=128, ffn=28672, gated=False,
                    vocab=50272),
    "opt-66b": dict(hidden=9216, heads=72, kv_heads=72, head_dim=128, ffn=36864, gated=False,
                    vocab=50272),
}

TP_DEGREES = (1, 2, 4, 8)
GEMM_M = tuple(2 ** i for i in range(15))  # 1 .. 16384 tokens
QUICK_GEMM_M = (1, 64, 4096)
QUICK_GEMM_KN = ((4096, 12288), (11008, 4096), (8192, 16000))
GEMM_LAYOUT = "x[M,K] @ W[N,K]^T (F.linear / nn.Linear weight layout; torch.mm on W.t())"

ATTN_CONFIGS = (("mha", 32, 32, 128), ("gqa", 64, 8, 128))  # name, heads, kv heads, head dim
ATTN_BACKENDS = ("FLASH_ATTENTION", "CUDNN_ATTENTION")
# Lengths in sqrt(2) steps: prefill efficiency climbs steeply between 256 and 4k tokens
# (cuDNN: 150 -> 600 TFLOP/s), and a 2-4x grid left the fitted curve 10% off there (suite v2).
PREFILL_BATCH = (1, 2, 4, 8, 16)
PREFILL_SEQ = (128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288,
               16384)
PREFILL_MAX_TOKENS = 65536
DECODE_BATCH = (1, 4, 8, 16, 32, 64, 128)
DECODE_KV_LEN = (128, 256, 512, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 32768)
DECODE_MAX_KV_BYTES = 20e9

ELEM_TOKENS = tuple(2 ** i for i in range(15))  # 1 .. 16384
ELEM_HIDDEN = (4096, 5120, 8192)
MEMCPY_SIZES = tuple(log_spaced_pow2(2 ** 10, 2 ** 30))  # 1 KiB .. 1 GiB

BF16_BYTES = 2


def projection_shapes(models: dict[str, dict] | None = None,
                      tp_degrees=TP_DEGREES) -> dict[tuple[int, int], list[str]]:
    """Every (K, N) of every preset model's projections at every TP degree, each with the list
    of ``model/projection/tpN`` that needs it. Column-parallel projections (qkv, up, lm_head)
    split N by TP; row-parallel ones (out, down) split K."""
    models = MODEL_SHAPES if models is None else models
    shapes: dict[tuple[int, int], list[str]] = {}
    for name, m in models.items():
        h, hd = m["hidden"], m["head_dim"]
        for tp in tp_degrees:
            up_n = (2 if m["gated"] else 1) * m["ffn"]
            proj = {
                "qkv": (h, (m["heads"] + 2 * m["kv_heads"]) * hd),
                "out": (m["heads"] * hd, h),
                "up": (h, up_n),
                "down": (m["ffn"], h),
                "lm_head": (h, m["vocab"]),
            }
            for p, (k, n) in proj.items():
                if p in ("qkv", "up", "lm_head"):
                    if n % tp:
                        continue
                    n //= tp
                else:
                    if k % tp:
                        continue
                    k //= tp
                shapes.setdefault((k, n), []).append(f"{name}/{p}/tp{tp}")
    return shapes


def gemm_grid(quick: bool = False) -> list[tuple[int, int, int, str]]:
    """The GEMM points (M, K, N, sources), in measuring order: (K, N) pairs by size, M inside."""
    shapes = projection_shapes()
    pairs = QUICK_GEMM_KN if quick else sorted(shapes, key=lambda kn: (kn[0] * kn[1], kn))
    ms = QUICK_GEMM_M if quick else GEMM_M
    return [(m, k, n, ";".join(shapes.get((k, n), ["quick"]))) for k, n in pairs for m in ms]


def prefill_grid(quick: bool = False) -> list[tuple[int, int]]:
    """(batch, seq_len) points of the prefill table, skipping those over the token cap."""
    if quick:
        return [(1, 512), (1, 2048)]
    return [(b, s) for b in PREFILL_BATCH for s in PREFILL_SEQ if b * s <= PREFILL_MAX_TOKENS]


def decode_kv_bytes(batch: int, kv_len: int, kv_heads: int, head_dim: int) -> int:
    """Bytes of one layer's K and V for a batch (bf16)."""
    return 2 * batch * kv_len * kv_heads * head_dim * BF16_BYTES


def decode_grid(quick: bool = False, kv_heads: int = 32, head_dim: int = 128):
    """(batch, kv_len) points of the decode table, skipping KV over ``DECODE_MAX_KV_BYTES``."""
    if quick:
        return [(1, 1024), (32, 4096)]
    return [(b, n) for b in DECODE_BATCH for n in DECODE_KV_LEN
            if decode_kv_bytes(b, n, kv_heads, head_dim) <= DECODE_MAX_KV_BYTES]


def _l2_bytes(torch) -> int:
    return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 50 * 2 ** 20)


def _rel_err(torch, out, ref) -> float:
    out, ref = out.double(), ref.double()
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref))


def _timer(torch, quick: bool, **kw) -> GpuTimer:
    if quick:
        return GpuTimer(torch, point_budget_s=0.004, min_reps=3, max_reps=20, **kw)
    return GpuTimer(torch, **kw)


# --------------------------------------------------------------------------- GEMM

def bench_gemm(torch, *, quick: bool = False) -> Table:
    """bf16 GEMM over the preset models' projection shapes and M = 1 .. 16384 tokens."""
    dev, dt = "cuda", torch.bfloat16
    l2 = _l2_bytes(torch)
    grid = gemm_grid(quick)
    budget = Budget(30 if quick else 170)
    timer = _timer(torch, quick)
    cols = ["m", "n", "k", "dtype", "layout", *TIMING_COLUMNS, "buffer_sets", "rotated_bytes",
            "method", "ops_per_sample", "sources"]
    table = Table("gemm", cols, metadata={
        "op": "torch.mm(x, W.t(), out=y), bf16 in, bf16 out, fp32 accumulate",
        "flops_formula": "2*m*n*k", "bytes_formula": "2*(m*k + k*n + m*n)",
        "rotate_min_bytes": 2 * l2})
    # correctness: one shape against float64
    x = torch.randn(64, 4096, device=dev, dtype=dt)
    w = torch.randn(12288, 4096, device=dev, dtype=dt)
    err = _rel_err(torch, x @ w.t(), x.double() @ w.double().t())
    table.metadata["check_rel_err_vs_fp64"] = f"{err:.2e}"
    del x, w
    table.metadata["ceiling_8192cubed_start_flops_per_s"] = _square_gemm_rate(torch)
    by_kn: dict[tuple[int, int], list] = {}
    for m, k, n, src in grid:
        by_kn.setdefault((k, n, src), []).append(m)
    for (k, n, src), ms in by_kn.items():
        if budget.spent():
            budget.skipped += len(ms)
            continue
        n_w = n_buffer_sets(BF16_BYTES * (k * n + k + n), 2 * l2, cap=64)
        weights = [torch.randn(n, k, device=dev, dtype=dt).t() for _ in range(n_w)]
        for m in ms:
            if budget.spent():
                budget.skipped += 1
                continue
            set_bytes = BF16_BYTES * (m * k + k * n + m * n)
            ns = min(n_w, n_buffer_sets(set_bytes, 2 * l2))
            xs = [torch.randn(m, k, device=dev, dtype=dt) for _ in range(ns)]
            ys = [torch.empty(m, n, device=dev, dtype=dt) for _ in range(ns)]
            fns = [(lambda a=xs[i], b=weights[i], c=ys[i]: torch.mm(a, b, out=c))
                   for i in range(ns)]
            r = timer.time(fns)
            table.add(m=m, n=n, k=k, dtype="bf16", layout="nt", flops=2 * m * n * k,
                      bytes=set_bytes, buffer_sets=ns, rotated_bytes=ns * set_bytes,
                      sources=src, **r)
            del xs, ys, fns
        del weights
        torch.cuda.empty_cache()
    table.metadata["layout_nt"] = GEMM_LAYOUT
    table.metadata["ceiling_8192cubed_end_flops_per_s"] = _square_gemm_rate(torch)
    table.metadata["ceiling_note"] = (
        "8192^3 bf16 product, eager, 3 warm-ups then the median of 10 event-timed products: "
        "'start' on a cool GPU before the sweep, 'end' right after it (clocks may be "
        "power-throttled then, as through the sweep's large-M points)")
    return finish_table(table, budget, len(grid))


def _square_gemm_rate(torch, n: int = 8192) -> float:
    """Achieved FLOP/s of an n^3 bf16 product: the matrix ceiling METHOD.md asks for."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e-3)
    times.sort()
    return float(2 * n ** 3 / ((times[4] + times[5]) / 2))


# --------------------------------------------------------------------------- attention

def _rms_norm_fn(torch):
    import torch.nn.functional as F
    if hasattr(F, "rms_norm"):
        return (lambda x, w: F.rms_norm(x, (x.shape[-1],), w, 1e-6)), "F.rms_norm"

    def manual(x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * w
    return manual, "torch ops (float32 statistics)"


def elementwise_ops(torch):
    """name -> (make_buffers(t, h), call(buffers), bytes(t, h), flops(t, h), impl)."""
    import torch.nn.functional as F
    dev, dt = "cuda", torch.bfloat16
    rms, rms_impl = _rms_norm_fn(torch)
    return {
        "rmsnorm": (
            lambda t, h: (torch.randn(t, h, device=dev, dtype=dt),
                          torch.randn(h, device=dev, dtype=dt)),
            lambda bufs: rms(*bufs),
            lambda t, h: BF16_BYTES * (2 * t * h + h),
            lambda t, h: 4 * t * h,
            rms_impl),
        "silu_mul": (
            lambda t, h: (torch.randn(t, 2 * h, device=dev, dtype=dt),
                          torch.empty(t, h, device=dev, dtype=dt)),
            lambda bufs: torch.mul(F.silu(bufs[0][:, :bufs[1].shape[1]]),
                                   bufs[0][:, bufs[1].shape[1]:], out=bufs[1]),
            lambda t, h: BF16_BYTES * 3 * t * h,
            lambda t, h: 5 * t * h,
            "torch.mul(F.silu(x[:, :h]), x[:, h:], out=y) (two kernels, unfused)"),
        "residual_add": (
            lambda t, h: (torch.randn(t, h, device=dev, dtype=dt),
                          torch.randn(t, h, device=dev, dtype=dt),
                          torch.empty(t, h, device=dev, dtype=dt)),
            lambda bufs: torch.add(bufs[0], bufs[1], out=bufs[2]),
            lambda t, h: BF16_BYTES * 3 * t * h,
            lambda t, h: t * h,
            "torch.add(x, r, out=y)"),
    }


def bench_elementwise(torch, *, quick: bool = False) -> Table:
    """RMSNorm, gated SiLU and residual add over tokens x hidden (bf16)."""
    l2 = _l2_bytes(torch)
    budget = Budget(20 if quick else 40)
    timer = _timer(torch, quick)
    tokens = (1, 256, 4096) if quick else ELEM_TOKENS
    hiddens = (4096,) if quick else ELEM_HIDDEN
    ops = elementwise_ops(torch)
    cols = ["op", "tokens", "hidden", "dtype", "impl", *TIMING_COLUMNS, "buffer_sets",
            "rotated_bytes", "method", "ops_per_sample"]
    table = Table("elementwise", cols, metadata={
        "bytes_formula": "rmsnorm 2*(2*t*h + h); silu_mul 2*3*t*h (x is [t, 2h], y [t, h]); "
                         "residual_add 2*3*t*h",
        "flops_formula": "rmsnorm 4*t*h; silu_mul 5*t*h; residual_add t*h (approximate counts)"})
    x = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
    xf = x.double()
    ref = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * w.double()
    err = _rel_err(torch, ops["rmsnorm"][1]((x, w)), ref)
    table.metadata["check_rmsnorm_rel_err_vs_fp64"] = f"{err:.2e}"
    n_points = 0
    for name, (make, call, nbytes, nflops, impl) in ops.items():
        for h in hiddens:
            for t in tokens:
                n_points += 1
                if budget.spent():
                    budget.skipped += 1
                    continue
                b = nbytes(t, h)
                ns = n_buffer_sets(b, 2 * l2, cap=1024)
                sets = [make(t, h) for _ in range(ns)]
                r = timer.time([(lambda s=s: call(s)) for s in sets])
                del sets
                table.add(op=name, tokens=t, hidden=h, dtype="bf16", impl=impl, flops=nflops(t, h),
                          bytes=b, buffer_sets=ns, rotated_bytes=ns * b, **r)
        torch.cuda.empty_cache()
    return finish_table(table, budget, n_points)


# --------------------------------------------------------------------------- copies

def bench_memcpy(torch, *, quick: bool = False) -> Table:
    """Device-to-device, pinned host-to-device and device-to-host copies, 1 KiB .. 1 GiB."""
    l2 = _l2_bytes(torch)
    budget = Budget(20 if quick else 40)
    timer = _timer(torch, quick)
    sizes = (2 ** 10, 2 ** 20, 2 ** 26) if quick else MEMCPY_SIZES
    cols = ["direction", "size_bytes", "pinned", *TIMING_COLUMNS, "buffer_sets", "rotated_bytes",
            "method", "ops_per_sample"]
    table = Table("memcpy", cols, metadata={
        "op": "dst.copy_(src, non_blocking=True) on uint8 tensors",
        "bytes_formula": "d2d, d2d_kernel: 2*size_bytes (read + write, both in device "
                         "memory); h2d, d2h: size_bytes (over the host link)",
        "directions": "d2d: uint8 copy_ (cudaMemcpyAsync, captured as a graph memcpy node); "
                      "d2d_kernel: bf16 -> fp16 copy_ (an elementwise CUDA kernel, same bytes); "
                      "h2d/d2h: pinned host memory",
        "timing_note": "d2d timed over CUDA-graph replays with rotated buffers; h2d/d2h timed "
                       "eagerly (each copy a cudaMemcpyAsync from/to pinned memory)"})
    dev = "cuda"
    n_points = 0
    for direction in ("d2d", "d2d_kernel", "h2d", "d2h"):
        for size in sizes:
            n_points += 1
            if budget.spent():
                budget.skipped += 1
                continue
            if direction == "d2d_kernel":
                ns = n_buffer_sets(2 * size, 2 * l2, cap=1024)
                pairs = [(torch.empty(size // 2, device=dev, dtype=torch.float16),
                          torch.randn(size // 2, device=dev, dtype=torch.bfloat16))
                         for _ in range(ns)]
                nbytes, graph = 2 * size, True
            elif direction == "d2d":
                ns = n_buffer_sets(2 * size, 2 * l2, cap=1024)
                pairs = [(torch.empty(size, device=dev, dtype=torch.uint8),
                          torch.randint(0, 256, (size,), device=dev, dtype=torch.uint8))
                         for _ in range(ns)]
                nbytes, graph = 2 * size, True
            else:
                ns = 1
                d = torch.randint(0, 256, (size,), device=dev, dtype=torch.uint8)
                hbuf = torch.empty(size, dtype=torch.uint8, pin_memory=True)
                hbuf.copy_(d)
                pairs = [(d, hbuf)] if direction == "h2d" else [(hbuf, d)]
                nbytes, graph = size, False
            fns = [(lambda a=a, b=b: a.copy_(b, non_blocking=True)) for a, b in pairs]
            r = timer.time(fns, graph=graph)
            del pairs, fns
            table.add(direction=direction, size_bytes=size, pinned=direction in ("h2d", "d2h"),
                      flops=0, bytes=nbytes, buffer_sets=ns, rotated_bytes=ns * 2 * size, **r)
        torch.cuda.empty_cache()
    return finish_table(table, budget, n_points)


def peak_rates(rows: list[dict], key) -> float:
    """The largest ``key(row)/time_s`` over rows (for summaries)."""
    vals = [key(r) / r["time_s"] for r in rows if r.get("time_s")]
    return max(vals) if vals else math.nan
