"""Partition policies: how one model's heads, FFN columns and KV cache are cut over the
(possibly different) GPUs of one tensor-parallel group.

A policy answers ``partition(problem) -> Partition`` for a :class:`Problem`: the model, the
devices and their link, and the :class:`TargetBatch` the split is tuned for (R in Hels: a
decode step of ``batch_size`` sequences attending to ``context_tokens`` each, every one of
which must be able to grow to ``max_context_tokens``). The registered policies:

* ``equal`` (vLLM): the same share of heads, FFN and KV on every GPU, heterogeneity ignored.
* ``hexgen``: heads (with their FFN columns and their KV) in proportion to each GPU's
  *capability*, then the fewest head moves that make the target batch fit in memory.
* ``hels``: Hels's min-max search, with the KV share P_j decoupled from the heads H_j.

*Capability* is the rate at which the device alone would run the target batch through the whole
model (memory ignored), as the cost model predicts it: the blend of peak FLOP/s and memory
bandwidth that this batch's operators weigh. It is a property of (device, model, batch).

*f_j* is GPU j's latency for the target batch, as Hels defines it: its compute, fitted per
device type by least squares on cost-model samples (:class:`DeviceFit`), plus the group's
communication (the TP all-reduces, and the head-dispatch transfers of a decoupled KV share,
from the link model). The ranks meet at every all-reduce, so every f_j carries the slowest
rank's transfer and ``max_j f_j`` is the iteration time the cost model would give, up to the
fit's error. FFN columns travel with heads (``ffn_share = H_j / heads``): Hels moves "heads",
and a head's share of the layer's weights is what a head move frees on one GPU and costs on
another; one knob keeps the search linear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from simcluster.cost.layout import Layout
from simcluster.cost.memory import MemoryPlan, memory_plan
from simcluster.cost.model import Batch, CostModel
from simcluster.cost.operators import RankShape
from simcluster.hardware import DeviceSpec, LinkSpec
from simcluster.models import ModelSpec
from simcluster.policies.registry import PARTITIONS

GiB = 2**30
_REL = 1e-9          # relative tolerance when comparing latencies


@dataclass(frozen=True)
class TargetBatch:
    """The iteration a split is tuned for (R in Hels), and the KV its sequences must hold.

    ``batch_size`` sequences decode one token each over ``context_tokens`` of KV; every one
    must be able to grow to ``max_context_tokens``. ``prefill_tokens`` (one prompt chunk, 0 by
    default) adds the prompt work a steady stream brings per decode step — about
    ``batch_size x prompt / output`` tokens — for splits tuned to throughput rather than TPOT.
    """

    batch_size: int = 64
    context_tokens: int = 1024
    max_context_tokens: int | None = None     # default: context_tokens
    prefill_tokens: int = 0
    block_size: int = 16

    def __post_init__(self):
        for name in ("batch_size", "context_tokens", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TargetBatch.{name} must be >= 1, got {getattr(self, name)}")
        if self.prefill_tokens < 0:
            raise ValueError(f"TargetBatch.prefill_tokens must be >= 0, got {self.prefill_tokens}")
        if self.max_context_tokens is None:
            object.__setattr__(self, "max_context_tokens", self.context_tokens)
        if self.max_context_tokens < self.context_tokens:
            raise ValueError("TargetBatch.max_context_tokens must be >= context_tokens")

    @property
    def tokens(self) -> int:
        """Tokens through the projections and FFN: one per decode plus the prompt chunk."""
        return self.batch_size + self.prefill_tokens

    @property
    def kv_tokens(self) -> int:
        """KV tokens the decode attention reads."""
        return self.batch_size * self.context_tokens

    @property
    def reserved_kv_tokens(self) -> int:
        """KV tokens (whole blocks) the batch must be able to hold at its longest."""
        blocks = -(-self.max_context_tokens // self.block_size)
        return self.batch_size * blocks * self.block_size

    def cost_batch(self) -> Batch:
        """The cost model's Batch for this iteration."""
        pre = (self.prefill_tokens,) if self.prefill_tokens else ()
        return Batch(prefill_tokens=pre, decode_context=(self.context_tokens,) * self.batch_size)

    def time_s(self, timer) -> float:
        """Seconds of this iteration on an IterationTimer."""
        pre = np.array([self.prefill_tokens] if self.prefill_tokens else [], dtype=np.int64)
        return float(timer.time(pre, np.zeros_like(pre), self.batch_size, self.kv_tokens,
                                self.batch_size + len(pre)))


@dataclass(frozen=True)
class DeviceFit:
    """The compute part of f_j for one device type, Hels's linear model

        compute = a * H_j * tokens + b * P_j * kv_tokens + c        (H_j as a share of heads)

    fitted by least squares on cost-model samples of one rank at the target batch, its head
    share and KV share each over {0, 1/8, 1/4, 1/2, 3/4, 1}. ``a`` is per head-token (the
    projection and FFN work a head share brings), ``b`` per KV token read, ``c`` what does not
    move with heads (norms, embedding, the LM head's vocabulary slice). Roofline kinks make
    it approximate; ``max_rel_err`` says how much over the samples. The samples hold the
    batch fixed, so the coefficients describe that batch: do not extrapolate far from it
    (a memory-bound decode GEMM costs its weight reads once per step, not per token).
    """

    device: str
    a: float
    b: float
    c: float
    r2: float
    max_rel_err: float
    samples: int

    def compute_s(self, h: float, p: float, batch: TargetBatch) -> float:
        return self.a * h * batch.tokens + self.b * p * batch.kv_tokens + self.c


@dataclass
class Candidate:
    """One allocation, evaluated: heads, KV shares, f_j, memory."""

    heads: tuple[int | float, ...]
    kv_shares: tuple[float, ...]
    layout: Layout
    f_s: tuple[float, ...]           # the fit's f_j, what the search compares
    comm_s: float
    memory: MemoryPlan
    batch_oom: list[str]
    exact_f_s: tuple[float, ...] | None = None     # the cost model's, filled on demand

    @property
    def max_f_s(self) -> float:
        return max(self.f_s)

    @property
    def feasible(self) -> bool:
        return not self.memory.oom and not self.batch_oom

    def slack_bytes(self, batch: TargetBatch) -> np.ndarray:
        return np.array([r.kv_bytes - r.kv_bytes_per_token * batch.reserved_kv_tokens
                         for r in self.memory.ranks])


def _lex_better(a: Sequence[float], b: Sequence[float]) -> bool:
    """Is ``a``'s latencies sorted slowest first lexicographically below ``b``'s?"""
    for x, y in zip(sorted(a, reverse=True), sorted(b, reverse=True)):
        if x < y * (1 - _REL):
            return True
        if x > y * (1 + _REL):
            return False
    return False


class Problem:
    """One TP group over ``devices`` on ``link``, a target batch, and the shared evaluation:
    capability, the per-device fits of f_j, memory plans and communication."""

    def __init__(self, model: ModelSpec, devices: Sequence[DeviceSpec], link: LinkSpec | None,
                 batch: TargetBatch = TargetBatch(), cost_model: CostModel | None = None, *,
                 memory_utilization: float = 0.9, max_batched_tokens: int = 8192,
                 max_num_seqs: int = 256):
        if not devices:
            raise ValueError("a partition needs at least one device")
        if len(devices) > 1 and link is None:
            raise ValueError("a partition over several devices needs a link")
        self.model, self.devices, self.link = model, tuple(devices), link
        self.batch, self.cost_model = batch, cost_model or CostModel()
        self.mem_kw = dict(memory_utilization=memory_utilization,
                           max_batched_tokens=max_batched_tokens, max_num_seqs=max_num_seqs)
        self.total_heads = model.num_heads
        self._fits: dict[str, DeviceFit] = {}
        self._capability: tuple[float, ...] | None = None
        self._evals: dict[tuple, Candidate] = {}

    @property
    def n(self) -> int:
        return len(self.devices)

    # -- capability and fits -----------------------------------------------------------------
    @property
    def capability(self) -> tuple[float, ...]:
        """Target-batch iterations per second of each device alone with the whole model."""
        if self._capability is None:
            b, by_name = self.batch, {}
            for d in self.devices:
                if d.name not in by_name:
                    timer = self.cost_model.timer(self.model, Layout.uniform(d))
                    by_name[d.name] = 1.0 / b.time_s(timer)
            self._capability = tuple(by_name[d.name] for d in self.devices)
        return self._capability

    def fit(self, device: DeviceSpec) -> DeviceFit:
        if device.name not in self._fits:
            self._fits[device.name] = self._fit(device)
        return self._fits[device.name]

    def _fit(self, device: DeviceSpec) -> DeviceFit:
        n, rows, ys = max(self.n, 2), [], []
        tb = self.batch
        batch = tb.cost_batch()
        grid = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)
        for h in grid:
            for p in grid:
                hs = (h,) + ((1 - h) / (n - 1),) * (n - 1)
                ps = hs if p == h else (p,) + ((1 - p) / (n - 1),) * (n - 1)
                lay = Layout.heterogeneous((device,) * n, self.link or _NO_LINK,
                                           head_shares=hs, ffn_shares=hs, kv_shares=ps)
                timer = self.cost_model.timer(self.model, lay)
                ys.append(sum(r["time_s"] for r in timer.breakdown(batch) if r["rank"] == 0))
                rows.append((h * tb.tokens, p * tb.kv_tokens, 1.0))
        X, y = np.array(rows), np.array(ys)
        scale = np.abs(X).max(axis=0)
        coef, *_ = np.linalg.lstsq(X / scale, y, rcond=None)
        a, b, c = coef / scale
        pred = X @ (coef / scale)
        r2 = 1.0 - float(np.sum((y - pred) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-300))
        err = float(np.max(np.abs(pred - y) / np.maximum(y, 1e-12)))
        return DeviceFit(device.name, float(a), float(b), float(c), r2, err, len(y))

    # -- one allocation ----------------------------------------------------------------------
    def layout(self, heads: Sequence[float], kv: Sequence[float] | None = None) -> Layout:
        hs = tuple(h / self.total_heads for h in heads)
        hs = tuple(x / sum(hs) for x in hs) if abs(sum(hs) - 1) > 1e-12 else hs
        ks = hs if kv is None or all(abs(k - h) < 1e-12 for k, h in zip(kv, hs)) else tuple(kv)
        if self.n == 1:
            return Layout.uniform(self.devices[0])
        return Layout.heterogeneous(self.devices, self.link, head_shares=hs, ffn_shares=hs,
                                    kv_shares=ks)

    def evaluate(self, heads: Sequence[float], kv: Sequence[float] | None = None) -> Candidate:
        """f_j, communication and memory of an allocation (``kv=None``: KV tied to heads)."""
        lay = self.layout(heads, kv)
        key = (tuple(heads), lay.kv_shares)
        hit = self._evals.get(key)
        if hit is not None:
            return hit
        m, b, cal = self.model, self.batch, self.cost_model.calibration
        tied = lay.kv_shares == lay.head_shares
        comm = 0.0
        if self.n > 1:
            act = float(b.tokens * m.hidden_size * m.dtype_bytes)
            comm = 2 * m.num_layers * float(cal.link_time(lay.link, "collective", act, self.n))
            moved = max(RankShape.of(m, h, h, p, tied).kv_transfer_bytes(b.batch_size,
                                                                          b.prefill_tokens)
                        for h, p in zip(lay.head_shares, lay.kv_shares))
            if moved:
                comm += m.num_layers * float(cal.link_time(lay.link, "transfer", moved))
        f = tuple(self.fit(d).compute_s(h, p, b) + comm
                  for d, h, p in zip(self.devices, lay.head_shares, lay.kv_shares))
        plan = memory_plan(m, lay, **self.mem_kw)
        short = []
        for r in plan.ranks:
            need = r.kv_bytes_per_token * b.reserved_kv_tokens
            if r.kv_bytes >= 0 and need > r.kv_bytes:
                short.append(f"{r.device} (rank {r.rank}) short by {(need - r.kv_bytes) / GiB:.2f}"
                             f" GiB: the target batch's KV ({b.reserved_kv_tokens} tokens x "
                             f"{r.kv_bytes_per_token / 2**10:.0f} KiB) = {need / GiB:.2f} GiB > "
                             f"{r.kv_bytes / GiB:.2f} GiB left after weights and reserve")
        cand = Candidate(tuple(heads), lay.kv_shares, lay, f, comm, plan, short)
        self._evals[key] = cand
        return cand

    # -- helpers the policies share ----------------------------------------------------------
    def proportional_heads(self, weights: Sequence[float]) -> tuple[int, ...]:
        """Whole heads in proportion to ``weights`` (largest remainder, ties to the lower rank)."""
        w = np.asarray(weights, float)
        exact = self.total_heads * w / w.sum()
        heads = np.floor(exact).astype(int)
        for i in sorted(range(self.n), key=lambda j: (-(exact[j] - heads[j]), j)):
            if heads.sum() >= self.total_heads:
                break
            heads[i] += 1
        return tuple(int(h) for h in heads)

    def kv_shares(self, rule: str, heads: Sequence[int]) -> tuple[float, ...] | None:
        """P_j for ``heads`` under ``rule``: ``tied`` (P_j = H_j / heads: None), ``memory`` (in
        proportion to the memory each GPU has left after weights and reserve: Hels's rule) or
        ``balance`` (the P minimising max f_j with each P_j capped by that memory)."""
        if rule == "tied":
            return None
        free = np.array([max(r.kv_bytes, 0.0) for r in self.evaluate(heads).memory.ranks])
        if free.sum() <= 0:
            return None
        if rule == "memory":
            return tuple(float(x) for x in free / free.sum())
        if rule != "balance":
            raise ValueError(f"unknown KV rule {rule!r}; known: tied, memory, balance")
        m, b = self.model, self.batch
        per_token = m.num_layers * 2 * m.num_kv_heads * m.head_dim * m.dtype_bytes
        cap = np.minimum(free / (per_token * b.reserved_kv_tokens), 1.0)
        if cap.sum() < 1:                            # nothing fits: spread by memory
            return tuple(float(x) for x in free / free.sum())
        return self._balance(np.asarray(heads, float) / self.total_heads, cap)

    def _balance(self, hs: np.ndarray, cap: np.ndarray) -> tuple[float, ...]:
        """min over P of max_j (base_j + slope_j P_j) + transfer(max_j |P_j - h_j|), for
        0 <= P_j <= cap_j and sum P = 1: water-fill under each bound delta on the mismatch
        (a grid over [0, 1]) and keep the best. delta = 0 is the tied split where it fits."""
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
        for _ in range(60):                          # bisection on T: sum P_j(T) = 1
            mid = 0.5 * (t_lo + t_hi)
            below = np.clip((mid[:, None] - base) / slope, lo, hi).sum(axis=1) < 1
            t_lo, t_hi = np.where(below, mid, t_lo), np.where(below, t_hi, mid)
        p = np.clip((t_hi[:, None] - base) / slope, lo, hi)
        p = p / p.sum(axis=1, keepdims=True)
        unit = RankShape.of(m, 0.0, 0.0, 1.0, False).kv_transfer_bytes(b.batch_size,
                                                                       b.prefill_tokens)
        mis = np.abs(p - hs).max(axis=1)
        comm = np.array([m.num_layers * float(cal.link_time(self.link, "transfer", x * unit))
                         if x > 1e-12 else 0.0 for x in mis])
        total = np.where(ok, (base + slope * p).max(axis=1) + comm, np.inf)
        return tuple(float(x) for x in p[int(np.argmin(total))])

    def exact(self, cand: Candidate) -> tuple[float, ...]:
        """f_j from the cost model itself: rank j's operators plus every link operator, so
        that max_j is the cost model's iteration time for the target batch."""
        if cand.exact_f_s is None:
            b = self.batch
            rows = self.cost_model.timer(self.model, cand.layout).breakdown(b.cost_batch())
            link = sum(r["time_s"] for r in rows if r["rank"] < 0)
            cand.exact_f_s = tuple(link + sum(r["time_s"] for r in rows if r["rank"] == j)
                                   for j in range(self.n))
        return cand.exact_f_s

    def candidate(self, heads: Sequence[int], rule: str) -> Candidate:
        return self.evaluate(heads, self.kv_shares(rule, heads))

    def repair(self, heads: tuple[int, ...], rule: str, log: list,
               target: str = "batch") -> tuple[int, ...]:
        """Move heads, one (or one per twin GPU) at a time, until the target batch fits
        (``target="batch"``: each time the move that most raises the group's KV capacity) or
        just the weights and reserve do (``"weights"``: the move that most raises the least
        memory left on any GPU), or until no move helps."""
        def fits(c: Candidate) -> bool:
            return c.feasible if target == "batch" else not c.memory.oom

        def score(c: Candidate) -> float:
            if target == "batch":
                return c.memory.kv_capacity_tokens
            return min(r.kv_bytes for r in c.memory.ranks)
        cur = self.candidate(heads, rule)
        for step in range(self.total_heads * self.n):
            log.append(_row(f"{rule}:repair", step, cur, "fits" if fits(cur) else "short"))
            if fits(cur):
                break
            best, most = None, score(cur)
            for src in range(self.n):
                for dst in range(self.n):
                    if dst == src or heads[src] == 0:
                        continue
                    for moved, _ in _moves(self, heads, cur, src, dst):
                        cand = self.candidate(moved, rule)
                        if (target == "weights" or not cand.memory.oom) and score(cand) > most:
                            best, most = (moved, cand), score(cand)
            if best is None:
                break
            heads, cur = best
        return heads


_NO_LINK = LinkSpec("none", 1e9, 1e-6)    # only to sample a 1-device group's ranks


def _move(heads: tuple[int, ...], src: int, dst: int) -> tuple[int, ...]:
    out = list(heads)
    out[src] -= 1
    out[dst] += 1
    return tuple(out)


def _row(rule: str, step: int, cand: Candidate, action: str) -> dict:
    return {"rule": rule, "step": step, "heads": cand.heads,
            "kv_shares": tuple(round(p, 4) for p in cand.kv_shares),
            "f_s": tuple(cand.f_s), "max_f_s": cand.max_f_s, "comm_s": cand.comm_s,
            "feasible": cand.feasible, "action": action}


@dataclass(frozen=True)
class Partition:
    """A policy's split of one TP group: the layout to build the instance from, and why."""

    policy: str
    problem: Problem = field(repr=False)
    chosen: Candidate = field(repr=False)
    iterations: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    note: str = ""

    @property
    def layout(self) -> Layout:
        return self.chosen.layout

    @property
    def heads(self) -> tuple:
        return self.chosen.heads

    @property
    def kv_shares(self) -> tuple[float, ...]:
        return self.chosen.kv_shares

    @property
    def f_s(self) -> tuple[float, ...]:
        """f_j per GPU from the cost model (compute of rank j plus the group's links)."""
        return self.problem.exact(self.chosen)

    @property
    def max_f_s(self) -> float:
        """The cost model's time for the target decode step on this layout."""
        return max(self.f_s)

    @property
    def f_fit_s(self) -> tuple[float, ...]:
        """f_j per GPU as the fitted linear model predicts it (what the search compared)."""
        return self.chosen.f_s

    @property
    def fits(self) -> pd.DataFrame:
        """The per-device-type regressions behind ``f_fit_s``."""
        return pd.DataFrame([vars(self.problem.fit(d)) for d in
                             {d.name: d for d in self.problem.devices}.values()])

    @property
    def memory(self) -> MemoryPlan:
        return self.chosen.memory

    @property
    def oom(self) -> list[str]:
        """The instance's OOM lines (weights and reserve), then the target batch's KV lines."""
        return list(self.memory.oom) + list(self.chosen.batch_oom)

    @property
    def feasible(self) -> bool:
        return self.chosen.feasible

    @property
    def kv_tied(self) -> bool:
        return self.layout.kv_shares == self.layout.head_shares

    def table(self) -> pd.DataFrame:
        """One row per GPU: heads, shares, capability, memory and f_j."""
        pr, lay, b = self.problem, self.layout, self.problem.batch
        rows = []
        for j, (d, r) in enumerate(zip(pr.devices, self.memory.ranks)):
            rows.append({"rank": j, "device": d.name, "heads": self.heads[j],
                         "head_share": lay.head_shares[j], "ffn_share": lay.ffn_shares[j],
                         "kv_share": lay.kv_shares[j], "capability_per_s": pr.capability[j],
                         "weights_gib": r.weight_bytes / GiB, "reserve_gib": r.reserve_bytes / GiB,
                         "kv_need_gib": r.kv_bytes_per_token * b.reserved_kv_tokens / GiB,
                         "kv_free_gib": r.kv_bytes / GiB, "f_fit_s": self.f_fit_s[j],
                         "f_s": self.f_s[j]})
        return pd.DataFrame(rows)


# -- the policies ---------------------------------------------------------------------------

@PARTITIONS.register("equal")
class Equal:
    """vLLM: 1/N of the heads, FFN columns and KV on each of the N GPUs, whatever they are.
    Where N does not divide the heads (vLLM refuses such a group) the shares stay 1/N: the
    cost model's idealisation of fractional heads."""

    def partition(self, problem: Problem) -> Partition:
        heads = tuple(problem.total_heads / problem.n for _ in range(problem.n))
        if all(float(h).is_integer() for h in heads):
            heads = tuple(int(h) for h in heads)
        return Partition("equal", problem, problem.evaluate(heads))


@PARTITIONS.register("hexgen")
class HexGen:
    """Heads (with their FFN columns and their KV, tied) in proportion to capability: a static
    split, no latency search. Heads move off a GPU only where the weights and reserve do not
    fit (``fit_batch=False``, the issue's HexGen: its KV budget is whatever its compute split
    leaves) or, with ``fit_batch=True``, until the target batch's KV fits too (a HexGen whose
    planner rejects plans that cannot hold the batch)."""

    def __init__(self, fit_batch: bool = False):
        self.fit_batch = bool(fit_batch)

    def partition(self, problem: Problem) -> Partition:
        log: list = []
        heads = problem.proportional_heads(problem.capability)
        heads = problem.repair(heads, "tied", log, "batch" if self.fit_batch else "weights")
        return Partition("hexgen", problem, problem.evaluate(heads), pd.DataFrame(log))


@PARTITIONS.register("hels")
class Hels:
    """Hels's step-wise min-max search over whole heads, for each KV rule in ``kv_rules``.

    From heads in proportion to capability (repaired to fit memory), each step computes the KV
    shares P_j from memory under the rule (see :meth:`Problem.kv_shares`; ``memory`` is the
    source's), evaluates f_j, and moves one head from the slowest GPU to the fastest one that
    can take it (the next fastest if that does not help or does not fit). It stops when the
    latencies, sorted slowest first, no longer fall lexicographically — the plain "max no
    longer falls" test stops at once when two identical GPUs tie for slowest — or after
    heads x GPUs steps. Every step strictly lowers that order, so the search terminates.

    The greedy can end above another allocation it never visited, so the result is the best
    (lowest max f_j, ties to the earliest) of every memory-feasible allocation the searches
    stepped through, the equal and HexGen splits included: never worse than either where they
    fit (equal only where the heads divide evenly, as vLLM requires: otherwise its shares are
    fractional heads, which Hels does not place). That last comparison takes f_j from the cost model itself rather than from the fit
    (the source measured its finalists; a fit off by a fraction of a percent would otherwise
    let the search's pick lose to HexGen by that fraction).
    """

    RULES = ("memory", "balance", "tied")

    def __init__(self, kv_rules: Sequence[str] = RULES, max_steps: int | None = None):
        unknown = set(kv_rules) - set(self.RULES)
        if unknown or not kv_rules:
            raise ValueError(f"kv_rules must be a non-empty subset of {self.RULES}, "
                             f"got {list(kv_rules)}")
        self.kv_rules, self.max_steps = tuple(kv_rules), max_steps

    def partition(self, problem: Problem) -> Partition:
        log: list = []
        seen = [(name, cls().partition(problem).chosen) for name, cls in
                (("equal", Equal), ("hexgen", HexGen))]
        seen = [(n, c) for n, c in seen if all(float(h).is_integer() for h in c.heads)]
        start0 = problem.proportional_heads(problem.capability)
        limit = self.max_steps or problem.total_heads * problem.n
        for rule in self.kv_rules:
            heads = problem.repair(start0, rule, log)
            cur = problem.candidate(heads, rule)
            for step in range(limit):
                seen.append((f"{rule} step {step}", cur))
                nxt, action = self._step(problem, heads, cur, rule)
                log.append(_row(rule, step, cur, action))
                if nxt is None:
                    break
                heads, cur = nxt
        if any(c.feasible for _, c in seen):
            seen = [(lab, c) for lab, c in seen if c.feasible]
        else:   # nothing holds the target batch: hold the most, then be fastest
            most = max(c.memory.kv_capacity_tokens for _, c in seen)
            seen = [(lab, c) for lab, c in seen if c.memory.kv_capacity_tokens == most]
        label, best = seen[0]
        for lab, cand in seen[1:]:
            if max(problem.exact(cand)) < max(problem.exact(best)) * (1 - _REL):
                label, best = lab, cand
        return Partition("hels", problem, best, pd.DataFrame(log), note=f"best: {label}")

    @staticmethod
    def _step(problem: Problem, heads, cur: Candidate, rule: str):
        f = np.asarray(cur.f_s)
        for src in np.argsort(-f, kind="stable"):
            if heads[src] == 0:
                continue
            for dst in np.argsort(f, kind="stable"):
                if dst == src:
                    continue
                for moved, action in _moves(problem, heads, cur, int(src), int(dst)):
                    cand = problem.candidate(moved, rule)
                    if cand.feasible and _lex_better(cand.f_s, cur.f_s):
                        return (moved, cand), action
        return None, "stop: no move lowers the latencies"


def _twins(problem: Problem, heads, cur: Candidate, j: int) -> list[int]:
    """GPUs of the same type holding the same shares as GPU j (j included)."""
    d = problem.devices
    return [k for k in range(problem.n) if d[k].name == d[j].name and heads[k] == heads[j]
            and abs(cur.kv_shares[k] - cur.kv_shares[j]) < 1e-9]


def _moves(problem: Problem, heads, cur: Candidate, src: int, dst: int):
    """One head from each twin of ``src`` to the twins of ``dst`` in turn (identical GPUs
    move together: one alone cannot lower a maximum they share, since the transfers the move
    adds slow every rank), then one head from ``src`` to ``dst``."""
    gs, gd = _twins(problem, heads, cur, src), _twins(problem, heads, cur, dst)
    if dst not in gs and (len(gs) > 1 or len(gd) > 1):
        out = list(heads)
        for i, k in enumerate(gs):
            out[k] -= 1
            out[gd[i % len(gd)]] += 1
        yield tuple(out), f"move {gs}->{gd}"
    yield _move(heads, src, dst), f"move {src}->{dst}"


def partition(policy: str, model: ModelSpec, devices: Sequence[DeviceSpec],
              link: LinkSpec | None, *, batch: TargetBatch | None = None,
              cost_model: CostModel | None = None, memory_utilization: float = 0.9,
              max_batched_tokens: int = 8192, max_num_seqs: int = 256, **params) -> Partition:
    """Split ``model`` over ``devices`` with the registered ``policy`` (``equal``, ``hexgen``,
    ``hels``), tuned for ``batch``; ``params`` go to the policy."""
    problem = Problem(model, devices, link, batch or TargetBatch(), cost_model,
                      memory_utilization=memory_utilization,
                      max_batched_tokens=max_batched_tokens, max_num_seqs=max_num_seqs)
    return PARTITIONS.create(policy, **params).partition(problem)
