"""What a partition policy returns: the layout to build the instance from, and why."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simcluster.lazy import lazy_module
from simcluster.cost.layout import Layout
from simcluster.cost.memory import MemoryPlan

pd = lazy_module("pandas")     # (imported when a frame is first built)

GiB = 2**30


@dataclass(frozen=True)
class Partition:
    """A policy's split of one group of GPUs, one entry per device of ``layout`` (stage-major).

    ``heads``: attention heads per device (within its stage's layers); ``kv_shares``: its share
    of those layers' KV; ``layers``: the layers its stage runs. ``f_s``: per device, the cost
    model's latency for the target batch — its rank's operators plus the group's links for a
    tensor-parallel split (``max_f_s`` is then the iteration time), its stage's time for
    pipeline stages; ``f_fit_s``: the fit's f_j that a search compared (the cost model's where
    nothing was fitted). ``time_s``: the cost model's iteration time for the target batch.
    ``oom``: the instance's OOM lines, then the target batch's KV shortfalls, each naming the
    device."""

    policy: str
    layout: Layout
    heads: tuple
    kv_shares: tuple[float, ...]
    f_s: tuple[float, ...]
    f_fit_s: tuple[float, ...]
    memory: MemoryPlan = field(repr=False)
    oom: tuple[str, ...]
    problem: object = field(repr=False)
    iterations: pd.DataFrame = field(repr=False)
    note: str = ""
    layers: tuple[int, ...] = ()
    time_s: float = float("nan")

    @classmethod
    def of(cls, policy: str, problem, cand, log=(), note: str = ""):
        """From an evaluated tensor-parallel :class:`~.problem.Candidate`."""
        f = problem.exact(cand)
        return cls(policy, cand.layout, cand.heads, cand.kv_shares, f, cand.f_s, cand.memory,
                   tuple(cand.memory.oom) + tuple(cand.batch_oom), problem,
                   pd.DataFrame(list(log)), note,
                   (problem.model.num_layers,) * len(cand.heads), max(f))

    max_f_s = property(lambda self: max(self.f_s))
    feasible = property(lambda self: not self.oom)

    @property
    def fits(self) -> pd.DataFrame:
        """The per-device-type regressions behind ``f_fit_s``."""
        return pd.DataFrame([vars(self.problem.fit(d)) for d in
                             {d.name: d for d in self.problem.devices}.values()])

    def table(self) -> pd.DataFrame:
        """One row per GPU: stage, layers, heads, shares, memory and f_j."""
        pr, lay = self.problem, self.layout
        need = pr.batch.reserved_kv_tokens
        total = pr.model.num_heads
        stage = np.repeat(np.arange(lay.pp), lay.stage_tps)
        cap = {d.name: c for d, c in zip(pr.devices, pr.capability)}
        return pd.DataFrame([{
            "rank": j, "device": d.name, "stage": int(stage[j]),
            "layers": self.layers[j] if self.layers else pr.model.num_layers,
            "heads": self.heads[j], "head_share": self.heads[j] / total,
            "ffn_share": self.heads[j] / total, "kv_share": self.kv_shares[j],
            "capability_per_s": cap[d.name], "weights_gib": r.weight_bytes / GiB,
            "reserve_gib": r.reserve_bytes / GiB, "kv_need_gib": r.kv_bytes_per_token * need / GiB,
            "kv_free_gib": r.kv_bytes / GiB, "f_fit_s": self.f_fit_s[j], "f_s": self.f_s[j]}
            for j, (d, r) in enumerate(zip(lay.devices, self.memory.ranks))])
