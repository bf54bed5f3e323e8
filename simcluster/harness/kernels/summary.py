"""Key figures of a kernel-table folder, one line each (logged at the end of a
``simcluster calibrate`` run): the two ceilings (memcpy, dense GEMM) first, then attention,
elementwise, grouped GEMM, CPU and collective peaks."""

from __future__ import annotations

import os

from .common import read_table

def _best(rows, num, pred=lambda r: True):
    vals = [(num(r) / r["time_s"], r) for r in rows if pred(r) and r.get("time_s")]
    return max(vals, key=lambda v: v[0]) if vals else (None, None)


def _span(rows, num, pred=lambda r: True):
    vals = [num(r) / r["time_s"] for r in rows if pred(r) and r.get("time_s")]
    return (min(vals), max(vals)) if vals else (None, None)


def summary_lines(out_dir: str | os.PathLike) -> list[str]:
    """Key figures of the tables found in ``out_dir`` (the two ceilings first), one per line."""
    lines = []

    def load(name):
        p = os.path.join(os.fspath(out_dir), name + ".csv")
        return read_table(p)[1] if os.path.exists(p) else None

    rows = load("memcpy")
    if rows:
        for d in ("d2d", "d2d_kernel", "h2d", "d2h"):
            v, r = _best(rows, lambda r: r["bytes"], lambda r, d=d: r["direction"] == d)
            if v:
                lines.append(f"memcpy {d}: peak {v / 1e9:.0f} GB/s at {r['size_bytes']} B")
    rows = load("gemm")
    if rows:
        v, r = _best(rows, lambda r: r["flops"])
        if v:
            lines.append(f"gemm bf16: peak {v / 1e12:.0f} TFLOP/s at m={r['m']} n={r['n']} k={r['k']}")
        lo, hi = _span(rows, lambda r: r["bytes"], lambda r: r["m"] == 1)
        if hi:
            lines.append(f"gemm m=1 (weight streaming): {lo / 1e9:.0f}..{hi / 1e9:.0f} GB/s")
    rows = load("attn_prefill")
    if rows:
        for b in sorted({r["backend"] for r in rows}):
            for kv in sorted({r["num_kv_heads"] for r in rows}):
                v, r = _best(rows, lambda r: r["flops"],
                             lambda r, b=b, kv=kv: r["backend"] == b and r["num_kv_heads"] == kv)
                if v:
                    lines.append(f"attn_prefill {b} kv={kv}: peak {v / 1e12:.0f} TFLOP/s "
                                 f"(b={r['batch']} s={r['seq_len']})")
    rows = load("attn_decode")
    if rows:
        for b in sorted({r["backend"] for r in rows}):
            for kv in sorted({r["num_kv_heads"] for r in rows}):
                lo, hi = _span(rows, lambda r: r["bytes"],
                               lambda r, b=b, kv=kv: r["backend"] == b and r["num_kv_heads"] == kv)
                if hi:
                    lines.append(f"attn_decode {b} kv={kv}: {lo / 1e9:.0f}..{hi / 1e9:.0f} GB/s")
    rows = load("elementwise")
    if rows:
        for op in sorted({r["op"] for r in rows}):
            v, r = _best(rows, lambda r: r["bytes"], lambda r, op=op: r["op"] == op)
            if v:
                lines.append(f"elementwise {op}: peak {v / 1e9:.0f} GB/s (t={r['tokens']} h={r['hidden']})")
    rows = load("grouped_gemm")
    if rows:
        v, r = _best(rows, lambda r: r["flops"])
        if v:
            lines.append(f"grouped_gemm: peak {v / 1e12:.0f} TFLOP/s ({r['groups']} groups x "
                         f"{r['m']} rows, n={r['n']} k={r['k']}, {r['impl']})")
    rows = load("cpu_gemm")
    if rows:
        for dt in sorted({r["dtype"] for r in rows}):
            v, r = _best(rows, lambda r: r["bytes"], lambda r, dt=dt: r["m"] == 1 and r["dtype"] == dt)
            v1, _ = _best(rows, lambda r: r["bytes"],
                          lambda r, dt=dt: r["m"] == 1 and r["dtype"] == dt and r["threads"] == 1)
            if v:
                lines.append(f"cpu gemv {dt}: peak {v / 1e9:.1f} GB/s ({r['threads']} threads), "
                             f"1 thread {(v1 or 0) / 1e9:.1f} GB/s")
            v, r = _best(rows, lambda r: r["flops"], lambda r, dt=dt: r["dtype"] == dt)
            if v:
                lines.append(f"cpu gemm {dt}: peak {v / 1e9:.0f} GFLOP/s (m={r['m']}, {r['threads']} threads)")
    rows = load("cpu_attn_decode")
    if rows:
        for dt in sorted({r["dtype"] for r in rows}):
            lo, hi = _span(rows, lambda r: r["bytes"], lambda r, dt=dt: r["dtype"] == dt)
            if hi:
                lines.append(f"cpu attn_decode {dt}: {lo / 1e9:.1f}..{hi / 1e9:.1f} GB/s")
    rows = load("allreduce")
    if rows:
        r = max(rows, key=lambda r: r["busbw_bytes_per_s"])
        lines.append(f"allreduce x{r['world_size']}: peak busbw {r['busbw_bytes_per_s'] / 1e9:.0f} GB/s "
                     f"at {r['size_bytes']} B; smallest size {min(x['time_s'] for x in rows) * 1e6:.1f} us")
    return lines
