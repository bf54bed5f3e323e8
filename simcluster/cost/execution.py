"""Launch costs: how an iteration's execution mode turns device time into elapsed time.

The kernel tables time every operator inside a CUDA-graph replay, so a sum of calibrated
operator times is the device time of a forward *replayed as a graph*. An eager forward also
pays, per kernel, the host's dispatch time (PyTorch's dispatcher, ``cudaLaunchKernel``): the host
issues launches while the device runs earlier ones, so over a forward (a repeated layer
pattern) the elapsed time is the larger of the device time and the host dispatch time, plus
one launch latency before the first kernel. This module applies that, in one place, where the
cost model sums operators (:meth:`HostDispatch.apply`): per pipeline stage and rank, with the
launch counts of the engine's :class:`~simcluster.cost.accounting.KernelAccounting` and the
dispatch cost per launch class that the calibration measured on the device's host
(:meth:`~simcluster.calibration.Calibration.launch_costs`).

Modes (:class:`~simcluster.cost.accounting.ExecutionMode`): ``graphs`` adds nothing (a graph
launch is one dispatch per iteration, microseconds, not modelled); ``eager`` as above;
``piecewise`` dispatches only the attention calls and one graph piece per layer.
"""

from __future__ import annotations

import numpy as np

from simcluster.calibration import LAUNCH_CLASSES, LaunchCosts

#: Which launch class a standalone operator's launches belong to.
OP_CLASS = {"gemm": "linear", "attn_prefill": "sdpa", "attn_decode": "sdpa",
            "elementwise": "elementwise"}





class HostDispatch:
    """Host dispatch time of one iteration per (stage, rank), and the modes' arithmetic."""

    def __init__(self, costs: LaunchCosts, counts=None, pp: int = 1, tp: int = 1):
        self.costs = costs
        self._counts = counts          # (prefill, decode, samples) -> [(s, r, {class: n})]
        self.pp, self.tp = pp, tp
        self._memo: dict = {}

    @classmethod
    def for_layout(cls, calibration, layout, ranks, kernels, stage_layers, first: bool = True,
                   last: bool = True) -> "HostDispatch":
        costs = [[calibration.launch_costs(layout.devices[s * layout.tp + r])
                  for r in range(layout.tp)] for s in range(layout.pp)]

        def counts(prefill, decode, samples):
            out = []
            for s in range(layout.pp):
                for r, rank in enumerate(ranks):
                    per = kernels.layer_launches(rank, prefill, decode)
                    extra = kernels.extra_launches(s == 0 and first,
                                                   s == layout.pp - 1 and last, samples)
                    out.append((s, r, {c: stage_layers[s] * per[c] + extra[c]
                                       for c in LAUNCH_CLASSES}))
            return out
        self = cls(costs[0][0], counts, layout.pp, layout.tp)
        self._costs = costs
        self._overhead = [kernels.host_overhead_per_layer_s * n if costs[s][0].dispatch_s.get(
            "linear") else 0.0 for s, n in enumerate(stage_layers)]
        return self

    def host(self, prefill: bool, decode: bool, samples: bool, mode: str) -> np.ndarray:
        """(pp, tp) host dispatch seconds of an iteration in ``mode`` (eager, piecewise)."""
        key = (prefill, decode, samples, mode)
        hit = self._memo.get(key)
        if hit is None:
            hit = np.zeros((self.pp, self.tp))
            for s, r, n in self._counts(prefill, decode, samples):
                c = self._costs[s][r]
                if mode == "piecewise":      # attention eager, one graph piece per layer
                    layers = n["sdpa"] // max(int(prefill) + int(decode), 1)
                    hit[s, r] = n["sdpa"] * c.per_launch("sdpa") + \
                        (layers + 1) * c.per_launch("elementwise")
                else:
                    hit[s, r] = sum(n[k] * c.per_launch(k) for k in LAUNCH_CLASSES) + \
                        self._overhead[s]
            self._memo[key] = hit
        return hit

    def latency(self) -> float:
        return self.costs.latency_s

    def apply(self, per_rank: np.ndarray, prefill: bool, decode: bool, samples: bool,
              mode: str) -> np.ndarray:
        """Per (stage, rank) device seconds -> elapsed seconds in ``mode``."""
        if mode == "graphs":
            return per_rank
        h = self.host(prefill, decode, samples, mode)
        if per_rank.ndim == 3:               # (pp, tp, steps) of decode_steps
            h = h[:, :, None]
        return np.maximum(per_rank, h) + self.latency()

    def scalar(self, t, prefill: bool, decode: bool, samples: bool, mode: str):
        """The one-stage, one-distinct-rank case (scalar or a vector of steps)."""
        if mode == "graphs":
            return t
        return np.maximum(t, self.host(prefill, decode, samples, mode)[0, 0]) + self.latency()

    def single_op(self, op: str, t: float, mode: str, launches: int = 1,
                  kind: str | None = None) -> float:
        """One operator timed alone: ``graph`` (as measured), ``eager`` (back-to-back launches
        of it: the larger of device and dispatch time) or ``isolated`` (one call on an idle
        device, between two events: its first dispatch, then the device time or the rest of
        its dispatches, whichever is longer; the events' own submission latency cancels)."""
        if mode == "graph":
            return t
        cls = OP_CLASS.get(op, "elementwise")
        if op == "elementwise" and kind == "rmsnorm":
            cls = "norm"
        launches = max(int(launches or 1), 1)
        if mode == "eager":
            return max(t, launches * self.costs.per_launch(cls))
        if mode == "isolated":      # the first dispatch, then the rest overlapped
            d = self.costs.per_launch(cls)
            return d + max(t, (launches - 1) * d)
        raise ValueError(f"unknown timing mode {mode!r}; expected graph, eager or isolated")
