"""HexGen (Jiang et al., ICML'24): asymmetric pipeline stages over heterogeneous GPUs.

HexGen serves one model as a pipeline whose stages differ: each stage is a tensor-parallel
group of its own degree on its own GPUs, and runs its own number of layers. Its scheduler
chooses the groups (a genetic search over GPU groupings) and, for a grouping, the layer split by
dynamic programming. ``hexgen`` does both, exhaustively where HexGen searches:

* **groupings**: each stage is GPUs of one type (a TP group of identical GPUs, equal split),
  its degree dividing the model's heads; every grouping of the given GPUs into such stages, in
  every stage order, is tried (a handful for the fleets here; HexGen's genetic search exists
  because real clusters have thousands);
* **layer split** (:func:`split_layers`): a DP over stages in order, ``best[i][l]`` = the least
  time of the first i stages running l layers, each stage at least one layer and within its
  memory: weights of its layers (plus the embedding on the first stage, the LM head on the
  last), the activation reserve, and the target batch's KV of its layers.

The default objective (``objective = "latency"``) is what simcluster charges an iteration of
the target batch: one batch passes the stages in turn (the cost model does not overlap
micro-batches), so the time is the *sum* of the stages' times plus the hand-offs — the latency
a token sees, which is what Hels's TPOT table compares. HexGen's own DP maximises pipelined
throughput under a latency deadline; with micro-batches in flight that is set by the
*slowest* stage (``objective = "throughput"``), which balances the stages instead. If no
grouping holds the target batch, the split holding the most KV is taken, then the best
objective.
"""

from __future__ import annotations

from itertools import permutations, product

import numpy as np

from simcluster.lazy import lazy_module
from simcluster.cost.layout import Layout
from simcluster.cost.memory import memory_plan, rank_weight_bytes
from simcluster.cost.model import IterationTimer
from simcluster.models.operators import RankShape
from simcluster.policies.partition.problem import GiB, Problem
from simcluster.policies.partition.result import Partition
from simcluster.policies.registry import PARTITIONS

pd = lazy_module("pandas")     # (imported when a frame is first built)

_EMPTY = np.zeros(0, dtype=np.int64)


def _partitions(n: int, allowed) -> list[tuple[int, ...]]:
    """Ways to cut n identical GPUs into TP groups of allowed sizes (non-increasing)."""
    out = []

    def rec(left, top, acc):
        if left == 0:
            out.append(tuple(acc))
            return
        for t in range(min(left, top), 0, -1):
            if t in allowed:
                rec(left - t, t, acc + [t])
    rec(n, n, [])
    return out


class _Stage:
    """A candidate stage: ``tp`` GPUs of one type, and what one of its layers costs."""

    def __init__(self, problem: Problem, device, tp: int):
        m, b = problem.model, problem.batch
        self.device, self.tp = device, tp
        rs0 = RankShape.of(m, 1 / tp, 1 / tp, 1 / tp, True)
        rho = problem.recompute if 2 * rs0.stored_kv_heads * m.head_dim > m.hidden_size else 0.0
        self.rho = rho
        lay = Layout(devices=(device,) * tp, tp=tp, link=problem.link if tp > 1 else None,
                     recompute_shares=(rho,) * tp if rho else ())
        self.layout = lay
        cal = problem.cost_model.calibration

        def t(layers, first=False, last=False):
            timer = IterationTimer(cal, m, lay, layers=layers, first=first, last=last)
            return timer.time(_EMPTY, _EMPTY, b.batch_size, b.kv_tokens, b.batch_size)
        self.per_layer = t(1)
        self.extra = {(f, la): t(0, f, la) for f in (False, True) for la in (False, True)}
        plan = memory_plan(m, lay, **problem.mem_kw)
        r = plan.ranks[0]
        self.usable, self.reserve = r.mem_bytes, r.reserve_bytes
        self.kv_per_layer = r.kv_bytes_per_token / m.num_layers      # per token
        self.rs = RankShape.of(m, 1 / tp, 1 / tp, 1 / tp, True, rho)
        self.need_tokens = b.reserved_kv_tokens
        self.model = m

    def free_after_weights(self, layers: int, first: bool, last: bool) -> float:
        w = rank_weight_bytes(self.model, self.rs, layers, first, last, self.tp)
        return self.usable - w - self.reserve

    def capacity(self, layers: int, first: bool, last: bool) -> float:
        """KV tokens this stage holds with ``layers`` layers."""
        free = self.free_after_weights(layers, first, last)
        return free / (self.kv_per_layer * layers) if free >= 0 else -1.0

    def time(self, layers: int, first: bool, last: bool) -> float:
        return layers * self.per_layer + self.extra[(first, last)]


def split_layers(stages: list[_Stage], num_layers: int, need_tokens: int | None,
                 objective: str = "latency"):
    """The layer split minimising the summed stage time (``objective = "latency"``) or the
    slowest stage's time (``"throughput"``: pipelined micro-batches) with every stage holding
    ``need_tokens`` of KV (``None``: maximise the least capacity, then time). Returns (layers
    per stage, objective value) or None if no split has each stage at least one layer."""
    combine = (lambda a, b: a + b) if objective == "latency" else max
    n, k = num_layers, len(stages)
    if k > n:
        return None
    inf = (float("-inf"), float("inf"))
    # best[i][l]: (least capacity so far, time) for stages < i running l layers
    best = [[None] * (n + 1) for _ in range(k + 1)]
    arg = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = (float("inf"), 0.0)
    for i, st in enumerate(stages):
        first, last = i == 0, i == k - 1
        for done in range(i, n + 1):
            if best[i][done] is None:
                continue
            cap0, t0 = best[i][done]
            hi = n - done if last else n - done - (k - i - 1)
            for layers in range(1, hi + 1):
                if last and done + layers != n:
                    continue
                cap = st.capacity(layers, first, last)
                if cap < 0 or (need_tokens is not None and cap < need_tokens):
                    continue
                val = (min(cap0, cap), combine(t0, st.time(layers, first, last)))
                key = (0.0, val[1]) if need_tokens is not None else (-val[0], val[1])
                cur = best[i + 1][done + layers]
                ckey = None if cur is None else ((0.0, cur[1]) if need_tokens is not None
                                                 else (-cur[0], cur[1]))
                if cur is None or key < ckey:
                    best[i + 1][done + layers] = val
                    arg[i + 1][done + layers] = layers
    if best[k][n] is None or best[k][n] == inf:
        return None
    split, left = [], n
    for i in range(k, 0, -1):
        split.append(arg[i][left])
        left -= arg[i][left]
    return tuple(reversed(split)), best[k][n][1]


@PARTITIONS.register("hexgen")
class HexGen:
    """HexGen's asymmetric pipeline stages (module docstring). ``objective``: ``"latency"``
    (the summed stage times a token sees, default) or ``"throughput"`` (HexGen's pipelined
    objective: the slowest stage)."""

    def __init__(self, objective: str = "latency"):
        if objective not in ("latency", "throughput"):
            raise ValueError(f"objective must be 'latency' or 'throughput', got {objective!r}")
        self.objective = objective

    def partition(self, problem: Problem) -> Partition:
        m, devices = problem.model, problem.devices
        allowed = {t for t in range(1, len(devices) + 1)
                   if m.num_heads % t == 0 and (m.num_kv_heads % t == 0 or t % m.num_kv_heads == 0)}
        types: dict[str, list] = {}
        for d in devices:
            types.setdefault(d.name, []).append(d)
        cache: dict = {}

        def stage(name, tp):
            if (name, tp) not in cache:
                cache[(name, tp)] = _Stage(problem, types[name][0], tp)
            return cache[(name, tp)]

        rows, found = [], []
        per_type = [[(name, cut) for cut in _partitions(len(ds), allowed)]
                    for name, ds in types.items()]
        for combo in product(*per_type):
            groups = [(name, t) for name, cut in combo for t in cut]
            for order in sorted(set(permutations(groups))):
                stages = [stage(name, t) for name, t in order]
                for need in (problem.batch.reserved_kv_tokens, None):
                    got = split_layers(stages, m.num_layers, need, self.objective)
                    if got is not None:
                        break
                if got is None:
                    continue
                layers, t = got
                handoff = (len(stages) - 1) * float(problem.cost_model.calibration.link_time(
                    problem.link, "transfer",
                    float(problem.batch.batch_size * m.hidden_size * m.dtype_bytes)))
                fits = need is not None
                cap = min(s.capacity(n, i == 0, i == len(stages) - 1)
                          for i, (s, n) in enumerate(zip(stages, layers)))
                rows.append({"stages": [f"{name}x{tp}" for name, tp in order],
                             "layers": layers, "objective_s": t + handoff, "fits_batch": fits,
                             "kv_capacity_tokens": int(cap)})
                found.append((not fits, -cap if not fits else 0.0, t + handoff, order, layers))
        if not found:
            # no grouping holds the weights: report the plainest pipeline (one stage per
            # device, layers split evenly) with its memory plan's OOM, as the other
            # partitions report theirs, instead of failing
            order = [(d.name, 1) for d in devices]
            base, extra = divmod(m.num_layers, len(devices))
            layers = [base + (1 if i < extra else 0) for i in range(len(devices))]
            return self._result(problem, order, layers, types, pd.DataFrame(rows))
        *_, order, layers = min(found, key=lambda f: f[:3])
        return self._result(problem, order, layers, types, pd.DataFrame(rows))

    @staticmethod
    def _result(problem: Problem, order, layers, types, log) -> Partition:
        m, b = problem.model, problem.batch
        pools = {name: list(ds) for name, ds in types.items()}
        groups, rc = [], []
        for name, tp in order:
            groups.append([pools[name].pop(0) for _ in range(tp)])
            rs0 = RankShape.of(m, 1 / tp, 1 / tp, 1 / tp, True)
            saves = 2 * rs0.stored_kv_heads * m.head_dim > m.hidden_size
            rc += [problem.recompute if saves else 0.0] * tp
        lay = Layout.staged(groups, layers, link=problem.link, stage_link=problem.link,
                            recompute_shares=rc if any(rc) else ())
        timer = problem.cost_model.timer(m, lay)
        per_stage = [st.time(_EMPTY, _EMPTY, b.batch_size, b.kv_tokens, b.batch_size)
                     for st in timer.stages]
        f = tuple(per_stage[s] for s, g in enumerate(groups) for _ in g)
        plan = memory_plan(m, lay, **problem.mem_kw)
        short = [f"{r.device} (stage {r.stage}, rank {r.rank}) short by "
                 f"{(r.kv_bytes_per_token * b.reserved_kv_tokens - r.kv_bytes) / GiB:.2f} GiB: "
                 f"the target batch's KV ({b.reserved_kv_tokens} tokens) needs "
                 f"{r.kv_bytes_per_token * b.reserved_kv_tokens / GiB:.2f} GiB, "
                 f"{r.kv_bytes / GiB:.2f} GiB left" for r in plan.ranks
                 if r.kv_bytes >= 0 and r.kv_bytes_per_token * b.reserved_kv_tokens > r.kv_bytes]
        heads = tuple(m.num_heads // len(g) for g in groups for _ in g)
        shares = tuple(1 / len(g) for g in groups for _ in g)
        lays = tuple(n for g, n in zip(groups, layers) for _ in g)
        desc = " + ".join(f"{g[0].name} tp{len(g)} x {n} layers" for g, n in zip(groups, layers))
        time_s = float(timer.time(_EMPTY, _EMPTY, b.batch_size, b.kv_tokens, b.batch_size))
        return Partition("hexgen", lay, heads, shares, f, f, plan,
                         tuple(plan.oom) + tuple(short), problem, log, desc, lays, time_s)
