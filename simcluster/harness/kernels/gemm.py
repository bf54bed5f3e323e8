"""bf16 GEMM table (suite v3): both weight layouts, a token grid with non-power-of-two points,
outliers found against their neighbours and re-measured.

Shapes: every projection of the preset models (:func:`.gpu.projection_shapes`, fused and
unfused) at TP 1-8 in the ``nt`` layout (``F.linear``'s), and the projections of
:data:`.gpu.NN_LAYOUT_MODELS` at TP 1-2 in the ``nn`` layout too; M over :data:`.gpu.GEMM_M`.
Each (K, N, layout) series is checked with :func:`.gpu.neighbour_outliers` right after it is
measured; a flagged point is measured twice more on fresh buffers and the median of the three
is kept (``remeasured``, ``time_first_s``; ``outlier_persists`` if the median is still
flagged: then it is the library's behaviour there, not noise).
"""

from __future__ import annotations

import statistics

from .common import Budget, Table, TIMING_COLUMNS, finish_table, n_buffer_sets
from . import modes
from .gpu import (BF16_BYTES, GEMM_LAYOUTS, _l2_bytes, _rel_err, _timer, gemm_grid,
                  neighbour_outliers)


def _weights(torch, k, n, layout, count):
    dev, dt = modes.DEVICE, torch.bfloat16
    if layout == "nt":      # stored [N, K], read transposed: what F.linear does
        return [torch.randn(n, k, device=dev, dtype=dt).t() for _ in range(count)]
    return [torch.randn(k, n, device=dev, dtype=dt) for _ in range(count)]


def _measure(torch, timer, weights, m, k, n, l2):
    dev, dt = modes.DEVICE, torch.bfloat16
    set_bytes = BF16_BYTES * (m * k + k * n + m * n)
    ns = min(len(weights), n_buffer_sets(set_bytes, 2 * l2))
    xs = [torch.randn(m, k, device=dev, dtype=dt) for _ in range(ns)]
    ys = [torch.empty(m, n, device=dev, dtype=dt) for _ in range(ns)]
    fns = [(lambda a=xs[i], b=weights[i], c=ys[i]: torch.mm(a, b, out=c)) for i in range(ns)]
    r = timer.time(fns)
    return r, ns, set_bytes


def _series(torch, timer, budget, table, k, n, layout, src, ms, l2):
    """Measure one (K, N, layout) over ``ms``; re-measure its outliers."""
    n_w = n_buffer_sets(BF16_BYTES * (k * n + k + n), 2 * l2, cap=64)
    weights = _weights(torch, k, n, layout, n_w)
    rows = []
    for m in ms:
        if budget.spent():
            budget.skipped += 1
            continue
        r, ns, set_bytes = _measure(torch, timer, weights, m, k, n, l2)
        rows.append(dict(m=m, n=n, k=k, dtype="bf16", layout=layout, flops=2 * m * n * k,
                         bytes=set_bytes, buffer_sets=ns, rotated_bytes=ns * set_bytes,
                         sources=src, remeasured=0, time_first_s=r["time_s"],
                         outlier_persists=False, **r))
    flagged = neighbour_outliers([r["m"] for r in rows], [r["time_s"] for r in rows])
    for i in flagged:
        again = [_measure(torch, timer, weights, rows[i]["m"], k, n, l2)[0]["time_s"]
                 for _ in range(2)]
        rows[i]["time_s"] = statistics.median([rows[i]["time_first_s"], *again])
        rows[i]["remeasured"] = 2
    if flagged:
        still = set(neighbour_outliers([r["m"] for r in rows], [r["time_s"] for r in rows]))
        for i in flagged:
            rows[i]["outlier_persists"] = i in still
    for r in rows:
        table.add(**r)
    del weights
    if not modes.dry_run():
        torch.cuda.empty_cache()
    return len(flagged)


def bench_gemm(torch, *, quick: bool = False) -> Table:
    """bf16 GEMM over the preset models' projection shapes, both layouts, M = 1 .. 16384."""
    dev, dt = modes.DEVICE, torch.bfloat16
    l2 = _l2_bytes(torch)
    grid = gemm_grid(quick)
    budget = Budget(30 if quick else 160)
    # 10 ms per point (the v1/v2 tables used 20): the grid is 3x larger
    timer = _timer(torch, quick, **({} if quick else {"point_budget_s": 0.01}))
    cols = ["m", "n", "k", "dtype", "layout", *TIMING_COLUMNS, "buffer_sets", "rotated_bytes",
            "method", "ops_per_sample", "remeasured", "time_first_s", "outlier_persists",
            "sources"]
    table = Table("gemm", cols, metadata={
        "op": "torch.mm(x, W', out=y), bf16 in, bf16 out, fp32 accumulate; W' = W.t() with W "
              "stored [n, k] (layout nt) or W stored [k, n] (layout nn)",
        "flops_formula": "2*m*n*k", "bytes_formula": "2*(m*k + k*n + m*n)",
        "rotate_min_bytes": 2 * l2,
        "outliers": "a point slower than the log-log interpolation of its neighbours by > 15% "
                    "and slower than the next larger m is measured twice more (fresh "
                    "buffers); time_s is the median of the three, time_first_s the first"})
    x = torch.randn(64, 4096, device=dev, dtype=dt)
    w = torch.randn(12288, 4096, device=dev, dtype=dt)
    err = _rel_err(torch, x @ w.t(), x.double() @ w.double().t())
    table.metadata["check_rel_err_vs_fp64"] = f"{err:.2e}"
    del x, w
    if not modes.dry_run():
        table.metadata["ceiling_8192cubed_start_flops_per_s"] = _square_gemm_rate(torch)
    series: dict[tuple, list] = {}
    for m, k, n, layout, src in grid:
        series.setdefault((k, n, layout, src), []).append(m)
    n_flagged = 0
    for (k, n, layout, src), ms in series.items():
        if budget.spent():
            budget.skipped += len(ms)
            continue
        n_flagged += _series(torch, timer, budget, table, k, n, layout, src, ms, l2)
    table.metadata["outliers_remeasured"] = n_flagged
    for lay, what in GEMM_LAYOUTS.items():
        table.metadata[f"layout_{lay}"] = what
    if not modes.dry_run():
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
