"""Elementwise kernel classes of a transformer layer, fused and unfused (table ``elementwise``).

Each *op* is one operation of a layer as an engine runs it; ``kernels`` is how many kernels it
launches (counted by ``torch.profiler`` where it runs, else the count written here):

=================  =====================================================  =====================
op                 what runs                                              as in
=================  =====================================================  =====================
``rmsnorm``        ``F.rms_norm`` (one fused kernel)                      fused engines
``rmsnorm_hf``     HF ``LlamaRMSNorm.forward``: to fp32, pow, mean, add,   HF transformers eager
                   rsqrt, mul, to bf16, weight mul
``rotary_hf``      HF ``apply_rotary_pos_emb`` on q and k (q * cos +      HF transformers eager
                   rotate_half(q) * sin, rotate_half = cat(-x2, x1)), q/k
                   strided views of the projections' outputs
``silu_mul``       ``silu(gate) * up`` (two kernels)                      HF eager (act_fn * up)
``residual_add``   ``x + r``                                              both
=================  =====================================================  =====================

``hidden`` is the row length: the model's hidden size for norms and adds, the FFN width for
``silu_mul``, ``(heads + kv_heads) * head_dim`` for ``rotary_hf``. ``bytes`` are the fewest
an op must move (inputs once, output once); unfused ops move more, which the fitted slowdown
absorbs. Tokens: powers of two and the x1.5 points between them, 1 .. 16384.
"""

from __future__ import annotations

from .common import Budget, Table, TIMING_COLUMNS, finish_table, n_buffer_sets
from . import modes
from .gpu import BF16_BYTES, ELEM_HIDDEN, ELEM_TOKENS, _l2_bytes, _rel_err, _timer

#: (heads, kv_heads, head_dim) of the rotary rows: Llama-2-7B (MHA), Llama-3-8B and 70B (GQA).
ROTARY_CONFIGS = ((32, 32, 128), (32, 8, 128), (64, 8, 128))


def rmsnorm_hf(torch, x, w, eps=1e-5):
    """transformers' LlamaRMSNorm.forward, line for line."""
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return w * h.to(x.dtype)


def rotary_hf(torch, q, k, cos, sin):
    """transformers' apply_rotary_pos_emb (unsqueeze_dim=1) and rotate_half, line for line."""
    def rotate_half(x):
        x1 = x[..., : x.shape[-1] // 2]
        x2 = x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def elementwise_ops(torch):
    """name -> (configs: list of (hidden, make(t)), call(buffers), bytes(t, cfg), flops,
    kernels, impl)."""
    import torch.nn.functional as F
    dev, dt = modes.DEVICE, torch.bfloat16

    def vec(t, h):
        return torch.randn(t, h, device=dev, dtype=dt)

    def rot_make(h, kv, d):
        def make(t):
            q = torch.randn(1, t, h, d, device=dev, dtype=dt).transpose(1, 2)
            k = torch.randn(1, t, kv, d, device=dev, dtype=dt).transpose(1, 2)
            cs = torch.randn(1, t, d, device=dev, dtype=dt)
            return q, k, cs, cs.clone()
        return make

    norm_cfg = [(h, h, lambda t, h=h: (vec(t, h), torch.randn(h, device=dev, dtype=dt)))
                for h in ELEM_HIDDEN]
    return {
        "rmsnorm": (norm_cfg, lambda b: F.rms_norm(b[0], (b[0].shape[-1],), b[1], 1e-6),
                    lambda t, h: BF16_BYTES * (2 * t * h + h), lambda t, h: 4 * t * h, 1,
                    "F.rms_norm(x, (h,), w, 1e-6)"),
        "rmsnorm_hf": (norm_cfg, lambda b: rmsnorm_hf(torch, *b),
                       lambda t, h: BF16_BYTES * (2 * t * h + h), lambda t, h: 4 * t * h, 8,
                       "transformers LlamaRMSNorm.forward (fp32 statistics, 8 kernels)"),
        "rotary_hf": ([((h + kv) * d, (h, kv, d), rot_make(h, kv, d))
                       for h, kv, d in ROTARY_CONFIGS],
                      lambda b: rotary_hf(torch, *b),
                      lambda t, c: BF16_BYTES * (4 * t * (c[0] + c[1]) * c[2] + 2 * t * c[2]),
                      lambda t, c: 3 * t * (c[0] + c[1]) * c[2], 10,
                      "transformers apply_rotary_pos_emb on q[1,h,t,d], k[1,kv,t,d] "
                      "(strided views), cos/sin[1,t,d] (10 kernels)"),
        "silu_mul": ([(h, h, lambda t, h=h: (vec(t, h), vec(t, h),
                                             torch.empty(t, h, device=dev, dtype=dt)))
                      for h in ELEM_HIDDEN],
                     lambda b: torch.mul(F.silu(b[0]), b[1], out=b[2]),
                     lambda t, h: BF16_BYTES * 3 * t * h, lambda t, h: 5 * t * h, 2,
                     "torch.mul(F.silu(gate), up, out=y) (two kernels, as HF's act_fn * up)"),
        "residual_add": ([(h, h, lambda t, h=h: (vec(t, h), vec(t, h),
                                                 torch.empty(t, h, device=dev, dtype=dt)))
                          for h in ELEM_HIDDEN],
                         lambda b: torch.add(b[0], b[1], out=b[2]),
                         lambda t, h: BF16_BYTES * 3 * t * h, lambda t, h: t * h, 1,
                         "torch.add(x, r, out=y)"),
    }


def _checks(torch, ops, table):
    dev = modes.DEVICE
    x = torch.randn(64, 4096, device=dev, dtype=torch.bfloat16)
    w = torch.randn(4096, device=dev, dtype=torch.bfloat16)
    xf = x.double()
    ref = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * w.double()
    table.metadata["check_rmsnorm_rel_err_vs_fp64"] = \
        f"{_rel_err(torch, ops['rmsnorm'][1]((x, w)), ref):.2e}"
    ref_hf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * w.double()
    table.metadata["check_rmsnorm_hf_rel_err_vs_fp64"] = \
        f"{_rel_err(torch, rmsnorm_hf(torch, x, w), ref_hf):.2e}"


def bench_elementwise(torch, *, quick: bool = False) -> Table:
    """The elementwise op classes above over tokens x row length (bf16)."""
    l2 = _l2_bytes(torch)
    budget = Budget(20 if quick else 45)
    timer = _timer(torch, quick)
    tokens = (1, 48, 256, 4096) if quick else ELEM_TOKENS
    ops = elementwise_ops(torch)
    cols = ["op", "tokens", "hidden", "dtype", "kernels", "impl", *TIMING_COLUMNS,
            "buffer_sets", "rotated_bytes", "method", "ops_per_sample"]
    table = Table("elementwise", cols, metadata={
        "bytes_formula": "rmsnorm, rmsnorm_hf 2*(2*t*h + h); silu_mul 2*3*t*h (gate, up "
                         "[t, h], y [t, h]); residual_add 2*3*t*h; rotary_hf "
                         "2*(4*t*(heads+kv)*d + 2*t*d) (q, k read and written, cos, sin read)",
        "flops_formula": "rmsnorm 4*t*h; silu_mul 5*t*h; residual_add t*h; rotary_hf "
                         "3*t*(heads+kv)*d (approximate counts)",
        "hidden": "row length: hidden size (norms, adds), FFN width (silu_mul), "
                  "(heads + kv_heads) * head_dim (rotary_hf)"})
    _checks(torch, ops, table)
    n_points = 0
    for name, (cfgs, call, nbytes, nflops, kernels, impl) in ops.items():
        for hidden, cfg, make in (cfgs[:1] if quick else cfgs):
            for t in tokens:
                n_points += 1
                if budget.spent():
                    budget.skipped += 1
                    continue
                b = nbytes(t, cfg)
                ns = n_buffer_sets(b, 2 * l2, cap=256)
                sets = [make(t) for _ in range(ns)]
                r = timer.time([(lambda s=s: call(s)) for s in sets])
                del sets
                table.add(op=name, tokens=t, hidden=hidden, dtype="bf16", kernels=kernels,
                          impl=impl, flops=nflops(t, cfg), bytes=b, buffer_sets=ns,
                          rotated_bytes=ns * b, **r)
        if not modes.dry_run():
            torch.cuda.empty_cache()
    return finish_table(table, budget, n_points)
