"""Analytic iteration-time models: DistServe's polynomial form, and constants for queueing tests.

DistServe (OSDI'24) fits, per model and TP degree (times in seconds here, ms in its files):

    prefill iteration = a + b * sum(L_i) + c * sum(L_i^2)      (L_i: new tokens of sequence i)
    decode iteration  = a + b * sum(context_j) + c * batch

With ``b = c = 0`` both are constants: the deterministic service time of M/D/1 anchors.
A mixed iteration (prefill chunks and decodes together) costs the prefill part plus the
decode part's marginal ``b * sum(context) + c * batch``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simcluster.cost.model import CostModel


@dataclass(frozen=True)
class PolynomialTimer:
    """An IterationTimer with DistServe's polynomial iteration times."""

    prefill: tuple[float, float, float]
    decode: tuple[float, float, float]

    def time(self, prefill_tokens, prefill_context, n_decode, decode_context_sum, n_samples):
        a, b, c = self.prefill
        da, db, dc = self.decode
        t = 0.0
        if len(prefill_tokens):
            chunks = np.asarray(prefill_tokens, dtype=float)
            t = a + b * chunks.sum() + c * (chunks ** 2).sum()
            if n_decode:
                t += db * decode_context_sum + dc * n_decode
        elif n_decode:
            t = da + db * decode_context_sum + dc * n_decode
        return float(t)

    def decode_steps(self, n_decode, context_sum, steps):
        da, db, dc = self.decode
        sums = context_sum + n_decode * np.arange(steps, dtype=float)
        return da + db * sums + dc * n_decode


class PolynomialCostModel(CostModel):
    """A cost model that ignores hardware and uses the polynomial times above."""

    def __init__(self, prefill=(0.0, 0.0, 0.0), decode=(0.0, 0.0, 0.0)):
        super().__init__()
        self._timer = PolynomialTimer(tuple(map(float, prefill)), tuple(map(float, decode)))

    @classmethod
    def constant(cls, seconds: float) -> "PolynomialCostModel":
        """Every iteration takes ``seconds``."""
        return cls(prefill=(seconds, 0, 0), decode=(seconds, 0, 0))

    def timer(self, model, layout):
        return self._timer

    def __repr__(self) -> str:
        t = self._timer
        return (f"<PolynomialCostModel: prefill a, b, c = {t.prefill}, decode a, b, c = "
                f"{t.decode} (seconds; no hardware)>")
