"""Execution modes of a timed operation, and the device the GPU tables run on.

A serving engine runs the same kernels in different *execution modes*, and the suite times
each (``method`` / ``mode`` columns of the tables):

``graph``
    captured into a CUDA graph and replayed (:class:`~.common.GpuTimer`): no host launch gaps,
    as an engine running decode under CUDA graphs sees them.
``eager``
    launched back to back from Python between two CUDA events: each operation costs the larger
    of its device time and the host's dispatch time (PyTorch's dispatcher plus
    ``cudaLaunchKernel``), as an eager engine's forward pass sees them.
``isolated``
    one launch between two events on an idle device, synchronised after every sample: the
    device time plus the launch latency (what timing "one call" eagerly measures).

``host_dispatch_s`` is the host time of one launch, read with ``time.perf_counter`` around
back-to-back launches without synchronising (the device runs behind).

``DEVICE`` is ``"cuda"`` for real runs; ``--cpu-dry-run`` sets it to ``"cpu"``, where every
GPU table runs on tiny shapes with :class:`CpuStandInTimer` (host clocks, no graphs) so that the
code paths can be checked on a machine without a GPU. Dry-run tables are marked and never
calibrate anything.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Sequence

from .common import GpuTimer, summarize

DEVICE = "cuda"


def set_device(name: str) -> None:
    """``cuda`` (default) or ``cpu`` (a dry run of the GPU tables' code paths)."""
    global DEVICE  # noqa: PLW0603 -- one device per suite process
    if name not in ("cuda", "cpu"):
        raise ValueError(f"device must be cuda or cpu, got {name!r}")
    DEVICE = name


def dry_run() -> bool:
    return DEVICE == "cpu"


class CpuStandInTimer:
    """The :class:`~.common.GpuTimer` interface on host clocks (``--cpu-dry-run`` only)."""

    def __init__(self, torch, *, point_budget_s: float = 0.004, min_reps: int = 3,
                 max_reps: int = 10, **_):
        self.torch, self.min_reps, self.max_reps = torch, min_reps, max_reps
        self.point_budget_s = point_budget_s

    def time(self, fns: Sequence[Callable[[], object]], *, graph: bool = True) -> dict:
        fns = list(fns)
        for f in fns:
            f()
        times = []
        for i in range(self.min_reps):
            t0 = time.perf_counter()
            fns[i % len(fns)]()
            times.append(time.perf_counter() - t0)
        out = summarize(times)
        out.update(method="cpu_dry_run", ops_per_sample=1)
        return out


def make_timer(torch, quick: bool, **kw):
    """The timer for the current device: CUDA events over graphs/eager, or the dry-run one."""
    if dry_run():
        return CpuStandInTimer(torch, **kw)
    if quick:
        kw = {"point_budget_s": 0.004, "min_reps": 3, "max_reps": 20, **kw}
    return GpuTimer(torch, **kw)


def _event_pair(torch):
    return (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))


def time_isolated(torch, fns: Sequence[Callable[[], object]], *, reps: int = 25) -> dict:
    """One launch between two events per sample, the device idle before it (synchronised),
    rotating through ``fns``: the device time plus the launch latency."""
    fns = list(fns)
    for f in fns:
        f()
    if dry_run():
        times = []
        for i in range(reps):
            t0 = time.perf_counter()
            fns[i % len(fns)]()
            times.append(time.perf_counter() - t0)
    else:
        torch.cuda.synchronize()
        times = []
        for i in range(reps):
            s, e = _event_pair(torch)
            s.record()
            fns[i % len(fns)]()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) * 1e-3)
    out = summarize(times)
    out.update(method="isolated", ops_per_sample=1)
    return out


def host_dispatch(torch, fns: Sequence[Callable[[], object]], *, launches: int = 400,
                  rounds: int = 5) -> float:
    """Median host seconds per launch over ``rounds`` rounds of ``launches`` back-to-back
    launches (no synchronisation inside a round; the device queue absorbs them)."""
    fns = list(fns)
    per = []
    for _ in range(rounds):
        if not dry_run():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(launches):
            fns[i % len(fns)]()
        per.append((time.perf_counter() - t0) / launches)
        if not dry_run():
            torch.cuda.synchronize()
    return statistics.median(per)


def time_modes(torch, timer, fns, modes=("graph", "eager", "isolated")) -> dict:
    """mode -> timing columns of ``fns`` (one callable per buffer set) in each mode."""
    out = {}
    for mode in modes:
        if mode == "isolated":
            out[mode] = time_isolated(torch, fns)
        else:
            r = timer.time(fns, graph=(mode == "graph"))
            if mode == "graph" and r["method"] == "eager" and not dry_run():
                r["method"] = "eager(graph capture failed)"
            out[mode] = r
    return out


def log_grid(lo: int, hi: int, per_octave: int) -> list[int]:
    """Integers from ``lo`` to ``hi``, ``per_octave`` per factor of two (deduplicated)."""
    n = int(round(math.log2(hi / lo) * per_octave))
    pts = sorted({int(round(lo * 2 ** (i / per_octave))) for i in range(n + 1)})
    return [p for p in pts if lo <= p <= hi]
