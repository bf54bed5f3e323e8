"""The tile model: achievable times of a parametric accelerator, where its buffers matter.

A measured calibration knows a real device's achievable rates; a device that does not exist
(:class:`~simcluster.hardware.parametric.DesignedDevice`) gets them from this model of how its
cores, local buffers (L1) and global buffer (L2) carry an operator, after LLMCompass (Zhang et
al., ISCA'24, ``software_model/matmul.py`` and ``flash_attention.py``):

**GEMM** ``(m x k) @ (k x n)``. Each core computes output tiles of ``m1 x n1``, streaming
``k1``-deep slices of A and B through its local buffer; the working set ``m1 n1 + k1 (m1 +
n1)`` must fit half the local buffer (double buffering, LLMCompass's rule). A tile's blocks of
``height x width`` are spread over the core's lanes; a pass of one array over a ``k1`` slice
costs ``k1 / MACs-per-cycle + height + width`` cycles (the systolic array fills and drains per
pass, as LLMCompass's simulated output-stationary arrays do), so a small local buffer (short
``k1``) wastes array time. Tiles go to cores in waves (a last partial wave idles cores); split-K
(``s`` slices, partial sums reduced through the global buffer) feeds idle cores when there are
few tiles. Global-buffer traffic (every tile reads its A and B panels: ``k (m1 + n1)``
elements) runs at the global-buffer bandwidth (LLMShare's generator: 5,120 bytes/cycle per
40 MB). Off-chip traffic follows the blocking of the global buffer: output blocks ``m2 x n2``
that fit half of it with their ``k``-panels; A is read once per column of blocks, B once per
row; if A or B fits half the buffer whole, each matrix is read once. The time is the largest of
the compute, global-buffer and DRAM times (double buffering overlaps them); a GEMV-like shape
may instead run on the vector units (LLMCompass's heuristic for ``m = 1``). The tile shape and
split are the ones with the least time among powers of two from 16 to 512 and splits 1-16.

**Attention prefill** (FlashAttention-2's schedule). Per head and query tile of ``bq`` rows,
the core streams ``bk``-row K/V tiles (``bq = bk``, the largest power of two <= 128 whose Q,
K, V, S and O tiles fit half the local buffer): ``S = Q K^T`` and ``O += P V`` on the arrays,
softmax on the vector units (39 vector FLOPs per score: LLMCompass's 35 per exponential plus
max, subtract, sum and scale), one after the other (FlashAttention-3 overlaps them; this model
does not). Causal: a query tile reads the K/V tiles up to its diagonal. Work units (head x
query tile) are list-scheduled over the cores. Off-chip traffic is Q, K, V and O once while the
K/V of the heads in flight fit half the global buffer, else K/V are re-read per query tile.

**Attention decode** (flash-decoding). The KV of each sequence and KV head is split into
chunks of at least 256 tokens until every core has work; the time is the KV stream at the
achievable DRAM rate, no faster than the cores that have work can pull through the global
buffer, or the scores on the vector units, whichever is longer.

**Elementwise**: bytes at the achievable DRAM rate.

Two stated constants of the runtime come from measurements of an H100 (hwspecs/calibration/
H100-SXM), as a GPU-like runtime would have them: DRAM streams at 0.91 of the pin bandwidth
(the best streaming kernels there reach 3.13, 3.04 and 2.99 TB/s of 3.35), and every kernel
adds a fixed time for launch (under CUDA-graph replay), ramp-up and tail — the intercept of
time against bytes over the memory-bound kernels measured below 64 MB: GEMM 3.7 us, prefill
attention 5.7 us, decode attention 6.5 us, elementwise 5.4 us (benchmarks/llmshare_tables.py
prints the fit). Without it, decode iterations — dozens of kernels of a few microseconds of
traffic each — come out 11-30% faster than measured.

**Where it departs from LLMCompass's mapper.** LLMCompass searches tile sizes, loop orders and
lane tilings per operator shape and simulates each candidate cycle by cycle (with a systolic-
array look-up table from SCALE-Sim); that takes seconds per operator. Here a closed form per
candidate (waves x passes x pass cycles) replaces the simulation, loop orders are fixed
(output-stationary at both levels), the L2 blocking minimises traffic analytically, and the
candidate set is small, so a whole iteration is timed in microseconds — what a simulator that
replays thousands of iterations per design, for a thousand designs, needs. It ignores bank
conflicts, the global buffer's own latency and the on-chip network, as LLMCompass's roofline
parts do.
"""

from __future__ import annotations

import math

import numpy as np

from simcluster.calibration.roofline import Calibration

DRAM_EFFICIENCY = 0.91
KERNEL_FIXED_S = {"gemm": 3.7e-6, "attn_prefill": 5.7e-6, "attn_decode": 6.5e-6,
                  "elementwise": 5.4e-6}
SOFTMAX_VECTOR_FLOPS_PER_SCORE = 35 + 4
DECODE_CHUNK_TOKENS = 256
_TILES = np.array([16, 32, 64, 128, 256, 512])
_SPLITS = np.array([1, 2, 4, 8, 16])
_BLOCK = 256


def _cdiv(a, b):
    return -(-a // b)


class TileModel:
    """Operator times on one :class:`AcceleratorDesign` for one element size (see module)."""

    def __init__(self, design, dtype_bytes: int = 2):
        d, b = design, dtype_bytes
        self.design, self.b = d, b
        self.H, self.W, self.L, self.C = d.array_height, d.width, d.lanes, d.cores
        self.p, self.f = d.macs_per_pe_per_cycle, d.clock_hz
        self.lb_elems = d.local_buffer_bytes // (2 * b)
        self.gb_elems = d.global_buffer_bytes // (2 * b)
        self.gb_bw = d.global_buffer_bw_bytes_per_s
        self.dram_bw = d.mem_bw_bytes_per_s * DRAM_EFFICIENCY
        self.vec_flops = d.vector_flops
        self.vec_per_core_cycle = d.lanes * d.vector_width * d.vector_flops_per_element
        self._gemm: dict = {}
        self._attn_const: dict = {}
        # candidate L1 tiles, split factors: flattened grid
        m1, n1, s = np.meshgrid(_TILES, _TILES, _SPLITS, indexing="ij")
        self._m1, self._n1, self._s = m1.ravel(), n1.ravel(), s.ravel()

    # -- GEMM ------------------------------------------------------------------------------
    def dram_bytes_gemm(self, m, n: int, k: int) -> np.ndarray:
        """Off-chip bytes of GEMMs of ``m`` rows (an array) under the best output blocking
        of the global buffer."""
        b, cap = self.b, self.gb_elems
        m = np.asarray(m, dtype=np.int64)
        ideal = m * k + k * n + m * n
        k2 = min(k, 128)
        m2 = np.minimum(2 ** np.arange(4, 21)[None, :], m[:, None])          # (B, 17)
        n2 = np.minimum(n, (cap - k2 * m2) // (m2 + k2))
        traffic = np.where(n2 >= 16, m[:, None] * k * _cdiv(n, np.maximum(n2, 1))
                           + k * n * _cdiv(m[:, None], m2) + (m * n)[:, None], np.inf)
        best = traffic.min(axis=1)
        # not even a 16 x 16 block fits: every element is re-read per 16-wide block
        best = np.where(np.isinf(best), (m * k * n / 16) * 2 + m * n, best)
        resident = np.minimum(m * k, k * n) <= cap // 2     # A or B stays whole in the buffer
        return b * np.where(resident, ideal, best)

    def gemm(self, m: int, n: int, k: int) -> float:
        """Seconds of one GEMM (tables of 256 consecutive ``m`` per ``(n, k)``, built on
        first use: a simulation asks for many token counts of the same few weight shapes)."""
        m, n, k = int(m), int(n), int(k)
        j, i = divmod(m, _BLOCK)
        key = (n, k, j)
        block = self._gemm.get(key)
        if block is None:
            ms = np.arange(j * _BLOCK, (j + 1) * _BLOCK)
            ms[0] = max(ms[0], 1)
            block = self._gemm[key] = (self._gemm_times(ms, n, k)
                                       + KERNEL_FIXED_S["gemm"]).tolist()
        return block[i]

    def _gemm_times(self, ms: np.ndarray, n: int, k: int) -> np.ndarray:
        H, W, L, C, p, b = self.H, self.W, self.L, self.C, self.p, self.b
        dram_t = self.dram_bytes_gemm(ms, n, k) / self.dram_bw                 # (B,)
        keep = self._s <= max(1, k // 64)
        m1, n1, s = self._m1[keep], self._n1[keep], self._s[keep]              # (C,)
        M = ms[:, None]
        # rows of m at least every tile's rows (m >= 512) have the same tile shapes: those,
        # their fits and their cycles are then computed once, as (C,), and broadcast over the
        # rows below (the same integers, so the same times)
        me = m1 if ms.min() >= m1.max() else np.minimum(m1, M)
        ne, kt = np.minimum(n1, n), _cdiv(k, s)
        k1 = (self.lb_elems - me * ne) // (me + ne)                    # (B, C) or (C,)
        valid = k1 >= 8
        # a local buffer too small for any tile of a row streams 8-deep slices from the L2
        valid |= ~valid.any(axis=-1, keepdims=True)
        k1 = np.minimum(np.maximum(k1, 8), kt)
        blocks = _cdiv(me, H) * _cdiv(ne, W)
        tile_cycles = _cdiv(blocks, L) * _cdiv(kt, k1) * (_cdiv(k1, p) + H + W)
        tiles = _cdiv(M, m1) * _cdiv(n, n1) * s
        compute = _cdiv(tiles, C) * tile_cycles / self.f
        partial = np.where(s > 1, 2 * s * 4, 0) * M * n    # fp32 partial sums, out and in
        gb = (b * tiles * kt * (me + ne) + b * M * n + partial) / self.gb_bw
        t = np.where(valid, np.maximum(np.maximum(compute, gb), dram_t[:, None]), np.inf)
        vec = np.maximum(2.0 * ms * n * k / self.vec_flops, dram_t)
        return np.minimum(t.min(axis=1), vec)

    # -- attention -------------------------------------------------------------------------
    def _attn_tile(self, d: float) -> int:
        bq = 128
        while bq > 16 and 4 * bq * d + bq * bq > self.lb_elems:    # Q, K, V, O and S tiles
            bq //= 2
        return bq

    def _mm_cycles(self, rows, cols, depth):
        return (_cdiv(_cdiv(rows, self.H) * _cdiv(cols, self.W), self.L)
                * (_cdiv(depth, self.p) + self.H + self.W))

    def attn_prefill(self, chunks, contexts, heads: float, kv_heads: float, head_dim: float,
                     ideal_bytes) -> np.ndarray:
        """Times of the sequences of one varlen prefill-attention kernel (they sum to the
        kernel's time)."""
        c = np.atleast_1d(np.asarray(chunks, dtype=float))
        x = np.broadcast_to(np.atleast_1d(np.asarray(contexts, dtype=float)), c.shape)
        by = np.broadcast_to(np.atleast_1d(np.asarray(ideal_bytes, dtype=float)), c.shape)
        d = max(int(round(head_dim)), 1)
        hq = max(int(math.ceil(heads)), 1)
        bq = self._attn_tile(d)
        q_tiles = np.ceil(c / bq)
        kv_tiles = np.ceil((x + (c + bq) / 2) / bq)
        tile_cycles = (self._mm_cycles(bq, bq, d) + self._mm_cycles(bq, d, bq)
                       + bq * bq * SOFTMAX_VECTOR_FLOPS_PER_SCORE / self.vec_per_core_cycle)
        unit = kv_tiles * tile_cycles
        work = hq * q_tiles * unit
        compute = max(float(work.sum()) / self.C, float(unit.max())) / self.f
        gb = self.b * hq * float(np.sum(q_tiles * (2 * bq * d + kv_tiles * 2 * bq * d))) / self.gb_bw
        g = max(kv_heads, 1.0)
        kv_head_bytes = 2 * (x + c) * d * self.b
        heads_in_flight = np.minimum(hq, np.maximum(1.0, self.C / q_tiles))
        kv_in_flight = np.maximum(1.0, heads_in_flight * g / hq)
        refetch = np.where(kv_in_flight * kv_head_bytes > self.gb_elems * self.b,
                           (q_tiles - 1) * kv_head_bytes * g, 0.0)
        dram = float(np.sum(by + refetch)) / self.dram_bw
        total = max(compute, gb, dram) + KERNEL_FIXED_S["attn_prefill"]
        share = work / work.sum() if work.sum() > 0 else np.full(c.shape, 1.0 / len(c))
        return total * share

    def attn_prefill_one(self, c: float, x: float, heads: float, kv_heads: float,
                         head_dim: float, ideal_bytes: float) -> float:
        """:meth:`attn_prefill` of one sequence, in scalar arithmetic (the hot path)."""
        d = max(int(round(head_dim)), 1)
        hq = max(int(math.ceil(heads)), 1)
        key = (d, "tile")
        hit = self._attn_const.get(key)
        if hit is None:
            bq = self._attn_tile(d)
            hit = self._attn_const[key] = (bq, self._mm_cycles(bq, bq, d)
                                           + self._mm_cycles(bq, d, bq)
                                           + bq * bq * SOFTMAX_VECTOR_FLOPS_PER_SCORE
                                           / self.vec_per_core_cycle)
        bq, tile_cycles = hit
        q_tiles = math.ceil(c / bq)
        kv_tiles = math.ceil((x + (c + bq) / 2) / bq)
        unit = kv_tiles * tile_cycles
        compute = max(hq * q_tiles * unit / self.C, unit) / self.f
        gb = self.b * hq * q_tiles * (2 * bq * d + kv_tiles * 2 * bq * d) / self.gb_bw
        g = max(kv_heads, 1.0)
        kv_head_bytes = 2 * (x + c) * d * self.b
        kv_in_flight = max(1.0, min(hq, max(1.0, self.C / q_tiles)) * g / hq)
        refetch = ((q_tiles - 1) * kv_head_bytes * g
                   if kv_in_flight * kv_head_bytes > self.gb_elems * self.b else 0.0)
        dram = (ideal_bytes + refetch) / self.dram_bw
        return max(compute, gb, dram) + KERNEL_FIXED_S["attn_prefill"]

    def attn_decode(self, batch: int, kv_len, heads: float, kv_heads: float, flops,
                    bytes_) -> np.ndarray:
        g = max(kv_heads, 1.0)
        if isinstance(kv_len, (int, float)) and isinstance(flops, (int, float)):
            splits = max(1.0, min(math.ceil(kv_len / DECODE_CHUNK_TOKENS),
                                  math.ceil(self.C / max(batch * g, 1.0))))
            bw = min(self.dram_bw, min(self.C, batch * g * splits) * self.gb_bw / self.C)
            rate = max(self.vec_flops,
                       self.design.matrix_flops * min(1.0, max(heads / g, 1.0) / self.H))
            return max(bytes_ / bw, flops / rate) + KERNEL_FIXED_S["attn_decode"]
        kv = np.asarray(kv_len, dtype=float)
        units_per_split = batch * g
        splits = np.maximum(1.0, np.minimum(np.ceil(kv / DECODE_CHUNK_TOKENS),
                                            np.ceil(self.C / max(units_per_split, 1.0))))
        active = np.minimum(self.C, units_per_split * splits)
        bw = np.minimum(self.dram_bw, active * self.gb_bw / self.C)
        group = max(heads / g, 1.0)
        matrix_rate = self.design.matrix_flops * min(1.0, group / self.H)
        compute = np.asarray(flops, dtype=float) / max(self.vec_flops, matrix_rate)
        t = np.maximum(np.asarray(bytes_, dtype=float) / bw, compute)
        return t + KERNEL_FIXED_S["attn_decode"]

    def elementwise(self, bytes_, kernels: int = 1):
        return (np.asarray(bytes_, dtype=float) / self.dram_bw
                + KERNEL_FIXED_S["elementwise"] * kernels)


class TileCalibration(Calibration):
    """``inner`` for every device, except designed devices: their times come from the tile
    model (see module docstring)."""

    def __init__(self, inner: Calibration):
        super().__init__()
        self.inner = inner
        self.name = inner.name
        self._models: dict = {}
        self._fast: dict = {}

    def model(self, device, dtype_bytes: int = 2) -> TileModel:
        key = (self._device_key(device), dtype_bytes)
        hit = self._models.get(key)
        if hit is None:
            hit = self._models[key] = TileModel(device.design, dtype_bytes)
        return hit

    def op_time_for(self, device):
        if getattr(device, "design", None) is None:
            return self.inner.op_time_for(device)
        return self.op_time

    def slice_kernel(self, device, op, shape, dtype="bf16"):
        if getattr(device, "design", None) is None:
            return self.inner.slice_kernel(device, op, shape, dtype)
        return None

    def op_time(self, device, op, flops, bytes_, shape, dtype="bf16"):
        tm = self._fast.get((id(device), dtype))
        if tm is None:
            if getattr(device, "design", None) is None:
                return self.inner.op_time(device, op, flops, bytes_, shape, dtype)
            # (model() holds the device, so its id stays its own)
            tm = self._fast[(id(device), dtype)] = self.model(
                device, 1 if dtype in ("fp8", "int8") else 4 if dtype == "fp32" else 2)
        if op == "grouped_gemm":    # ``groups`` expert GEMMs of ``m`` rows in one kernel launch
            g = max(int(round(shape.get("groups", 1))), 1)
            one = tm.gemm(max(int(round(shape["m"])), 1), shape["n"], shape["k"])
            t = g * (one - KERNEL_FIXED_S["gemm"]) + KERNEL_FIXED_S["gemm"]
            return t if np.ndim(flops) == 0 else np.full(np.shape(flops), t)
        if type(bytes_) is float:                 # scalar fast paths (the simulator's)
            if op == "gemm":
                return tm.gemm(shape["m"], shape["n"], shape["k"])
            if op == "elementwise":
                return bytes_ / tm.dram_bw + KERNEL_FIXED_S["elementwise"] * shape.get(
                    "kernels", 1)
            if op == "attn_prefill" and shape.get("batch", 1) == 1 \
                    and type(shape["tokens"]) is float:
                c, x, heads = shape["tokens"], float(shape.get("context", 0)), shape["heads"]
                hd = flops / max(4.0 * heads * c * (x + (c + 1) / 2), 1e-30)
                return tm.attn_prefill_one(c, x, heads, shape.get("kv_heads", heads), hd,
                                           bytes_)
        scalar = np.ndim(flops) == 0 and np.ndim(bytes_) == 0
        if op == "gemm":
            t = tm.gemm(shape["m"], shape["n"], shape["k"])
            out = np.full(np.shape(flops), t) if not scalar else t
        elif op == "attn_prefill":
            out = self._attn_prefill(tm, flops, bytes_, shape, scalar)
        elif op == "attn_decode":
            n = max(int(shape["batch"]), 1)
            kv = np.asarray(shape["kv_len"], dtype=float)
            t = tm.attn_decode(n, kv, shape["heads"], shape["kv_heads"], flops, bytes_)
            out = float(t) if scalar else t
        elif op == "elementwise":
            t = tm.elementwise(bytes_, shape.get("kernels", 1))
            out = float(t) if scalar else t
        else:
            raise ValueError(f"unknown device operator class {op!r}")
        return out

    @staticmethod
    def _attn_prefill(tm: TileModel, flops, bytes_, shape, scalar):
        """Per-sequence times of a prefill-attention call: a varlen kernel over arrays of
        chunks and contexts, or ``batch`` equal sequences of one shape (``flops`` and
        ``bytes_`` then count all of them)."""
        heads = shape["heads"]
        tokens = np.atleast_1d(np.asarray(shape["tokens"], dtype=float))
        ctx = np.broadcast_to(np.atleast_1d(np.asarray(shape.get("context", 0), float)),
                              tokens.shape)
        reps = max(int(shape.get("batch", 1)), 1) if np.ndim(shape["tokens"]) == 0 else 1
        seq_tokens, seq_ctx = np.repeat(tokens, reps), np.repeat(ctx, reps)
        pairs = seq_tokens * (seq_ctx + (seq_tokens + 1) / 2)
        head_dim = float(np.sum(flops)) / max(4.0 * heads * float(pairs.sum()), 1e-30)
        seq_bytes = np.repeat(np.atleast_1d(np.asarray(bytes_, dtype=float)) / reps, reps)
        t = tm.attn_prefill(seq_tokens, seq_ctx, heads, shape.get("kv_heads", heads),
                            head_dim, seq_bytes).reshape(len(tokens), reps).sum(axis=1)
        return float(t[0]) if scalar else t.reshape(np.shape(flops))

    def link_time(self, link, op, bytes_, n_ranks=2):
        return self.inner.link_time(link, op, bytes_, n_ranks)

    def provenance(self, device) -> str:
        if getattr(device, "design", None) is None:
            return self.inner.provenance(device)
        return f"{self.name}: {device.name} tile model (simcluster.calibration.tiles)"

    def op_provenance(self, device, op: str) -> str:
        if getattr(device, "design", None) is None:
            return self.inner.op_provenance(device, op)
        return f"{op}: {device.name} tile model"

    def launch_costs(self, device):
        """The inner calibration's (a designed device has no measured host: none)."""
        if getattr(device, "design", None) is None:
            return self.inner.launch_costs(device)
        return super().launch_costs(device)

    def __getattr__(self, name):      # source_of, curves, ... of the inner calibration
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
