"""Grouped GEMM: the routed experts of a mixture-of-experts layer, one GEMM per expert.

``y[rows_g] = x[rows_g] @ W_g^T`` for every group (expert) g of ``groups``, each group holding
``m`` token rows (``m_per_group``), bf16 in and out. Measured with ``torch._grouped_mm`` (one
CUTLASS grouped kernel, 2-D activations by 3-D weights with group end offsets), or, where this
torch has no grouped kernel, a loop of ``torch.mm`` over the groups' row slices (``impl``
says which). Some builds want group boundaries aligned to 16 rows: where the unaligned call
fails, groups are padded to 16 rows and ``padded`` is true (the padded rows are computed but not
counted in ``flops``).

The (K, N) pairs are the two expert GEMMs (gate+up fused: K = hidden, N = 2 x width; down:
K = width, N = hidden) of the mixture-of-experts presets (:data:`MOE_SHAPES`) in three layouts:
one GPU (all experts, full width), expert parallel over 8 GPUs (experts / 8, full width) and
tensor parallel over 8 (all experts, width / 8). Groups: the layout's experts per GPU and a
quarter of them (at small batches not every expert receives a token); rows per group
1 .. 1024, skipping points over 65,536 rows in all.

``flops = 2 * rows * n * k``; ``bytes = 2 * (groups * n * k + rows * k + rows * n)``.
"""

from __future__ import annotations

from .common import Budget, GpuTimer, Table, TIMING_COLUMNS, finish_table, log, n_buffer_sets

#: hidden size, routed-expert width, routed experts of the mixture-of-experts presets.
MOE_SHAPES: dict[str, dict] = {
    "mixtral-8x7b": dict(hidden=4096, ffn=14336, experts=8),
    "qwen3-30b-a3b": dict(hidden=2048, ffn=768, experts=128),
    "qwen3-235b-a22b": dict(hidden=4096, ffn=1536, experts=128),
    "deepseek-v3": dict(hidden=7168, ffn=2048, experts=256),
    "gpt-oss-120b": dict(hidden=2880, ffn=2880, experts=128),
}
LAYOUTS = (("gpu1", 1, 1), ("ep8", 8, 1), ("tp8", 1, 8))   # name, experts split, width split
GROUPED_M = (1, 4, 16, 64, 256, 1024)
QUICK_M = (4, 256)
MAX_ROWS = 65536
BF16_BYTES = 2


def grouped_grid(quick: bool = False) -> list[tuple[int, int, int, int, str]]:
    """(groups, m, k, n, sources) points, grouped by (k, n, groups), deduplicated."""
    pairs: dict[tuple[int, int, int], list[str]] = {}
    for name, s in MOE_SHAPES.items():
        h, f, e = s["hidden"], s["ffn"], s["experts"]
        for lay, ep, tp in LAYOUTS:
            if e % ep or f % tp:
                continue
            g, w = e // ep, f // tp
            for groups in sorted({g, max(1, g // 4)}):
                for proj, k, n in (("up", h, 2 * w), ("down", w, h)):
                    pairs.setdefault((k, n, groups), []).append(f"{name}/{proj}/{lay}")
    keys = sorted(pairs, key=lambda t: (t[0] * t[1] * t[2], t))
    if quick:
        keys = keys[:2]
    ms = QUICK_M if quick else GROUPED_M
    return [(g, m, k, n, ";".join(pairs[(k, n, g)])) for k, n, g in keys for m in ms
            if g * m <= MAX_ROWS]


def _pad(m: int, align: int) -> int:
    return -(-m // align) * align


def _grouped_fn(torch):
    """torch's grouped GEMM (``torch._grouped_mm``, or ``F.grouped_mm``) or None."""
    fn = getattr(torch, "_grouped_mm", None)
    if fn is None:
        fn = getattr(torch.nn.functional, "grouped_mm", None)
    return fn


def bench_grouped_gemm(torch, *, quick: bool = False) -> Table:
    """bf16 grouped GEMM over the MoE presets' expert shapes (see module docstring)."""
    dev, dt = "cuda", torch.bfloat16
    l2 = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 50 * 2 ** 20)
    grid = grouped_grid(quick)
    budget = Budget(30 if quick else 150)
    timer = GpuTimer(torch, point_budget_s=0.004 if quick else 0.015, min_reps=3 if quick else 5,
                     max_reps=20 if quick else 60)
    cols = ["groups", "m", "rows", "n", "k", "dtype", "impl", "padded", *TIMING_COLUMNS,
            "buffer_sets", "method", "ops_per_sample", "sources"]
    grouped = _grouped_fn(torch)
    table = Table("grouped_gemm", cols, metadata={
        "op": "y[rows_g] = x[rows_g] @ W_g^T per group g: torch._grouped_mm(x, W.transpose(-2, "
              "-1), offs=group ends) with W stored [groups, n, k], bf16 in and out",
        "flops_formula": "2*rows*n*k", "bytes_formula": "2*(groups*n*k + rows*k + rows*n)",
        "grouped_kernel": "torch._grouped_mm" if grouped else "none: loop of torch.mm"})
    impl, align = ("grouped_mm", 1) if grouped else ("loop_mm", 1)
    if grouped:
        impl, align = _check(torch, grouped, table)
    by_pair: dict[tuple, list] = {}
    for g, m, k, n, src in grid:
        by_pair.setdefault((g, k, n, src), []).append(m)
    for (g, k, n, src), ms in by_pair.items():
        if budget.spent():
            budget.skipped += len(ms)
            continue
        w_bytes = BF16_BYTES * g * n * k
        n_w = n_buffer_sets(w_bytes, 2 * l2, cap=4)
        weights = [torch.randn(g, n, k, device=dev, dtype=dt) for _ in range(n_w)]
        for m in ms:
            if budget.spent():
                budget.skipped += 1
                continue
            mp = _pad(m, align)
            rows = g * mp
            xs = [torch.randn(rows, k, device=dev, dtype=dt) for _ in range(n_w)]
            offs = torch.arange(1, g + 1, device=dev, dtype=torch.int32) * mp
            fns = [_call(torch, grouped, impl, xs[i], weights[i], offs, g, mp)
                   for i in range(n_w)]
            r = timer.time(fns)
            table.add(groups=g, m=m, rows=g * m, n=n, k=k, dtype="bf16", impl=impl,
                      padded=mp != m, flops=2 * g * m * n * k,
                      bytes=BF16_BYTES * (g * n * k + g * m * (k + n)), buffer_sets=n_w,
                      sources=src, **r)
            del xs, fns
        del weights
        torch.cuda.empty_cache()
    return finish_table(table, budget, len(grid))


def _call(torch, grouped, impl, x, w, offs, g, m):
    if impl == "grouped_mm":
        wt = w.transpose(-2, -1)
        return lambda: grouped(x, wt, offs=offs)
    slices = [(x[i * m:(i + 1) * m], w[i].t()) for i in range(g)]
    return lambda: [torch.mm(a, b) for a, b in slices]


def _check(torch, grouped, table) -> tuple[str, int]:
    """Check the grouped kernel against float64 on unaligned groups (else aligned ones);
    returns (impl, row alignment) and records the check in the table's metadata."""
    g, k, n = 4, 256, 384
    w = torch.randn(g, n, k, device="cuda", dtype=torch.bfloat16)
    for align, sizes in ((1, (3, 17, 1, 40)), (16, (16, 32, 16, 48))):
        x = torch.randn(sum(sizes), k, device="cuda", dtype=torch.bfloat16)
        ends = torch.tensor(sizes, device="cuda", dtype=torch.int32).cumsum(0).to(torch.int32)
        try:
            y = grouped(x, w.transpose(-2, -1), offs=ends)
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 -- an unaligned call may be refused
            log(f"  grouped_mm with groups {sizes} failed: {type(exc).__name__}: {str(exc)[:100]}")
            continue
        starts = [0, *ends.tolist()[:-1]]
        ref = torch.cat([x[a:b].double() @ w[i].double().t()
                         for i, (a, b) in enumerate(zip(starts, ends.tolist()))])
        err = float(torch.linalg.vector_norm(y.double() - ref) / torch.linalg.vector_norm(ref))
        table.metadata.update(check_rel_err_vs_fp64=f"{err:.2e}", row_alignment=align)
        if err < 2e-2:
            return "grouped_mm", align
        log(f"  grouped_mm relative error {err:.2e}: falling back to a loop of torch.mm")
    table.metadata["grouped_kernel"] = "unusable here: loop of torch.mm"
    return "loop_mm", 1
