"""Mixture-of-experts layers in the cost model: expert loads, grouped GEMMs, all-to-all.

How one MoE layer is timed on a replica whose stages have ``tp x dp`` ranks:

* **Routing and loads.** The iteration's ``T`` tokens each pick ``k`` distinct experts of
  ``E`` with probabilities ``p`` (Gumbel top-k, exact) -- for large batches (``samples x T x
  E`` over :data:`EXACT_LIMIT`) the expert loads are drawn as Multinomial(T k, p) instead, the ``k``
  picks of a token treated as independent (the same mean, and by then every expert is busy).
  The expert popularity ``p`` is fixed per seed by :class:`RoutingModel`: uniform
  (``popularity_cv = 0``, the default: a router trained with load balancing), or drawn once
  from a symmetric Dirichlet whose coefficient of variation across experts is
  ``popularity_cv`` (skewed experts). ``samples`` draws, seeded by (seed, T), give the expected
  cost: per draw the *critical* rank (the slowest by an additive roofline estimate of its
  rows' FLOPs and its active experts' weight bytes) sets the pace, since ranks meet at the
  all-to-all; its rows and active experts, averaged over the draws, are timed.
* **Expert GEMMs** are two grouped GEMMs per layer (gate+up fused, then down), one group per
  expert that received tokens, ``rows / active`` rows each (calibration op ``grouped_gemm``:
  measured on the H200; elsewhere the dense GEMM curves at the per-expert shape, stated in the
  provenance). Weights are read once per active expert, at the experts' storage dtype.
* **Expert parallelism** (``ep = tp x dp``): each rank holds ``E / ep`` whole experts and
  dispatches its ``T / (tp dp)`` tokens to the ranks holding their experts, once per distinct
  remote rank (DeepEP deduplicates), and the outputs come back the same way (combine):
  ``T/(tp dp) x (ep - 1) x (1 - C(E - E/ep, k) / C(E, k))`` hidden vectors each way per rank,
  dispatch in the model's dtype, combine in at least bf16. Each is timed as a point-to-point
  transfer of that many bytes on the layout's link (an NVSwitch gives every GPU its full
  per-direction bandwidth): the **link model**, not a measurement (one GPU cannot measure an
  all-to-all). With ``tp > 1`` the combined tokens are gathered back across the attention TP
  group (an all-gather: half an all-reduce of the group's hidden states).
* **Tensor-parallel experts** (``ep = 1``): every rank holds all experts, ``1/tp`` of each
  one's width; the layer ends in the all-reduce a dense MLP has.
* Attention data parallelism (``dp``): attention, the dense MLP layers, the shared experts and
  the router run per data-parallel group on ``T / dp`` tokens (balanced groups); the routed
  experts see all ``T`` tokens through the all-to-all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simcluster.calibration import compute_dtype
from simcluster.models import ModelSpec
from simcluster.models.operators import RankShape


@dataclass(frozen=True)
class RoutingModel:
    """How tokens spread over experts (see module docstring): seeded and stated."""

    popularity_cv: float = 0.0
    samples: int = 32
    seed: int = 0

    def __post_init__(self):
        if not (self.popularity_cv >= 0 and math.isfinite(self.popularity_cv)):
            raise ValueError(f"popularity_cv must be a finite number >= 0, got "
                             f"{self.popularity_cv!r}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")

    def describe(self) -> str:
        skew = ("uniform expert popularity" if self.popularity_cv == 0 else
                f"Dirichlet expert popularity, CV {self.popularity_cv:g}")
        return (f"top-k loads Multinomial(T k, p), {skew}, {self.samples} draws, "
                f"seed {self.seed}")

    def popularity(self, experts: int) -> np.ndarray:
        """The expert popularity ``p`` (sums to 1)."""
        if self.popularity_cv == 0:
            return np.full(experts, 1.0 / experts)
        # symmetric Dirichlet(a): CV^2 = (E - 1) / (E a + 1)  ->  a = ((E - 1) / CV^2 - 1) / E
        a = max(((experts - 1) / self.popularity_cv ** 2 - 1) / experts, 1e-3)
        rng = np.random.default_rng([self.seed, experts, 7])
        return rng.dirichlet(np.full(experts, a))

    def loads(self, tokens: int, experts: int, k: int) -> np.ndarray:
        """``samples x experts`` token counts per expert for ``tokens`` tokens."""
        rng = np.random.default_rng([self.seed, int(tokens), experts, k])
        p = self.popularity(experts)
        if self.samples * int(tokens) * experts > EXACT_LIMIT:
            return rng.multinomial(int(tokens) * k, p, size=self.samples)
        keys = rng.gumbel(size=(self.samples, int(tokens), experts)) + np.log(p)
        top = np.argpartition(-keys, k - 1, axis=2)[:, :, :k]
        out = np.zeros((self.samples, experts), dtype=np.int64)
        for s in range(self.samples):
            out[s] = np.bincount(top[s].ravel(), minlength=experts)
        return out


#: Above this many (draw, token, expert) triples, loads are multinomial (module docstring):
#: exact top-k sampling costs O(samples x T x E) per distinct T, and by then (Mixtral: T > 256
#: of 8 experts; DeepSeek: T > 8 of 256) the distinctness of a token's picks changes little.
EXACT_LIMIT = 1 << 16


def remote_ranks_per_token(experts: int, k: int, ep: int) -> float:
    """Expected distinct *other* ranks a token's ``k`` experts live on, ``E / ep`` experts per
    rank, experts picked uniformly without repeats."""
    if ep <= 1:
        return 0.0
    local = experts // ep
    miss = math.comb(experts - local, k) / math.comb(experts, k)   # none on a given rank
    return (ep - 1) * (1.0 - miss)


def all_to_all_bytes(model: ModelSpec, tokens: int, world: int, ep: int) -> tuple[float, float]:
    """(dispatch, combine) bytes one rank sends per MoE layer for ``tokens`` iteration tokens
    (see module docstring); also what it receives, by symmetry."""
    moe = model.moe
    per_rank = math.ceil(tokens / world)
    vectors = per_rank * remote_ranks_per_token(moe.num_experts, moe.experts_per_token, ep)
    h = model.hidden_size
    return vectors * h * model.dtype_bytes, vectors * h * max(model.dtype_bytes, 2)


class MoEOps:
    """The token-count-dependent operators and link times of a MoE model on one layout."""

    def __init__(self, model: ModelSpec, layout, calibration, dtype: str,
                 routing: RoutingModel | None = None):
        self.model, self.layout, self.cal, self.dtype = model, layout, calibration, dtype
        self.routing = routing or RoutingModel()
        self.moe = model.moe
        self.world = layout.tp * layout.dp
        base, extra = divmod(model.num_layers, layout.pp)
        starts = [s * base + min(s, extra) for s in range(layout.pp)]
        dense = set(self.moe.dense_layers)
        self.stage_moe = [sum(1 for i in range(a, a + base + (1 if s < extra else 0))
                              if i not in dense) for s, a in enumerate(starts)]
        self._load_cache: dict[int, tuple[float, float]] = {}

    # -- per-rank operators ----------------------------------------------------------------
    def layer_ops(self, s: int, rs: RankShape, layers: int, tokens: int, device):
        """(op, name, count, flops, bytes, shape) of stage ``s``'s layers on one rank."""
        m, lay = self.model, self.layout
        b, h = m.dtype_bytes, m.hidden_size
        n_moe = self.stage_moe[s]
        n_dense = layers - n_moe
        t = math.ceil(tokens / lay.dp)               # this data-parallel group's tokens
        ops = [_gemm(name, layers, mm, n, k, b) for name, mm, n, k in rs.attention_gemms(t)]
        if n_dense:
            ops += [_gemm(name, n_dense, mm, n, k, b) for name, mm, n, k in rs.ffn_gemms(t)]
        ew, kernels = rs.elementwise_bytes(t)
        act_dense = (3 if m.ffn_gated else 2) * t * rs.ffn * b
        ew -= act_dense * n_moe / max(layers, 1)     # MoE layers have no dense activation
        ops.append(("elementwise", "norm_act_residual", layers, 0.0, ew,
                    {"kernels": kernels, "bytes": ew, "hidden": h}))
        if n_moe:
            ops += self._moe_ops(n_moe, t, tokens, device)
        return ops

    def _moe_ops(self, count: int, t: int, tokens: int, device):
        m, moe, lay = self.model, self.moe, self.layout
        b, h, g = m.dtype_bytes, m.hidden_size, (2 if m.ffn_gated else 1)
        ops = [_gemm("router", count, t, moe.num_experts, h, b)]
        if moe.shared_ffn_size:
            f = moe.shared_ffn_size / lay.tp
            ops += [_gemm("shared_up", count, t, g * f, h, b),
                    _gemm("shared_down", count, t, h, f, b)]
        rows, active = self.critical_load(tokens, device)
        if rows <= 0:
            return ops
        f = moe.expert_ffn_size / (lay.tp if lay.ep == 1 else 1)
        wb = m.expert_dtype_bytes
        per = rows / active
        for name, n, k in (("experts_up", g * f, h), ("experts_down", h, f)):
            shape = {"m": per, "n": n, "k": k, "groups": active}
            ops.append(("grouped_gemm", name, count, 2.0 * rows * n * k,
                        wb * active * n * k + b * rows * (n + k), shape))
        act = (3 if m.ffn_gated else 2) * rows * f * b
        ops.append(("elementwise", "experts_act", count, 0.0, act,
                    {"kernels": 1, "bytes": act, "hidden": f, "kind": "silu_mul"}))
        return ops

    def critical_load(self, tokens: int, device=None) -> tuple[float, float]:
        """(rows, active experts) of the critical rank's grouped GEMMs for ``tokens`` tokens,
        the expectation over the routing model's draws (memoised by token count)."""
        hit = self._load_cache.get(tokens)
        if hit is None:
            hit = self._load_cache[tokens] = self._critical(tokens, device)
        return hit

    def _critical(self, tokens: int, device) -> tuple[float, float]:
        moe, lay, m = self.moe, self.layout, self.model
        k, e = moe.experts_per_token, moe.num_experts
        if tokens <= 0:
            return 0.0, 0.0
        loads = self.routing.loads(tokens, e, k)                 # samples x experts
        if lay.ep == 1:        # every rank holds every expert (a slice of each)
            rows = loads.sum(axis=1).astype(float)
            active = (loads > 0).sum(axis=1).astype(float)
            return float(rows.mean()), float(active.mean())
        per = loads.reshape(len(loads), lay.ep, e // lay.ep)
        rows = per.sum(axis=2).astype(float)                     # samples x ranks
        active = (per > 0).sum(axis=2).astype(float)
        f, h = moe.expert_ffn_size, m.hidden_size
        gates = 3 if m.ffn_gated else 2
        peak = (device.peak_flops_for(compute_dtype(device, self.dtype))
                if device is not None else 1e15)
        bw = device.mem_bw_bytes_per_s if device is not None else 3e12
        roof = (2.0 * gates * rows * f * h / peak
                + active * gates * f * h * m.expert_dtype_bytes / bw)
        pick = roof.argmax(axis=1)
        idx = np.arange(len(loads))
        return float(rows[idx, pick].mean()), float(np.maximum(active[idx, pick], 1).mean())

    # -- links -----------------------------------------------------------------------------
    def link_ops(self, tokens: int) -> list[tuple[str, int, float]]:
        """(name, count, seconds) of every collective and all-to-all of one iteration."""
        m, lay, cal = self.model, self.layout, self.cal
        h, b = m.hidden_size, m.dtype_bytes
        n_moe = sum(self.stage_moe)
        n_dense = m.num_layers - n_moe
        t = math.ceil(tokens / lay.dp)
        ops = []
        if lay.tp > 1:
            group = float(t * h * b)
            ar = float(cal.link_time(lay.link, "collective", group, lay.tp))
            # attention of every layer; dense MLPs; experts sharded by TP end like an MLP
            ops.append(("tp_allreduce", m.num_layers + n_dense + (n_moe if lay.ep == 1 else 0),
                        ar))
            if lay.ep > 1:
                ops.append(("ep_allgather", n_moe, float(cal.link_time(
                    lay.link, "collective", group / 2, lay.tp))))
        if lay.ep > 1 and n_moe:
            dispatch, combine = all_to_all_bytes(m, tokens, self.world, lay.ep)
            ops.append(("ep_dispatch", n_moe,
                        float(cal.link_time(lay.link, "transfer", dispatch))))
            ops.append(("ep_combine", n_moe,
                        float(cal.link_time(lay.link, "transfer", combine))))
        return ops

    def provenance(self) -> str:
        dev = self.layout.devices[0]
        op = getattr(self.cal, "op_provenance", None)
        grouped = op(dev, "grouped_gemm") if op else "grouped_gemm: roofline"
        a2a = ("; all-to-all: link model (bytes / per-direction bandwidth + latency), not "
               "measured" if self.layout.ep > 1 else "")
        return f"MoE: {self.routing.describe()}; {grouped}{a2a}"


def _gemm(name: str, count: int, m, n, k, b):
    return ("gemm", name, count, 2.0 * m * n * k, b * (m * k + k * n + m * n),
            {"m": m, "n": n, "k": k})
