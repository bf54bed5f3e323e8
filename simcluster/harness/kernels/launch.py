"""Per-kernel launch and dispatch cost of this device and host (table ``launch``).

Tiny operations whose device time is a few microseconds, each timed in the three execution
modes of :mod:`.modes` plus its host dispatch time:

* ``graph``: per-operation time inside a CUDA-graph replay (the node-to-node cost of a graph);
* ``eager``: back-to-back launches between two events (the larger of device time and host
  dispatch: for these tiny kernels, the dispatch rate);
* ``isolated``: one launch on an idle device (launch latency plus a tiny kernel);
* ``host_dispatch_s``: host seconds per launch (PyTorch dispatcher + ``cudaLaunchKernel``).

The operation classes are those a transformer layer launches: an elementwise add, a fused
RMSNorm, a small GEMM, scaled-dot-product attention (whose Python-side backend selection costs
more), a copy and a concatenation. ``kernels_per_call`` is counted with ``torch.profiler`` where
it runs. The cost model's per-kernel launch cost (eager execution) is read from this table.
"""

from __future__ import annotations

from .common import Table, TIMING_COLUMNS, log
from . import modes


def launch_ops(torch):
    """name -> (make buffers, call(buffers), what it is)."""
    import torch.nn.functional as F
    dev, dt = modes.DEVICE, torch.bfloat16

    def sdpa(b):
        return F.scaled_dot_product_attention(*b)
    return {
        "add": (lambda: (torch.randn(1024, device=dev, dtype=dt),
                         torch.randn(1024, device=dev, dtype=dt),
                         torch.empty(1024, device=dev, dtype=dt)),
                lambda b: torch.add(b[0], b[1], out=b[2]), "torch.add(x, y, out=z), 1024 bf16"),
        "rms_norm": (lambda: (torch.randn(1, 4096, device=dev, dtype=dt),
                              torch.randn(4096, device=dev, dtype=dt)),
                     lambda b: F.rms_norm(b[0], (4096,), b[1], 1e-6),
                     "F.rms_norm(x[1, 4096], w)"),
        "mm": (lambda: (torch.randn(1, 64, device=dev, dtype=dt),
                        torch.randn(64, 64, device=dev, dtype=dt),
                        torch.empty(1, 64, device=dev, dtype=dt)),
               lambda b: torch.mm(b[0], b[1].t(), out=b[2]), "torch.mm(x[1,64], W[64,64].t())"),
        "linear": (lambda: (torch.randn(1, 64, device=dev, dtype=dt),
                            torch.randn(64, 64, device=dev, dtype=dt)),
                   lambda b: F.linear(b[0], b[1]), "F.linear(x[1,64], W[64,64])"),
        "sdpa": (lambda: (torch.randn(1, 8, 1, 128, device=dev, dtype=dt),
                          torch.randn(1, 8, 64, 128, device=dev, dtype=dt),
                          torch.randn(1, 8, 64, 128, device=dev, dtype=dt)),
                 sdpa, "F.scaled_dot_product_attention(q[1,8,1,128], k, v[1,8,64,128])"),
        "copy": (lambda: (torch.empty(1024, device=dev, dtype=dt),
                          torch.randn(1024, device=dev, dtype=dt)),
                 lambda b: b[0].copy_(b[1]), "y.copy_(x), 1024 bf16"),
        "cat": (lambda: (torch.randn(1, 8, 16, 128, device=dev, dtype=dt),
                         torch.randn(1, 8, 1, 128, device=dev, dtype=dt)),
                lambda b: torch.cat(b, dim=2), "torch.cat([k[1,8,16,128], k_new[1,8,1,128]], 2)"),
    }


def _kernels_per_call(torch, call, bufs) -> int | str:
    """CUDA kernels one call launches, counted by torch.profiler ('' where it cannot)."""
    if modes.dry_run():
        return ""
    try:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call(bufs)
            torch.cuda.synchronize()
        n = sum(1 for e in prof.events() if e.device_type.name == "CUDA")
        return n or ""
    except Exception:  # noqa: BLE001 -- the profiler is optional here
        return ""


def bench_launch(torch, *, quick: bool = False) -> Table:
    """Launch and dispatch cost per operation class, per execution mode."""
    timer = modes.make_timer(torch, quick)
    cols = ["op", "mode", *TIMING_COLUMNS, "host_dispatch_s", "kernels_per_call", "impl",
            "method", "ops_per_sample"]
    table = Table("launch", cols, metadata={
        "modes": "graph: per op inside a CUDA-graph replay; eager: back-to-back launches "
                 "between events; isolated: one launch between events on an idle device",
        "host_dispatch": "perf_counter around 400 back-to-back launches without sync, "
                         "median of 5 rounds, per launch"})
    for name, (make, call, impl) in launch_ops(torch).items():
        sets = [make() for _ in range(8)]
        fns = [(lambda s=s: call(s)) for s in sets]
        try:
            host = modes.host_dispatch(torch, fns, launches=50 if quick else 400)
            res = modes.time_modes(torch, timer, fns)
        except Exception as exc:  # noqa: BLE001 -- one op class must not lose the others
            log(f"  launch {name}: {type(exc).__name__}: {str(exc)[:160]}")
            continue
        nk = _kernels_per_call(torch, call, sets[0])
        for mode, r in res.items():
            table.add(op=name, mode=mode, flops=0, bytes=0, host_dispatch_s=host,
                      kernels_per_call=nk, impl=impl, **r)
    return table
