"""Tensor-parallel splits over one group of different GPUs: vLLM's equal split, a static
capability-proportional head split, Hels as its abstract describes it, and an enhanced search.

* ``equal`` (vLLM): 1/N of the heads, FFN columns and KV on every GPU.
* ``hexgen_tp``: heads — with their FFN columns and KV, tied — in proportion to capability,
  whole heads by largest remainder; heads move only where weights and reserve do not fit, or
  (``fit_batch = true``) until the target batch fits. HexGen's tensor-parallel split alone;
  HexGen itself (``hexgen``, :mod:`.hexgen`) also chooses pipeline stages.
* ``hels``: the extended abstract's algorithm and nothing more (:class:`Hels`).
* ``hels_enhanced``: simcluster's earlier search, kept for comparison: three KV rules, a repair
  of the start until the target batch fits, and the best allocation seen — with the equal and
  head-split allocations among the candidates — so never worse than either (:class:`HelsEnhanced`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from simcluster.policies.partition.problem import (KV_RULES, _REL, Candidate, Problem, _moves,
                                                   _row, _slowest_first)
from simcluster.policies.partition.result import Partition
from simcluster.policies.registry import PARTITIONS


@PARTITIONS.register("equal")
class Equal:
    """vLLM: 1/N of the heads, FFN columns and KV on each GPU (1/N even where N does not
    divide the heads, which vLLM refuses: the cost model's fractional heads)."""

    def partition(self, problem: Problem) -> Partition:
        heads = tuple(problem.total_heads / problem.n for _ in range(problem.n))
        if all(float(h).is_integer() for h in heads):
            heads = tuple(int(h) for h in heads)
        return Partition.of("equal", problem, problem.evaluate(heads))


@PARTITIONS.register("hexgen_tp")
class HexGenTP:
    """Heads (with FFN columns and KV, tied) in proportion to capability: a static split, no
    search. Heads move only where weights and reserve do not fit (its KV room is what its
    compute split leaves) or, ``fit_batch=True``, until the batch fits."""

    def __init__(self, fit_batch: bool = False):
        self.fit_batch = bool(fit_batch)

    def partition(self, problem: Problem) -> Partition:
        log: list = []
        heads = problem.repair(problem.proportional_heads(problem.capability), "tied", log,
                               "batch" if self.fit_batch else "weights")
        return Partition.of("hexgen_tp", problem, problem.evaluate(heads), log)


@PARTITIONS.register("hels")
class Hels:
    """The Hels extended abstract's step-wise algorithm, alone.

    "In each iteration, we first calculate the KV cache allocation to each GPU according to
    their memory capability C_j. Then we obtain the latency based on the latency model f_j; if
    the overall latency no longer decreases, we obtain a near optimal head assignment [and] KV
    cache allocation. Otherwise, we allocate more heads to the GPUs with lower latency, and
    reclaim heads from the ones with higher latency."

    * start: vLLM's equal split (whole heads, the remainder to the first GPUs); if its weights
      do not fit, heads in proportion to the GPUs' memory;
    * each iteration: P_j in proportion to the memory each GPU has left after its weights and
      activation reserve (``memory`` rule); f_j from the per-device linear regression
      (:class:`~.problem.DeviceFit`) plus the links;
    * a step reclaims one head from every GPU whose f_j ties the maximum ("the ones with higher
      latency": with two identical slowest GPUs, moving from one alone cannot lower the max)
      and gives each to a GPU with the lowest f_j, lowest first;
    * stop when the maximum f_j no longer falls (or the step would not fit the weights), or
      after ``max_steps`` (default heads x GPUs). The result is the last allocation; it may not
      hold the target batch (its ``oom`` then names the shortfall) — the abstract has no repair.
    """

    def __init__(self, max_steps: int | None = None):
        if max_steps is not None and max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        self.max_steps = max_steps

    def partition(self, problem: Problem) -> Partition:
        log: list = []
        heads = problem.proportional_heads([1.0] * problem.n)
        cur = problem.candidate(heads, "memory")
        if cur.memory.oom:
            usable = [r.mem_bytes for r in cur.memory.ranks]
            heads = problem.proportional_heads(usable)
            cur = problem.candidate(heads, "memory")
        for step in range(problem.total_heads * problem.n if self.max_steps is None
                          else self.max_steps):
            nxt = self._step(problem, heads, cur)
            better = (nxt is not None and not nxt.memory.oom
                      and max(nxt.f_s) < max(cur.f_s) * (1 - _REL))
            log.append(_row("memory", step, cur, f"move to {nxt.heads}" if better else
                            "stop: the max latency no longer falls"))
            if not better:
                break
            heads, cur = nxt.heads, nxt
        return Partition.of("hels", problem, cur, log, note=f"{len(log)} iterations")

    @staticmethod
    def _step(problem: Problem, heads, cur: Candidate) -> Candidate | None:
        f = np.asarray(cur.f_s)
        slow = [j for j in range(problem.n) if f[j] >= f.max() * (1 - _REL) and heads[j] > 0]
        fast = [j for j in np.argsort(f, kind="stable") if j not in slow]
        if not slow or not fast:
            return None
        out = list(heads)
        for k, j in enumerate(slow):
            out[j] -= 1
            out[fast[k % len(fast)]] += 1
        return problem.candidate(tuple(out), "memory")


@PARTITIONS.register("hels_enhanced")
class HelsEnhanced:
    """simcluster's enhanced min-max search over whole heads, once per KV rule in ``kv_rules``.

    From heads in proportion to capability (repaired to fit the target batch), each step sets
    P_j by the rule (:meth:`Problem.candidate`; ``memory`` is the abstract's), evaluates f_j and
    moves a head from the slowest GPU to the fastest that can take it (the next if that fails;
    twins move together). It stops when the latencies sorted slowest first no longer fall
    lexicographically (plain "max no longer falls" stops at once when twins tie for slowest),
    or after heads x GPUs steps; each step lowers that order, so it terminates.

    The greedy can stop above an allocation it never visited: the result is the best feasible
    one seen, equal and the capability-proportional split (``hexgen_tp``) included, so never
    worse than either where they fit (equal if the heads divide evenly, as vLLM needs),
    compared by the cost model's f_j rather than the fit's. If nothing holds the batch: the
    most KV, then the fastest. None of this is in the abstract: ``hels`` is.
    """

    RULES = KV_RULES

    def __init__(self, kv_rules: Sequence[str] = KV_RULES, max_steps: int | None = None):
        if not kv_rules or set(kv_rules) - set(self.RULES):
            raise ValueError(f"kv_rules must be a non-empty subset of {self.RULES}, "
                             f"got {list(kv_rules)}")
        if max_steps is not None and max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        self.kv_rules, self.max_steps = tuple(kv_rules), max_steps

    def partition(self, problem: Problem) -> Partition:
        log: list = []
        seen = [(p.policy, problem.evaluate(p.heads)) for p in
                (Equal().partition(problem), HexGenTP().partition(problem))
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
        return Partition.of("hels_enhanced", problem, best, log, note=f"best: {label}")

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
