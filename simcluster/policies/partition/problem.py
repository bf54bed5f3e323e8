"""The problem every partition policy solves, and what they share to evaluate a split.

A :class:`Problem` is one model over the (possibly different) GPUs of one group, their link,
and the :class:`TargetBatch` R the split is tuned for. For a tensor-parallel split it evaluates
an allocation of whole heads H_j and KV shares P_j (:meth:`Problem.evaluate`: f_j, memory,
the target batch's shortfall per GPU).

*Capability*: the rate at which the device alone would run the target batch through the whole
model (memory ignored), per the cost model — the blend of peak FLOP/s and memory bandwidth
that this batch's operators weigh. *f_j*: GPU j's latency for the target batch, its compute
fitted per device type on cost-model samples (:class:`DeviceFit`, Hels's linear regression)
plus the group's links (TP all-reduces, and the head-dispatch transfers of a decoupled KV
share). Ranks meet at every all-reduce, so every f_j carries the slowest rank's transfer and
max_j f_j is the cost model's iteration time up to the fit's error. FFN columns travel with
heads (ffn_share = H_j / heads): one knob, and what a head move frees on one GPU it costs on
another.

*KV partial-store-and-recompute* (``recompute``, a share rho of the KV): on every GPU where it
saves memory — where a token's K and V of the heads it stores are wider than the layer input
(hidden size), i.e. a GPU storing more than half of an MHA model's KV heads — rho of its KV
tokens keep the layer input instead, and their K and V are recomputed at every decode step (a
GEMM of rho x KV tokens rows, priced exactly and added to f_j). Elsewhere it would cost memory,
so it is not applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from simcluster.cost.layout import Layout
from simcluster.cost.memory import MemoryPlan, memory_plan
from simcluster.cost.model import Batch, CostModel
from simcluster.models.operators import RankShape
from simcluster.hardware import DeviceSpec, LinkSpec
from simcluster.models import ModelSpec

GiB = 2**30
_REL = 1e-9                                   # relative tolerance when comparing latencies
_NO_LINK = LinkSpec("none", 1e9, 1e-6)        # only to sample the ranks of a 1-GPU group
KV_RULES = ("memory", "balance", "tied")      # how P_j follows from the heads (Problem.candidate)


@dataclass(frozen=True)
class TargetBatch:
    """The decode step a split is tuned for (R in Hels): ``batch_size`` sequences attending to
    ``context_tokens`` of KV each, every one able to grow to ``max_context_tokens``."""

    batch_size: int = 64
    context_tokens: int = 1024
    max_context_tokens: int | None = None     # default: context_tokens
    block_size: int = 16

    def __post_init__(self):
        if self.max_context_tokens is None:
            object.__setattr__(self, "max_context_tokens", self.context_tokens)
        for name, low in (("batch_size", 1), ("context_tokens", 1), ("block_size", 1),
                          ("max_context_tokens", self.context_tokens)):
            if getattr(self, name) < low:
                raise ValueError(f"TargetBatch.{name} must be >= {low}, got {getattr(self, name)}")

    @property
    def kv_tokens(self) -> int:
        """KV tokens one decode step reads."""
        return self.batch_size * self.context_tokens

    @property
    def reserved_kv_tokens(self) -> int:
        """KV tokens (whole blocks) the batch must be able to hold at its longest."""
        return self.batch_size * -(-self.max_context_tokens // self.block_size) * self.block_size

    def cost_batch(self) -> Batch:                 # the cost model's Batch
        return Batch(decode_context=(self.context_tokens,) * self.batch_size)


@dataclass(frozen=True)
class DeviceFit:
    """The compute part of f_j for one device type, Hels's linear model

        compute = a * H_j * tokens + b * P_j * kv_tokens + c        (H_j as a share of heads)

    fitted by least squares on samples of one rank at the target batch, head and KV shares each
    over {0, 1/8, 1/4, 1/2, 3/4, 1}; ``c`` is what does not move with heads (norms, LM head
    slice). Roofline kinks make it approximate; the coefficients describe that batch only.
    """

    device: str
    a: float
    b: float
    c: float
    r2: float
    max_rel_err: float

    def compute_s(self, h: float, p: float, batch: TargetBatch) -> float:
        return self.a * h * batch.batch_size + self.b * p * batch.kv_tokens + self.c


@dataclass
class Candidate:
    """One allocation, evaluated: f_s from the fit (what the search compares), memory."""

    heads: tuple
    layout: Layout
    f_s: tuple[float, ...]
    comm_s: float
    memory: MemoryPlan
    batch_oom: list[str]
    exact_f_s: tuple[float, ...] | None = None     # from the cost model, on demand

    kv_shares = property(lambda self: self.layout.kv_shares)
    feasible = property(lambda self: not self.memory.oom and not self.batch_oom)


def _slowest_first(f) -> tuple:
    """Latencies sorted slowest first, to 9 significant digits (so that ties compare equal)."""
    return tuple(sorted((float(f"{x:.9g}") for x in f), reverse=True))


class Problem:
    """A TP group, its target batch, and the evaluation policies share (capability, fits)."""

    def __init__(self, model: ModelSpec, devices: Sequence[DeviceSpec], link: LinkSpec | None,
                 batch: TargetBatch = TargetBatch(), cost_model: CostModel | None = None, *,
                 memory_utilization: float = 0.9, max_batched_tokens: int = 8192,
                 max_num_seqs: int = 256, recompute: float = 0.0):
        if not devices or (len(devices) > 1 and link is None):
            raise ValueError("a partition needs one or more devices, and a link for several")
        if not 0 <= recompute < 1:
            raise ValueError(f"recompute is a share of the KV in [0, 1), got {recompute}")
        self.recompute = float(recompute)
        self.model, self.devices, self.link = model, tuple(devices), link
        self.batch, self.cost_model = batch, cost_model or CostModel()
        self.mem_kw = dict(memory_utilization=memory_utilization,
                           max_batched_tokens=max_batched_tokens, max_num_seqs=max_num_seqs)
        self.total_heads, self.n = model.num_heads, len(self.devices)
        self._fits: dict[str, DeviceFit] = {}
        self._evals: dict[tuple, Candidate] = {}
        # capability: target-batch iterations per second of each device alone, whole model
        rate = {d.name: 1.0 / float(self.cost_model.timer(model, Layout.uniform(d)).decode_steps(
            batch.batch_size, batch.kv_tokens, 1)[0]) for d in self.devices}
        self.capability = tuple(rate[d.name] for d in self.devices)

    def fit(self, device: DeviceSpec) -> DeviceFit:
        return self._fits.get(device.name) or self._fits.setdefault(device.name,
                                                                    self._fit(device))

    def _fit(self, device: DeviceSpec) -> DeviceFit:
        n, rows, ys, tb = max(self.n, 2), [], [], self.batch
        grid = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)
        for h in grid:
            for p in grid:
                hs = (h,) + ((1 - h) / (n - 1),) * (n - 1)
                ps = hs if p == h else (p,) + ((1 - p) / (n - 1),) * (n - 1)
                lay = Layout.heterogeneous((device,) * n, self.link or _NO_LINK,
                                           head_shares=hs, ffn_shares=hs, kv_shares=ps)
                rows_ = self.cost_model.timer(self.model, lay).breakdown(tb.cost_batch())
                ys.append(sum(r["time_s"] for r in rows_ if r["rank"] == 0))
                rows.append((h * tb.batch_size, p * tb.kv_tokens, 1.0))
        X, y = np.array(rows), np.array(ys)
        scale = np.abs(X).max(axis=0)
        a, b, c = coef = np.linalg.lstsq(X / scale, y, rcond=None)[0] / scale
        pred = X @ coef
        r2 = 1.0 - float(np.sum((y - pred) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-300))
        err = float(np.max(np.abs(pred - y) / np.maximum(y, 1e-12)))
        return DeviceFit(device.name, float(a), float(b), float(c), r2, err)

    def evaluate(self, heads: Sequence[float], kv: Sequence[float] | None = None) -> Candidate:
        """f_j, communication and memory of an allocation (``kv=None``: KV tied to heads)."""
        hs = tuple(h / self.total_heads for h in heads)
        ks = hs if kv is None or all(abs(k - h) < 1e-12 for k, h in zip(kv, hs)) else tuple(kv)
        key = (tuple(heads), ks)
        if key in self._evals:
            return self._evals[key]
        rc = self.recompute_shares(hs, ks)
        lay = (Layout(devices=self.devices, recompute_shares=rc if any(rc) else ())
               if self.n == 1 else Layout.heterogeneous(
                   self.devices, self.link, head_shares=hs, ffn_shares=hs, kv_shares=ks,
                   recompute_shares=rc if any(rc) else ()))
        m, b, cal = self.model, self.batch, self.cost_model.calibration
        comm = 0.0
        if self.n > 1:
            act = float(b.batch_size * m.hidden_size * m.dtype_bytes)
            comm = 2 * m.num_layers * float(cal.link_time(lay.link, "collective", act, self.n))
            moved = max(RankShape.of(m, h, h, p, ks == hs).kv_transfer_bytes(b.batch_size, 0)
                        for h, p in zip(hs, ks))
            if moved:
                comm += m.num_layers * float(cal.link_time(lay.link, "transfer", moved))
        f = tuple(self.fit(d).compute_s(h, p, b) + comm + self._recompute_s(d, h, p, r, ks == hs)
                  for d, h, p, r in zip(self.devices, hs, ks, rc))
        plan, short = memory_plan(m, lay, **self.mem_kw), []
        for r in plan.ranks:
            need = r.kv_bytes_per_token * b.reserved_kv_tokens
            if r.kv_bytes >= 0 and need > r.kv_bytes:
                short.append(f"{r.device} (rank {r.rank}) short by {(need - r.kv_bytes) / GiB:.2f}"
                             f" GiB: the target batch's KV ({b.reserved_kv_tokens} tokens) needs "
                             f"{need / GiB:.2f} GiB, {r.kv_bytes / GiB:.2f} GiB left")
        self._evals[key] = cand = Candidate(tuple(heads), lay, f, comm, plan, short)
        return cand

    def recompute_shares(self, hs, ks) -> tuple[float, ...]:
        """``recompute`` on each GPU where keeping layer inputs saves memory, else 0."""
        if not self.recompute:
            return (0.0,) * self.n
        m, tied = self.model, ks == hs
        return tuple(self.recompute if 2 * RankShape.of(m, h, h, p, tied).stored_kv_heads
                     * m.head_dim > m.hidden_size else 0.0 for h, p in zip(hs, ks))

    def _recompute_s(self, device, h, p, rho, tied) -> float:
        """Seconds of one target-batch step's K/V recompute on a GPU (all layers)."""
        if not rho:
            return 0.0
        m = self.model
        rs = RankShape.of(m, h, h, p, tied, rho)
        mm, n, k = rs.recompute_gemm(float(self.batch.kv_tokens))
        by = m.dtype_bytes * (mm * k + k * n + mm * n)
        return m.num_layers * float(self.cost_model.calibration.op_time(
            device, "gemm", 2.0 * mm * n * k, by, {"m": max(mm, 1.0), "n": n, "k": k},
            m.dtype))

    def exact(self, cand: Candidate) -> tuple[float, ...]:
        """f_j from the cost model: rank j's operators plus every link operator (max = time)."""
        if cand.exact_f_s is None:
            rows = self.cost_model.timer(self.model, cand.layout).breakdown(self.batch.cost_batch())
            link = sum(r["time_s"] for r in rows if r["rank"] < 0)
            cand.exact_f_s = tuple(link + sum(r["time_s"] for r in rows if r["rank"] == j)
                                   for j in range(self.n))
        return cand.exact_f_s

    def proportional_heads(self, weights: Sequence[float]) -> tuple[int, ...]:
        """Whole heads in proportion to ``weights`` (largest remainder, ties to the lower rank)."""
        exact = self.total_heads * np.asarray(weights, float) / np.sum(weights)
        heads = np.floor(exact).astype(int)
        for i in sorted(range(self.n), key=lambda j: (heads[j] - exact[j], j)):
            heads[i] += heads.sum() < self.total_heads
        return tuple(int(h) for h in heads)

    def candidate(self, heads: Sequence[int], rule: str) -> Candidate:
        """``heads`` with P_j by ``rule``: ``tied`` (H_j / heads), ``memory`` (in proportion to
        the memory left after weights and reserve: the source's rule, holding the most KV) or
        ``balance`` (minimising max f_j, transfers included, each P_j capped by that memory)."""
        if rule not in KV_RULES:
            raise ValueError(f"unknown KV rule {rule!r}; known: {', '.join(KV_RULES)}")
        tied = self.evaluate(heads)
        free = np.array([max(r.kv_bytes, 0.0) for r in tied.memory.ranks])
        if rule == "tied" or free.sum() <= 0:
            return tied
        m, b = self.model, self.batch
        cap = free / (m.num_layers * 2 * m.num_kv_heads * m.head_dim * m.dtype_bytes
                      * b.reserved_kv_tokens)
        if rule == "memory" or cap.sum() < 1:             # nothing fits: spread by memory
            return self.evaluate(heads, tuple(float(x) for x in free / free.sum()))
        return self.evaluate(heads, self._balance(np.asarray(heads) / self.total_heads,
                                                  np.minimum(cap, 1.0)))

    def _balance(self, hs: np.ndarray, cap: np.ndarray) -> tuple[float, ...]:
        """min over P of max_j (base_j + slope_j P_j) + transfer(max_j |P_j - h_j|) for
        0 <= P_j <= cap_j, sum P = 1: water-fill under each bound delta on the mismatch (a
        grid over [0, 1]; delta = 0 is the tied split) and keep the best."""
        m, b, cal = self.model, self.batch, self.cost_model.calibration
        fits = [self.fit(d) for d in self.devices]
        base = np.array([f.compute_s(h, 0.0, b) for f, h in zip(fits, hs)])
        slope = np.maximum([f.compute_s(h, 1.0, b) - f.compute_s(h, 0.0, b)
                            for f, h in zip(fits, hs)], 1e-15)
        delta = np.linspace(0.0, 1.0, 65)[:, None]
        lo, hi = np.maximum(hs - delta, 0.0), np.minimum(hs + delta, cap)
        ok = (lo.sum(axis=1) <= 1 + 1e-12) & (hi.sum(axis=1) >= 1 - 1e-12) & np.all(lo <= hi, 1)
        t_lo = np.full(len(delta), (base + slope * lo).min())
        t_hi = np.full(len(delta), (base + slope * hi).max())
        for _ in range(60):                               # bisection on T: sum P_j(T) = 1
            mid = 0.5 * (t_lo + t_hi)
            below = np.clip((mid[:, None] - base) / slope, lo, hi).sum(axis=1) < 1
            t_lo, t_hi = np.where(below, mid, t_lo), np.where(below, t_hi, mid)
        p = np.clip((t_hi[:, None] - base) / slope, lo, hi)
        p /= p.sum(axis=1, keepdims=True)
        unit = RankShape.of(m, 0.0, 0.0, 1.0, False).kv_transfer_bytes(b.batch_size, 0)
        comm = [m.num_layers * float(cal.link_time(self.link, "transfer", x * unit))
                if x > 1e-12 else 0.0 for x in np.abs(p - hs).max(axis=1)]
        total = np.where(ok, (base + slope * p).max(axis=1) + comm, np.inf)
        return tuple(float(x) for x in p[int(np.argmin(total))])

    def repair(self, heads: tuple[int, ...], rule: str, log: list,
               target: str = "batch") -> tuple[int, ...]:
        """Move heads (one, or one per twin, at a time) until the target batch fits (``"batch"``:
        the move that most raises KV capacity) or the weights and reserve do (``"weights"``:
        the move that most raises the least memory left), or no move helps."""
        fits = (lambda c: c.feasible) if target == "batch" else (lambda c: not c.memory.oom)
        score = ((lambda c: c.memory.kv_capacity_tokens) if target == "batch"
                 else (lambda c: min(r.kv_bytes for r in c.memory.ranks)))
        cur = self.candidate(heads, rule)
        for step in range(self.total_heads * self.n):
            log.append(_row(f"{rule}:repair", step, cur, "fits" if fits(cur) else "short"))
            best, most = None, score(cur)
            for src in range(self.n) if not fits(cur) else ():
                for dst in range(self.n):
                    for moved, _ in _moves(self, heads, cur, src, dst):
                        cand = self.candidate(moved, rule)
                        if (target == "weights" or not cand.memory.oom) and score(cand) > most:
                            best, most = (moved, cand), score(cand)
            if best is None:
                break
            heads, cur = best
        return heads


def _row(rule: str, step: int, cand: Candidate, action: str) -> dict:
    return {"rule": rule, "step": step, "heads": cand.heads,
            "kv_shares": tuple(round(p, 4) for p in cand.kv_shares), "f_s": cand.f_s,
            "max_f_s": max(cand.f_s), "comm_s": cand.comm_s, "feasible": cand.feasible,
            "action": action}


def _moves(problem: Problem, heads, cur: Candidate, src: int, dst: int):
    """One head from each twin of ``src`` (same GPU type and shares) to the twins of ``dst`` in
    turn (twins move together: one alone cannot lower a maximum they share, as the transfers a
    move adds slow every rank), then one head from ``src`` to ``dst``."""
    if src == dst or heads[src] == 0:
        return
    d, ks = problem.devices, cur.kv_shares
    gs, gd = ([k for k in range(problem.n) if d[k].name == d[j].name and heads[k] == heads[j]
               and abs(ks[k] - ks[j]) < 1e-9] for j in (src, dst))
    pairs = [list(zip(gs, gd * len(gs)))] if dst not in gs and len(gs) + len(gd) > 2 else []
    for moves in pairs + [[(src, dst)]]:
        out = list(heads)
        for k, j in moves:
            out[k], out[j] = out[k] - 1, out[j] + 1
        yield tuple(out), f"move {[k for k, _ in moves]}->{[j for _, j in moves]}"
