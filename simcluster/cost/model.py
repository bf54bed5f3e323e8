"""The cost model: time of one iteration of a batch on a replica, as a pure function.

``CostModel(calibration).iteration(model, layout, batch)`` validates its inputs, lists every
operator of the iteration per pipeline stage and tensor-parallel rank (:mod:`.operators` counts
their FLOPs and bytes), asks the calibration for each operator's time, and sums: within a stage
the slowest rank sets the pace (ranks meet at every all-reduce), stages run one after another
(one micro-batch per iteration; no inter-iteration pipelining is modelled), and activations
cross each stage boundary on the stage link.

``CostModel.timer(model, layout)`` gives the same function for the simulator's hot path:
the parts that depend only on the token count are memoised, and a run of pure-decode steps is
evaluated as one vector (:meth:`IterationTimer.decode_steps`).

Mixture-of-experts layers (routed-expert grouped GEMMs, expert parallelism's all-to-all,
attention data parallelism) are the operators of :class:`~simcluster.cost.moe.MoEOps`; the
layout is checked against the model first (:func:`~simcluster.cost.parallel.check_parallel`).

Which kernels an iteration launches is a :class:`~simcluster.cost.accounting.KernelAccounting`
(``kernels=``: the fused default, or an engine's, e.g. HF transformers' unfused eager forward),
and how they are launched an :class:`~simcluster.cost.accounting.ExecutionMode` per iteration
kind (``execution=``: CUDA graphs by default, the mode the kernel tables were measured in;
``eager`` adds each launch's host dispatch cost, :mod:`simcluster.cost.execution`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from simcluster.lazy import lazy_module
from simcluster.calibration import NEUTRAL, Calibration
from simcluster.cost.decode_steps import STEP_BLOCK, DecodeSteps  # noqa: F401
from simcluster.cost.breakdown import Breakdown
from simcluster.cost.accounting import FUSED, ExecutionMode, KernelAccounting, load_accounting
from simcluster.cost.execution import HostDispatch
from simcluster.cost.layout import Layout
from simcluster.cost.parallel import check_parallel
from simcluster.cost.stages import StagedTimer
from simcluster.models.operators import RankShape, op_counts
from simcluster.hardware import DeviceSpec
from simcluster.models import ModelSpec

if TYPE_CHECKING:
    from simcluster.cost.moe import RoutingModel

pd = lazy_module("pandas")     # (imported when a frame is first built)
_moe = lazy_module("simcluster.cost.moe")  # (when a MoE model or expert routing needs it)


#: Timers a cost model keeps for reuse by later simulations.
TIMERS_KEPT = 8


def model_dtype(model: ModelSpec) -> str:
    """The dtype the model's weights and activations are computed in (``fp16``, ``bf16`` ...)."""
    return model.dtype


@dataclass(frozen=True)
class Batch:
    """The work of one iteration: sequences prefilling a chunk and sequences decoding a token.

    ``prefill_tokens[i]`` new tokens of sequence i follow ``prefill_context[i]`` tokens already
    in its KV cache; ``decode_context[j]`` is the KV length that decoding sequence j attends to.
    ``prefill_samples`` is how many prefilling sequences finish their prompt (and sample a first
    token) in this iteration; by default all of them.
    """

    prefill_tokens: tuple[int, ...] = ()
    prefill_context: tuple[int, ...] = ()
    decode_context: tuple[int, ...] = ()
    prefill_samples: int | None = None

    def __post_init__(self):
        for name in ("prefill_tokens", "prefill_context", "decode_context"):
            given = tuple(getattr(self, name))
            if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in given):
                # (int() read 1.5 tokens as 1 without a word)
                raise ValueError(f"Batch.{name} must be whole numbers of tokens, got {given}")
            vals = tuple(int(v) for v in given)
            object.__setattr__(self, name, vals)
            if any(v < 0 for v in vals):
                raise ValueError(f"Batch.{name} must be non-negative, got {vals}")
        if len(self.prefill_context) != len(self.prefill_tokens):
            if self.prefill_context:
                raise ValueError("Batch.prefill_context needs one entry per prefill sequence")
            object.__setattr__(self, "prefill_context", (0,) * len(self.prefill_tokens))
        if any(t == 0 for t in self.prefill_tokens):
            raise ValueError("Batch.prefill_tokens entries must be >= 1")
        if not self.prefill_tokens and not self.decode_context:
            raise ValueError("an empty batch has no iteration time")
        if self.prefill_samples is None:
            object.__setattr__(self, "prefill_samples", len(self.prefill_tokens))
        elif not 0 <= self.prefill_samples <= len(self.prefill_tokens):
            raise ValueError("Batch.prefill_samples must be between 0 and the prefill count")

    @property
    def tokens(self) -> int:
        return sum(self.prefill_tokens) + len(self.decode_context)

    @property
    def samples(self) -> int:
        return self.prefill_samples + len(self.decode_context)


@dataclass(frozen=True)
class IterationCost:
    """An iteration's predicted time and its per-operator breakdown (one row per operator
    per stage and rank; ``time_s`` already multiplied by ``count`` launches)."""

    time_s: float
    ops: pd.DataFrame
    provenance: str


class CostModel:
    """Iteration time = f(model, layout, device specs, calibration, batch), for an engine's
    kernel accounting and execution mode (defaults: fused kernels replayed as CUDA graphs)."""

    def __init__(self, calibration: Calibration | str = NEUTRAL,
                 routing: RoutingModel | None = None, *,
                 kernels: KernelAccounting | str = FUSED,
                 execution: ExecutionMode | str | dict = "graphs"):
        if isinstance(calibration, str):           # a name: "measured" or "datasheet"
            from simcluster.calibration import load_calibration
            calibration = load_calibration(calibration)
        elif not isinstance(calibration, Calibration):
            raise TypeError(f"calibration: expected a Calibration or its name ('measured', "
                            f"'datasheet'); got {type(calibration).__name__}")
        if routing is not None and not isinstance(routing, _moe.RoutingModel):
            raise TypeError(f"routing: expected a RoutingModel (expert loads of a mixture of "
                            f"experts) or None; got {type(routing).__name__}")
        self.calibration = calibration
        self.routing = routing        # expert loads of MoE models (None: the default model)
        self.kernels = load_accounting(kernels)
        self.execution = ExecutionMode.of(execution)
        self._timers: dict = {}
        self._memos: dict = {}

    def __repr__(self) -> str:
        """A line for a notebook's cell or a prompt: what the iteration times come from."""
        cal = self.calibration
        ex = getattr(self, "execution", ExecutionMode())
        mode = (ex.prefill if ex.prefill == ex.decode
                else f"prefill {ex.prefill}, decode {ex.decode}")
        name = getattr(self, "name", "")
        moe = "" if getattr(self, "routing", None) is None else ", expert loads given"
        return (f"<{type(self).__name__}{f' {name!r}' if name else ''}: calibration "
                f"{getattr(cal, 'name', type(cal).__name__)!r}, kernels "
                f"{getattr(self, 'kernels', FUSED).name!r}, execution {mode}{moe}; "
                f".iteration(model, layout, batch), .predict_op(op, device, ...)>")

    # -- public entries: validate, then compute ----------------------------------------------
    def predict_op(self, op: str, device: DeviceSpec, *, dtype: str = "bf16",
                   mode: str = "graph", **shape) -> dict:
        """Predict one operator on one device from its shape.

        ``gemm``: m, n, k. ``attn_prefill``: tokens, context, num_heads, num_kv_heads, head_dim
        (``batch`` sequences of that shape). ``attn_decode``: batch, kv_len, num_heads,
        num_kv_heads, head_dim. ``elementwise``: bytes (read plus written), kernels, and
        optionally hidden (the row length a norm reduces over; 4,096 if not given) and kind.
        ``mode``: ``graph`` (inside a CUDA-graph replay, as the tables were measured),
        ``eager`` (launched back to back from Python: the larger of the device time and the
        host's dispatch time for the op's launches) or ``isolated`` (one launch on an idle
        device: device time plus launch latency).
        Returns flops, bytes, time_s, achieved rates and the calibration's provenance.
        """
        flops, bytes_, cal_shape = op_counts(op, shape)
        if op == "gemm" and shape.get("layout"):
            cal_shape["layout"] = shape["layout"]
        t = float(self.calibration.op_time(device, op, flops, bytes_, cal_shape, dtype))
        t = HostDispatch(self.calibration.launch_costs(device)).single_op(
            op, t, mode, shape.get("launches", shape.get("kernels", 1)), shape.get("kind"))
        return {"op": op, "device": device.name, **shape, "flops": flops, "bytes": bytes_,
                "time_s": t, "achieved_flops_per_s": flops / t if t else 0.0,
                "achieved_bytes_per_s": bytes_ / t if t else 0.0,
                "provenance": self.calibration.provenance(device)}

    def iteration(self, model: ModelSpec, layout: Layout, batch: Batch) -> IterationCost:
        """Predict one iteration, with its operator breakdown."""
        timer = self.timer(model, layout)
        rows = timer.breakdown(batch)
        ops = pd.DataFrame(rows)
        t = timer.time(np.array(batch.prefill_tokens), np.array(batch.prefill_context),
                       len(batch.decode_context), sum(batch.decode_context), batch.samples)
        prov = "; ".join(sorted({self.calibration.provenance(d) for d in layout.devices}))
        if timer.moe_ops is not None:
            prov += "; " + timer.moe_ops.provenance()
        return IterationCost(time_s=t, ops=ops, provenance=prov)

    def timer(self, model: ModelSpec, layout: Layout) -> "IterationTimer":
        """The iteration timer of ``model`` on ``layout``. Timers are pure functions that
        keep what they computed, so the cost model hands the same one to every simulation
        of an equal (model, layout) — the last :data:`TIMERS_KEPT` of them."""
        routing = getattr(self, "routing", None)
        kw = {"kernels": getattr(self, "kernels", FUSED),
              "execution": getattr(self, "execution", ExecutionMode())}
        timers = self.__dict__.setdefault("_timers", {})
        try:
            key = (model, layout, id(routing), id(kw["kernels"]), id(kw["execution"]))
            hit = timers.get(key)
        except TypeError:                   # (unhashable: a timer per call)
            return self._new_timer(model, layout, routing, kw)
        if hit is None:
            if len(timers) >= TIMERS_KEPT:
                timers.pop(next(iter(timers)))
            # (the objects whose ids the key holds are kept alive with the timer)
            hit = (self._new_timer(model, layout, routing, kw), routing, kw)
        else:
            del timers[key]                 # (most recently used last)
        timers[key] = hit
        return hit[0]

    def _new_timer(self, model, layout, routing, kw):
        if layout.stage_tp:                  # asymmetric stages: one timer per stage
            return StagedTimer(self.calibration, model, layout, partial(IterationTimer, **kw))
        return IterationTimer(self.calibration, model, layout, routing, **kw)

    def iteration_memo(self, timer) -> dict:
        """A memo of ``timer``'s iteration times (by shape) that the replicas of every
        simulation using this cost model share; see :mod:`simcluster.serving.steps`."""
        memos = self.__dict__.setdefault("_memos", {})
        hit = memos.get(id(timer))
        if hit is None or hit[1] is not timer:
            if len(memos) >= 4 * TIMERS_KEPT:
                memos.clear()
            hit = memos[id(timer)] = ({}, timer)
        return hit[0]


class IterationTimer(DecodeSteps, Breakdown):
    """The cost model bound to one (model, layout): fast repeated iteration times."""

    #: A replica reads the time of a single pure-decode iteration from the decode step
    #: table (:mod:`serving.steps`): one formula for every pure-decode step, alone or in a run.
    single_decode_from_table = True

    def __init__(self, calibration: Calibration, model: ModelSpec, layout: Layout,
                 routing: RoutingModel | None = None, *, layers: int | None = None,
                 first: bool = True, last: bool = True, kernels: KernelAccounting = FUSED,
                 execution: ExecutionMode = ExecutionMode()):
        """``routing``: the expert-load model of a mixture of experts (:mod:`.moe`).
        ``layers``, ``first``, ``last``: a one-stage ``layout`` that is one stage of a
        longer pipeline (its layer count; whether it holds the embedding / the LM head).
        ``kernels``, ``execution``: the engine's kernel accounting and execution mode."""
        check_parallel(model, layout)
        self.cal, self.model, self.layout = calibration, model, layout
        self.kernels, self.execution = kernels, execution
        self.dtype = model_dtype(model)
        self.first, self.last = first, last
        tied = layout.kv_shares == layout.head_shares
        rc = layout.recompute(0)
        if any(layout.recompute(s) != rc for s in range(layout.pp)):
            raise ValueError("a pipeline of equal stages recomputes the same share on each "
                             "stage's rank r; give stage_tp for stages of their own")
        self.ranks = [RankShape.of(model, layout.head_shares[r], layout.ffn_shares[r],
                                   layout.kv_shares[r], tied, rc[r], dp=layout.dp)
                      for r in range(layout.tp)]
        self.moe_ops = (_moe.MoEOps(model, layout, calibration, self.dtype, routing)
                        if model.moe is not None else None)
        self.stage_layers = [layers] if layers is not None else list(
            layout.layers(model.num_layers))
        # ranks with the same device and shares compute the same times: compute one of each
        self._twin = [next(q for q in range(r + 1) if self._same_rank(q, r))
                      for r in range(layout.tp)]
        self._scalar = layout.pp == 1 and all(t == 0 for t in self._twin)
        self._dense_cache: dict[tuple[int, int], np.ndarray] = {}
        self._link_cache: dict[tuple[int, int], float] = {}
        self._host = HostDispatch.for_layout(calibration, layout, self.ranks, kernels,
                                             self.stage_layers, first, last)
        self._decode_fns: dict[tuple, object] = {}
        self._op_times: list = [None] * len(layout.devices)
        self._step_table: dict[tuple, np.ndarray] = {}
        self._step_hot: dict = {}        # batch -> (block index, block) last read

    # -- hot path ---------------------------------------------------------------------------
    def time(self, prefill_tokens: np.ndarray, prefill_context: np.ndarray, n_decode: int,
             decode_context_sum: int, n_samples: int, pad_tokens: int = 0) -> float:
        """Seconds for one iteration (arrays of the prefill chunks, the decode totals).
        ``pad_tokens``: rows an engine adds to reach a captured graph's static shape; they
        run through the linear layers and elementwise kernels, not through attention."""
        tokens = sum(prefill_tokens.tolist()) + n_decode
        if pad_tokens:
            tokens += int(pad_tokens)
        per_rank = self._dense(tokens, n_samples)
        prefill = len(prefill_tokens) > 0
        mode = self.execution.of_kind(prefill)
        if self._scalar:
            graphs = mode == "graphs"         # (links first: the summation order of before)
            t = float(per_rank[0, 0]) + (self._links(tokens, n_decode) if graphs else 0.0)
            if len(prefill_tokens) == 1:      # one prompt: the calibration's scalar path
                t += self._attn_prefill_one(float(prefill_tokens[0]), float(prefill_context[0]))
            elif prefill:
                t += float(self._attn_prefill(prefill_tokens, prefill_context)[0, 0])
            if n_decode:
                t += float(self._attn_decode_scalar(n_decode, float(decode_context_sum)))
            if graphs:
                return t
            t = float(self._host.scalar(t, prefill, n_decode > 0, n_samples > 0, mode))
            return t + self._links(tokens, n_decode)
        if prefill:
            per_rank = per_rank + self._attn_prefill(prefill_tokens, prefill_context)
        if n_decode:
            per_rank = per_rank + self._attn_decode(
                n_decode, np.array([decode_context_sum]))[:, :, 0]
        per_rank = self._host.apply(per_rank, prefill, n_decode > 0, n_samples > 0, mode)
        return float(per_rank.max(axis=1).sum()) + self._links(tokens, n_decode)

    # -- parts ------------------------------------------------------------------------------
    def _same_rank(self, q: int, r: int) -> bool:
        lay = self.layout
        return (self.ranks[q] == self.ranks[r]
                and all(self._device(s, q) is self._device(s, r) or
                        self._device(s, q).name == self._device(s, r).name
                        for s in range(lay.pp)))

    def _device(self, s: int, r: int) -> DeviceSpec:
        return self.layout.devices[s * self.layout.tp + r]

    def _op_time(self, s: int, r: int):
        """The calibration's ``op_time`` for the device of stage ``s``, rank ``r``."""
        i = s * self.layout.tp + r
        fns = self._op_times
        if fns[i] is None:
            fn = getattr(self.cal, "op_time_for", None)
            fns[i] = self.cal.op_time if fn is None else fn(self.layout.devices[i])
        return fns[i]

    def _dense_ops(self, s: int, r: int, tokens: int, n_samples: int):
        """(op, name, count, flops, bytes, shape) of the token-count-dependent operators, as
        the kernel accounting lists them."""
        rs, m, b = self.ranks[r], self.model, self.model.dtype_bytes
        acc = self.kernels
        lay = {"layout": "nn"} if acc.gemm_layout == "nn" else {}
        layers = self.stage_layers[s]
        if self.moe_ops is not None:      # mixture of experts (and attention DP): moe.py
            ops = self.moe_ops.layer_ops(s, rs, layers, tokens, self._device(s, r))
            dp = self.layout.dp
            tokens, n_samples = -(-tokens // dp), -(-n_samples // dp)
        else:                             # the engine's kernel accounting (accounting.py)
            ops = [("gemm", name, layers, 2.0 * mm * n * k, b * (mm * k + k * n + mm * n),
                    {"m": mm, "n": n, "k": k, **lay})
                   for name, mm, n, k in acc.gemms(rs, tokens)]
            for name, kind, byts, row, launches, _ in acc.elementwise_ops(rs, tokens):
                shape = {"kernels": launches if kind is None else 1, "bytes": byts,
                         "hidden": row}
                if kind is not None:
                    shape["kind"] = kind
                ops.append(("elementwise", name, layers, 0.0, byts, shape))
        tp = self.layout.tp
        if s == 0 and self.first:
            emb = 2.0 * b * tokens * m.hidden_size
            ops.append(("elementwise", "embedding", 1, 0.0, emb,
                        {"kernels": 1, "bytes": emb, "hidden": m.hidden_size}))
        last = s == self.layout.pp - 1 and self.last
        if last and acc.final_norm:
            nb = b * (2 * tokens * m.hidden_size + m.hidden_size)
            ops.append(("elementwise", "final_norm", 1, 0.0, nb,
                        {"kernels": 1, "bytes": nb, "hidden": m.hidden_size, "kind": acc.norm}))
        if last and n_samples:
            n = m.vocab_size / tp
            ops.append(("gemm", "lm_head", 1, 2.0 * n_samples * n * m.hidden_size,
                        b * (n_samples * m.hidden_size + n * m.hidden_size + n_samples * n),
                        {"m": n_samples, "n": n, "k": m.hidden_size, **lay}))
            smp = 2 * 4.0 * n_samples * n
            ops.append(("elementwise", "sampling", 1, 0.0, smp,
                        {"kernels": 2, "bytes": smp, "hidden": n}))
        return ops

    def _dense(self, tokens: int, n_samples: int) -> np.ndarray:
        key = (tokens, n_samples)
        hit = self._dense_cache.get(key)
        if hit is None:
            lay = self.layout
            hit = np.zeros((lay.pp, lay.tp))
            for s in range(lay.pp):
                for r in range(lay.tp):
                    if self._twin[r] != r:        # same device and shares: same time
                        hit[s, r] = hit[s, self._twin[r]]
                        continue
                    dev, op_time, dtype = self._device(s, r), self._op_time(s, r), self.dtype
                    hit[s, r] = sum([c * float(op_time(dev, op, f, by, shp, dtype))
                                     for op, _, c, f, by, shp in
                                     self._dense_ops(s, r, tokens, n_samples)])
            if len(self._dense_cache) > 65536:
                self._dense_cache.clear()
            self._dense_cache[key] = hit
        return hit

    def _attn_prefill(self, chunks: np.ndarray, context: np.ndarray) -> np.ndarray:
        lay = self.layout
        out = np.zeros((lay.pp, lay.tp))
        for r, rs in enumerate(self.ranks):
            if self._twin[r] != r:
                out[:, r] = out[:, self._twin[r]]
                continue
            if rs.heads == 0:
                continue
            f, by = rs.attn_prefill(chunks, context)
            # the sequences of one iteration run in one varlen kernel: their count is its batch
            shape = {"tokens": chunks, "context": context, "batch": len(chunks),
                     "heads": rs.heads, "kv_heads": rs.kv_heads}
            for s in range(lay.pp):
                t = self._op_time(s, r)(self._device(s, r), "attn_prefill", f, by, shape,
                                        self.dtype)
                t = float(np.sum(t)) + self._kv_concat(s, r, float(np.sum(chunks + context)))
                out[s, r] = self.stage_layers[s] * t
        return out

    def _attn_prefill_one(self, chunk: float, context: float) -> float:
        """Rank 0 of a one-stage, all-twin layout, one prompt chunk."""
        rs = self.ranks[0]
        if rs.heads == 0:
            return 0.0
        f, by = rs.attn_prefill(chunk, context)
        shape = {"tokens": chunk, "context": context, "batch": 1, "heads": rs.heads,
                 "kv_heads": rs.kv_heads}
        return self.stage_layers[0] * (float(self._op_time(0, 0)(
            self._device(0, 0), "attn_prefill", float(f), float(by), shape, self.dtype))
            + self._kv_concat(0, 0, chunk + context))

    def _attn_decode_scalar(self, n_decode: int, context_sums: np.ndarray):
        """Rank 0 of a one-stage, all-twin layout: per-step times, no (stage, rank) axes."""
        rs = self.ranks[0]
        f, by = rs.attn_decode(n_decode, context_sums)
        shape = {"batch": n_decode, "kv_len": context_sums / n_decode, "heads": rs.heads,
                 "kv_heads": rs.kv_heads}
        t = self._op_time(0, 0)(self._device(0, 0), "attn_decode", f, by, shape, self.dtype)
        if rs.recompute:
            t = t + self._recompute(self._device(0, 0), rs, context_sums)
        return self.stage_layers[0] * (t + self._kv_concat(0, 0, context_sums))

    def _recompute_op(self, rs: RankShape, context_sums):
        """(flops, bytes, shape) of one layer's K/V recompute GEMM (KV store-and-recompute)."""
        m, n, k = rs.recompute_gemm(context_sums)
        b = self.model.dtype_bytes
        return 2.0 * m * n * k, b * (m * k + k * n + m * n), {"m": np.maximum(m, 1.0),
                                                              "n": n, "k": k}

    def _recompute(self, device, rs: RankShape, context_sums):
        f, by, shape = self._recompute_op(rs, context_sums)
        return self.cal.op_time(device, "gemm", f, by, shape, self.dtype)

    def _attn_decode(self, n_decode: int, context_sums: np.ndarray) -> np.ndarray:
        lay = self.layout
        out = np.zeros((lay.pp, lay.tp, len(context_sums)))
        for r, rs in enumerate(self.ranks):
            if self._twin[r] != r:
                out[:, r] = out[:, self._twin[r]]
                continue
            f, by = rs.attn_decode(n_decode, context_sums)
            if not np.any(f):
                continue
            shape = {"batch": n_decode, "kv_len": context_sums / n_decode,
                     "heads": rs.heads, "kv_heads": rs.kv_heads}
            for s in range(lay.pp):
                t = self._op_time(s, r)(self._device(s, r), "attn_decode", f, by, shape,
                                        self.dtype)
                if rs.recompute:
                    t = t + self._recompute(self._device(s, r), rs, context_sums)
                out[s, r] = self.stage_layers[s] * (t + self._kv_concat(s, r, context_sums))
        return out

    def _kv_concat(self, s: int, r: int, kv_tokens):
        """``DynamicCache.update``'s per-layer concatenation (``kv_cache = "concat"``): K and
        V of every cached token read and written again (two kernels). 0 for a paged write."""
        if self.kernels.kv_cache != "concat":
            return 0.0
        rs = self.ranks[r]
        byts = 4.0 * self.model.dtype_bytes * rs.kv_heads * rs.head_dim * kv_tokens
        return self.cal.op_time(self._device(s, r), "elementwise", 0.0, byts,
                                {"kernels": 2, "bytes": byts, "hidden": self.model.hidden_size,
                                 "kind": "kv_concat"}, self.dtype)

    def _links(self, tokens: int, n_decode: int) -> float:
        """All-reduces, decoupled-KV transfers and stage hand-offs of one iteration."""
        key = (tokens, n_decode)
        hit = self._link_cache.get(key)
        if hit is None:
            hit = sum(c * t for _, c, t in self._link_ops(tokens, n_decode))
            if len(self._link_cache) > 65536:
                self._link_cache.clear()
            self._link_cache[key] = hit
        return hit

    def _link_ops(self, tokens: int, n_decode: int):
        lay, m = self.layout, self.model
        if self.moe_ops is not None:      # all-reduces, all-to-all (moe.py), stage hand-offs
            ops = self.moe_ops.link_ops(tokens)
            if lay.pp > 1:
                act = float(-(-tokens // lay.dp) * m.hidden_size * m.dtype_bytes)
                ops.append(("pp_handoff", lay.pp - 1, float(self.cal.link_time(
                    lay.stage_link or lay.link, "transfer", act))))
            return ops
        act = float(tokens * m.hidden_size * m.dtype_bytes)
        ops = []
        if lay.tp > 1:
            ar = float(self.cal.link_time(lay.link, "collective", act, lay.tp))
            ops.append(("tp_allreduce", 2 * sum(self.stage_layers), ar))
            kv = max(rs.kv_transfer_bytes(n_decode, tokens - n_decode) for rs in self.ranks)
            if kv:
                ops.append(("kv_share_transfer", sum(self.stage_layers),
                            float(self.cal.link_time(lay.link, "transfer", kv))))
        if lay.pp > 1:
            link = lay.stage_link or lay.link
            ops.append(("pp_handoff", lay.pp - 1,
                        float(self.cal.link_time(link, "transfer", act))))
        return ops
