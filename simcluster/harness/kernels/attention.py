"""Attention benchmarks: prefill (causal, varlen batches) and decode over a paged-free KV, per
SDPA backend, on the local GPU. Shapes and grids are in :mod:`.gpu`."""

from __future__ import annotations


from .common import (Budget, Table, TIMING_COLUMNS, finish_table, log, n_buffer_sets)
from .gpu import (ATTN_BACKENDS, ATTN_CONFIGS, BF16_BYTES, DECODE_MAX_KV_BYTES, _l2_bytes,
                  _rel_err, _timer, decode_grid, decode_kv_bytes, prefill_grid)


def _sdpa_call(torch, backend_name, q, k, v, *, causal, gqa_mode):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    backend = getattr(SDPBackend, backend_name)
    kw = {"enable_gqa": True} if gqa_mode == "enable_gqa" else {}

    def fn():
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, **kw)
    return fn


def _gqa_modes(heads, kv_heads):
    return ("none",) if heads == kv_heads else ("enable_gqa", "expanded_kv")


def _attn_inputs(torch, b, h, kv, sq, skv, d, gqa_mode):
    from .modes import DEVICE
    dev, dt = DEVICE, torch.bfloat16
    q = torch.randn(b, h, sq, d, device=dev, dtype=dt)
    kv_alloc = h if gqa_mode == "expanded_kv" else kv
    k = torch.randn(b, kv_alloc, skv, d, device=dev, dtype=dt)
    v = torch.randn(b, kv_alloc, skv, d, device=dev, dtype=dt)
    return q, k, v


def _check_attn(torch, backend, h, kv, d, causal, gqa_mode, sq, skv) -> float:
    """Relative error of one small backend call against the float64 math reference."""
    import torch.nn.functional as F
    q, k, v = _attn_inputs(torch, 2, h, kv, sq, skv, d, gqa_mode)
    out = _sdpa_call(torch, backend, q, k, v, causal=causal, gqa_mode=gqa_mode)()
    kk, vv = k.double(), v.double()
    if kk.shape[1] != h:
        kk = kk.repeat_interleave(h // kv, dim=1)
        vv = vv.repeat_interleave(h // kv, dim=1)
    ref = F.scaled_dot_product_attention(q.double(), kk, vv, is_causal=causal)
    return _rel_err(torch, out, ref)


def _pick_gqa_mode(torch, backend, h, kv, d, causal, sq, skv):
    """The first GQA mode the backend runs, with its check error; (None, reason) if none."""
    last = ""
    for mode in _gqa_modes(h, kv):
        try:
            err = _check_attn(torch, backend, h, kv, d, causal, mode, sq, skv)
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 -- "no available kernel" and the like
            last = f"{mode}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
            torch.cuda.synchronize()  # a sticky CUDA error re-raises here and ends the table
            continue
        if not err < 5e-2:
            last = f"{mode}: wrong result, rel_err_vs_fp64={err:.2e}"
            continue
        return mode, err
    return None, last


def bench_attn_prefill(torch, *, quick: bool = False) -> Table:
    """Causal self-attention over whole prompts (prefill), per forced SDPA backend."""
    l2 = _l2_bytes(torch)
    grid = prefill_grid(quick)
    budget = Budget(30 if quick else 60)
    timers = {b: _timer(torch, quick) for b in ATTN_BACKENDS}  # graph fallback per backend
    cols = ["batch", "seq_len", "num_heads", "num_kv_heads", "head_dim", "causal", "backend",
            "gqa_mode", "dtype", *TIMING_COLUMNS, "buffer_sets", "rotated_bytes", "method",
            "ops_per_sample"]
    table = Table("attn_prefill", cols, metadata={
        "op": "F.scaled_dot_product_attention(q, k, v, is_causal=True) under "
              "sdpa_kernel([backend]); q,k,v laid out [batch, heads, seq, head_dim]",
        "flops_formula": "4*batch*num_heads*seq_len^2*head_dim/2 (causal: half the square)",
        "bytes_formula": "2*(2*batch*seq_len*num_heads*head_dim + "
                         "2*batch*seq_len*num_kv_heads*head_dim) (q,out + k,v once)",
        "gqa_modes": "enable_gqa: SDPA enable_gqa=True on kv_heads-wide K/V; "
                     "expanded_kv: K/V materialised num_heads wide (kernel reads more than bytes)"})
    n_points = unsupported = 0
    for cfg, h, kv, d in ATTN_CONFIGS:
        for backend in ATTN_BACKENDS:
            n_points += len(grid)
            mode, err = _pick_gqa_mode(torch, backend, h, kv, d, True, 256, 256)
            key = f"check_{backend.lower()}_{cfg}"
            if mode is None:
                table.metadata[key] = f"unsupported: {err}"
                log(f"  prefill {backend} {cfg}: unsupported ({err})")
                unsupported += len(grid)
                continue
            table.metadata[key] = f"gqa_mode={mode} rel_err_vs_fp64={err:.2e}"
            for b, s in grid:
                if budget.spent():
                    budget.skipped += 1
                    continue
                min_bytes = BF16_BYTES * (2 * b * s * h * d + 2 * b * s * kv * d)
                ns = n_buffer_sets(min_bytes, 2 * l2, cap=64)
                sets = [_attn_inputs(torch, b, h, kv, s, s, d, mode) for _ in range(ns)]
                fns = [_sdpa_call(torch, backend, *t, causal=True, gqa_mode=mode) for t in sets]
                try:
                    r = timers[backend].time(fns)
                except RuntimeError as exc:
                    log(f"  prefill {backend} {cfg} b={b} s={s}: {str(exc).splitlines()[0][:160]}")
                    torch.cuda.synchronize()
                    continue
                finally:
                    del sets, fns
                table.add(batch=b, seq_len=s, num_heads=h, num_kv_heads=kv, head_dim=d,
                          causal=True, backend=backend, gqa_mode=mode, dtype="bf16",
                          flops=4 * b * h * s * s * d // 2, bytes=min_bytes, buffer_sets=ns,
                          rotated_bytes=ns * min_bytes, **r)
            torch.cuda.empty_cache()
    table.metadata["points_unsupported"] = unsupported
    return finish_table(table, budget, n_points)


def bench_attn_decode(torch, *, quick: bool = False) -> Table:
    """One query token per sequence against a contiguous KV cache of kv_len tokens."""
    l2 = _l2_bytes(torch)
    budget = Budget(30 if quick else 60)
    timers = {b: _timer(torch, quick) for b in ATTN_BACKENDS}  # graph fallback per backend
    cols = ["batch", "kv_len", "num_heads", "num_kv_heads", "head_dim", "backend", "gqa_mode",
            "dtype", *TIMING_COLUMNS, "buffer_sets", "rotated_bytes", "method", "ops_per_sample"]
    table = Table("attn_decode", cols, metadata={
        "op": "F.scaled_dot_product_attention(q[b,h,1,d], k[b,kv,L,d], v[b,kv,L,d], "
              "is_causal=False) under sdpa_kernel([backend])",
        "flops_formula": "4*batch*num_heads*kv_len*head_dim",
        "bytes_formula": "2*(2*batch*kv_len*num_kv_heads*head_dim + 2*batch*num_heads*head_dim) "
                         "(K,V read once + q read + out written)",
        "max_kv_bytes": DECODE_MAX_KV_BYTES})
    n_points = unsupported = 0
    for cfg, h, kv, d in ATTN_CONFIGS:
        grid = decode_grid(quick, kv, d)
        for backend in ATTN_BACKENDS:
            n_points += len(grid)
            mode, err = _pick_gqa_mode(torch, backend, h, kv, d, False, 1, 512)
            key = f"check_{backend.lower()}_{cfg}"
            if mode is None:
                table.metadata[key] = f"unsupported: {err}"
                log(f"  decode {backend} {cfg}: unsupported ({err})")
                unsupported += len(grid)
                continue
            table.metadata[key] = f"gqa_mode={mode} rel_err_vs_fp64={err:.2e}"
            for b, L in grid:
                alloc_heads = h if mode == "expanded_kv" else kv
                if decode_kv_bytes(b, L, alloc_heads, d) > DECODE_MAX_KV_BYTES:
                    continue
                if budget.spent():
                    budget.skipped += 1
                    continue
                min_bytes = decode_kv_bytes(b, L, kv, d) + 2 * b * h * d * BF16_BYTES
                alloc = decode_kv_bytes(b, L, alloc_heads, d) + 2 * b * h * d * BF16_BYTES
                ns = n_buffer_sets(alloc, 2 * l2, cap=256)
                sets = [_attn_inputs(torch, b, h, kv, 1, L, d, mode) for _ in range(ns)]
                fns = [_sdpa_call(torch, backend, *t, causal=False, gqa_mode=mode) for t in sets]
                try:
                    r = timers[backend].time(fns)
                except RuntimeError as exc:
                    log(f"  decode {backend} {cfg} b={b} L={L}: {str(exc).splitlines()[0][:160]}")
                    torch.cuda.synchronize()
                    continue
                finally:
                    del sets, fns
                table.add(batch=b, kv_len=L, num_heads=h, num_kv_heads=kv, head_dim=d,
                          backend=backend, gqa_mode=mode, dtype="bf16",
                          flops=4 * b * h * L * d, bytes=min_bytes, buffer_sets=ns,
                          rotated_bytes=ns * alloc, **r)
            torch.cuda.empty_cache()
    table.metadata["points_unsupported"] = unsupported
    return finish_table(table, budget, n_points)


# --------------------------------------------------------------------------- elementwise

