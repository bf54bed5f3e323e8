"""Partition policies: how one model's heads, FFN columns and KV cache are cut over the
(possibly different) GPUs of one tensor-parallel group.

A policy answers ``partition(problem) -> Partition`` for a :class:`Problem` (model, devices,
link, and the :class:`TargetBatch` R the split is tuned for): ``equal`` (vLLM), ``hexgen``
(heads with their KV in proportion to capability) and ``hels`` (Hels's min-max search, the KV
share P_j decoupled from the heads H_j).

*Capability*: the rate at which the device alone would run the target batch through the whole
model (memory ignored), per the cost model — the blend of peak FLOP/s and memory bandwidth
that this batch's operators weigh. *f_j*: GPU j's latency for the target batch, its compute
fitted per device type on cost-model samples (:class:`DeviceFit`) plus the group's links (TP
all-reduces, and the head-dispatch transfers of a decoupled KV share). Ranks meet at every
all-reduce, so every f_j carries the slowest rank's transfer and max_j f_j is the cost model's
iteration time up to the fit's error. FFN columns travel with heads (ffn_share = H_j / heads):
one knob, and what a head move frees on one GPU it costs on another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from simcluster.cost.layout import Layout
from simcluster.cost.memory import MemoryPlan, memory_plan
from simcluster.cost.model import Batch, CostModel
from simcluster.models.operators import RankShape
from simcluster.hardware import DeviceSpec, LinkSpec
from simcluster.models import ModelSpec
from simcluster.policies.registry import PARTITIONS

GiB = 2**30
_REL = 1e-9                                   # relative tolerance when comparing latencies
_NO_LINK = LinkSpec("none", 1e9, 1e-6)        # only to sample the ranks of a 1-GPU group


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
                 max_num_seqs: int = 256):
        if not devices or (len(devices) > 1 and link is None):
            raise ValueError("a partition needs one or more devices, and a link for several")
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
        lay = (Layout.uniform(self.devices[0]) if self.n == 1 else Layout.heterogeneous(
            self.devices, self.link, head_shares=hs, ffn_shares=hs, kv_shares=ks))
        m, b, cal = self.model, self.batch, self.cost_model.calibration
        comm = 0.0
        if self.n > 1:
            act = float(b.batch_size * m.hidden_size * m.dtype_bytes)
            comm = 2 * m.num_layers * float(cal.link_time(lay.link, "collective", act, self.n))
            moved = max(RankShape.of(m, h, h, p, ks == hs).kv_transfer_bytes(b.batch_size, 0)
                        for h, p in zip(hs, ks))
            if moved:
                comm += m.num_layers * float(cal.link_time(lay.link, "transfer", moved))
        f = tuple(self.fit(d).compute_s(h, p, b) + comm for d, h, p in zip(self.devices, hs, ks))
        plan, short = memory_plan(m, lay, **self.mem_kw), []
        for r in plan.ranks:
            need = r.kv_bytes_per_token * b.reserved_kv_tokens
            if r.kv_bytes >= 0 and need > r.kv_bytes:
                short.append(f"{r.device} (rank {r.rank}) short by {(need - r.kv_bytes) / GiB:.2f}"
                             f" GiB: the target batch's KV ({b.reserved_kv_tokens} tokens) needs "
                             f"{need / GiB:.2f} GiB, {r.kv_bytes / GiB:.2f} GiB left")
        self._evals[key] = cand = Candidate(tuple(heads), lay, f, comm, plan, short)
        return cand

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
        if rule not in Hels.RULES:
            raise ValueError(f"unknown KV rule {rule!r}; known: {', '.join(Hels.RULES)}")
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


@dataclass(frozen=True)
class Partition:
    """A policy's split of one TP group: the layout to build the instance from, and why.
    ``f_s``: f_j per GPU from the cost model (``max_f_s`` is its time for the target batch);
    ``f_fit_s``: the fit's, which the search compared; ``oom``: the instance's OOM lines, then
    the target batch's KV shortfalls, each naming the device."""

    policy: str
    layout: Layout
    heads: tuple
    kv_shares: tuple[float, ...]
    f_s: tuple[float, ...]
    f_fit_s: tuple[float, ...]
    memory: MemoryPlan = field(repr=False)
    oom: tuple[str, ...]
    problem: Problem = field(repr=False)
    iterations: pd.DataFrame = field(repr=False)
    note: str = ""

    @classmethod
    def of(cls, policy: str, problem: Problem, cand: Candidate, log=(), note: str = ""):
        return cls(policy, cand.layout, cand.heads, cand.kv_shares, problem.exact(cand),
                   cand.f_s, cand.memory, tuple(cand.memory.oom) + tuple(cand.batch_oom),
                   problem, pd.DataFrame(list(log)), note)

    max_f_s = property(lambda self: max(self.f_s))
    feasible = property(lambda self: not self.oom)

    @property
    def fits(self) -> pd.DataFrame:
        """The per-device-type regressions behind ``f_fit_s``."""
        return pd.DataFrame([vars(self.problem.fit(d)) for d in
                             {d.name: d for d in self.problem.devices}.values()])

    def table(self) -> pd.DataFrame:
        """One row per GPU: heads, shares, capability, memory and f_j."""
        pr, lay, need = self.problem, self.layout, self.problem.batch.reserved_kv_tokens
        return pd.DataFrame([{
            "rank": j, "device": d.name, "heads": self.heads[j], "head_share": lay.head_shares[j],
            "ffn_share": lay.ffn_shares[j], "kv_share": lay.kv_shares[j],
            "capability_per_s": pr.capability[j], "weights_gib": r.weight_bytes / GiB,
            "reserve_gib": r.reserve_bytes / GiB, "kv_need_gib": r.kv_bytes_per_token * need / GiB,
            "kv_free_gib": r.kv_bytes / GiB, "f_fit_s": self.f_fit_s[j], "f_s": self.f_s[j]}
            for j, (d, r) in enumerate(zip(pr.devices, self.memory.ranks))])


# -- the policies ---------------------------------------------------------------------------

@PARTITIONS.register("equal")
class Equal:
    """vLLM: 1/N of the heads, FFN columns and KV on each GPU (1/N even where N does not
    divide the heads, which vLLM refuses: the cost model's fractional heads)."""

    def partition(self, problem: Problem) -> Partition:
        heads = tuple(problem.total_heads / problem.n for _ in range(problem.n))
        if all(float(h).is_integer() for h in heads):
            heads = tuple(int(h) for h in heads)
        return Partition.of("equal", problem, problem.evaluate(heads))


@PARTITIONS.register("hexgen")
class HexGen:
    """Heads (with FFN columns and KV, tied) in proportion to capability: a static split, no
    search. Heads move only where weights and reserve do not fit (the issue's HexGen: its KV
    room is what its compute split leaves) or, ``fit_batch=True``, until the batch fits."""

    def __init__(self, fit_batch: bool = False):
        self.fit_batch = bool(fit_batch)

    def partition(self, problem: Problem) -> Partition:
        log: list = []
        heads = problem.repair(problem.proportional_heads(problem.capability), "tied", log,
                               "batch" if self.fit_batch else "weights")
        return Partition.of("hexgen", problem, problem.evaluate(heads), log)


@PARTITIONS.register("hels")
class Hels:
    """Hels's step-wise min-max search over whole heads, once per KV rule in ``kv_rules``.

    From heads in proportion to capability (repaired to fit the target batch), each step sets
    P_j by the rule (:meth:`Problem.candidate`; ``memory`` is the source's), evaluates f_j and
    moves a head from the slowest GPU to the fastest that can take it (the next if that fails;
    twins move together). It stops when the latencies sorted slowest first no longer fall
    lexicographically (plain "max no longer falls" stops at once when twins tie for slowest),
    or after heads x GPUs steps; each step lowers that order, so it terminates.

    The greedy can stop above an allocation it never visited: the result is the best feasible
    one seen, equal and HexGen included, so never worse than either where they fit (equal if
    the heads divide evenly, as vLLM needs), compared by the cost model's f_j rather than the
    fit's (the source measured). If nothing holds the batch: the most KV, then the fastest.
    """

    RULES = ("memory", "balance", "tied")

    def __init__(self, kv_rules: Sequence[str] = RULES, max_steps: int | None = None):
        if not kv_rules or set(kv_rules) - set(self.RULES):
            raise ValueError(f"kv_rules must be a non-empty subset of {self.RULES}, "
                             f"got {list(kv_rules)}")
        self.kv_rules, self.max_steps = tuple(kv_rules), max_steps

    def partition(self, problem: Problem) -> Partition:
        log: list = []
        seen = [(p.policy, problem.evaluate(p.heads)) for p in
                (Equal().partition(problem), HexGen().partition(problem))
                if all(float(h).is_integer() for h in p.heads)]
        start = problem.proportional_heads(problem.capability)
        for rule in self.kv_rules:
            heads = problem.repair(start, rule, log)
            cur = problem.candidate(heads, rule)
            for step in range(self.max_steps or problem.total_heads * problem.n):
                seen.append((f"{rule} step {step}", cur))
                nxt, action = self._step(problem, heads, cur, rule)
                log.append(_row(rule, step, cur, action))
                if nxt is None:
                    break
                heads, cur = nxt
        most = max(c.memory.kv_capacity_tokens for _, c in seen)
        seen = ([(lab, c) for lab, c in seen if c.feasible] or
                [(lab, c) for lab, c in seen if c.memory.kv_capacity_tokens == most])
        label, best = seen[0]
        for lab, cand in seen[1:]:
            if max(problem.exact(cand)) < max(problem.exact(best)) * (1 - _REL):
                label, best = lab, cand
        return Partition.of("hels", problem, best, log, note=f"best: {label}")

    @staticmethod
    def _step(problem: Problem, heads, cur: Candidate, rule: str):
        f, now = np.asarray(cur.f_s), _slowest_first(cur.f_s)
        for src in np.argsort(-f, kind="stable"):
            for dst in np.argsort(f, kind="stable"):
                for moved, action in _moves(problem, heads, cur, int(src), int(dst)):
                    cand = problem.candidate(moved, rule)
                    if cand.feasible and _slowest_first(cand.f_s) < now:
                        return (moved, cand), action
        return None, "stop: no move lowers the latencies"


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
