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

from .common import (Budget, Table, TIMING_COLUMNS, finish_table, log_spaced_pow2,
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
# Token grid: powers of two and the points half-way between them (x1.5), so that the curve
# between two powers of two is measured, not assumed (suite v3).
GEMM_M = tuple(sorted({2 ** i for i in range(15)} | {3 * 2 ** i for i in range(13)}))
QUICK_GEMM_M = (1, 48, 64, 4096)
QUICK_GEMM_KN = ((4096, 12288), (11008, 4096), (8192, 16000))
#: Weight layouts. ``nt``: W stored [N, K] and read transposed -- what F.linear / nn.Linear do
#: (torch.mm(x, W.t())). ``nn``: W stored [K, N] (torch.mm(x, W)), as some engines keep it.
GEMM_LAYOUTS = {"nt": "x[M,K] @ W[N,K]^T (F.linear / nn.Linear weight layout; torch.mm on W.t())",
                "nn": "x[M,K] @ W[K,N] (weight stored input-major; torch.mm(x, W))"}
#: Models whose projections are also measured in the ``nn`` layout (TP 1 and 2).
NN_LAYOUT_MODELS = ("llama2-7b", "llama3.1-8b", "llama2-13b")
#: A point slower than its neighbours' interpolation by more than this, and slower than the
#: next larger M, is re-measured (twice, fresh buffers; the median of the three is kept).
OUTLIER_TOL = 0.15
GEMM_LAYOUT = GEMM_LAYOUTS["nt"]

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

ELEM_TOKENS = tuple(sorted({2 ** i for i in range(15)} | {3 * 2 ** i for i in range(13)}))
ELEM_HIDDEN = (4096, 5120, 8192)
MEMCPY_SIZES = tuple(log_spaced_pow2(2 ** 10, 2 ** 30))  # 1 KiB .. 1 GiB

BF16_BYTES = 2


def projection_shapes(models: dict[str, dict] | None = None, tp_degrees=TP_DEGREES,
                      unfused: bool = True) -> dict[tuple[int, int], list[str]]:
    """Every (K, N) of every preset model's projections at every TP degree, each with the list
    of ``model/projection/tpN`` that needs it. Column-parallel projections (qkv, up, lm_head,
    and the unfused q_proj, kv_proj (k_proj and v_proj), gate_up_proj (gate_proj and up_proj)
    that HF transformers' eager models run) split N by TP; row-parallel ones (out, down)
    split K."""
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
            if unfused:   # separate projections, as HF transformers' eager models run them
                proj.update({"q_proj": (h, m["heads"] * hd), "kv_proj": (h, m["kv_heads"] * hd),
                             "gate_up_proj": (h, m["ffn"])} if m["gated"] else
                            {"q_proj": (h, m["heads"] * hd)})
            for p, (k, n) in proj.items():
                if p in ("qkv", "up", "lm_head", "q_proj", "kv_proj", "gate_up_proj"):
                    if n % tp:
                        continue
                    n //= tp
                else:
                    if k % tp:
                        continue
                    k //= tp
                shapes.setdefault((k, n), []).append(f"{name}/{p}/tp{tp}")
    return shapes


def gemm_grid(quick: bool = False) -> list[tuple[int, int, int, str, str]]:
    """The GEMM points (M, K, N, layout, sources), in measuring order: the ``nn`` layout for
    :data:`NN_LAYOUT_MODELS` at TP 1-2 (a few pairs), then the ``nt`` layout for every (K, N)
    pair by size; M inside (so a time cut drops the largest pairs first)."""
    shapes = projection_shapes()
    ms = QUICK_GEMM_M if quick else GEMM_M
    if quick:
        return [(m, k, n, lay, "quick") for lay in ("nt", "nn") for k, n in QUICK_GEMM_KN[:2]
                for m in ms]
    pairs = sorted(shapes, key=lambda kn: (kn[0] * kn[1], kn))
    nn_srcs = {kn: [s for s in src if s.split("/")[0] in NN_LAYOUT_MODELS
                    and s.split("/")[-1] in ("tp1", "tp2")] for kn, src in shapes.items()}
    out = [(m, k, n, "nn", ";".join(nn_srcs[(k, n)])) for k, n in pairs if nn_srcs[(k, n)]
           for m in ms]
    out += [(m, k, n, "nt", ";".join(shapes[(k, n)])) for k, n in pairs for m in ms]
    return out


def neighbour_outliers(ms, ts, tol: float = OUTLIER_TOL) -> list[int]:
    """Indices of points (sorted by ``ms``) slower than the log-log interpolation of their two
    neighbours by more than ``tol`` *and* slower than the next larger M (a GEMM on more rows
    finishing sooner says the point was disturbed, or the library's kernel choice was poor
    there: a re-measure tells which). End points compare with their one neighbour."""
    out = []
    lm = [math.log(m) for m in ms]
    lt = [math.log(t) for t in ts]
    for i in range(len(ms)):
        if i == 0 or i == len(ms) - 1:
            if len(ms) > 1 and i == 0 and ts[0] > ts[1] * (1 + tol):
                out.append(i)
            continue
        w = (lm[i] - lm[i - 1]) / (lm[i + 1] - lm[i - 1])
        expect = lt[i - 1] + w * (lt[i + 1] - lt[i - 1])
        if lt[i] - expect > math.log1p(tol) and ts[i] > ts[i + 1]:
            out.append(i)
    return out


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
    from .modes import dry_run
    if dry_run():
        return 2 ** 16
    return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 50 * 2 ** 20)


def _rel_err(torch, out, ref) -> float:
    out, ref = out.double(), ref.double()
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref))


def _timer(torch, quick: bool, **kw):
    from .modes import make_timer
    return make_timer(torch, quick, **kw)


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
