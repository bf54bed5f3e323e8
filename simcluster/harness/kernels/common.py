"""Timing helpers and the measured-table file format shared by every micro-benchmark.

A *table* is one CSV file: ``# key: value`` metadata lines (device, software versions, date,
how it was timed), then a header row, then one row per measured point. All quantities are SI:
seconds, bytes, floating-point operations. Every table carries the same timing columns
(:data:`TIMING_COLUMNS`): the median time of one operation and its 10th/90th percentiles over
``repeats`` samples, plus ``flops`` and ``bytes`` -- the arithmetic an operation must do and the
fewest bytes it must move (inputs read once, output written once) -- so a fitter can compute
achieved rates without knowing the kernel.

Nothing here imports torch at module load: the simulator reads these files without torch.
The GPU timers take the ``torch`` module as an argument from callers that already required it.
"""

from __future__ import annotations

import csv
import math
import os
import re
import statistics
import time
from typing import Callable, Iterable, Mapping, Sequence

#: Columns every measured row has, in this order, after the table's own key columns.
TIMING_COLUMNS = ("time_s", "time_p10_s", "time_p90_s", "repeats", "flops", "bytes")

from .metadata import SUITE_VERSION  # noqa: E402,F401  (re-exported)

_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$")

INSTALL_HINT = 'pip install "simcluster[calibrate]"'


class CalibrationDependencyError(RuntimeError):
    """The calibration benchmarks need a package (torch) that this environment lacks."""


def require_torch():
    """Import and return torch, or raise :class:`CalibrationDependencyError` saying how to get it."""
    try:
        import torch  # noqa: PLC0415 -- lazy on purpose: the simulator must not need torch
    except ImportError as exc:
        raise CalibrationDependencyError(
            "the calibration benchmarks need PyTorch, which is not installed here; "
            f"install it with: {INSTALL_HINT}") from exc
    return torch


# --------------------------------------------------------------------------- statistics

def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) of ``values`` by linear interpolation (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} outside [0, 1]")
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(times_s: Sequence[float]) -> dict:
    """The timing columns (median, p10, p90, repeats) of per-operation sample times in seconds."""
    return {
        "time_s": statistics.median(times_s),
        "time_p10_s": percentile(times_s, 0.10),
        "time_p90_s": percentile(times_s, 0.90),
        "repeats": len(times_s),
    }


def n_buffer_sets(bytes_per_set: int, min_total_bytes: int, cap: int = 1024) -> int:
    """How many copies of one operation's buffers to rotate through so that the copies together
    exceed ``min_total_bytes`` (twice the last-level cache), so that repeated runs read memory,
    not cache. At least 1, at most ``cap`` (tiny operations are latency-bound anyway; the table's
    ``rotated_bytes`` column then shows that the set fit in cache)."""
    if bytes_per_set <= 0:
        raise ValueError("bytes_per_set must be positive")
    return max(1, min(cap, math.ceil(min_total_bytes / bytes_per_set)))


def log_spaced_pow2(lo: int, hi: int, step: int = 1) -> list[int]:
    """Powers of two from ``lo`` to ``hi`` inclusive (both powers of two), every ``step``-th."""
    a, b = int(math.log2(lo)), int(math.log2(hi))
    if 2 ** a != lo or 2 ** b != hi:
        raise ValueError("bounds must be powers of two")
    return [2 ** e for e in range(a, b + 1, step)]


# --------------------------------------------------------------------------- GPU timing

class GpuTimer:
    """Times GPU operations with CUDA events, as METHOD.md asks.

    ``time(fns)`` takes one zero-argument callable per buffer set (each launches one operation on
    its own copy of the inputs) and returns per-operation times. The operations are warmed up on
    a side stream, then captured ``k`` passes deep into one CUDA graph (``k`` chosen so that one
    replay lasts at least ``min_sample_s``; a graph removes host launch gaps, as a serving engine
    running decode under CUDA graphs does); each timed sample is one replay between two events,
    divided by the operations in it. Where capture fails, or ``graph=False``, the same passes run
    eagerly between the events (``method`` says which). The number of samples is chosen from a
    first sample so that a point costs about ``point_budget_s``, within [min_reps, max_reps].
    """

    def __init__(self, torch, *, point_budget_s: float = 0.02, min_reps: int = 5,
                 max_reps: int = 100, min_sample_s: float = 3e-4, warmup: int = 2):
        self.torch = torch
        self.point_budget_s = point_budget_s
        self.min_reps = min_reps
        self.max_reps = max_reps
        self.min_sample_s = min_sample_s
        self.warmup = warmup
        self.graph_ok = True
        self._stream = torch.cuda.Stream()

    def _event_time(self, run: Callable[[], None]) -> float:
        cuda = self.torch.cuda
        s, e = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        s.record()
        run()
        e.record()
        e.synchronize()
        return s.elapsed_time(e) * 1e-3

    def _capture(self, fns, k):
        torch = self.torch
        g = torch.cuda.CUDAGraph()
        # capture_begin/end rather than torch.cuda.graph(): that context manager also
        # synchronizes and empties the allocator cache on entry, costly over ~2000 points
        cur = torch.cuda.current_stream()
        self._stream.wait_stream(cur)
        with torch.cuda.stream(self._stream):
            g.capture_begin()
            try:
                for _ in range(k):
                    for f in fns:
                        f()
            finally:
                g.capture_end()
        cur.wait_stream(self._stream)
        g.replay()
        torch.cuda.synchronize()
        return g

    def time(self, fns: Sequence[Callable[[], object]], *, graph: bool = True) -> dict:
        torch = self.torch
        fns = list(fns)
        cur = torch.cuda.current_stream()
        self._stream.wait_stream(cur)
        with torch.cuda.stream(self._stream):
            for _ in range(self.warmup):
                for f in fns:
                    f()
        cur.wait_stream(self._stream)
        torch.cuda.synchronize()

        def eager_pass():
            for f in fns:
                f()
        est = self._event_time(eager_pass)  # host-bound for tiny ops: an overestimate
        k = max(1, math.ceil(self.min_sample_s / max(est, 1e-7)))
        method, g = "eager", None
        if graph and self.graph_ok:
            try:
                for _ in range(3):  # the eager estimate can be host-bound: deepen until long enough
                    g = self._capture(fns, k)
                    t = self._event_time(g.replay)
                    if t >= self.min_sample_s:
                        break
                    k = max(k + 1, math.ceil(k * self.min_sample_s / max(t, 1e-7) * 1.1))
                    del g
                    g = None
                if g is None:
                    g = self._capture(fns, k)
                method = "cuda_graph"
            except Exception as exc:  # capture unsupported for this op: time it eagerly
                g = None
                self.graph_ok = False  # and the rest of this table: don't fail again per point
                try:
                    torch.cuda.synchronize()
                except Exception:
                    raise exc
                log(f"    graph capture failed ({type(exc).__name__}: {str(exc)[:120]}); eager")
        if g is not None:
            run = g.replay
        else:
            def run():
                for _ in range(k):
                    for f in fns:
                        f()
        ops = k * len(fns)
        first = self._event_time(run)
        reps = int(min(self.max_reps, max(self.min_reps, self.point_budget_s / max(first, 1e-7))))
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(reps)]
        for s, e in ev:
            s.record()
            run()
            e.record()
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) * 1e-3 / ops for s, e in ev]
        del g
        out = summarize(times)
        out.update(method=method, ops_per_sample=ops)
        return out


# --------------------------------------------------------------------------- CPU timing

def time_cpu(fns: Sequence[Callable[[], object]], *, point_budget_s: float = 0.2,
             min_reps: int = 3, max_reps: int = 50, warmup: int = 2) -> dict:
    """Times host operations with ``time.perf_counter``: ``warmup`` untimed calls, then one
    timed call per sample, rotating through ``fns`` (one per buffer set); the number of samples
    is chosen from the first so that a point costs about ``point_budget_s``."""
    fns = list(fns)
    for i in range(warmup):
        fns[i % len(fns)]()
    t0 = time.perf_counter()
    fns[0]()
    first = time.perf_counter() - t0
    reps = int(min(max_reps, max(min_reps, point_budget_s / max(first, 1e-7))))
    times = []
    for i in range(reps):
        f = fns[(i + 1) % len(fns)]
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    out = summarize(times)
    out.update(method="perf_counter", ops_per_sample=1)
    return out


# --------------------------------------------------------------------------- metadata

from .metadata import (CPU_FLAGS_OF_INTEREST, NVSMI_FIELDS, base_metadata, cpu_info,  # noqa: E402,F401
                       device_slug, gpu_metadata, last_level_cache_bytes, nvidia_smi,
                       nvidia_topology, utc_now)


# --------------------------------------------------------------------------- table files

def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format(v, ".6g")
    s = str(v)
    if "#" in s or "\n" in s:
        raise ValueError(f"table cell {s!r} contains '#' or a newline")
    return s


def _meta_value(v) -> str:
    s = _cell(v) if not isinstance(v, str) else v
    return " ".join(str(s).replace("#", "no.").split())


def write_table(path: str | os.PathLike, columns: Sequence[str], rows: Iterable[Mapping],
                metadata: Mapping) -> int:
    """Writes one table: ``# key: value`` lines, a header, the rows. Returns the row count.

    Keys are lower-case identifiers; values are made one line and free of '#', so that
    ``pandas.read_csv(path, comment='#')`` and :func:`read_table` both read the file back.
    """
    columns = list(columns)
    if len(set(columns)) != len(columns):
        raise ValueError("duplicate column names")
    n = 0
    tmp = f"{os.fspath(path)}.tmp"
    try:
        n = _write_rows(tmp, columns, rows, metadata)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)
    return n


def _write_rows(tmp, columns, rows, metadata) -> int:
    n = 0
    with open(tmp, "w", newline="") as fh:
        for k, v in metadata.items():
            if not _KEY_RE.match(k):
                raise ValueError(f"metadata key {k!r} is not a lower-case identifier")
            fh.write(f"# {k}: {_meta_value(v)}\n")
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            extra = set(r) - set(columns)
            if extra:
                raise ValueError(f"row has columns not in the header: {sorted(extra)}")
            w.writerow([_cell(r.get(c)) for c in columns])
            n += 1
    return n


def parse_value(s: str):
    """A table cell back to int, float, bool or str ('' stays '')."""
    if _INT_RE.match(s):
        return int(s)
    if _FLOAT_RE.match(s):
        return float(s)
    if s in ("true", "false"):
        return s == "true"
    return s


def read_table(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """Reads a table written by :func:`write_table`: (metadata, rows), values typed back."""
    meta: dict = {}
    lines = []
    with open(path, newline="") as fh:
        for line in fh:
            if line.startswith("#"):
                key, _, val = line[1:].strip().partition(":")
                meta[key.strip()] = parse_value(val.strip())
            else:
                lines.append(line)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        return meta, []
    rows = [{c: parse_value(v) for c, v in zip(header, rec)} for rec in reader if rec]
    return meta, rows


# --------------------------------------------------------------------------- logging

_LOG_FH = None


def open_log(path: str | os.PathLike | None) -> None:
    """Also append log lines to ``path`` (None: stdout only)."""
    global _LOG_FH  # noqa: PLW0603 -- one log per benchmark process
    if _LOG_FH is not None:
        _LOG_FH.close()
    _LOG_FH = open(path, "a") if path else None


def log(msg: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if _LOG_FH is not None:
        _LOG_FH.write(line + "\n")
        _LOG_FH.flush()


class Budget:
    """A wall-clock allowance for one table: ``spent()`` says when to stop adding points."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.perf_counter()
        self.skipped = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def spent(self) -> bool:
        return self.elapsed() > self.seconds


class Table:
    """One measured table before it is written: its name (the CSV's stem), columns, rows and
    table-specific metadata (the caller adds the device and software facts)."""

    def __init__(self, name: str, columns: Sequence[str], rows: list[dict] | None = None,
                 metadata: dict | None = None):
        self.name = name
        self.columns = list(columns)
        self.rows = rows if rows is not None else []
        self.metadata = metadata if metadata is not None else {}

    def add(self, **row) -> None:
        self.rows.append(row)


def finish_table(table: Table, budget: Budget, n_points: int) -> Table:
    """Records in the table's metadata how many planned points the time budget cut."""
    table.metadata.update(points_planned=n_points, points_skipped_for_time=budget.skipped,
                          table_wall_s=round(budget.elapsed(), 1),
                          truncated=budget.skipped > 0)
    if budget.skipped:
        log(f"  {table.name}: {budget.skipped} of {n_points} points skipped for time")
    return table


#: Table name -> (module, function, where it runs). Measuring order: launch costs and the two
#: ceilings first.
TABLES = {
    "launch": ("launch", "bench_launch", "gpu"),
    "memcpy": ("gpu", "bench_memcpy", "gpu"),
    "gemm": ("gemm", "bench_gemm", "gpu"),
    "grouped_gemm": ("grouped", "bench_grouped_gemm", "gpu"),
    "elementwise": ("elementwise", "bench_elementwise", "gpu"),
    "attn_prefill": ("attention", "bench_attn_prefill", "gpu"),
    "attn_decode": ("attention", "bench_attn_decode", "gpu"),
    "cpu_gemm": ("cpu", "bench_cpu_gemm", "cpu"),
    "cpu_attn_decode": ("cpu", "bench_cpu_attn_decode", "cpu"),
    "allreduce": ("collective", "bench_allreduce", "multi_gpu"),
    # held-out validation (a separate run, never fitted): only when named in --only
    "validation_ops": ("validation", "bench_validation_ops", "gpu_heldout"),
}
